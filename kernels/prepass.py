"""The SLA pre-pass: one read of q, k and v (in the caller's (B, L, H, D) layout, through strides) that writes only
small per-(batch, head) summaries: fp32 block means of q and k for the block mask, the sum of k (smooth-k), and
the linear branch's phi(K)^T V and sum phi(K), accumulated in fp32 with atomics."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..sla.spec import FEATURE_MAPS
from .attend import _phi
from .stages import launch, tl_dtype

# ~8 programs per SM of 4 warps (latency-bound), column sums on the tensor cores
# (docs/KERNEL_NOTES.md#versions-time--whole-op-at-shape-a-main--the-main-kernel-alone, v4).
PREPASS_DEFAULT = dict(progs_per_sm=8, num_warps=4, num_stages=3, COLSUM_MMA=True)


@triton.jit
def _prepass_keys(K, V, KMEAN, KV, KS, KTOT, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
                  pid_c, pid_bh, b, h, L, NK, CHUNK_K,
                  BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr, FMAP: tl.constexpr, CDT: tl.constexpr,
                  COLSUM_MMA: tl.constexpr):
    """Key blocks [pid_c * CHUNK_K, ...) of one (b, h): their means, and the chunk's share of the summaries.

    The summary is accumulated as its transpose V^T phi(K), so phi(k) enters the product as computed (no
    transpose through shared memory; docs/KERNEL_NOTES.md#design), and is added transposed. COLSUM_MMA: block
    column sums as ones @ x on the tensor cores instead of cross-warp reductions (16-bit inputs only).
    """
    offs_d = tl.arange(0, HEAD_D)
    offs_bk = tl.arange(0, BLOCK_K)
    k_tile = offs_bk[:, None] * stride_kl + offs_d[None, :]
    v_tile = offs_bk[:, None] * stride_vl + offs_d[None, :]
    k_base = K + b.to(tl.int64) * stride_kb + h * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh
    prec: tl.constexpr = "ieee" if CDT == tl.float32 else None
    kvt = tl.zeros([HEAD_D, HEAD_D], dtype=tl.float32)     # (V^T phi(K)): row = v column, column = phi column
    ks = tl.zeros([HEAD_D], dtype=tl.float32)
    kt = tl.zeros([HEAD_D], dtype=tl.float32)
    kb_lo = pid_c * CHUNK_K
    kb_hi = tl.minimum(kb_lo + CHUNK_K, NK)
    for kb in range(kb_lo, kb_hi):
        valid = kb * BLOCK_K + offs_bk < L
        row0 = tl.cast(kb * BLOCK_K, tl.int64)
        k = tl.load(k_base + row0 * stride_kl + k_tile, mask=valid[:, None], other=0.0)
        v = tl.load(v_base + row0 * stride_vl + v_tile, mask=valid[:, None], other=0.0)
        if COLSUM_MMA:
            ksum = tl.max(tl.dot(tl.full([16, BLOCK_K], 1.0, k.dtype), k), 0)
        else:
            ksum = tl.sum(k.to(tl.float32), 0)
        kt += ksum
        cnt = tl.minimum(L - kb * BLOCK_K, BLOCK_K).to(tl.float32)
        tl.store(KMEAN + ((pid_bh * NK + kb) * HEAD_D + offs_d), ksum * (1.0 / cnt))
        fk = _phi(k.to(CDT).to(tl.float32), FMAP, 1)
        fk = tl.where(valid[:, None], fk, 0.0).to(CDT)    # padded keys contribute nothing
        if COLSUM_MMA:
            ks += tl.max(tl.dot(tl.full([16, BLOCK_K], 1.0, CDT), fk), 0)
        else:
            ks += tl.sum(fk.to(tl.float32), 0)
        kvt = tl.dot(tl.trans(v.to(CDT)), fk, kvt, input_precision=prec)
    offs_t = offs_d[:, None] + offs_d[None, :] * HEAD_D          # kvt[i, j] -> KV[j, i]
    tl.atomic_add(KV + pid_bh * HEAD_D * HEAD_D + offs_t, kvt, sem="relaxed")
    tl.atomic_add(KS + pid_bh * HEAD_D + offs_d, ks, sem="relaxed")
    tl.atomic_add(KTOT + pid_bh * HEAD_D + offs_d, kt, sem="relaxed")


@triton.jit
def _prepass_queries(Q, QMEAN, stride_qb, stride_ql, stride_qh, pid_q, pid_bh, b, h, L, NQ, CHUNK_Q,
                     BLOCK_Q: tl.constexpr, HEAD_D: tl.constexpr, COLSUM_MMA: tl.constexpr):
    """Query blocks [pid_q * CHUNK_Q, ...) of one (b, h): their means (for the mask only)."""
    offs_d = tl.arange(0, HEAD_D)
    offs_bq = tl.arange(0, BLOCK_Q)
    q_tile = offs_bq[:, None] * stride_ql + offs_d[None, :]
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    qb_lo = pid_q * CHUNK_Q
    qb_hi = tl.minimum(qb_lo + CHUNK_Q, NQ)
    for qb in range(qb_lo, qb_hi):
        rows = qb * BLOCK_Q + offs_bq
        q = tl.load(q_base + tl.cast(qb * BLOCK_Q, tl.int64) * stride_ql + q_tile, mask=(rows < L)[:, None],
                    other=0.0)
        cnt = tl.minimum(L - qb * BLOCK_Q, BLOCK_Q).to(tl.float32)
        if COLSUM_MMA:
            qsum = tl.max(tl.dot(tl.full([16, BLOCK_Q], 1.0, q.dtype), q), 0)
        else:
            qsum = tl.sum(q.to(tl.float32), 0)
        tl.store(QMEAN + ((pid_bh * NQ + qb) * HEAD_D + offs_d), qsum / cnt)


@triton.jit
def _prepass_kernel(Q, K, V, QMEAN, KMEAN, KV, KS, KTOT,
                    stride_qb, stride_ql, stride_qh,
                    stride_kb, stride_kl, stride_kh,
                    stride_vb, stride_vl, stride_vh,
                    H, L, NQ, NK, CHUNK_Q, CHUNK_K, NCH,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                    FMAP: tl.constexpr, CDT: tl.constexpr, COLSUM_MMA: tl.constexpr):
    """Grid (NCH + query chunks, B * H): programs 0..NCH-1 of axis 0 take CHUNK_K key blocks of one (b, h) each,
    the programs after them CHUNK_Q query blocks each (two streams in one launch keep more loads in flight).

    Q, K, V: (B, L, H, D) views, unit stride on D, bf16 / fp16 / fp32. QMEAN (B, H, NQ, D), KMEAN (B, H, NK, D):
    fp32 block means of the inputs as given (a partial last block divides by its true count). KTOT (B, H, D) fp32
    += sum of k (smooth-k's sequence mean is KTOT / L). KV (B, H, D, D) += phi(k)^T v and KS (B, H, D) += sum
    phi(k), fp32; phi is applied to k rounded to the compute dtype CDT and rounded back to it before the
    products, as upstream does. KTOT, KV and KS are zero-initialised by the launcher.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    if pid_c < NCH:
        _prepass_keys(K, V, KMEAN, KV, KS, KTOT, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
                      pid_c, pid_bh, b, h, L, NK, CHUNK_K, BLOCK_K, HEAD_D, FMAP, CDT, COLSUM_MMA)
    else:
        _prepass_queries(Q, QMEAN, stride_qb, stride_ql, stride_qh, pid_c - NCH, pid_bh, b, h, L, NQ, CHUNK_Q,
                         BLOCK_Q, HEAD_D, COLSUM_MMA)


def prepass_config(dtype: torch.dtype, override: dict | None = None) -> dict:
    """Pre-pass launch configuration (progs_per_sm, num_warps, num_stages, COLSUM_MMA) for q, k, v of ``dtype``;
    ``override`` replaces keys (benchmarks, tests).

    fp32 inputs are staged in shared memory as fp32: 3 stages of them are over the 99 KB of sm_86 / sm_89 /
    sm_120 at D=128 (docs/KERNEL_NOTES.md#gpu-generations-and-triton-versions-offline-compile-check), so 2.
    """
    cfg = dict(PREPASS_DEFAULT)
    if dtype == torch.float32:
        cfg["num_stages"] = min(2, cfg["num_stages"])
    if override:
        cfg.update(override)
    return cfg


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def prepass(q, k, v, block_q: int, block_k: int, feature_map: str, cdt: torch.dtype, config: dict | None = None):
    """Run the pre-pass. Returns fp32 qmean (B,H,Nq,D), kmean (B,H,Nk,D), kv (B,H,D,D), ks (B,H,D), ktot (B,H,D).

    ``config``: keys replacing :func:`prepass_config`'s (benchmarks, tests).
    """
    b, length, h, d = q.shape
    nq, nk = triton.cdiv(length, block_q), triton.cdiv(length, block_k)
    dev = q.device
    qmean = torch.empty(b, h, nq, d, device=dev, dtype=torch.float32)
    kmean = torch.empty(b, h, nk, d, device=dev, dtype=torch.float32)
    acc = torch.zeros(b * h * d * (d + 2), device=dev, dtype=torch.float32)   # one memset for all three
    kv = acc[:b * h * d * d].view(b, h, d, d)
    ks = acc[b * h * d * d:b * h * d * (d + 1)].view(b, h, d)
    ktot = acc[b * h * d * (d + 1):].view(b, h, d)
    # Chunks of whole query and key blocks, a few programs per multiprocessor each for k/v and for q.
    unit = block_q * block_k // math.gcd(block_q, block_k)
    n_units = triton.cdiv(length, unit)
    pcfg = prepass_config(q.dtype, config)
    per_prog = max(1, triton.cdiv(n_units * b * h, pcfg["progs_per_sm"] * _num_sms(dev)))
    chunk_tokens = per_prog * unit
    n_chunks = triton.cdiv(length, chunk_tokens)
    colsum = bool(pcfg.get("COLSUM_MMA")) and q.dtype == k.dtype and q.dtype in (torch.bfloat16, torch.float16)
    launch("SLA pre-pass", _prepass_kernel, (2 * n_chunks, b * h),
           (q, k, v, qmean, kmean, kv, ks, ktot,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            h, length, nq, nk, chunk_tokens // block_q, chunk_tokens // block_k, n_chunks),
           dict(BLOCK_Q=block_q, BLOCK_K=block_k, HEAD_D=d, FMAP=FEATURE_MAPS.index(feature_map), CDT=tl_dtype(cdt),
                COLSUM_MMA=colsum), dev, pcfg["num_warps"], pcfg["num_stages"])
    return qmean, kmean, kv, ks, ktot
