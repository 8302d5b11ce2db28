"""The SLA forward launcher: input checks, the main kernel's launch configuration and :func:`sla_forward_impl`
(pre-pass, mask, then the pointer-load or the TMA main kernel)."""
from __future__ import annotations

import importlib.util
import os

import torch
import triton

from ..sla.spec import (BLOCK_K_CHOICES, BLOCK_Q_CHOICES, COMPUTE_DTYPES, FEATURE_MAPS, KERNEL_HEAD_DIMS, check_choice,
                        lut_width)
from .attend import LOG2E, _sla_fwd_kernel
from .attend_tma import _sla_fwd_tma_kernel
from .prepass import prepass
from .stages import launch, tl_dtype
from .router import block_lut
from .topk import lut_dtype

# D=128, block_q=128, 16-bit inputs in the compute dtype, TMA descriptors usable (Hopper and newer): 8 warps,
# 2 stages, key blocks two per iteration, query tile and folded summary through TMA too
# (docs/KERNEL_NOTES.md#rounds-4-7-second-session-2026-11-27-same-h100-kind-torch-2110cu130-triton-360).
MAIN_TMA_DEFAULT = dict(num_warps=8, num_stages=2, PAIR=True, Q_TMA=True, KV_EARLY=True)
# D=128, block_q=64, 16-bit inputs in the compute dtype, sequences of at least LONG_TOKENS: pointer loads, key blocks
# two per iteration, 3 stages (MiniMax H3 at 111k tokens, int16 LUT: 160.5 / 113.4 ms at keep 0.15 / 0.10; at 40k
# tokens the default is faster: docs/KERNEL_NOTES.md#block_q-64-on-long-sequences).
MAIN_Q64_LONG = dict(num_warps=4, num_stages=3, PAIR=True)
LONG_TOKENS = 98_304
# Compute capabilities whose pointer kernel buffers three stages of key pairs (227 KB of shared memory per block:
# H100 / H200, B200). Elsewhere two: sm_86 / sm_89 / sm_120 have 99 KB, and on the A100 (163 KB) two keep the
# footprint the kernel was measured with there, two blocks per SM (docs/KERNEL_NOTES.md#workspace).
DEEP_PIPELINE = (90, 100)
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int, block_k: int) -> None:
    """Raise ValueError naming what was found when the kernels cannot take these inputs."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, L, H, D) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[3] not in KERNEL_HEAD_DIMS:
        raise ValueError(f"the Triton SLA kernel supports head sizes {KERNEL_HEAD_DIMS}, got D={q.shape[3]}")
    if block_q not in BLOCK_Q_CHOICES or block_k not in BLOCK_K_CHOICES:
        raise ValueError(f"block_q must be one of {BLOCK_Q_CHOICES} and block_k one of {BLOCK_K_CHOICES}, "
                         f"got block_q={block_q}, block_k={block_k}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(3) != 1:
            raise ValueError(f"{name} must have a unit stride on the head dimension, got strides {t.stride()}")
        if t.dtype not in _TORCH_DTYPES.values():
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


def resolve_compute_dtype(dtype: torch.dtype, compute_dtype: str) -> torch.dtype:
    """The torch dtype the kernels compute in for inputs of ``dtype`` ('auto': fp16 stays fp16, else bf16)."""
    check_choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
    if compute_dtype == "auto":
        return torch.float16 if dtype == torch.float16 else torch.bfloat16
    return _TORCH_DTYPES[compute_dtype]


def host_tma() -> bool:
    """Host-side TMA descriptors (triton.tools.tensor_descriptor) exist from Triton 3.4 on."""
    return importlib.util.find_spec("triton.tools.tensor_descriptor") is not None


def main_config(d: int, block_q: int, cdt: torch.dtype, inputs_in_cdt: bool, capability: int, tma_ok: bool,
                override: dict | None = None, length: int = 0) -> dict:
    """Launch configuration of the main kernel: num_warps, num_stages, USE_TMA (which kernel) and its constexprs
    (PAIR for the pointer kernel, Q_TMA / KV_EARLY for the TMA kernel; requests the launcher may still drop).

    For head size ``d``, ``block_q``, compute dtype ``cdt``, whether k and v already are in ``cdt``
    (``inputs_in_cdt``), the GPU's compute capability as an int (90 = sm_90) and whether TMA descriptors can take
    k and v (``tma_ok``: Triton >= 3.4 and 16-byte aligned views). ``override`` replaces keys before the TMA
    feasibility check (benchmarks, tests). Why these values: docs/KERNEL_NOTES.md#main-kernel-configuration.
    """
    big = d == 128 and block_q == 128
    pair_ok = big and cdt != torch.float32 and inputs_in_cdt
    # fp32 tiles are twice the size: one stage fits shared memory (a test path, not a fast one). Three stages of
    # 16-bit key pairs take 131 KB (sm_80) to 229 KB (sm_90) of shared memory per block: Hopper and Blackwell DC only.
    stages = 1 if cdt == torch.float32 else 3 if big and inputs_in_cdt and capability in DEEP_PIPELINE else 2
    cfg = dict(num_warps=8 if big else 4, num_stages=stages, PAIR=pair_ok,
               USE_TMA=pair_ok and capability >= 90 and tma_ok, Q_TMA=False, KV_EARLY=False)
    if cfg["USE_TMA"]:
        cfg.update(MAIN_TMA_DEFAULT)
    elif d == 128 and block_q == 64 and cdt != torch.float32 and inputs_in_cdt and length >= LONG_TOKENS:
        cfg.update(MAIN_Q64_LONG)
    if override:
        cfg.update(override)
        if cfg["USE_TMA"] and not (cdt != torch.float32 and inputs_in_cdt and tma_ok):
            cfg["USE_TMA"] = False
    if not cfg["USE_TMA"]:
        cfg.update(Q_TMA=False, KV_EARLY=False)
    return cfg


def sla_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int,
                     proj_weight: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                     feature_map: str = "softmax", block_q: int = 128, block_k: int = 64,
                     compute_dtype: str = "auto", *, lut: torch.Tensor | None = None, return_lut: bool = False,
                     out: torch.Tensor | None = None, config: dict | None = None,
                     prepass_config: dict | None = None, prefix_blocks: int = 0):
    """SLA forward through the Triton kernels. q, k, v: (B, L, H, D) views (unit stride on D).

    ``keep``: key blocks kept per query-block row, in [1, Nk] (``sla.spec.keep_count``), picked among the blocks
    after the first ``prefix_blocks`` (every query attends those too: LUT rows of ``sla.spec.lut_width`` entries).
    Returns a contiguous (B, L, H, D) tensor in q's dtype (and the LUT used, when ``return_lut``: int16, int32
    past 32 767 key blocks). ``lut`` (B, H, Nq, W) sorted rows (any integer type) replaces the predicted mask
    (tests, benchmarks); ``out`` a contiguous (B, L, H, D) buffer of q's dtype to write into (tests poison it to
    prove every element is written); ``config`` keys replacing :func:`main_config`'s and ``prepass_config`` keys
    replacing ``prepass.prepass_config``'s (benchmarks, tests).
    """
    check_inputs(q, k, v, block_q, block_k)
    check_choice("feature_map", feature_map, FEATURE_MAPS)
    b, length, h, d = q.shape
    nq, nk = triton.cdiv(length, block_q), triton.cdiv(length, block_k)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= nk:
        raise ValueError(f"keep must be an int in [1, {nk}] (key blocks kept per row), got {keep!r}")
    if isinstance(prefix_blocks, bool) or not isinstance(prefix_blocks, int) or not 0 <= prefix_blocks <= nk:
        raise ValueError(f"prefix_blocks must be an int in [0, {nk}], got {prefix_blocks!r}")
    width = lut_width(nk, keep, prefix_blocks)
    cdt = resolve_compute_dtype(q.dtype, compute_dtype)
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton SLA kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}")
    has_proj = proj_weight is not None
    if has_proj and tuple(proj_weight.shape) != (d, d):
        raise ValueError(f"proj_weight must be ({d}, {d}), got {tuple(proj_weight.shape)}")
    if proj_bias is not None and tuple(proj_bias.shape) != (d,):
        raise ValueError(f"proj_bias must be ({d},), got {tuple(proj_bias.shape)}")
    if lut is not None and lut.shape[:3] == (b, h, nq) and lut.dim() == 4 and 1 <= lut.shape[3] <= nk:
        width = lut.shape[3]   # a given LUT says its own width
    elif lut is not None:
        raise ValueError(f"lut must be (B, H, Nq, W) = ({b}, {h}, {nq}, W <= {nk}), got {tuple(lut.shape)}")
    if out is None:
        out = torch.empty(b, length, h, d, device=q.device, dtype=q.dtype)
    elif out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {tuple(q.shape)} {q.dtype} tensor, got "
                         f"{tuple(out.shape)} {out.dtype}")

    if lut is None:   # the mask phase, a few heads at a time (only the LUT outlives it)
        lut, kv, ks = block_lut(q, k, v, block_q, block_k, feature_map, cdt, keep, prefix_blocks, has_proj,
                                prepass_config)
    else:
        lut = lut.to(device=q.device, dtype=lut_dtype(nk)).contiguous()
        kv, ks = prepass(q, k, v, block_q, block_k, feature_map, cdt, prepass_config, linear=has_proj)[2:4]
    bias = None
    if has_proj:
        # Fold proj_l into the summary: (phi(q) KV / den) W^T = phi(q) (KV W^T) / den, one tiny batched matmul.
        kv = torch.matmul(kv, proj_weight.to(device=q.device, dtype=torch.float32).t()).to(cdt)
        if proj_bias is not None:
            bias = proj_bias.to(device=q.device, dtype=torch.float32).contiguous()
    else:
        kv = ks = None
    cap = torch.cuda.get_device_capability(q.device) if q.is_cuda else (0, 0)
    cfg = main_config(d, block_q, cdt, k.dtype == cdt and v.dtype == cdt, cap[0] * 10 + cap[1],
                      host_tma() and _tma_ok(k, v), config, length)
    num_warps, num_stages, use_tma = cfg.pop("num_warps"), cfg.pop("num_stages"), cfg.pop("USE_TMA")
    args = (q, k, v, out, lut, kv, ks, bias)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
               h, length, nq, width, d ** -0.5 * LOG2E)
    consts = dict(TAIL_IN_LUT=length % block_k != 0, BLOCK_Q=block_q, BLOCK_K=block_k, HEAD_D=d,
                  FMAP=FEATURE_MAPS.index(feature_map), HAS_PROJ=has_proj, HAS_BIAS=bias is not None,
                  CDT=tl_dtype(cdt))
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor
        dk = TensorDescriptor(k, list(k.shape), list(k.stride()), [1, block_k, 1, d])
        dv = TensorDescriptor(v, list(v.shape), list(v.stride()), [1, block_k, 1, d])
        dq = dkvs = None
        if cfg["Q_TMA"] and q.dtype == cdt and _tma_ok(q):
            dq = TensorDescriptor(q, list(q.shape), list(q.stride()), [1, block_q, 1, d])
        if cfg["KV_EARLY"] and has_proj:
            kv2 = kv.reshape(b * h * d, d)      # (B, H, D, D) contiguous, compute dtype (proj_l folded in)
            dkvs = TensorDescriptor(kv2, list(kv2.shape), list(kv2.stride()), [d, d])
        launch("SLA kernel", _sla_fwd_tma_kernel, (nq, b * h), args + (dk, dv, dq, dkvs) + strides,
               dict(consts, Q_TMA=dq is not None, KV_EARLY=dkvs is not None), q.device, num_warps, num_stages)
    else:
        launch("SLA kernel", _sla_fwd_kernel, (nq, b * h), args + strides, dict(consts, PAIR=cfg["PAIR"]),
               q.device, num_warps, num_stages)
    if return_lut:
        return out, lut
    return out
