"""Load the repository as the package ``comfyui_sla``, the way ComfyUI loads a custom node pack by its path."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK = "comfyui_sla"

if PACK not in sys.modules:
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
