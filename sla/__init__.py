"""SLA math, reference implementation, checkpoint parsing and patch logic (no ComfyUI import here)."""
from .functional import sparse_linear_attention, triton_available
from .mask import block_lut, block_scores, keep_count
from .reference import sla_reference, sla_torch

__all__ = ["sparse_linear_attention", "triton_available", "block_lut", "block_scores", "keep_count",
           "sla_reference", "sla_torch"]
