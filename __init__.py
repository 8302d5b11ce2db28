"""ComfyUI entry point of the SLA (Sparse-Linear Attention) node pack.

ComfyUI imports this folder by its path, under a module name made from that path. The pack's code always runs as
the one package ``comfyui_sla`` (loaded from this folder by ``_load_pack.py``, as the tests and scripts do), so its
torch custom ops, their runtime table and every module exist once per process however the folder was reached.
"""
import importlib
import importlib.util
import pathlib

CANONICAL = "comfyui_sla"

if __name__ == CANONICAL:
    from .nodes.sla_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
elif __package__:
    # Loaded by ComfyUI under its path-derived name: hand over to the canonical package (not registered under
    # that other name, so no second copy of the pack's modules exists).
    _spec = importlib.util.spec_from_file_location("_comfyui_sla_loader",
                                                   pathlib.Path(__file__).resolve().parent / "_load_pack.py")
    _loader = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_loader)
    _pack = _loader.load_pack()
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_CLASS_MAPPINGS, _pack.NODE_DISPLAY_NAME_MAPPINGS
    # The image-to-video example's start image, into ComfyUI's input folder (where LoadImage looks) if not there.
    importlib.import_module(CANONICAL + ".nodes.comfy_bridge").install_example_inputs()
else:
    # Imported as a plain module (a tool that walks the repository, e.g. pytest collecting from a folder whose
    # name is not a Python identifier): there is no package to import the nodes from, and nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
