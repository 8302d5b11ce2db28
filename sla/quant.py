"""W8A8 linear layers for TurboDiffusion's ``-quant`` checkpoints, in plain PyTorch (no ComfyUI, no Triton import).

A quantised weight is ``w_q`` int8 [out, in] plus ``w_scale`` fp32 [ceil(out/128), ceil(in/128)], with
``W[i, j] ~= w_q[i, j] * w_scale[i // 128, j // 128]`` (TurboDiffusion's ``int8_weight`` / ``scale``).

* :func:`w8a8_linear`: the layer's forward. The Triton kernel (``kernels/w8a8.py``: activations quantised per
  token and 128 columns, int8 tensor-core dots, fp32 scales and bias in the epilogue) where it can run, else the
  dequantised weight in x's dtype through ``F.linear`` (logged once per reason).
* :func:`w8a8_emulated`: the kernel's exact math in PyTorch (test oracle).
* :func:`dequantize_tiles` / :func:`quantize_tiles` / :func:`requantize_on_grid`: weight conversions (LoRA patches
  are applied to the dequantised weight and requantised on the layer's own tile scales).

``COMFYUI_SLA_W8A8`` (environment): ``auto`` (default: kernel on CUDA when it supports the inputs), ``kernel``
(always the kernel; on the CPU only under ``TRITON_INTERPRET=1``; errors instead of falling back) or ``dequant``
(always the dequantised path).
"""
from __future__ import annotations

import logging
import os
import re

import torch
import torch.nn.functional as F

log = logging.getLogger("comfyui_sla")

__all__ = ["TILE", "dequantize_tiles", "quantize_tiles", "requantize_on_grid", "grown_scales", "quantize_activations",
           "w8a8_emulated", "w8a8_dequant_linear", "w8a8_linear", "is_w8a8_block_linear",
           "BACKEND_ENV"]

TILE = 128
BACKEND_ENV = "COMFYUI_SLA_W8A8"
# Linear layers that run W8A8: inside Wan blocks (self/cross attention q/k/v/o, I2V k_img/v_img, FFN), as
# TurboDiffusion quantises them; proj_l and everything outside the blocks stay in floating point.
_BLOCK_LINEAR = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn|ffn)\.[A-Za-z0-9_.]+$")
_logged: set = set()


def is_w8a8_block_linear(name: str) -> bool:
    """True for a ComfyUI-native Wan Linear name (no ``.weight``) that the W8A8 path may serve."""
    return bool(_BLOCK_LINEAR.match(name)) and ".proj_l" not in name


def _log_once(key, level, msg, *args) -> None:
    if key not in _logged:
        _logged.add(key)
        log.log(level, msg, *args)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    # The kernel's rounding rule (torch.round would round half to even).
    return torch.trunc(v + torch.where(v >= 0, 0.5, -0.5))


def _tile_view_ok(out_f: int, in_f: int) -> bool:
    return out_f % TILE == 0 and in_f % TILE == 0


def dequantize_tiles(w_q: torch.Tensor, w_scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int8 [out, in] x fp32 tile scales [ceil(out/128), ceil(in/128)] -> [out, in] of ``dtype`` on w_q's device
    (products in fp32, one rounding to ``dtype``)."""
    out_f, in_f = w_q.shape
    s = w_scale.to(device=w_q.device, dtype=torch.float32)
    if _tile_view_ok(out_f, in_f):
        w = w_q.to(torch.float32).view(out_f // TILE, TILE, in_f // TILE, TILE) * s[:, None, :, None]
        return w.view(out_f, in_f).to(dtype)
    full = s.repeat_interleave(TILE, 0)[:out_f].repeat_interleave(TILE, 1)[:, :in_f]
    return (w_q.to(torch.float32) * full).to(dtype)


def _expanded_scale(w_scale: torch.Tensor, out_f: int, in_f: int, device) -> torch.Tensor:
    s = w_scale.to(device=device, dtype=torch.float32)
    return s.repeat_interleave(TILE, 0)[:out_f].repeat_interleave(TILE, 1)[:, :in_f]


def quantize_tiles(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float [out, in] -> (int8 [out, in], fp32 [ceil(out/128), ceil(in/128)]): symmetric, scale = tile amax / 127."""
    out_f, in_f = w.shape
    nt, kt = -(-out_f // TILE), -(-in_f // TILE)
    wf = w.to(torch.float32)
    pad = torch.zeros(nt * TILE, kt * TILE, dtype=torch.float32, device=w.device)
    pad[:out_f, :in_f] = wf
    scale = pad.abs().view(nt, TILE, kt, TILE).amax(dim=(1, 3)) / 127.0
    q, _ = requantize_on_grid(wf, scale)
    return q, scale


def requantize_on_grid(w: torch.Tensor, w_scale: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Float [out, in] -> int8 on the given tile scales (round half away from zero, saturate at +-127).

    Returns (int8 [out, in], number of elements that saturated, i.e. lay beyond 127.5 steps of their tile's scale;
    entries of an all-zero tile (scale 0) that are not zero count too and become 0)."""
    out_f, in_f = w.shape
    s = _expanded_scale(w_scale, out_f, in_f, w.device)
    v = torch.where(s > 0, w.to(torch.float32) / torch.where(s > 0, s, 1.0), 0.0)
    clipped = int(((v.abs() > 127.5) | ((s == 0) & (w != 0))).sum())
    return _round_half_away(v).clamp_(-127, 127).to(torch.int8), clipped


def grown_scales(w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Tile scales for re-quantising a patched weight: ``w_scale`` where the tile still fits (<= 127.5 steps), its
    amax / 127 where it does not. w [out, in] float; returns fp32 like ``w_scale`` on w's device."""
    out_f, in_f = w.shape
    nt, kt = w_scale.shape
    pad = torch.zeros(nt * TILE, kt * TILE, dtype=torch.float32, device=w.device)
    pad[:out_f, :in_f] = w.to(torch.float32)
    amax = pad.abs().view(nt, TILE, kt, TILE).amax(dim=(1, 3))
    base = w_scale.to(device=w.device, dtype=torch.float32)
    return torch.where(amax > base * 127.5, amax / 127.0, base)


def quantize_activations(x2: torch.Tensor, group: int = TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] float -> (int8 [M, K], fp32 [M, ceil(K/group)]): per token and ``group`` columns, scale = amax / 127
    (the kernel's pre-pass, in PyTorch)."""
    m, k = x2.shape
    g = -(-k // group)
    xf = torch.zeros(m, g * group, dtype=torch.float32, device=x2.device)
    xf[:, :k] = x2.to(torch.float32)
    xg = xf.view(m, g, group)
    amax = xg.abs().amax(dim=2)
    # tensor / tensor: correctly rounded, as the kernel's div_rn (PyTorch computes ``127.0 / t`` and, on CUDA,
    # ``t / 127.0`` through a reciprocal)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / torch.where(amax > 0, amax, 1.0), 0.0)
    q = _round_half_away(xg * inv[:, :, None]).clamp_(-127, 127).to(torch.int8).view(m, g * group)[:, :k]
    return q.contiguous(), amax / torch.full_like(amax, 127.0)  # tensor / tensor: see inv


def w8a8_emulated(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None,
                  group: int = TILE) -> torch.Tensor:
    """The kernel's math in PyTorch: x [..., K] -> fp32 [..., N] (exact integer dots per K step, fp32 scales).

    ``group``: K columns per activation scale and per step (128: the ``prequant`` mode; the ``fused`` mode uses
    its BLOCK_K)."""
    n, k = w_q.shape
    x2 = x.reshape(-1, k)
    a_q, a_s = quantize_activations(x2, group)
    return w8a8_gemm_emulated(a_q, a_s, w_q, w_scale, bias, group).reshape(*x.shape[:-1], n)


def w8a8_gemm_emulated(a_q: torch.Tensor, a_s: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                       bias: torch.Tensor | None = None, group: int = TILE) -> torch.Tensor:
    """The GEMM half of the emulation on given activation codes: a_q int8 [M, K], a_s fp32 [M, ceil(K/group)]
    -> fp32 [M, N]."""
    n, k = w_q.shape
    out = torch.zeros(a_q.shape[0], n, dtype=torch.float32, device=a_q.device)
    for t in range(a_s.shape[1]):
        c0, c1 = t * group, min(k, (t + 1) * group)
        part = (a_q[:, c0:c1].to(torch.float64) @ w_q[:, c0:c1].to(torch.float64).T).to(torch.float32)
        ws = w_scale[:, c0 // TILE].to(device=a_q.device, dtype=torch.float32).repeat_interleave(TILE)[:n]
        out += part * a_s[:, t:t + 1] * ws[None, :]
    if bias is not None:
        out += bias.to(device=a_q.device, dtype=torch.float32)
    return out


def w8a8_dequant_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """The dequantised path: F.linear with the weight dequantised to x's dtype (activations not quantised)."""
    w = dequantize_tiles(w_q.to(x.device), w_scale, x.dtype)
    return F.linear(x, w, None if bias is None else bias.to(device=x.device, dtype=x.dtype))


def _kernels():
    from .functional import _kernels as k
    return k()


_KERNELS: dict = {}  # "w8a8": the kernels.w8a8 module, once imported


@torch._dynamo.assume_constant_result
def _mode() -> str:
    return os.environ.get(BACKEND_ENV, "auto")


@torch._dynamo.assume_constant_result
def _kernels_importable() -> bool:
    """Imports the kernels package (registering ``comfyui_sla::w8a8_linear``); a constant for torch.compile."""
    try:
        _KERNELS["w8a8"] = _kernels().w8a8
    except Exception:  # ImportError, or Triton failing to initialise
        return False
    return True


def w8a8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None,
                name: str = "") -> torch.Tensor:
    """W8A8 forward: x [..., K] bf16/fp16/fp32 -> [..., N] in x's dtype.

    The Triton kernel where it runs (see the module docstring for ``COMFYUI_SLA_W8A8``), else the dequantised path;
    why is logged once per reason (outside torch.compile tracing). ``name`` (the layer) only labels those lines.
    Traceable by torch.compile with fullgraph=True: the kernel is one opaque custom op."""
    mode = _mode()
    if mode == "dequant":
        who, why, level = "int8 layers", f"{BACKEND_ENV}=dequant", logging.INFO
    elif not (x.device.type == "cuda" or mode == "kernel") or not _kernels_importable():
        who, why, level = "int8 layers", f"no Triton kernel for {x.device.type} tensors", logging.INFO
    else:
        why = _KERNELS["w8a8"].unsupported_reason(x, w_q, w_scale, bias)
        if why is None or mode == "kernel":  # 'kernel' lets the op raise on what it cannot take
            return torch.ops.comfyui_sla.w8a8_linear(x, w_q, w_scale, bias)
        who, level = name or "an int8 layer", logging.WARNING  # a GPU the kernel should serve: worth a warning
    if not torch.compiler.is_compiling():
        _log_once(why, level, "SLA W8A8: %s run(s) on dequantised weights: %s", who, why)
    return w8a8_dequant_linear(x, w_q, w_scale, bias)
