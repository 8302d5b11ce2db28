"""Import this repository as the package ``comfyui_sla``, the way ComfyUI loads a custom node pack by its path.

For the scripts and tests that run from a clone (``demo.py``, ``bench/``, ``tests/``): the pack uses relative
imports, so its folder must be a package, whatever the clone's folder is called.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
PACK = "comfyui_sla"


def load_pack():
    """The pack's top-level module ``comfyui_sla`` (imported once per process; its subpackages import lazily)."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]
