"""Triton kernels of SLA and their launcher. Importing this package imports Triton.

``prepass`` (block means, linear summaries) -> ``topk`` (block mask as a LUT) -> ``attend`` / ``attend_tma`` (the
main kernel, pointer loads or TMA), chosen and launched by ``launch``. ``sla_forward`` is registered as the torch
custom op ``comfyui_sla::sla_forward`` (with a fake implementation), so ``torch.compile`` of a patched model sees
one opaque node instead of tracing into Triton.

``w8a8_triton`` / ``w8a8`` (the int8 W8A8 linear layer of ``-quant`` checkpoints, custom op
``comfyui_sla::w8a8_linear``) are a sibling, imported on their own (docs/W8A8.md).
"""
from __future__ import annotations

import torch

from .launch import check_inputs, sla_forward_impl, supports

__all__ = ["sla_forward", "sla_forward_impl", "supports", "check_inputs"]

_OP_NAME = "comfyui_sla::sla_forward"


def _register():
    """Register the custom op once per process (the pack may be imported under several module names)."""
    ns, name = _OP_NAME.split("::")
    try:
        return getattr(getattr(torch.ops, ns), name)  # defined by another import of this package
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op(_OP_NAME, mutates_args=())
    def _op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int,
            proj_weight: torch.Tensor | None, proj_bias: torch.Tensor | None, feature_map: str,
            block_q: int, block_k: int, compute_dtype: str, prefix_blocks: int = 0) -> torch.Tensor:
        return sla_forward_impl(q, k, v, keep, proj_weight, proj_bias, feature_map, block_q, block_k,
                                compute_dtype, prefix_blocks=prefix_blocks)

    @_op.register_fake
    def _fake(q, k, v, keep, proj_weight, proj_bias, feature_map, block_q, block_k, compute_dtype,
              prefix_blocks=0):
        return q.new_empty(q.shape)  # contiguous (B, L, H, D) in q's dtype, like the real op

    return _op


_sla_op = _register()


def sla_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int,
                proj_weight: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                feature_map: str = "softmax", block_q: int = 128, block_k: int = 64,
                compute_dtype: str = "auto", prefix_blocks: int = 0) -> torch.Tensor:
    """SLA forward on (B, L, H, D) views (unit stride on D) -> contiguous (B, L, H, D) in q's dtype.

    keep: key blocks kept per query-block row, in [1, Nk] (``sla.spec.keep_count``), chosen among the blocks
    after the first ``prefix_blocks``, which every query attends (``sla.spec.prefix_blocks``); proj_weight (D, D) /
    proj_bias (D,): proj_l (None = training-free block-sparse attention); feature_map 'softmax' | 'elu' | 'relu';
    block_q 64 | 128, block_k 64; compute_dtype 'auto' (fp16 stays fp16, else bf16) | 'bf16' | 'fp16' | 'fp32'.
    Goes through the custom op ``comfyui_sla::sla_forward``.
    """
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise ValueError(f"keep must be an int (key blocks kept per row, sla.spec.keep_count), got {keep!r}")
    return _sla_op(q, k, v, keep, proj_weight, proj_bias, feature_map, int(block_q), int(block_k),
                   compute_dtype, int(prefix_blocks))


from .w8a8 import w8a8_linear  # noqa: E402,F401  (registers comfyui_sla::w8a8_linear)
