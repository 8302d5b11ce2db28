"""The SLA library: no ComfyUI import anywhere below this folder.

* the math: :mod:`.spec` (the knobs, defined once: choices, defaults, keep-count rule), :mod:`.mask` (block
  mask), :mod:`.reference` (float64 reference and the exact PyTorch path), :mod:`.functional` (the public
  ``sparse_linear_attention``, which dispatches to ``kernels/`` on CUDA);
* :mod:`.checkpoint`: reading, detecting and converting SLA checkpoint files;
* :mod:`.runtime`: the per-model attention patch (settings, proj_l registry, override, run bookkeeping),
  ComfyUI objects duck-typed.

May import torch, the standard library, and (lazily, from :mod:`.functional`) the pack's ``kernels`` package.
"""
from .functional import sparse_linear_attention, triton_available
from .mask import block_lut, block_scores
from .reference import sla_reference, sla_torch
from .spec import keep_count

__all__ = ["sparse_linear_attention", "triton_available", "block_lut", "block_scores", "keep_count",
           "sla_reference", "sla_torch"]
