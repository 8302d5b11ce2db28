"""The SLA path of one self-attention call: proj_l, backend, the kernel, and the call's keep counters.

:func:`sla_call` takes q, k, v as (B, L, H, D) views (fp16, bf16 or fp32, as routed by :func:`.route.route`),
looks up the block's proj_l (:class:`.weights.ProjLWeights`), picks the backend by the one rule of
:func:`sla.functional.kernel_refusal`, runs :func:`sla.functional.sparse_linear_attention` at the run's keep ratio
for this step, and records the keep fraction, backend and block kind in the run's counters. It runs eagerly or
inside the custom op (:mod:`.ops`), never in traced code.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from ..functional import kernel_refusal, sparse_linear_attention
from ..families.base import exact_prefix
from ..spec import keep_count, lut_width, num_blocks, prefix_blocks
from .log import log_once
from .stats import R_PROJ

if TYPE_CHECKING:
    from .run import RunState
    from .sla_patch import SLAPatch


def pick_backend(patch: "SLAPatch", q4, k4, v4) -> str:
    """'triton' or 'torch' for this call: 'torch' when asked, else the kernel unless :func:`kernel_refusal` finds a
    reason (logged once; a warning when 'triton' was asked for)."""
    s = patch.settings
    if s.backend == "torch":
        return "torch"
    why = kernel_refusal(q4, k4, v4, s.block_q, s.block_k)
    if why is None:
        return "triton"
    log_once(("no-kernel", patch.uid, why), logging.WARNING if s.backend == "triton" else logging.INFO,
             "SLA: the Triton kernel does not take these calls (%s): using the exact PyTorch path, which is slower",
             why)
    return "torch"


def sla_call(patch: "SLAPatch", run: "RunState", q4, k4, v4, block: Optional[int]):
    """SLA on (B, L, H, D) q4, k4, v4; returns ((B, L, H, D) output in q's dtype, None) or (None, dense reason)."""
    s = patch.settings
    d = q4.shape[-1]
    proj = None
    weights = patch.weights
    if weights is not None:
        if weights.head_dim != d:
            log_once(("proj-shape", patch.uid), logging.WARNING,
                     "SLA: proj_l is %dx%d but the model's attention head size is %d: self-attention runs dense",
                     weights.head_dim, weights.head_dim, d)
            return None, R_PROJ
        if not weights.is_zero(block):  # a zero proj_l adds nothing, and the kernel skips the linear branch
            proj = weights.get(block, q4.device)
    elif not patch.family.linear_branch:
        log_once(("sparse-only", patch.uid), logging.INFO,
                 "SLA: %s: block-sparse attention without a linear branch (keep %.2f), as its SLA fine-tunes were "
                 "trained", patch.family.name, run.keep)
    else:
        log_once(("training-free", patch.uid), logging.INFO,
                 "SLA: this model has no SLA (proj_l) weights, it was not fine-tuned for SLA: running "
                 "training-free block-sparse attention (keep %.2f); raise keep_ratio if quality drops", run.keep)
    backend = pick_backend(patch, q4, k4, v4)
    keep_ratio = run.keep  # keep_ratio, or the keep_schedule's value at this step (set per model call)
    prefix = 0
    if s.exact_prefix:
        prefix = exact_prefix(run.segments, q4.shape[1])
        if prefix is None:
            log_once(("no-prefix", patch.uid), logging.INFO,
                     "SLA: exact_prefix is on but this call carries no packed layout of its length (%s): it runs "
                     "without an exact prefix", patch.family.name)
            prefix = 0
    out = sparse_linear_attention(q4, k4, v4, keep_ratio,
                                  None if proj is None else proj[0], None if proj is None else proj[1],
                                  feature_map=s.feature_map, block_q=s.block_q, block_k=s.block_k,
                                  backend=backend, prefix=prefix)
    st = run.stats
    nk = num_blocks(q4.shape[1], s.block_k)
    n_prefix = prefix_blocks(prefix, s.block_k, nk)
    st.last_keep = lut_width(nk, keep_count(nk, keep_ratio), n_prefix) / nk
    st.last_prefix = prefix
    if prefix:
        st.prefix_calls += 1
        st.prefix_blocks = n_prefix
    st.keep_sum += st.last_keep
    if run.track_steps:
        st.note_step_keep(run.step, st.last_keep)
    st.backends[backend] += 1
    if block is not None:
        (st.linear_blocks if proj is not None else st.sparse_only_blocks).add(int(block))
    return out, None
