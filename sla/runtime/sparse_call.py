"""The SLA path of one self-attention call, the part of :meth:`SLARuntime.attend` that runs the sparse kernel.

:func:`sla_call` takes q, k, v as [B, L, H*D] tensors of one shape (fp16, bf16 or fp32, as routed by
:meth:`SLARuntime._route`), looks up the block's proj_l ([D, D] weight, [D] bias, :mod:`.weights`), picks the
backend (Triton kernel or exact PyTorch path), calls :func:`sla.functional.sparse_linear_attention` on the
[B, L, H, D] views at the runtime's keep ratio for this step, and records the keep fraction, backend and block
kind in the run's counters. It runs inside the custom op (:mod:`.ops`), never in traced code.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..functional import sparse_linear_attention
from ..spec import KERNEL_HEAD_DIMS, keep_count, num_blocks
from .log import log_once
from .stats import R_PROJ
from .weights import get_proj_l, has_weights, proj_l_is_zero

if TYPE_CHECKING:
    from .runtime import SLARuntime


def sla_call(rt: SLARuntime, q, k, v, heads, block):
    """Run SLA on [B, L, H*D] q, k, v; returns [B, L, H*D] in q's dtype, or None with a dense reason."""
    s = rt.settings
    b, length, hd = q.shape
    d = hd // heads
    proj = None
    if has_weights(s.weights_id):
        proj = get_proj_l(s.weights_id, int(block), q.device)
        if proj is not None and proj[0].shape[0] != d:
            log_once(("proj-shape", rt.uid), logging.WARNING,
                     "SLA: proj_l is %dx%d but the model's attention head size is %d: self-attention runs dense",
                     proj[0].shape[0], proj[0].shape[1], d)
            return None, R_PROJ
        if proj is not None and proj_l_is_zero(s.weights_id, int(block)):
            proj = None  # same output, and the kernel skips the linear branch (~7% of its time)
    else:
        log_once(("training-free", rt.uid), logging.INFO,
                 "SLA: this model has no SLA (proj_l) weights, it was not fine-tuned for SLA: running "
                 "training-free block-sparse attention (keep %.2f); raise keep_ratio if quality drops",
                 rt.keep)
    backend = rt.resolve_backend(q)
    if backend == "triton":
        if d not in KERNEL_HEAD_DIMS:
            log_once(("triton-head", rt.uid, d), logging.INFO,
                     "SLA: the Triton kernel takes head sizes %s, this model has %d: using the PyTorch path",
                     KERNEL_HEAD_DIMS, d)
            backend = "torch"
    q4, k4, v4 = (t.unflatten(-1, (heads, d)) for t in (q, k, v))
    keep_ratio = rt.keep  # keep_ratio, or the keep_schedule's value at this step (set per model call)
    out = sparse_linear_attention(q4, k4, v4, keep_ratio,
                                  None if proj is None else proj[0], None if proj is None else proj[1],
                                  feature_map=s.feature_map, block_q=s.block_q, block_k=s.block_k,
                                  backend=backend)
    st = rt.stats
    nk = num_blocks(length, s.block_k)
    st.last_keep = keep_count(nk, keep_ratio) / nk
    st.keep_sum += st.last_keep
    if rt.track_steps:
        st.note_step_keep(rt.step, st.last_keep)
    st.backends[backend] += 1
    if block is not None:
        (st.linear_blocks if proj is not None else st.sparse_only_blocks).add(int(block))
    return out.reshape(b, length, hd), None

