"""Whether one self-attention call runs SLA, and if not why: :func:`route`, the one routing rule.

Run time only (eagerly in the override, or inside the custom op under ``torch.compile``): it reads the settings,
the run's sigma window and failures, which change between calls and must never be read in traced code.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import torch

from ..spec import head_dim_supported
from .log import log_once
from .run import shape_key
from .stats import R_DENSE_BLOCK, R_DEVICE, R_DISABLED, R_ERROR, R_HEAD, R_NO_INDEX, R_SHORT, R_WINDOW

if TYPE_CHECKING:
    from .run import RunState
    from .sla_patch import SLAPatch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_DEVICES = ("cuda", "cpu", "mps", "xpu")


def route(patch: "SLAPatch", run: "RunState", q4: torch.Tensor, block: Optional[int],
          sigmas: Optional[torch.Tensor]) -> Optional[str]:
    """None when this call ((B, L, H, D) view ``q4``, block index or None) runs SLA, else the dense reason."""
    s = patch.settings
    if not s.enabled:
        return R_DISABLED
    if not head_dim_supported(q4.shape[-1]):
        return R_HEAD
    if q4.shape[1] < s.min_tokens:
        return R_SHORT
    if block is not None and block in s.dense_blocks:
        return R_DENSE_BLOCK
    if not run.in_window(sigmas):
        return R_WINDOW
    if block is None and (s.dense_blocks or patch.weights is not None):
        # Without the index we can neither honour dense_blocks nor pick the block's proj_l.
        log_once(("no-index", patch.uid), logging.WARNING,
                 "SLA: transformer_options has no block_index (the block-index patch did not run): "
                 "self-attention runs dense")
        return R_NO_INDEX
    if shape_key(q4) in run.failed:
        return R_ERROR
    if q4.dtype not in SUPPORTED_DTYPES or q4.device.type not in SUPPORTED_DEVICES:
        log_once(("device", patch.uid, str(q4.device), q4.dtype), logging.WARNING,
                 "SLA: unsupported device/dtype %s/%s: attention runs dense for these calls", q4.device, q4.dtype)
        return R_DEVICE
    return None
