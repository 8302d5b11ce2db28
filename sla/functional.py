"""Public functional API: ``sparse_linear_attention`` on (B, L, H, D) tensors, usable outside ComfyUI."""
from __future__ import annotations

import torch

from .reference import FEATURE_MAPS, VARIANTS, sla_torch
from .spec import keep_count, num_blocks

BACKENDS = ("auto", "triton", "torch")


def _kernels():
    """The pack's ``kernels`` package (imports Triton).

    Inside the pack (ComfyUI, tests) it is the sibling subpackage. When ``sla`` was imported on its own (a script
    run from the pack folder), there is no parent package, so the pack folder is registered under a private name
    (an empty parent, its ``__init__`` not run) and ``kernels`` imported from it: its relative import of
    ``sla.spec`` then resolves, and no top-level ``kernels`` that another installed package may own is touched.
    """
    if __package__ and "." in __package__:
        from .. import kernels
        return kernels
    import importlib
    import pathlib
    import sys
    import types
    parent = "_sla_pack"
    if parent not in sys.modules:
        pack = types.ModuleType(parent)
        pack.__path__ = [str(pathlib.Path(__file__).resolve().parents[1])]
        sys.modules[parent] = pack
    return importlib.import_module(parent + ".kernels")


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


def sparse_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep_ratio: float = 0.1,
                            proj_weight: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                            feature_map: str = "softmax", block_q: int = 128, block_k: int = 64,
                            variant: str = "main", backend: str = "auto") -> torch.Tensor:
    """SLA forward. q, k, v: (B, L, H, D), any strides with a unit stride on D; returns (B, L, H, D), q's dtype.

    proj_weight (D, D) / proj_bias (D,): the checkpoint's proj_l (None: training-free block-sparse attention).
    backend: 'auto' (Triton on CUDA, PyTorch elsewhere), 'triton' or 'torch'.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, L, H, D) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    # The kernels run the main variant only; 'sla1' stays on the PyTorch path until it leaves this API.
    if variant == "main" and (backend == "triton" or (backend == "auto" and q.is_cuda
                                                      and triton_available(q.device))):
        kernels = _kernels()
        # 'auto' falls back to the PyTorch path for what the kernel does not cover (e.g. head size 96);
        # 'triton' raises a ValueError that names what was found instead.
        if backend == "triton" or kernels.supports(q, k, v, block_q, block_k):
            keep = keep_count(num_blocks(q.shape[1], block_k), keep_ratio)
            return kernels.sla_forward(q, k, v, keep, proj_weight, proj_bias, feature_map, block_q, block_k)
    return sla_torch(q, k, v, keep_ratio, proj_weight, proj_bias, feature_map, block_q, block_k, variant)
