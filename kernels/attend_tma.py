"""The main SLA kernel with its key blocks read through the tensor-memory accelerator (Hopper and newer, 16-bit
inputs already in the compute dtype, D=128, block_q=128). Same math as :func:`.attend._sla_fwd_kernel`; the
launcher picks one of the two (``launch.main_config``)."""
from __future__ import annotations

import triton
import triton.language as tl

from .attend import _add_linear, _attend2, _attend_rest, _load_kv, _loop_start, _phi, _tile_ptrs


@triton.jit
def _sla_fwd_tma_kernel(Q, K, V, O, LUT, KV, KS, BIAS, DK, DV, DQ, DKVS,
                        stride_qb, stride_ql, stride_qh,
                        stride_kb, stride_kl, stride_kh,
                        stride_vb, stride_vl, stride_vh,
                        stride_ob, stride_ol, stride_oh,
                        H, L, NQ, KEEP, qk_scale,
                        TAIL_IN_LUT: tl.constexpr, Q_TMA: tl.constexpr, KV_EARLY: tl.constexpr,
                        BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                        FMAP: tl.constexpr, HAS_PROJ: tl.constexpr, HAS_BIAS: tl.constexpr, CDT: tl.constexpr):
    """Grid (NQ, B * H). Arguments as :func:`.attend._sla_fwd_kernel`, plus host-side descriptors: DK, DV over
    k, v (B, L, H, D) with block [1, BLOCK_K, 1, D] (the unmasked key blocks, two per iteration; an odd leftover
    and the tail go through K, V pointers). Q_TMA: the query tile from DQ (block [1, BLOCK_Q, 1, D]; rows past L
    come back as zeros), else DQ is None. KV_EARLY: the folded summary from DKVS, a 2-D descriptor over KV viewed
    as (B * H * D, D), requested before the key loop so its latency hides behind it, else DKVS is None.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    row_ok = pid_m * BLOCK_Q + tl.arange(0, BLOCK_Q) < L
    if Q_TMA:
        q = DQ.load([b, pid_m * BLOCK_Q, h, 0]).reshape(BLOCK_Q, HEAD_D)
    else:
        q = tl.load(_tile_ptrs(Q, b, h, pid_m, stride_qb, stride_ql, stride_qh, BLOCK_Q, HEAD_D),
                    mask=row_ok[:, None], other=0.0).to(CDT)
    if KV_EARLY:
        kv_early = DKVS.load([pid_bh * HEAD_D, 0])
    # Output pointers formed before the key loop (docs/KERNEL_NOTES.md#tma-kernel-instruction-counts).
    o_ptrs = _tile_ptrs(O, b, h, pid_m, stride_ob, stride_ol, stride_oh, BLOCK_Q, HEAD_D)
    k_base, v_base, m_i, l_i, acc, lut_row, n_plain, kt_tile, v_tile = _loop_start(
        K, V, LUT, b, h, pid_bh, pid_m, NQ, KEEP, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
        TAIL_IN_LUT, BLOCK_Q, BLOCK_K, HEAD_D)
    for jj in tl.range(0, n_plain // 2):
        r1 = tl.load(lut_row + 2 * jj).to(tl.int32) * BLOCK_K
        r2 = tl.load(lut_row + 2 * jj + 1).to(tl.int32) * BLOCK_K
        k1 = DK.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
        v1 = DV.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
        k2 = DK.load([b, r2, h, 0]).reshape(BLOCK_K, HEAD_D)
        v2 = DV.load([b, r2, h, 0]).reshape(BLOCK_K, HEAD_D)
        acc, m_i, l_i = _attend2(acc, m_i, l_i, q, k1, v1, k2, v2, qk_scale, CDT)
    acc, m_i, l_i = _attend_rest(acc, m_i, l_i, q, k_base, v_base, kt_tile, v_tile, lut_row, (n_plain // 2) * 2,
                                 n_plain, KEEP, L, stride_kl, stride_vl, qk_scale, TAIL_IN_LUT, BLOCK_K, CDT)
    out = acc / l_i[:, None]
    if HAS_PROJ:
        fq = _phi(q.to(tl.float32), FMAP, 1)
        if KV_EARLY:
            kv = kv_early
        else:
            kv = _load_kv(KV, pid_bh, HEAD_D)
        out = _add_linear(out, fq, kv, KS, BIAS, pid_bh, HAS_BIAS, HEAD_D, CDT)
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
