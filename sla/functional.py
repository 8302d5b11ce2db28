"""Public functional API: ``sparse_linear_attention`` on (B, L, H, D) tensors, usable outside ComfyUI."""
from __future__ import annotations

import torch

from .reference import sla_torch
from .spec import BACKENDS, FEATURE_MAPS, check_choice, check_keep_ratio, keep_count, num_blocks, prefix_blocks


def _kernels():
    """The pack's ``kernels`` package (imports Triton); ImportError when ``sla`` runs outside the pack."""
    from .. import kernels
    return kernels


def triton_available(device: torch.device | None = None) -> bool:
    """True when the Triton kernel can run on ``device`` (CUDA and an importable kernels package)."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    if not torch.cuda.is_available():
        return False
    try:
        _kernels()  # lazy: Triton is imported only here
    except Exception:  # ImportError, or Triton failing to initialise
        return False
    return True


def kernel_refusal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int, block_k: int) -> str | None:
    """Why the Triton kernel does not serve this (B, L, H, D) call, or None when it does: the one rule behind
    ``backend='auto'``, for this API and for the ComfyUI patch alike."""
    if not q.is_cuda:
        return f"the kernel runs on CUDA devices, these tensors are on {q.device.type}"
    if not triton_available(q.device):
        return "Triton is not installed or does not start (install triton, or triton-windows on Windows)"
    try:
        _kernels().check_inputs(q, k, v, block_q, block_k)
    except ValueError as e:
        return str(e)
    return None


def sparse_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep_ratio: float = 0.1,
                            proj_weight: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                            feature_map: str = "softmax", block_q: int = 128, block_k: int = 64,
                            backend: str = "auto", prefix: int = 0) -> torch.Tensor:
    """SLA forward. q, k, v: (B, L, H, D), any strides with a unit stride on D; returns (B, L, H, D), q's dtype.

    keep_ratio: share of key blocks each query block attends exactly, (0, 1]. Empty inputs (B = 0 or L = 0) give
    an empty output.
    proj_weight (D, D) / proj_bias (D,): the checkpoint's proj_l (None: training-free block-sparse attention).
    backend: 'auto' (the Triton kernel where :func:`kernel_refusal` finds nothing against it, else the exact
    PyTorch path), 'triton' (the kernel; a ValueError names what it cannot take) or 'torch'.
    prefix: the first ``prefix`` tokens' key blocks are attended exactly by every query, beside the ``keep_ratio``
    share of the others (a packed sequence's conditioning prefix; 0: none).
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, L, H, D) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    check_keep_ratio(keep_ratio)
    check_choice("feature_map", feature_map, FEATURE_MAPS)
    check_choice("backend", backend, BACKENDS)
    if q.numel() == 0:  # B = 0 or L = 0: nothing to attend, on every backend alike
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if backend == "triton" or (backend == "auto" and kernel_refusal(q, k, v, block_q, block_k) is None):
        nk = num_blocks(q.shape[1], block_k)
        return _kernels().sla_forward(q, k, v, keep_count(nk, keep_ratio), proj_weight, proj_bias, feature_map,
                                      block_q, block_k, prefix_blocks=prefix_blocks(prefix, block_k, nk))
    return sla_torch(q, k, v, keep_ratio, proj_weight, proj_bias, feature_map, block_q, block_k, prefix=prefix)
