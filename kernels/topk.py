"""The block mask: scores of query-block means against smooth-k key-block means, and per row the ``keep`` largest
as ascending column indices (the LUT the main kernel walks)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sla.spec import lut_width


@triton.jit
def _topk_kernel(S, LUT, NK, KEEP, NK_PAD: tl.constexpr):
    """One row of the block scores S (R, NK) fp32 per program: its KEEP largest, as ascending column indices
    into LUT (R, KEEP) (int16 or int32).

    Radix select on order-preserving integer keys (no sort): find the KEEP-th largest key bit by bit, take
    every key above it plus the first ties, and compact their column indices in order with a prefix sum.
    """
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, NK_PAD)
    ok = cols < NK
    x = tl.load(S + row * NK + cols, mask=ok, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    # Order-preserving map float -> signed int: flip the magnitude bits of negatives.
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = tl.where(ok, key, -2147483647 - 1)            # padding sorts below every real score
    # Largest t with count(key >= t) >= KEEP, built from the sign bit down (two's complement, so the search
    # starts at INT_MIN and sets bits from 30 to 0 after deciding the sign).
    n_nonneg = tl.sum((key >= 0).to(tl.int32), 0)
    t = tl.where(n_nonneg >= KEEP, 0, -2147483647 - 1)
    for i in tl.static_range(31):
        cand = t | (1 << (30 - i))
        cnt = tl.sum((key >= cand).to(tl.int32), 0)
        t = tl.where(cnt >= KEEP, cand, t)
    above = key > t
    n_above = tl.sum(above.to(tl.int32), 0)
    tie = key == t
    tie_rank = tl.cumsum(tie.to(tl.int32), 0)           # 1-based rank among the ties, in column order
    sel = (above | (tie & (tie_rank <= KEEP - n_above))) & ok
    pos = tl.cumsum(sel.to(tl.int32), 0) - 1
    tl.store(LUT + row * KEEP + pos, cols.to(LUT.dtype.element_ty), mask=sel)


def topk_num_warps(nk_pad: int) -> int:
    """4 warps per row, 8 past 2048 padded columns (docs/KERNEL_NOTES.md#where-the-remaining-time-goes-shape-a-5-111-ms)."""
    return 4 if nk_pad <= 2048 else 8


def lut_dtype(n_kblocks: int) -> torch.dtype:
    """The LUT's index type: int16 while block indices fit (up to 2M tokens at 64-token blocks; half the bytes of
    the one mask intermediate that lives through the main kernel), else int32."""
    return torch.int16 if n_kblocks <= torch.iinfo(torch.int16).max else torch.int32


def lut_from_means(qmean, kmean, ktot, length: int, keep: int, prefix_blocks: int = 0,
                   budget: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Block LUT (B, H, Nq, W) of :func:`lut_dtype`, rows ascending, from the pre-pass means (same rule as
    sla.mask).

    W = ``sla.spec.lut_width``: the first ``prefix_blocks`` key blocks (every query attends them) plus the
    ``keep`` top-scoring blocks among the others. scores = qmean @ (kmean - mean_L(k))^T (smooth-k), fp32
    batched matmuls over groups of whole heads of at most ``budget`` bytes of scores (None: all heads at once; the
    grouping depends on the shape only, so the result does not); the per-row top-k and its sorted indices come
    from one Triton kernel per group (radix select + prefix-sum compaction). ``out``: a contiguous (B, H, Nq, W)
    tensor of :func:`lut_dtype` to write the LUT into (returned).
    """
    b, h, nq, d = qmean.shape
    nk = kmean.shape[2]
    width = lut_width(nk, keep, prefix_blocks)
    dtype = lut_dtype(nk)
    if out is not None and (out.shape != (b, h, nq, width) or out.dtype != dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous ({b}, {h}, {nq}, {width}) {dtype} tensor, got "
                         f"{tuple(out.shape)} {out.dtype}")
    lut = torch.empty(b, h, nq, width, device=qmean.device, dtype=dtype) if out is None else out
    if width == nk:
        return lut.copy_(torch.arange(nk, device=qmean.device, dtype=dtype).expand(b, h, nq, nk))
    bh = b * h
    qm, km = qmean.reshape(bh, nq, d), kmean.reshape(bh, nk, d)
    kbar = (ktot / length).reshape(bh, 1, d)
    lut_rows = lut.view(bh, nq, width)
    per_head = (nq + d) * nk * 4                                   # scores + smooth-k means of one head, fp32
    group = bh if budget is None else max(1, min(bh, budget // per_head))
    nk_pad = triton.next_power_of_2(nk)
    for g in range(0, bh, group):
        e = min(bh, g + group)
        scores = torch.matmul(qm[g:e], (km[g:e] - kbar[g:e]).transpose(-1, -2))   # (G, Nq, Nk) fp32, contiguous
        if prefix_blocks:
            scores[..., :prefix_blocks] = float("inf")              # taken first; the top-k runs over the rest
        _topk_kernel[((e - g) * nq,)](scores, lut_rows[g:e], nk, width, NK_PAD=nk_pad,
                                      num_warps=topk_num_warps(nk_pad))
    return lut
