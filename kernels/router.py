"""The block-mask phase of one SLA call, over groups of heads: pre-pass, block scores and top-k for a few heads at a
time, so that of the mask's intermediates only the LUT outlives its group.

The fp32 block means (q: Nq x D, k: Nk x D per head), the smooth-k means and the block scores (Nq x Nk per head)
of all heads at once would be 16-58% of q's bytes at MiniMax H3's shapes. Groups are as large as a target for the
phase's peak allows (the LUT plus one group's intermediates: MASK_SHARE_OF_Q of q's bytes), because each group
costs a few launches (docs/KERNEL_NOTES.md#workspace). Every quantity is per (batch, head), so the grouping
changes no result beyond the low bits of sum(k) (its partial-sum chunking follows the group's size), and it is a
function of the shape and the GPU only: the same inputs give the same LUT, run after run.
"""
from __future__ import annotations

import torch
import triton

from ..sla.spec import lut_width
from .prepass import prepass
from .topk import lut_dtype, lut_from_means

# The mask phase's peak (the LUT plus one group's intermediates) aims at this share of q's bytes; a group may
# always take MASK_MIN_BYTES (small calls stay one group: their workspace is the pre-pass's partial sums anyway).
MASK_SHARE_OF_Q = 0.08
MASK_MIN_BYTES = 32 << 20


def mask_bytes_per_head(nq: int, nk: int, d: int) -> int:
    """fp32 bytes of one (batch, head)'s mask intermediates: q and k block means, smooth-k means, block scores."""
    return 4 * (nq * d + 2 * nk * d + nq * nk)


def mask_budget(q_bytes: int, lut_bytes: int) -> int:
    """Bytes one group's mask intermediates may take beside a LUT of ``lut_bytes`` for a q of ``q_bytes``."""
    return max(MASK_MIN_BYTES, int(q_bytes * MASK_SHARE_OF_Q) - lut_bytes)


def head_groups(b: int, h: int, per_head: int, budget: int | None) -> list[tuple[int, int, int, int]]:
    """(b0, b1, h0, h1) slices covering (B, H): whole batches of all heads when they fit ``budget``, else one batch
    element and a range of its heads (at least one). Either slice of a contiguous (B, H, ...) tensor is contiguous."""
    if budget is None or b * h * per_head <= budget:
        return [(0, b, 0, h)]
    if h * per_head <= budget:
        step = budget // (h * per_head)
        return [(b0, min(b, b0 + step), 0, h) for b0 in range(0, b, step)]
    step = max(1, budget // per_head)
    return [(bi, bi + 1, h0, min(h, h0 + step)) for bi in range(b) for h0 in range(0, h, step)]


def block_lut(q, k, v, block_q: int, block_k: int, feature_map: str, cdt: torch.dtype, keep: int,
              prefix_blocks: int = 0, linear: bool = True, prepass_config: dict | None = None,
              budget: int | None = -1):
    """LUT (B, H, Nq, W) of ``topk.lut_dtype`` (rows ascending, W = ``sla.spec.lut_width``) of (B, L, H, D) views
    q, k, v, and, when ``linear``, the linear summaries kv (B, H, D, D) and ks (B, H, D) fp32 (else None, None).

    ``budget``: bytes of one group's mask intermediates; -1 = :func:`mask_budget`, None = all heads at once.
    """
    b, length, h, d = q.shape
    nq, nk = triton.cdiv(length, block_q), triton.cdiv(length, block_k)
    lut = torch.empty(b, h, nq, lut_width(nk, keep, prefix_blocks), device=q.device, dtype=lut_dtype(nk))
    if budget == -1:
        budget = mask_budget(q.numel() * q.element_size(), lut.numel() * lut.element_size())
    groups = head_groups(b, h, mask_bytes_per_head(nq, nk, d), budget)
    if len(groups) == 1:
        qmean, kmean, kv, ks, ktot = prepass(q, k, v, block_q, block_k, feature_map, cdt, prepass_config,
                                             linear=linear)
        return lut_from_means(qmean, kmean, ktot, length, keep, prefix_blocks, out=lut), kv, ks
    kv = torch.empty(b, h, d, d, device=q.device, dtype=torch.float32) if linear else None
    ks = torch.empty(b, h, d, device=q.device, dtype=torch.float32) if linear else None
    for b0, b1, h0, h1 in groups:
        part = (slice(b0, b1), slice(None), slice(h0, h1))   # the group's (B, L, H, D) views
        qmean, kmean, gkv, gks, ktot = prepass(q[part], k[part], v[part], block_q, block_k, feature_map, cdt,
                                               prepass_config, linear=linear)
        lut_from_means(qmean, kmean, ktot, length, keep, prefix_blocks, out=lut[b0:b1, h0:h1])
        if linear:
            kv[b0:b1, h0:h1] = gkv
            ks[b0:b1, h0:h1] = gks
        del qmean, kmean, gkv, gks, ktot   # free before the next group's
    return lut, kv, ks
