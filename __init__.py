"""ComfyUI entry point of the SLA (Sparse-Linear Attention) node pack.

ComfyUI imports this folder as a package by its path; everything inside uses relative imports.
"""
from .nodes.sla_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
