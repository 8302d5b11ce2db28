"""The block mask: scores of query-block means against smooth-k key-block means, and per row the ``keep`` largest
as ascending column indices (the LUT the main kernel walks)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _topk_kernel(S, LUT, NK, KEEP, NK_PAD: tl.constexpr):
    """One row of the block scores S (R, NK) fp32 per program: its KEEP largest, as ascending int32 column
    indices into LUT (R, KEEP).

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
    tl.store(LUT + row * KEEP + pos, cols, mask=sel)


def topk_num_warps(nk_pad: int) -> int:
    """4 warps per row, 8 past 2048 padded columns (docs/KERNEL_NOTES.md#where-the-remaining-time-goes-shape-a-5-111-ms)."""
    return 4 if nk_pad <= 2048 else 8


def lut_from_means(qmean, kmean, ktot, length: int, keep: int) -> torch.Tensor:
    """Block LUT (B, H, Nq, keep) int32, rows ascending, from the pre-pass means (same rule as sla.mask).

    scores = qmean @ (kmean - mean_L(k))^T (smooth-k), one batched fp32 matmul; the per-row top-k and its sorted
    indices come from one Triton kernel (radix select + prefix-sum compaction).
    """
    b, h, nq, _ = qmean.shape
    nk = kmean.shape[2]
    if keep == nk:
        return torch.arange(nk, device=qmean.device, dtype=torch.int32).expand(b, h, nq, nk).contiguous()
    kc = kmean - (ktot / length).unsqueeze(2)
    scores = torch.matmul(qmean, kc.transpose(-1, -2))             # (B, H, Nq, Nk) fp32, contiguous
    lut = torch.empty(b, h, nq, keep, device=qmean.device, dtype=torch.int32)
    nk_pad = triton.next_power_of_2(nk)
    _topk_kernel[(b * h * nq,)](scores, lut, nk, keep, NK_PAD=nk_pad, num_warps=topk_num_warps(nk_pad))
    return lut
