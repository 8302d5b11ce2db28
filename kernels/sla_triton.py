"""Triton kernels of the SLA forward (thu-ml/SLA ``main`` semantics, and the ``sla1`` variant).

Two launches plus a few tiny PyTorch ops, no host synchronisation:

1. ``_prepass_kernel`` reads q, k and v once, in the caller's (B, L, H, D) layout through strides, and writes
   only small per-(batch, head) summaries:
     * fp32 block sums of q (B, H, Nq, D) and of k (B, H, Nk, D) for the block mask (the sequence mean of k,
       which smooth-k subtracts, is the sum of k's block sums over L);
     * the linear-branch summaries phi(K)^T V (B, H, D, D) and sum_n phi(K_n) (B, H, D), accumulated in fp32
       with atomics (no per-chunk partials in GPU memory).
2. PyTorch on the tiny block tensors: means, scores (B, H, Nq, Nk), per-row top-k, sorted -> LUT (B, H, Nq, keep).
3. ``_sla_fwd_kernel``: one program per query tile; online softmax over the LUT's key blocks (exp2, the D^-0.5
   scale folded into the exponent), then phi(q) @ KV / (eps + phi(q) . ksum), then proj_l (x @ W^T + b), all
   in registers, summed and written once in the caller's layout.

Layout: q, k, v are (B, L, H, D) views with a unit stride on D (ComfyUI's [B, L, H*D] viewed as (B, L, H, D));
the output is a fresh contiguous (B, L, H, D) tensor (== [B, L, H*D]).
"""
from __future__ import annotations

import triton
import triton.language as tl

LINEAR_EPS = 1e-5
LOG2E = 1.4426950408889634

FMAP_SOFTMAX, FMAP_ELU, FMAP_RELU = 0, 1, 2
FMAP_CODES = {"softmax": FMAP_SOFTMAX, "elu": FMAP_ELU, "relu": FMAP_RELU}


@triton.jit
def _phi(x, FMAP: tl.constexpr, AXIS: tl.constexpr):
    """Feature map on fp32 ``x`` along the head axis ``AXIS``: softmax / elu(x) + 1 / relu."""
    if FMAP == 0:
        e = tl.exp2((x - tl.expand_dims(tl.max(x, AXIS), AXIS)) * 1.4426950408889634)
        return e / tl.expand_dims(tl.sum(e, AXIS), AXIS)
    elif FMAP == 1:
        return tl.where(x > 0, x + 1.0, tl.exp2(x * 1.4426950408889634))
    else:
        return tl.maximum(x, 0.0)


@triton.jit
def _prepass_kernel(Q, K, V, QSUM, KSUM_BLK, KV, KS,
                    stride_qb, stride_ql, stride_qh,
                    stride_kb, stride_kl, stride_kh,
                    stride_vb, stride_vl, stride_vh,
                    H, L, NQ, NK, CHUNK_Q, CHUNK_K,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                    FMAP: tl.constexpr, CDT: tl.constexpr):
    """One program = CHUNK_K key blocks (and CHUNK_Q query blocks, the same tokens) of one (b, h).

    QSUM (B, H, NQ, D), KSUM_BLK (B, H, NK, D): fp32 block sums of the inputs as given (for the mask).
    KV (B, H, D, D) += phi(k)^T v, KS (B, H, D) += sum phi(k): fp32, zero-initialised by the launcher; phi is
    applied to k rounded to the compute dtype, as upstream does.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_d = tl.arange(0, HEAD_D)

    # Query block sums (mask only).
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    offs_bq = tl.arange(0, BLOCK_Q)
    for i in range(0, CHUNK_Q):
        qb = pid_c * CHUNK_Q + i
        if qb < NQ:
            rows = qb * BLOCK_Q + offs_bq
            q = tl.load(q_base + rows[:, None].to(tl.int64) * stride_ql + offs_d[None, :],
                        mask=(rows < L)[:, None], other=0.0)
            tl.store(QSUM + ((pid_bh * NQ + qb) * HEAD_D + offs_d), tl.sum(q.to(tl.float32), 0))

    # Key block sums + linear summaries.
    k_base = K + b.to(tl.int64) * stride_kb + h * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh
    offs_bk = tl.arange(0, BLOCK_K)
    kv = tl.zeros([HEAD_D, HEAD_D], dtype=tl.float32)
    ks = tl.zeros([HEAD_D], dtype=tl.float32)
    for i in range(0, CHUNK_K):
        kb = pid_c * CHUNK_K + i
        if kb < NK:
            rows = kb * BLOCK_K + offs_bk
            valid = rows < L
            k = tl.load(k_base + rows[:, None].to(tl.int64) * stride_kl + offs_d[None, :],
                        mask=valid[:, None], other=0.0)
            v = tl.load(v_base + rows[:, None].to(tl.int64) * stride_vl + offs_d[None, :],
                        mask=valid[:, None], other=0.0)
            tl.store(KSUM_BLK + ((pid_bh * NK + kb) * HEAD_D + offs_d), tl.sum(k.to(tl.float32), 0))
            fk = _phi(k.to(CDT).to(tl.float32), FMAP, 1)
            fk = tl.where(valid[:, None], fk, 0.0)          # padded keys contribute nothing
            ks += tl.sum(fk, 0)
            kv = tl.dot(tl.trans(fk.to(CDT)), v.to(CDT), kv,
                        input_precision="ieee" if CDT == tl.float32 else None)
    offs_dd = offs_d[:, None] * HEAD_D + offs_d[None, :]
    tl.atomic_add(KV + pid_bh * HEAD_D * HEAD_D + offs_dd, kv, sem="relaxed")
    tl.atomic_add(KS + pid_bh * HEAD_D + offs_d, ks, sem="relaxed")


@triton.jit
def _attend_block(acc, m_i, l_i, kv_kept, ks_kept, q, k_base, v_base, stride_kl, stride_vl, kblk, L, qk_scale,
                  BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr, MASK_TAIL: tl.constexpr, SLA1: tl.constexpr,
                  FMAP: tl.constexpr, CDT: tl.constexpr):
    """One key block of the online softmax (and, for sla1, of the kept blocks' linear summaries)."""
    offs_d = tl.arange(0, HEAD_D)
    rows = kblk * BLOCK_K + tl.arange(0, BLOCK_K)
    kt_ptrs = k_base + offs_d[:, None] + rows[None, :].to(tl.int64) * stride_kl      # k^T: (D, BLOCK_K)
    v_ptrs = v_base + rows[:, None].to(tl.int64) * stride_vl + offs_d[None, :]       # v: (BLOCK_K, D)
    if MASK_TAIL:
        valid = rows < L
        kt = tl.load(kt_ptrs, mask=valid[None, :], other=0.0).to(CDT)
        v = tl.load(v_ptrs, mask=valid[:, None], other=0.0).to(CDT)
    else:
        kt = tl.load(kt_ptrs).to(CDT)
        v = tl.load(v_ptrs).to(CDT)
    qk = tl.dot(q, kt, input_precision="ieee" if CDT == tl.float32 else None)
    if MASK_TAIL:
        qk = tl.where(valid[None, :], qk, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.exp2(qk * qk_scale - m_ij[:, None])
    alpha = tl.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(CDT), v, acc, input_precision="ieee" if CDT == tl.float32 else None)
    if SLA1:
        fkt = _phi(kt.to(tl.float32), FMAP, 0)            # head axis is 0 in k^T
        if MASK_TAIL:
            fkt = tl.where(valid[None, :], fkt, 0.0)
        ks_kept += tl.sum(fkt, 1)
        kv_kept = tl.dot(fkt.to(CDT), v, kv_kept, input_precision="ieee" if CDT == tl.float32 else None)
    return acc, m_ij, l_i, kv_kept, ks_kept


@triton.jit
def _sla_fwd_kernel(Q, K, V, O, LUT, KV, KS, W, BIAS,
                    stride_qb, stride_ql, stride_qh,
                    stride_kb, stride_kl, stride_kh,
                    stride_vb, stride_vl, stride_vh,
                    stride_ob, stride_ol, stride_oh,
                    H, L, NQ, KEEP, qk_scale,
                    TAIL_IN_LUT: tl.constexpr, ALL_KEPT: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                    FMAP: tl.constexpr, SLA1: tl.constexpr, HAS_PROJ: tl.constexpr, HAS_BIAS: tl.constexpr,
                    CDT: tl.constexpr):
    """One program = one query tile of BLOCK_Q tokens of one (b, h).

    LUT (B, H, NQ, KEEP) int32, each row sorted ascending, so only its last entry can be the partial tail
    block (TAIL_IN_LUT says the sequence has one). KV (B, H, D, D) / KS (B, H, D): fp32 linear summaries over all
    keys. W (D, D): proj_l weight in the compute dtype (applied as x @ W^T), BIAS (D,) fp32.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    prec: tl.constexpr = "ieee" if CDT == tl.float32 else None

    offs_m = pid_m * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = offs_m < L
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_ql \
        + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0).to(CDT)
    k_base = K + b.to(tl.int64) * stride_kb + h * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh

    # Sparse branch: online softmax in base 2 (scale * log2(e) folded into qk_scale).
    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, HEAD_D], dtype=tl.float32)
    kv_kept = tl.zeros([HEAD_D, HEAD_D], dtype=tl.float32)
    ks_kept = tl.zeros([HEAD_D], dtype=tl.float32)
    lut_row = LUT + (pid_bh * NQ + pid_m) * KEEP
    n_full = KEEP
    if TAIL_IN_LUT:
        n_full -= 1
    for j in range(0, n_full):
        kblk = tl.load(lut_row + j)
        acc, m_i, l_i, kv_kept, ks_kept = _attend_block(
            acc, m_i, l_i, kv_kept, ks_kept, q, k_base, v_base, stride_kl, stride_vl, kblk, L, qk_scale,
            BLOCK_K, HEAD_D, False, SLA1, FMAP, CDT)
    if TAIL_IN_LUT:
        # Only the last (largest) entry can be the partial block; mask keys past L there alone.
        kblk = tl.load(lut_row + KEEP - 1)
        acc, m_i, l_i, kv_kept, ks_kept = _attend_block(
            acc, m_i, l_i, kv_kept, ks_kept, q, k_base, v_base, stride_kl, stride_vl, kblk, L, qk_scale,
            BLOCK_K, HEAD_D, True, SLA1, FMAP, CDT)
    out = acc / l_i[:, None]

    if HAS_PROJ:
        # Linear branch, from the per-(b, h) summaries; phi on the compute-dtype q, as upstream.
        fq = _phi(q.to(tl.float32), FMAP, 1)
        offs_dd = offs_d[:, None] * HEAD_D + offs_d[None, :]
        kv = tl.load(KV + pid_bh * HEAD_D * HEAD_D + offs_dd)
        ks = tl.load(KS + pid_bh * HEAD_D + offs_d)
        if SLA1:
            # Linear term over the blocks NOT kept: total minus kept, both summed in fp32 from the same
            # rounded per-block products, so they cancel where every block is kept.
            kv = kv - kv_kept
            ks = ks - ks_kept
        num = tl.dot(fq.to(CDT), kv.to(CDT), input_precision=prec)
        den = tl.sum(fq * ks[None, :], 1)
        if SLA1:
            if ALL_KEPT:
                o_l = tl.zeros([BLOCK_Q, HEAD_D], dtype=tl.float32)
            else:
                ok = den > 0
                o_l = tl.where(ok[:, None], num / tl.where(ok, den, 1.0)[:, None], 0.0)
        else:
            o_l = num / (1e-5 + den)[:, None]
        # proj_l: o_l @ W^T (+ bias), W^T read through swapped strides.
        wt = tl.load(W + offs_d[:, None] + offs_d[None, :] * HEAD_D)
        out = tl.dot(o_l.to(CDT), wt, out, input_precision=prec)
        if HAS_BIAS:
            out += tl.load(BIAS + offs_d)[None, :]

    o_ptrs = O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_ol \
        + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
