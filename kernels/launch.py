"""Launchers of the SLA Triton kernels (see :mod:`.sla_triton` for what each kernel computes)."""
from __future__ import annotations

import math
import os

import torch
import triton
from triton.runtime.errors import OutOfResources

from .sla_triton import FMAP_CODES, LOG2E, _prepass_kernel, _sla_fwd_kernel, _topk_kernel

HEAD_DIMS = (64, 128)
BLOCK_QS = (64, 128)
BLOCK_KS = (64,)
COMPUTE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Benchmark hooks: dicts whose keys replace the main kernel's launch config (num_warps, num_stages, PAIR,
# USE_TMA, Q_TMA, KV_EARLY), the pre-pass's (progs_per_sm, num_warps, num_stages, COLSUM_MMA) and the top-k's
# (rows, num_warps) when set.
CONFIG_OVERRIDE: dict | None = None
PREPASS_OVERRIDE: dict | None = None
TOPK_OVERRIDE: dict | None = None
# Tuned defaults (H100 measurements in KERNEL_NOTES.md; the bench/tune_round*.py scripts time the alternatives).
# The pre-pass's for every shape: ~8 programs per SM of 4 warps (latency-bound), column sums on the tensor cores.
# The main kernel's for D=128, block_q=128, main variant, 16-bit inputs that TMA descriptors can take (Hopper
# and newer): 8 warps, 2 stages, key blocks two per iteration through TMA, the query tile and the folded summary
# through TMA too.
PREPASS_DEFAULT = dict(progs_per_sm=8, num_warps=4, num_stages=3, COLSUM_MMA=True)
MAIN_TMA_DEFAULT = dict(num_warps=8, num_stages=2, PAIR=True, Q_TMA=True, KV_EARLY=True)
# Top-k: rows of the score matrix per program; num_warps None = one warp per row when rows > 1, else 4 warps per
# row (8 past 2048 columns). H100: 4 rows per program no faster than 1 at Nk=512 (0.052 ms either way, mask step)
# and slower at Nk=1182 (1.37 vs 0.75 ms: 64 columns per thread), so one row per program stays the default.
TOPK_DEFAULT = dict(rows=1, num_warps=None)
_TL_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _keep_count(n_kblocks: int, keep_ratio: float) -> int:
    # Same rule as sla.mask.keep_count (kept here so the kernels package imports nothing from sla/).
    if not (keep_ratio > 0.0):
        raise ValueError(f"keep_ratio must be > 0, got {keep_ratio!r}")
    return max(1, min(n_kblocks, int(math.floor(keep_ratio * n_kblocks + 1e-9))))


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int, block_k: int) -> None:
    """Raise ValueError naming what was found when the kernels cannot take these inputs."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, L, H, D) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"the Triton SLA kernel supports head sizes {HEAD_DIMS}, got D={q.shape[3]}")
    if block_q not in BLOCK_QS or block_k not in BLOCK_KS:
        raise ValueError(f"block_q must be one of {BLOCK_QS} and block_k one of {BLOCK_KS}, "
                         f"got block_q={block_q}, block_k={block_k}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(3) != 1:
            raise ValueError(f"{name} must have a unit stride on the head dimension, got strides {t.stride()}")
        if t.dtype not in _TL_DTYPES:
            raise ValueError(f"{name} must be bf16, fp16 or fp32, got {t.dtype}")
    if q.shape[1] < 1 or q.shape[0] < 1:
        raise ValueError(f"empty batch or sequence: shape {tuple(q.shape)}")


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int, block_k: int) -> bool:
    """True when :func:`sla_forward_impl` accepts these inputs."""
    try:
        check_inputs(q, k, v, block_q, block_k)
    except ValueError:
        return False
    return True


def _tma_ok(*ts) -> bool:
    """Host-side TMA descriptors need 16-byte aligned bases and strides (and a unit last stride)."""
    return all(t.data_ptr() % 16 == 0 and all((st * t.element_size()) % 16 == 0 for st in t.stride()[:-1])
               for t in ts)


def _resolve_compute_dtype(dtype: torch.dtype, compute_dtype: str) -> torch.dtype:
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    cdt = COMPUTE_DTYPES[compute_dtype]
    if cdt is None:  # upstream: fp16 stays fp16, everything else computes in bf16
        cdt = torch.float16 if dtype == torch.float16 else torch.bfloat16
    return cdt


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}[dtype]


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


# The shared memory a configuration needs depends on the GPU generation and the Triton version (99 KB per block
# on sm_86 / sm_89 / sm_120 against 227 KB on sm_90; tests/compile_targets.py checks the defaults offline). When a
# launch finds it over this GPU's limit, the kernel is retried with fewer pipeline stages, and the stage count
# that fits is remembered per (kernel, device, configuration).
_STAGES_THAT_FIT: dict = {}


def _launch(name: str, kernel, grid, args, consts: dict, device: torch.device, num_warps: int, num_stages: int):
    """``kernel[grid](*args, **consts, num_warps, num_stages)``, with fewer stages where shared memory is short.

    Raises ValueError naming the configuration, the bytes it needs and this GPU's limit when one stage does not
    fit either.
    """
    # The key is built only once some configuration has needed fewer stages (never, on the tuned GPUs).
    key = lambda: (name, str(device), num_warps, tuple(sorted((k, str(v)) for k, v in consts.items())))  # noqa: E731
    stages = min(num_stages, _STAGES_THAT_FIT.get(key(), num_stages)) if _STAGES_THAT_FIT else num_stages
    while True:
        try:
            kernel[grid](*args, **consts, num_warps=num_warps, num_stages=stages)
        except OutOfResources as e:
            if stages <= 1 or e.name != "shared memory":
                raise ValueError(
                    f"{name}: this configuration needs {e.required} bytes of {e.name} per block and the GPU allows "
                    f"{e.limit} ({', '.join(f'{k}={v}' for k, v in consts.items())}, num_warps={num_warps}, "
                    f"num_stages={stages}); use bf16/fp16 inputs or block_q=64") from None
            stages -= 1
            continue
        if stages != num_stages:
            _STAGES_THAT_FIT[key()] = stages
        return


def _host_tma() -> bool:
    """Host-side TMA descriptors (triton.tools.tensor_descriptor) exist from Triton 3.4 on."""
    import importlib.util
    return importlib.util.find_spec("triton.tools.tensor_descriptor") is not None


def main_config(d: int, block_q: int, variant: str, cdt: torch.dtype, inputs_in_cdt: bool, capability: int,
                tma_ok: bool, override: dict | None = None) -> dict:
    """Launch configuration of ``_sla_fwd_kernel`` (num_warps, num_stages and the path constexprs PAIR, USE_TMA,
    Q_TMA, KV_EARLY) for head size ``d``, ``block_q``, ``variant``, compute dtype ``cdt``, whether k and v already
    are in ``cdt`` (``inputs_in_cdt``), the GPU's compute capability as an int (90 = sm_90) and whether TMA
    descriptors can take k and v (``tma_ok``: Triton >= 3.4 and 16-byte aligned views). ``override`` replaces
    keys before the TMA feasibility check (benchmarks). Q_TMA / KV_EARLY are requests the launcher may still drop.

    Measured on an H100 (KERNEL_NOTES.md): D=128, block_q=128 runs best with 8 warps and the key blocks coming
    through TMA descriptors (Hopper and newer), two per iteration, 2 stages (MAIN_TMA_DEFAULT); every other case
    takes pointer loads, two blocks per iteration where 16-bit tiles fit. Inputs cast in-kernel (fp32 inputs, or
    a compute dtype other than theirs) keep single blocks and 2 stages: their tiles are staged in shared memory
    in the input dtype and would not fit the 99 KB of sm_86 / sm_89 / sm_120 otherwise (tests/compile_targets.py).
    """
    big = d == 128 and block_q == 128
    pair_ok = big and variant == "main" and cdt != torch.float32 and inputs_in_cdt
    # fp32 tiles are twice the size: one stage fits shared memory (a test path, not a fast one).
    stages = 1 if cdt == torch.float32 else 3 if big and inputs_in_cdt else 2
    cfg = dict(num_warps=8 if big else 4, num_stages=stages, PAIR=pair_ok,
               USE_TMA=pair_ok and capability >= 90 and tma_ok, Q_TMA=False, KV_EARLY=False)
    if cfg["USE_TMA"]:
        cfg.update(MAIN_TMA_DEFAULT)
    if override:
        cfg.update(override)
        if cfg["USE_TMA"] and not (variant == "main" and cdt != torch.float32 and inputs_in_cdt and tma_ok):
            cfg["USE_TMA"] = False
    if not cfg["USE_TMA"]:
        cfg.update(Q_TMA=False, KV_EARLY=False)
    return cfg


def prepass_config(dtype: torch.dtype, override: dict | None = None) -> dict:
    """Pre-pass launch configuration (progs_per_sm, num_warps, num_stages, COLSUM_MMA) for q, k, v of ``dtype``.

    fp32 inputs are staged in shared memory as fp32: 3 stages of them need ~150 KB at D=128, over the 99 KB of
    sm_86 / sm_89 / sm_120 (tests/compile_targets.py), so they get 2.
    """
    cfg = dict(PREPASS_DEFAULT)
    if dtype == torch.float32:
        cfg["num_stages"] = min(2, cfg["num_stages"])
    if override:
        cfg.update(override)
    return cfg


def prepass(q, k, v, block_q: int, block_k: int, feature_map: str, cdt: torch.dtype):
    """Run the pre-pass. Returns fp32 qmean (B,H,Nq,D), kmean (B,H,Nk,D), kv (B,H,D,D), ks (B,H,D), ktot (B,H,D)."""
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
    # H100 sweep (KERNEL_NOTES.md): the pre-pass is latency-bound; many small programs (4 warps, ~8 per SM)
    # keep the most loads in flight (0.22 ms vs 0.31 ms with 8 warps, 4 per SM, at H=12, L=32760).
    pcfg = prepass_config(q.dtype, PREPASS_OVERRIDE)
    per_prog = max(1, triton.cdiv(n_units * b * h, pcfg["progs_per_sm"] * _num_sms(dev)))
    chunk_tokens = per_prog * unit
    n_chunks = triton.cdiv(length, chunk_tokens)
    # Block column sums on the tensor cores for 16-bit inputs (fp32 inputs keep exact fp32 sums).
    colsum = bool(pcfg.get("COLSUM_MMA")) and q.dtype == k.dtype and q.dtype in (torch.bfloat16, torch.float16)
    _launch("SLA pre-pass", _prepass_kernel, (2 * n_chunks, b * h),
            (q, k, v, qmean, kmean, kv, ks, ktot,
             q.stride(0), q.stride(1), q.stride(2),
             k.stride(0), k.stride(1), k.stride(2),
             v.stride(0), v.stride(1), v.stride(2),
             h, length, nq, nk, chunk_tokens // block_q, chunk_tokens // block_k, n_chunks),
            dict(BLOCK_Q=block_q, BLOCK_K=block_k, HEAD_D=d, FMAP=FMAP_CODES[feature_map], CDT=_tl_dtype(cdt),
                 COLSUM_MMA=colsum), dev, pcfg["num_warps"], pcfg["num_stages"])
    return qmean, kmean, kv, ks, ktot


def lut_from_means(qmean, kmean, ktot, length: int, keep: int) -> torch.Tensor:
    """Block LUT (B, H, Nq, keep) int32, rows ascending, from the pre-pass means (same rule as sla.mask).

    scores = qmean @ (kmean - mean_L(k))^T (smooth-k), one batched matmul; the per-row top-k and its sorted
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
    rows = b * h * nq
    cfg = dict(TOPK_DEFAULT)
    if TOPK_OVERRIDE:
        cfg.update(TOPK_OVERRIDE)
    per = cfg["rows"]
    _topk_kernel[(triton.cdiv(rows, per),)](scores, lut, rows, nk, keep, NK_PAD=nk_pad, ROWS=per,
                                            num_warps=cfg.get("num_warps") or
                                            (per if per > 1 else (4 if nk_pad <= 2048 else 8)))
    return lut


def sla_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep_ratio: float,
                     proj_weight: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                     feature_map: str = "softmax", block_q: int = 128, block_k: int = 64,
                     variant: str = "main", compute_dtype: str = "auto",
                     lut: torch.Tensor | None = None, return_lut: bool = False,
                     out: torch.Tensor | None = None):
    """SLA forward through the Triton kernels. q, k, v: (B, L, H, D) views (unit stride on D).

    Returns a contiguous (B, L, H, D) tensor in q's dtype (and the LUT used, when ``return_lut``). ``lut``
    (B, H, Nq, keep) int32 sorted rows overrides the predicted mask (tests); ``out`` a contiguous (B, L, H, D)
    buffer of q's dtype to write into (tests poison it to prove every element is written).
    """
    check_inputs(q, k, v, block_q, block_k)
    if feature_map not in FMAP_CODES:
        raise ValueError(f"feature_map must be one of {tuple(FMAP_CODES)}, got {feature_map!r}")
    if variant not in ("main", "sla1"):
        raise ValueError(f"variant must be 'main' or 'sla1', got {variant!r}")
    b, length, h, d = q.shape
    cdt = _resolve_compute_dtype(q.dtype, compute_dtype)
    if lut is None:
        _keep_count(1, keep_ratio)  # validates keep_ratio before any launch
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton SLA kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}")
    nq, nk = triton.cdiv(length, block_q), triton.cdiv(length, block_k)
    has_proj = proj_weight is not None
    if has_proj and tuple(proj_weight.shape) != (d, d):
        raise ValueError(f"proj_weight must be ({d}, {d}), got {tuple(proj_weight.shape)}")
    if proj_bias is not None and tuple(proj_bias.shape) != (d,):
        raise ValueError(f"proj_bias must be ({d},), got {tuple(proj_bias.shape)}")

    qmean, kmean, kv, ks, ktot = prepass(q, k, v, block_q, block_k, feature_map, cdt)
    if lut is None:
        lut = lut_from_means(qmean, kmean, ktot, length, _keep_count(nk, keep_ratio))
    else:
        lut = lut.to(device=q.device, dtype=torch.int32).contiguous()
        if lut.shape[:3] != (b, h, nq):
            raise ValueError(f"lut must be (B, H, Nq, keep) = ({b}, {h}, {nq}, keep), got {tuple(lut.shape)}")
    keep = lut.shape[3]

    if out is None:
        out = torch.empty(b, length, h, d, device=q.device, dtype=q.dtype)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {tuple(q.shape)} {q.dtype} tensor, got "
                         f"{tuple(out.shape)} {out.dtype}")
    # W is read by the kernel only for sla1; for main it is folded into KV below (kv is a dummy pointer then).
    w = proj_weight.to(device=q.device, dtype=cdt).contiguous() if has_proj and variant == "sla1" else kv
    if has_proj and variant == "main":
        # Fold proj_l into the summary: (phi(q) KV / den) W^T = phi(q) (KV W^T) / den, one tiny batched matmul.
        kv = torch.matmul(kv, proj_weight.to(device=q.device, dtype=torch.float32).t()).to(cdt)
    bias = proj_bias.to(device=q.device, dtype=torch.float32).contiguous() if proj_bias is not None else ks
    cap = torch.cuda.get_device_capability(q.device) if q.is_cuda else (0, 0)
    cfg = main_config(d, block_q, variant, cdt, k.dtype == cdt and v.dtype == cdt, cap[0] * 10 + cap[1],
                      _host_tma() and _tma_ok(k, v), CONFIG_OVERRIDE)
    dk, dv, dq, dkvs = k, v, q, kv
    if cfg["USE_TMA"]:
        from triton.tools.tensor_descriptor import TensorDescriptor
        dk = TensorDescriptor(k, list(k.shape), list(k.stride()), [1, block_k, 1, d])
        dv = TensorDescriptor(v, list(v.shape), list(v.stride()), [1, block_k, 1, d])
        if cfg["Q_TMA"] and q.dtype == cdt and _tma_ok(q):
            dq = TensorDescriptor(q, list(q.shape), list(q.stride()), [1, block_q, 1, d])
        else:
            cfg["Q_TMA"] = False
        if cfg["KV_EARLY"] and has_proj and kv.dtype == cdt:
            kv2 = kv.reshape(b * h * d, d)      # (B, H, D, D) contiguous, compute dtype (proj_l folded in)
            dkvs = TensorDescriptor(kv2, list(kv2.shape), list(kv2.stride()), [d, d])
        else:
            cfg["KV_EARLY"] = False
    num_warps, num_stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    _launch("SLA kernel", _sla_fwd_kernel, (nq, b * h),
            (q, k, v, out, lut, kv, ks, w, bias, dk, dv, dq, dkvs,
             q.stride(0), q.stride(1), q.stride(2),
             k.stride(0), k.stride(1), k.stride(2),
             v.stride(0), v.stride(1), v.stride(2),
             out.stride(0), out.stride(1), out.stride(2),
             h, length, nq, keep, d ** -0.5 * LOG2E),
            dict(TAIL_IN_LUT=length % block_k != 0, ALL_KEPT=keep == nk,
                 BLOCK_Q=block_q, BLOCK_K=block_k, HEAD_D=d, FMAP=FMAP_CODES[feature_map], SLA1=variant == "sla1",
                 HAS_PROJ=has_proj, HAS_BIAS=has_proj and proj_bias is not None, CDT=_tl_dtype(cdt), **cfg),
            q.device, num_warps, num_stages)
    if return_lut:
        return out, lut
    return out

