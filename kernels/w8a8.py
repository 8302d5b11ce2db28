"""Launcher of the W8A8 linear kernels (:mod:`.w8a8_triton`) and its torch custom op ``comfyui_sla::w8a8_linear``.

``w8a8_linear(x, w_q, w_scale, bias)``: x [..., K] bf16/fp16/fp32, w_q int8 [N, K] (TurboDiffusion ``int8_weight``),
w_scale fp32 [ceil(N/128), ceil(K/128)] (its ``scale``), bias [N] or None -> [..., N] in x's dtype.

Two modes: ``prequant`` (default) quantises the activations in one pass (:func:`quantize_activations`, int8 + one
fp32 scale per token and 128 columns) and runs the int8 GEMM on them; ``fused`` quantises each A tile inside the
GEMM (no extra pass, but every N tile redoes it). bench/bench_w8a8.py times both and the configs below.
"""
from __future__ import annotations

import logging
import os

import torch
import triton

from .w8a8_triton import TILE, _act_quant_kernel, _w8a8_gemm_kernel

log = logging.getLogger("comfyui_sla")

__all__ = ["w8a8_linear", "w8a8_linear_impl", "quantize_activations", "supports", "check_inputs",
           "unsupported_reason", "default_config",
           "ALTERNATIVES", "MODES"]

MODES = ("prequant", "fused")
X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ACT_QUANT_BLOCK_M = 32  # rows per program of the activation pre-pass (128 columns each): 4 KB of bf16 per program

# Conservative, known-good shapes: 128x128x128 tiles, 8 warps. Stages: 3 where shared memory is >= 160 KB (sm_80,
# sm_90, sm_100: 3 x 32 KB of int8 A/W tiles), 2 on the 99 KB parts (sm_86 / 89 / 120).
_BASE = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8)
# Alternatives bench/bench_w8a8.py times on the GPU (name -> overrides of the default); one run tells the best.
ALTERNATIVES = {
    "default": {},
    "bn256": dict(BLOCK_N=256),
    "bm256": dict(BLOCK_M=256),
    "bk64_s4": dict(BLOCK_K=64, num_stages=4),
    "w4_s4": dict(num_warps=4, num_stages=4),
    "s4": dict(num_stages=4),
    "bm64_w4": dict(BLOCK_M=64, num_warps=4, num_stages=4),
    "fused": dict(mode="fused"),
    "fused_bk64": dict(mode="fused", BLOCK_K=64, num_stages=4),
    "fused_bn256": dict(mode="fused", BLOCK_N=256, BLOCK_K=64),
}


def default_config(device: torch.device | None = None) -> dict:
    """The GEMM's launch config for ``device``: BLOCK_M/N/K, GROUP_M, num_warps, num_stages, mode."""
    cfg = dict(_BASE, mode="prequant")
    cap = torch.cuda.get_device_capability(device) if device is not None and device.type == "cuda" else (9, 0)
    cfg["num_stages"] = 3 if cap == (8, 0) or cap[0] in (9, 10) else 2
    return cfg


def _config(device: torch.device, overrides: dict | None) -> dict:
    cfg = default_config(device)
    cfg.update(overrides or {})
    if cfg["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg['mode']!r}")
    if TILE % cfg["BLOCK_K"] or cfg["BLOCK_K"] < 32:
        raise ValueError(f"BLOCK_K must be 32, 64 or 128 (a divisor of the {TILE}-wide scale tile), "
                         f"got {cfg['BLOCK_K']}")
    return cfg


@torch._dynamo.assume_constant_result
def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


_capabilities: dict = {}


@torch._dynamo.assume_constant_result
def _capability(index: int) -> int:
    """Compute capability as an int (90 = sm_90); a constant for torch.compile."""
    if index not in _capabilities:
        major, minor = torch.cuda.get_device_capability(index)
        _capabilities[index] = major * 10 + minor
    return _capabilities[index]


def unsupported_reason(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None
                       ) -> str | None:
    """Why the kernel cannot take these inputs (None when it can). Traceable by torch.compile (no exceptions)."""
    if x.dtype not in X_DTYPES:
        return f"x must be bf16, fp16 or fp32, got {x.dtype}"
    if w_q.dtype != torch.int8 or w_q.dim() != 2:
        return f"w_q must be a 2-D int8 tensor, got {w_q.dim()}-D {w_q.dtype}"
    n, k = w_q.shape
    if x.dim() < 1 or x.shape[-1] != k:
        return f"x's last dimension must be the weight's in_features {k}, got shape {tuple(x.shape)}"
    want = (triton.cdiv(n, TILE), triton.cdiv(k, TILE))
    if tuple(w_scale.shape) != want:
        return (f"w_scale must be {list(want)} (one per {TILE}x{TILE} tile of [{n}, {k}]), "
                f"got {list(w_scale.shape)}")
    if bias is not None and tuple(bias.shape) != (n,):
        return f"bias must be [{n}], got {list(bias.shape)}"
    if w_q.device != x.device or w_scale.device != x.device or (bias is not None and bias.device != x.device):
        return "x, w_q, w_scale and bias must be on one device"
    if x.device.type == "cuda":
        cap = _capability(x.device.index if x.device.index is not None else torch.cuda.current_device())
        if cap < 80:
            return f"the Triton W8A8 kernel needs an Ampere or newer GPU (int8 tensor-core dots), got sm_{cap}"
    elif not _interpreting():
        return f"the Triton W8A8 kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {x.device}"
    return None


def check_inputs(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Raise ValueError naming what was found when the kernel cannot take these inputs."""
    why = unsupported_reason(x, w_q, w_scale, bias)
    if why is not None:
        raise ValueError(why)


def supports(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """True when :func:`w8a8_linear_impl` accepts these inputs."""
    return unsupported_reason(x, w_q, w_scale, bias) is None


def quantize_activations(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x2 [M, K] float, unit stride on K -> (int8 [M, K], fp32 scales [M, ceil(K/128)]); one pass over x2."""
    m, k = x2.shape
    kt = triton.cdiv(k, TILE)
    q = torch.empty((m, k), device=x2.device, dtype=torch.int8)
    s = torch.empty((m, kt), device=x2.device, dtype=torch.float32)
    if m:
        _act_quant_kernel[(triton.cdiv(m, ACT_QUANT_BLOCK_M), kt)](
            x2, q, s, m, k, x2.stride(0), kt, BLOCK_M=ACT_QUANT_BLOCK_M, GROUP=TILE, num_warps=4)
    return q, s


def w8a8_linear_impl(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                     config: dict | None = None) -> torch.Tensor:
    """The launch itself (no custom op): see the module docstring for shapes and dtypes. ``config``: overrides of
    :func:`default_config` (keys BLOCK_M/N/K, GROUP_M, num_warps, num_stages, mode; benchmarks and tests)."""
    check_inputs(x, w_q, w_scale, bias)
    n, k = w_q.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    if m == 0 or n == 0:
        return out.reshape(*lead, n)
    w_q = w_q.contiguous()
    w_scale = w_scale.to(torch.float32).contiguous()
    if k == 0:  # empty sum: the bias alone
        out.zero_()
        if bias is not None:
            out += bias.to(out.dtype)
        return out.reshape(*lead, n)
    cfg = _config(x.device, config)
    mode = cfg.pop("mode")
    num_warps, num_stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    kt = triton.cdiv(k, TILE)
    if mode == "prequant":
        a, a_s = quantize_activations(x2)
    else:
        a, a_s = x2, w_scale  # a_s unused by the fused kernel; any fp32 pointer
    grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]),)
    _w8a8_gemm_kernel[grid](a, a_s, w_q, w_scale, bias if bias is not None else w_scale, out,
                            m, n, k, a.stride(0), out.stride(0), kt,
                            HAS_BIAS=bias is not None, QUANT_A=mode == "fused",
                            num_warps=num_warps, num_stages=num_stages, **cfg)
    return out.reshape(*lead, n)


_OP_NAME = "comfyui_sla::w8a8_linear"


def _register():
    """Register the custom op once per process (the pack may be imported under several module names)."""
    ns, name = _OP_NAME.split("::")
    try:
        return getattr(getattr(torch.ops, ns), name)
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op(_OP_NAME, mutates_args=())
    def _op(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return w8a8_linear_impl(x, w_q, w_scale, bias)

    @_op.register_fake
    def _fake(x, w_q, w_scale, bias):
        return x.new_empty((*x.shape[:-1], w_q.shape[0]))  # contiguous [..., N] in x's dtype, like the real op

    return _op


_w8a8_op = _register()


def w8a8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
                ) -> torch.Tensor:
    """W8A8 linear through the custom op ``comfyui_sla::w8a8_linear`` (one opaque node for torch.compile)."""
    return _w8a8_op(x, w_q, w_scale, bias)
