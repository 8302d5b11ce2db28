"""Import this repository as the package ``comfyui_sla``: the pack's one import name.

Used by the pack's own ``__init__`` when ComfyUI loads the folder by its path, and by the scripts and tests that run
from a clone (``demo.py``, ``bench/``, ``tests/``). The pack uses relative imports, so its folder must be a package,
whatever the folder is called.
"""
from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
PACK = "comfyui_sla"


def load_pack():
    """The pack's top-level module ``comfyui_sla`` (imported once per process; its subpackages import lazily).

    When another folder was imported as ``comfyui_sla`` first (two copies of the pack installed), that one is kept
    and this is logged: one process runs one copy of the pack.
    """
    module = sys.modules.get(PACK)
    if module is None:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[PACK]
            raise
    elif pathlib.Path(getattr(module, "__file__", "") or "").resolve().parent != ROOT:
        logging.getLogger(PACK).warning("ComfyUI-SLA: another copy of the pack (%s) is already loaded; %s is not "
                                        "used", module.__file__, ROOT)
    return module
