"""The main SLA kernel's shared pieces and its pointer-load version (every GPU generation).

One program = one query tile of BLOCK_Q tokens of one (b, h): online softmax in base 2 over the key blocks its
LUT row names (D^-0.5 * log2(e) folded into ``qk_scale``), then the linear branch phi(q) KV / (eps + phi(q) . ks)
from the pre-pass summaries with proj_l already folded into KV, plus the bias, written once in the caller's
(B, L, H, D) layout. The TMA version (:mod:`.attend_tma`) shares every helper here; only its key loop differs.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..sla.spec import LINEAR_EPS

LOG2E = 1.4426950408889634
_EPS = tl.constexpr(LINEAR_EPS)   # a jit function reads only constexpr globals


@triton.jit
def _phi(x, FMAP: tl.constexpr, AXIS: tl.constexpr):
    """Feature map on fp32 ``x`` along the head axis ``AXIS``: softmax / elu(x) + 1 / relu (codes of spec)."""
    if FMAP == 0:
        e = tl.exp2((x - tl.expand_dims(tl.max(x, AXIS), AXIS)) * 1.4426950408889634)
        # One reciprocal per row, then multiplies: a per-element fp32 division costs a MUFU.RCP each.
        return e * tl.expand_dims(1.0 / tl.sum(e, AXIS), AXIS)
    elif FMAP == 1:
        return tl.where(x > 0, x + 1.0, tl.exp2(x * 1.4426950408889634))
    else:
        return tl.maximum(x, 0.0)


@triton.jit
def _tile_ptrs(BASE, b, h, pid_m, stride_b, stride_l, stride_h, BLOCK: tl.constexpr, HEAD_D: tl.constexpr):
    """(BLOCK, HEAD_D) pointers to rows [pid_m * BLOCK, ...) of head h of batch b in a (B, L, H, D) view."""
    return BASE + b.to(tl.int64) * stride_b + h * stride_h + (pid_m * BLOCK).to(tl.int64) * stride_l \
        + (tl.arange(0, BLOCK)[:, None] * stride_l + tl.arange(0, HEAD_D)[None, :])


@triton.jit
def _attend(acc, m_i, l_i, q, kt, v, valid, qk_scale, MASK: tl.constexpr, CDT: tl.constexpr):
    """One key tile of the online softmax: q (BLOCK_Q, D), kt = k^T (D, N), v (N, D) in the compute dtype;
    valid (N,) masks keys past L when MASK. acc (BLOCK_Q, D), m_i and l_i (BLOCK_Q,) fp32."""
    qk = tl.dot(q, kt, input_precision="ieee" if CDT == tl.float32 else None)
    if MASK:
        qk = tl.where(valid[None, :], qk, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.exp2(qk * qk_scale - m_ij[:, None])
    alpha = tl.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(CDT), v, acc, input_precision="ieee" if CDT == tl.float32 else None)
    return acc, m_ij, l_i


@triton.jit
def _attend2(acc, m_i, l_i, q, k1, v1, k2, v2, qk_scale, CDT: tl.constexpr):
    """Two unmasked key blocks (k1, k2, v1, v2: (BLOCK_K, D), 16-bit, from TMA) with one softmax rescale."""
    qk1 = tl.dot(q, tl.trans(k1))
    qk2 = tl.dot(q, tl.trans(k2))
    m_ij = tl.maximum(m_i, tl.maximum(tl.max(qk1, 1), tl.max(qk2, 1)) * qk_scale)
    p1 = tl.exp2(qk1 * qk_scale - m_ij[:, None])
    p2 = tl.exp2(qk2 * qk_scale - m_ij[:, None])
    alpha = tl.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p1, 1) + tl.sum(p2, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p1.to(CDT), v1, acc)
    acc = tl.dot(p2.to(CDT), v2, acc)
    return acc, m_ij, l_i


@triton.jit
def _key_tiles(stride_kl, stride_vl, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr):
    """Offsets inside one key block, int32 (the block's row goes into a scalar base): k^T (D, BLOCK_K), v
    (BLOCK_K, D). Formed before the key loop (docs/KERNEL_NOTES.md#tma-kernel-instruction-counts)."""
    offs_d = tl.arange(0, HEAD_D)
    offs_n = tl.arange(0, BLOCK_K)
    return offs_d[:, None] + offs_n[None, :] * stride_kl, offs_n[:, None] * stride_vl + offs_d[None, :]


@triton.jit
def _attend_rest(acc, m_i, l_i, q, k_base, v_base, kt_tile, v_tile, lut_row, j, n_plain, KEEP, L, stride_kl,
                 stride_vl, qk_scale, TAIL_IN_LUT: tl.constexpr, BLOCK_K: tl.constexpr, CDT: tl.constexpr):
    """LUT entries j..n_plain-1 one block at a time by pointer loads, then the masked partial tail block (only
    the row's last, largest entry can be it: TAIL_IN_LUT). k_base / v_base point at row 0 of this (b, h);
    kt_tile / v_tile from :func:`_key_tiles`."""
    offs_n = tl.arange(0, BLOCK_K)
    ones = tl.full([BLOCK_K], 1, tl.int1)
    for jj in range(j, n_plain):
        row0 = tl.load(lut_row + jj).to(tl.int64) * BLOCK_K
        kt = tl.load(k_base + row0 * stride_kl + kt_tile).to(CDT)
        v = tl.load(v_base + row0 * stride_vl + v_tile).to(CDT)
        acc, m_i, l_i = _attend(acc, m_i, l_i, q, kt, v, ones, qk_scale, False, CDT)
    if TAIL_IN_LUT:
        row0 = tl.load(lut_row + KEEP - 1).to(tl.int32) * BLOCK_K
        valid = row0 + offs_n < L
        kt = tl.load(k_base + row0.to(tl.int64) * stride_kl + kt_tile, mask=valid[None, :], other=0.0).to(CDT)
        v = tl.load(v_base + row0.to(tl.int64) * stride_vl + v_tile, mask=valid[:, None], other=0.0).to(CDT)
        acc, m_i, l_i = _attend(acc, m_i, l_i, q, kt, v, valid, qk_scale, True, CDT)
    return acc, m_i, l_i


@triton.jit
def _loop_start(K, V, LUT, b, h, pid_bh, pid_m, NQ, KEEP, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl,
                stride_vh, TAIL_IN_LUT: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                HEAD_D: tl.constexpr):
    """Key-loop state of one query tile: k / v bases of this (b, h), the online-softmax accumulators, the LUT row,
    how many of its entries need no key masking, and the key-tile offsets."""
    k_base = K + b.to(tl.int64) * stride_kb + h * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh
    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, HEAD_D], dtype=tl.float32)
    lut_row = LUT + (pid_bh * NQ + pid_m) * KEEP
    n_plain = KEEP                    # LUT entries that need no key masking
    if TAIL_IN_LUT:
        n_plain -= 1
    kt_tile, v_tile = _key_tiles(stride_kl, stride_vl, BLOCK_K, HEAD_D)
    return k_base, v_base, m_i, l_i, acc, lut_row, n_plain, kt_tile, v_tile


@triton.jit
def _load_kv(KV, pid_bh, HEAD_D: tl.constexpr):
    """The (D, D) folded summary KV W^T of one (b, h) from KV (B, H, D, D), compute dtype."""
    offs_d = tl.arange(0, HEAD_D)
    return tl.load(KV + pid_bh * HEAD_D * HEAD_D + (offs_d[:, None] * HEAD_D + offs_d[None, :]))


@triton.jit
def _add_linear(out, fq, kv, KS, BIAS, pid_bh, HAS_BIAS: tl.constexpr, HEAD_D: tl.constexpr,
                CDT: tl.constexpr):
    """out + phi(q) (KV W^T) / (eps + phi(q) . ks) + bias: fq = phi(q) fp32 (BLOCK_Q, D), kv (D, D) with proj_l
    folded in (so proj_l costs no extra product), KS (B, H, D) fp32, BIAS (D,) fp32."""
    offs_d = tl.arange(0, HEAD_D)
    ks = tl.load(KS + pid_bh * HEAD_D + offs_d)
    num = tl.dot(fq.to(CDT), kv.to(CDT), input_precision="ieee" if CDT == tl.float32 else None)
    out += num / (tl.sum(fq * ks[None, :], 1) + _EPS)[:, None]   # eps + phi(q) . ks
    if HAS_BIAS:
        out += tl.load(BIAS + offs_d)[None, :]
    return out


@triton.jit
def _sla_fwd_kernel(Q, K, V, O, LUT, KV, KS, BIAS,
                    stride_qb, stride_ql, stride_qh,
                    stride_kb, stride_kl, stride_kh,
                    stride_vb, stride_vl, stride_vh,
                    stride_ob, stride_ol, stride_oh,
                    H, L, NQ, KEEP, qk_scale,
                    TAIL_IN_LUT: tl.constexpr, PAIR: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                    FMAP: tl.constexpr, HAS_PROJ: tl.constexpr, HAS_BIAS: tl.constexpr, CDT: tl.constexpr):
    """Grid (NQ, B * H). Q, K, V, O: (B, L, H, D) views, unit stride on D (O in Q's dtype); any of bf16 / fp16 /
    fp32, cast to the compute dtype CDT in registers. LUT (B, H, NQ, KEEP) int16 (int32 past 32 767 key blocks),
    rows ascending. KV (B, H, D, D) in CDT = phi(K)^T V W^T, KS (B, H, D) fp32 = sum phi(K), BIAS (D,) fp32: read
    only when HAS_PROJ / HAS_BIAS (None otherwise). PAIR: two LUT blocks (one (BLOCK_Q, 2 * BLOCK_K) score tile) per iteration.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    row_ok = pid_m * BLOCK_Q + tl.arange(0, BLOCK_Q) < L
    q = tl.load(_tile_ptrs(Q, b, h, pid_m, stride_qb, stride_ql, stride_qh, BLOCK_Q, HEAD_D),
                mask=row_ok[:, None], other=0.0).to(CDT)
    o_ptrs = _tile_ptrs(O, b, h, pid_m, stride_ob, stride_ol, stride_oh, BLOCK_Q, HEAD_D)
    k_base, v_base, m_i, l_i, acc, lut_row, n_plain, kt_tile, v_tile = _loop_start(
        K, V, LUT, b, h, pid_bh, pid_m, NQ, KEEP, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
        TAIL_IN_LUT, BLOCK_Q, BLOCK_K, HEAD_D)
    j = 0
    if PAIR:
        offs_d = tl.arange(0, HEAD_D)
        offs_n2 = tl.arange(0, 2 * BLOCK_K)
        half = offs_n2 >= BLOCK_K
        n_in = offs_n2 - tl.where(half, BLOCK_K, 0)
        kt_tile2 = offs_d[:, None] + n_in[None, :] * stride_kl
        v_tile2 = n_in[:, None] * stride_vl + offs_d[None, :]
        ones2 = tl.full([2 * BLOCK_K], 1, tl.int1)
        for jj in tl.range(0, n_plain // 2):
            blk_a = tl.load(lut_row + 2 * jj).to(tl.int64) * BLOCK_K
            blk_b = tl.load(lut_row + 2 * jj + 1).to(tl.int64) * BLOCK_K
            row0 = tl.where(half, blk_b, blk_a)
            kt = tl.load(k_base + row0[None, :] * stride_kl + kt_tile2).to(CDT)
            v = tl.load(v_base + row0[:, None] * stride_vl + v_tile2).to(CDT)
            acc, m_i, l_i = _attend(acc, m_i, l_i, q, kt, v, ones2, qk_scale, False, CDT)
        j = (n_plain // 2) * 2
    acc, m_i, l_i = _attend_rest(acc, m_i, l_i, q, k_base, v_base, kt_tile, v_tile, lut_row, j, n_plain, KEEP, L,
                                 stride_kl, stride_vl, qk_scale, TAIL_IN_LUT, BLOCK_K, CDT)
    out = acc / l_i[:, None]
    if HAS_PROJ:
        # phi on the compute-dtype q, as upstream.
        out = _add_linear(out, _phi(q.to(tl.float32), FMAP, 1), _load_kv(KV, pid_bh, HEAD_D), KS, BIAS, pid_bh,
                          HAS_BIAS, HEAD_D, CDT)
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
