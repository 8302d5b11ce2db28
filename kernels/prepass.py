"""The SLA pre-pass: one read of q, k and v (in the caller's (B, L, H, D) layout, through strides) that writes only
small per-(batch, head) summaries: fp32 block means of q and k for the block mask, the sum of k (smooth-k), and
the linear branch's phi(K)^T V and sum phi(K).

Deterministic (docs/KERNEL_NOTES.md#determinism): the key blocks of one (b, h) are split into chunks, one program
each; a program writes its chunk's partial sums (phi(K)^T V, sum phi(K), sum K; fp32) with plain stores to its
own slot of a workspace (n_chunks, B*H*D*(D+2)), and one ``torch.sum`` over the chunk axis (no atomics; its plan
depends only on the shape and the device) gives the totals. The chunking is a function of the shape and the GPU's
multiprocessor count only, so the same inputs give the same bits on one GPU, run after run.

Workspace: n_chunks * B*H * D*(D+2) * 4 bytes, with n_chunks * B*H ~ key_progs_per_sm * SMs (at least B*H): at
the default 4 key programs per SM and D=128, ~528 slots of 66.5 KB on a 132-SM H100 / H200, 34 MB at
B=1 H=12 L=32 760 and 37 MB at B=1 H=40 L=75 600 (8 per SM: 69 / 72 MB, measured no faster overall). ``DETERMINISTIC=False`` (benchmarks only: the pre-pass as it was) adds the partials with fp32 atomics
into one zeroed slot instead; the order of those additions, hence the sums' low bits and near-tied blocks of the
mask, changes from run to run.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sla.spec import FEATURE_MAPS
from .attend import _phi
from .stages import launch, tl_dtype

# ~8 query programs per SM of 4 warps (latency-bound; short programs keep the tail short), column sums on the
# tensor cores (docs/KERNEL_NOTES.md#versions-time--whole-op-at-shape-a-main--the-main-kernel-alone, v4). Each key
# program fills one workspace slot: 4 per SM halves the workspace of 8 within 1% of the op
# (docs/KERNEL_NOTES.md#determinism).
PREPASS_DEFAULT = dict(progs_per_sm=8, key_progs_per_sm=4, num_warps=4, num_stages=3, COLSUM_MMA=True,
                       DETERMINISTIC=True)


@triton.jit
def _prepass_keys(K, V, KMEAN, KV, KS, KTOT, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
                  pid_c, pid_bh, b, h, L, NK, CHUNK_K, SLOT,
                  BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr, FMAP: tl.constexpr, CDT: tl.constexpr,
                  COLSUM_MMA: tl.constexpr, DETERMINISTIC: tl.constexpr, LINEAR: tl.constexpr):
    """Key blocks [pid_c * CHUNK_K, ...) of one (b, h): their means, and the chunk's share of the summaries
    (:func:`_store_partials`). LINEAR False: the sum of k only (no linear branch reads phi(K)^T V; v is not read).

    The summary is accumulated as its transpose V^T phi(K), so phi(k) enters the product as computed (no
    transpose through shared memory; docs/KERNEL_NOTES.md#design), and is stored transposed. COLSUM_MMA: block
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
        if COLSUM_MMA:
            ksum = tl.max(tl.dot(tl.full([16, BLOCK_K], 1.0, k.dtype), k), 0)
        else:
            ksum = tl.sum(k.to(tl.float32), 0)
        kt += ksum
        cnt = tl.minimum(L - kb * BLOCK_K, BLOCK_K).to(tl.float32)
        tl.store(KMEAN + ((pid_bh * NK + kb) * HEAD_D + offs_d), ksum * (1.0 / cnt))
        if LINEAR:
            v = tl.load(v_base + row0 * stride_vl + v_tile, mask=valid[:, None], other=0.0)
            fk = _phi(k.to(CDT).to(tl.float32), FMAP, 1)
            fk = tl.where(valid[:, None], fk, 0.0).to(CDT)    # padded keys contribute nothing
            if COLSUM_MMA:
                ks += tl.max(tl.dot(tl.full([16, BLOCK_K], 1.0, CDT), fk), 0)
            else:
                ks += tl.sum(fk.to(tl.float32), 0)
            kvt = tl.dot(tl.trans(v.to(CDT)), fk, kvt, input_precision=prec)
    _store_partials(KV, KS, KTOT, kvt, ks, kt, pid_c, pid_bh, SLOT, HEAD_D, DETERMINISTIC, LINEAR)


@triton.jit
def _store_partials(KV, KS, KTOT, kvt, ks, kt, pid_c, pid_bh, SLOT, HEAD_D: tl.constexpr,
                    DETERMINISTIC: tl.constexpr, LINEAR: tl.constexpr):
    """One chunk's partial sums into the workspace: kvt = V^T phi(K) (D, D), ks = sum phi(K), kt = sum K, fp32.

    KV / KS / KTOT point at slot 0's (B*H, D, D) / (B*H, D) / (B*H, D) parts; slot c starts SLOT elements after
    slot c - 1. DETERMINISTIC: plain stores into slot pid_c (summed in a fixed order by the launcher); else fp32
    atomics into slot 0 (the order of the additions, hence the result's low bits, varies between runs). LINEAR
    False: kt only (KV and KS are not part of the slot).
    """
    offs_d = tl.arange(0, HEAD_D)
    slot = pid_c.to(tl.int64) * SLOT if DETERMINISTIC else 0
    kt_ptrs = KTOT + slot + pid_bh * HEAD_D + offs_d
    if LINEAR:
        offs_t = offs_d[:, None] + offs_d[None, :] * HEAD_D          # kvt[i, j] -> KV[j, i]
        kv_ptrs = KV + slot + pid_bh * HEAD_D * HEAD_D + offs_t
        ks_ptrs = KS + slot + pid_bh * HEAD_D + offs_d
        if DETERMINISTIC:
            tl.store(kv_ptrs, kvt)
            tl.store(ks_ptrs, ks)
        else:
            tl.atomic_add(kv_ptrs, kvt, sem="relaxed")
            tl.atomic_add(ks_ptrs, ks, sem="relaxed")
    if DETERMINISTIC:
        tl.store(kt_ptrs, kt)
    else:
        tl.atomic_add(kt_ptrs, kt, sem="relaxed")


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
                    H, L, NQ, NK, CHUNK_Q, CHUNK_K, NCH, SLOT,
                    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr,
                    FMAP: tl.constexpr, CDT: tl.constexpr, COLSUM_MMA: tl.constexpr, DETERMINISTIC: tl.constexpr,
                    LINEAR: tl.constexpr):
    """Grid (NCH + query chunks, B * H): programs 0..NCH-1 of axis 0 take CHUNK_K key blocks of one (b, h) each,
    the programs after them CHUNK_Q query blocks each (two streams in one launch keep more loads in flight).

    Q, K, V: (B, L, H, D) views, unit stride on D, bf16 / fp16 / fp32. QMEAN (B, H, NQ, D), KMEAN (B, H, NK, D):
    fp32 block means of the inputs as given (a partial last block divides by its true count). Per key chunk c,
    fp32, in its workspace slot (:func:`_store_partials`): KTOT (B, H, D) = sum of k (smooth-k's sequence mean is
    the total over the chunks / L), KV (B, H, D, D) = phi(k)^T v and KS (B, H, D) = sum phi(k); phi is applied to
    k rounded to the compute dtype CDT and rounded back to it before the products, as upstream does. LINEAR False
    (no linear branch will read them): KV and KS are neither computed nor stored, and v is not read.
    """
    pid_c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    if pid_c < NCH:
        _prepass_keys(K, V, KMEAN, KV, KS, KTOT, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh,
                      pid_c, pid_bh, b, h, L, NK, CHUNK_K, SLOT, BLOCK_K, HEAD_D, FMAP, CDT, COLSUM_MMA,
                      DETERMINISTIC, LINEAR)
    else:
        _prepass_queries(Q, QMEAN, stride_qb, stride_ql, stride_qh, pid_c - NCH, pid_bh, b, h, L, NQ, CHUNK_Q,
                         BLOCK_Q, HEAD_D, COLSUM_MMA)


def prepass_config(dtype: torch.dtype, override: dict | None = None) -> dict:
    """Pre-pass launch configuration for q, k, v of ``dtype``: progs_per_sm / key_progs_per_sm (query / key chunk
    programs per multiprocessor, over all heads), num_warps, num_stages, COLSUM_MMA, DETERMINISTIC (False: the
    atomic baseline, benchmarks only); ``override`` replaces keys (benchmarks, tests).

    fp32 inputs are staged in shared memory as fp32: 3 stages of them are over the 99 KB of sm_86 / sm_89 /
    sm_120 at D=128 (docs/KERNEL_NOTES.md#gpu-generations-and-triton-versions-offline-compile-check), so 2.
    """
    cfg = dict(PREPASS_DEFAULT)
    if dtype == torch.float32:
        cfg["num_stages"] = min(2, cfg["num_stages"])
    if override:
        cfg.update(override)
    return cfg


def num_sms(device: torch.device) -> int:
    """Multiprocessors of ``device`` (4 off the GPU: the interpreter); the pre-pass chunking depends on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def chunking(n_blocks: int, bh: int, progs_per_sm: int, n_sms: int) -> tuple[int, int]:
    """(blocks per chunk, chunks per (b, h)) splitting ``n_blocks`` blocks of each of ``bh`` heads over about
    ``progs_per_sm * n_sms`` programs: a function of the shape and the GPU only, never of timing."""
    per_prog = max(1, triton.cdiv(n_blocks * bh, progs_per_sm * n_sms))
    return per_prog, triton.cdiv(n_blocks, per_prog)


def slot_size(b: int, h: int, d: int, linear: bool = True) -> int:
    """fp32 elements of one workspace slot: kv (B*H*D*D), ks and ktot (B*H*D each); ktot alone without the
    linear branch."""
    return b * h * d * (d + 2) if linear else b * h * d


def workspace_bytes(b: int, h: int, length: int, d: int, n_sms: int, block_k: int = 64,
                    config: dict | None = None, linear: bool = True) -> int:
    """Bytes of the fp32 partial-sum workspace :func:`prepass` allocates for (B, L, H, D) inputs on a GPU of
    ``n_sms`` multiprocessors: one slot (:func:`slot_size`) per key chunk (one slot when not DETERMINISTIC)."""
    pcfg = prepass_config(torch.bfloat16, config)
    _, n_chunks = chunking(triton.cdiv(length, block_k), b * h, pcfg["key_progs_per_sm"], n_sms)
    return (n_chunks if pcfg["DETERMINISTIC"] else 1) * slot_size(b, h, d, linear) * 4


def _split(acc: torch.Tensor, b: int, h: int, d: int, linear: bool = True):
    """Views kv (.., B, H, D, D), ks (.., B, H, D), ktot (.., B, H, D) of the last axis of ``acc``
    (.., :func:`slot_size`), the layout of one workspace slot; kv and ks are None without the linear branch (the
    slot is ktot alone)."""
    lead = acc.shape[:-1]
    if not linear:
        return None, None, acc.view(*lead, b, h, d)
    n_kv, n_ks = b * h * d * d, b * h * d
    return (acc[..., :n_kv].view(*lead, b, h, d, d), acc[..., n_kv:n_kv + n_ks].view(*lead, b, h, d),
            acc[..., n_kv + n_ks:].view(*lead, b, h, d))


def sum_slots(ws: torch.Tensor) -> torch.Tensor:
    """(n, S) fp32 partial sums -> (S,) totals, in an order fixed by the shape (torch's reductions use no atomics
    and pick their plan from the shape and the device alone); one slot is returned as is."""
    if ws.shape[0] == 1:
        return ws[0]
    return ws.sum(0)


def prepass(q, k, v, block_q: int, block_k: int, feature_map: str, cdt: torch.dtype, config: dict | None = None,
            return_workspace: bool = False, linear: bool = True):
    """Run the pre-pass. Returns fp32 qmean (B,H,Nq,D), kmean (B,H,Nk,D), kv (B,H,D,D), ks (B,H,D), ktot (B,H,D)
    (and, when ``return_workspace``, the (n_chunks, :func:`slot_size`) fp32 partial sums they were summed from).

    ``linear`` False (no linear branch: training-free or H3 calls): kv and ks are None, the pre-pass does not read
    v, and the workspace holds ktot alone (B*H*D per key chunk instead of B*H*D*(D+2)).

    ``config``: keys replacing :func:`prepass_config`'s (benchmarks, tests).
    """
    b, length, h, d = q.shape
    nq, nk = triton.cdiv(length, block_q), triton.cdiv(length, block_k)
    dev = q.device
    pcfg = prepass_config(q.dtype, config)
    det = bool(pcfg["DETERMINISTIC"])
    qmean = torch.empty(b, h, nq, d, device=dev, dtype=torch.float32)
    kmean = torch.empty(b, h, nk, d, device=dev, dtype=torch.float32)
    chunk_q, n_chunks_q = chunking(nq, b * h, pcfg["progs_per_sm"], num_sms(dev))
    chunk_k, n_chunks_k = chunking(nk, b * h, pcfg["key_progs_per_sm"], num_sms(dev))
    # A slot per key chunk (plain stores, summed below; no memset needed: every program writes its whole slot);
    # the atomic baseline adds into one zeroed slot.
    slot = slot_size(b, h, d, linear)
    ws = torch.empty(n_chunks_k, slot, device=dev, dtype=torch.float32) if det else \
        torch.zeros(1, slot, device=dev, dtype=torch.float32)
    kv_ws, ks_ws, kt_ws = _split(ws, b, h, d, linear)
    colsum = bool(pcfg.get("COLSUM_MMA")) and q.dtype == k.dtype and q.dtype in (torch.bfloat16, torch.float16)
    launch("SLA pre-pass", _prepass_kernel, (n_chunks_k + n_chunks_q, b * h),
           (q, k, v, qmean, kmean, kv_ws, ks_ws, kt_ws,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            h, length, nq, nk, chunk_q, chunk_k, n_chunks_k, slot),
           dict(BLOCK_Q=block_q, BLOCK_K=block_k, HEAD_D=d, FMAP=FEATURE_MAPS.index(feature_map), CDT=tl_dtype(cdt),
                COLSUM_MMA=colsum, DETERMINISTIC=det, LINEAR=linear), dev, pcfg["num_warps"], pcfg["num_stages"])
    kv, ks, ktot = _split(sum_slots(ws), b, h, d, linear)
    if return_workspace:
        return qmean, kmean, kv, ks, ktot, ws
    return qmean, kmean, kv, ks, ktot
