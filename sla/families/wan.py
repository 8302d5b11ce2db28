"""Wan 2.1 / 2.2 video models (ComfyUI's ``WanModel`` and its VACE, camera, ... variants).

Self-attention: ``optimized_attention(q, k, v, heads=H, transformer_options=...)`` after RoPE, q, k, v of one shape
[B, L, H*D], no mask; it returns [B, L, H*D]. Cross-attention goes through the same call with k, v of the text
or image length. ComfyUI >= 0.5 writes ``transformer_options["block_index"]`` in the block loop; older releases get
the pack's block-index patch. Every Wan model has D = 128 (1.3B: 12 heads, 30 blocks; 14B: 40 heads, 40 blocks).
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import AttentionCall, ModelFamily


class WanFamily(ModelFamily):
    name = "Wan"
    description = "Wan video models (WanModel and its variants)"
    model_classes = ("WanModel",)
    head_dims = (128,)
    # (not grid_sizes: its sizes turn symbolic under dynamic shapes, and a call site holds constants only)
    model_keys = ("block_index", "total_blocks", "block_type")

    def head_dim(self, dm) -> Optional[int]:
        attn = getattr(self.blocks(dm)[0], "self_attn", None)
        if attn is not None and getattr(attn, "head_dim", None):
            return int(attn.head_dim)
        if getattr(dm, "dim", None) and getattr(dm, "num_heads", None):
            return int(dm.dim) // int(dm.num_heads)
        return None

    def own_layout(self, q, heads, kwargs) -> bool:
        return q.dim() == 3 and not kwargs.get("skip_reshape") and not kwargs.get("skip_output_reshape")

    def to_heads(self, call: AttentionCall):
        return tuple(t.unflatten(-1, (call.heads, t.shape[-1] // call.heads)) for t in (call.q, call.k, call.v))

    def from_heads(self, out: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        return out.reshape(call.q.shape)


WAN = WanFamily()
