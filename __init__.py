"""ComfyUI entry point of the SLA (Sparse-Linear Attention) node pack.

ComfyUI imports this folder as a package by its path; everything inside uses relative imports.
"""
if __package__:
    from .nodes.sla_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module (a tool that walks the repository, e.g. pytest run from a folder whose name is
    # not a Python identifier): there is no package to import the nodes from, and nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
