"""Triton kernels of the W8A8 linear layer (int8 weights with 128x128 tile scales, int8 activations).

Math (what :func:`sla.quant.w8a8_emulated` reproduces in PyTorch)::

    out[m, n] = bias[n] + sum_t  a_scale[m, t] * w_scale[n // 128, t'] * sum_{k in step t} a_q[m, k] * w_q[n, k]

The inner sum is an int8 x int8 tensor-core dot with an int32 accumulator over one K step (<= 128 wide, so it
never overflows: 128 * 127 * 127 < 2^31); the scales are applied per step in fp32, because the weight scale changes
every 128 columns of K. Activation quantisation is symmetric, per token and per group of K columns, scale =
amax / 127, rounding half away from zero.
"""
from __future__ import annotations

import triton
import triton.language as tl

TILE = 128  # weight scale tile (TurboDiffusion's -quant files) and activation group of the pre-pass


@triton.jit
def _group_scale(amax):
    """amax [BLOCK_M] fp32 -> (127 / amax or 0 for an all-zero group, amax / 127), both correctly rounded: fp32 `/`
    lowers to an approximate division on NVIDIA GPUs, which would move codes near a .5 tie off the emulation's."""
    inv = tl.where(amax > 0, tl.math.div_rn(tl.zeros_like(amax) + 127.0, tl.where(amax > 0, amax, 1.0)), 0.0)
    return inv, tl.math.div_rn(amax, tl.zeros_like(amax) + 127.0)


@triton.jit
def _round_to_int8(v):
    # Half away from zero, then saturate: the same rule as the PyTorch emulation (no libdevice in the interpreter).
    r = (v + tl.where(v >= 0, 0.5, -0.5)).to(tl.int32)
    return tl.minimum(tl.maximum(r, -127), 127).to(tl.int8)


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, KT,
                      BLOCK_M: tl.constexpr, GROUP: tl.constexpr):
    """x [M, K] float (unit stride on K) -> q [M, K] int8, s [M, KT] fp32 (one scale per row and GROUP columns).

    Grid: (cdiv(M, BLOCK_M), KT)."""
    pid_m = tl.program_id(0)
    g = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = g * GROUP + tl.arange(0, GROUP)
    mask = (rm[:, None] < M) & (rk[None, :] < K)
    x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :], mask=mask, other=0.0).to(tl.float32)
    inv, scale = _group_scale(tl.max(tl.abs(x), axis=1))  # an all-zero group: zeros with scale 0
    q = _round_to_int8(x * inv[:, None])
    tl.store(q_ptr + rm[:, None].to(tl.int64) * K + rk[None, :], q, mask=mask)
    tl.store(s_ptr + rm.to(tl.int64) * KT + g, scale, mask=rm < M)


@triton.jit
def _w8a8_gemm_kernel(a_ptr, as_ptr, w_ptr, ws_ptr, bias_ptr, c_ptr,
                      M, N, K, stride_am, stride_cm, KT,
                      HAS_BIAS: tl.constexpr, QUANT_A: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    """C [M, N] = W8A8(A, W) (+ bias), fp32 accumulation across K steps, stored in C's dtype.

    A: QUANT_A=False: int8 [M, K] with as_ptr fp32 [M, KT] (from :func:`_act_quant_kernel`, groups of 128);
       QUANT_A=True: float [M, K], quantised here per row and BLOCK_K columns (no pre-pass; as_ptr unused).
    W: int8 [N, K] contiguous; ws_ptr fp32 [ceil(N/128), KT] tile scales (KT = ceil(K/128)).
    bias: [N] (any float dtype) when HAS_BIAS. BLOCK_K must divide 128 so that one step lies in one scale tile.
    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),), grouped GROUP_M row-tiles at a time for L2 reuse of W.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < N
    a_rows = a_ptr + rm[:, None].to(tl.int64) * stride_am
    w_cols = w_ptr + rn[None, :].to(tl.int64) * K
    ws_rows = ws_ptr + (rn // 128) * KT

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        k_ok = kk < K
        a = tl.load(a_rows + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0)
        if QUANT_A:
            af = a.to(tl.float32)
            inv, a_s = _group_scale(tl.max(tl.abs(af), axis=1))
            a_q = _round_to_int8(af * inv[:, None])
        else:
            a_q = a
            a_s = tl.load(as_ptr + rm.to(tl.int64) * KT + k0 // 128, mask=m_ok, other=0.0)
        w = tl.load(w_cols + kk[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0)  # [BLOCK_K, BLOCK_N]
        w_s = tl.load(ws_rows + k0 // 128, mask=n_ok, other=0.0)
        part = tl.dot(a_q, w, out_dtype=tl.int32)
        acc += part.to(tl.float32) * a_s[:, None] * w_s[None, :]

    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    c = acc.to(c_ptr.dtype.element_ty)
    tl.store(c_ptr + rm[:, None].to(tl.int64) * stride_cm + rn[None, :], c, mask=m_ok[:, None] & n_ok[None, :])
