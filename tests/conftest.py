"""Load the repository as the package ``comfyui_sla``, the way ComfyUI loads a custom node pack by its path."""
import importlib.util
import os
import pathlib
import sys

import torch

# Without a GPU, Triton kernels run through its CPU interpreter; it must be chosen before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK = "comfyui_sla"

if PACK not in sys.modules:
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
