"""Load the repository as the package ``comfyui_sla``, the way ComfyUI loads a custom node pack by its path."""
import os
import pathlib
import sys

import torch

# Without a GPU, Triton kernels run through its CPU interpreter; it must be chosen before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _load_pack import load_pack  # noqa: E402

load_pack()
