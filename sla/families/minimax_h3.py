"""MiniMax H3 audio-video models (ComfyUI's ``MiniMaxH3Model``, ``comfy/ldm/minimax/model.py``, ComfyUI >= 0.33).

The model: 50 DiT blocks (``dm.blocks``) over ONE packed sequence per call, ``[text | cond / references | audio |
video]``, 56 heads of D = 128, batch 1. Each block's ``Attention.forward`` projects a fused qkv buffer, normalises
and rotates q and k in place, and calls ``optimized_attention(q, k, v, heads, mask=None, skip_reshape=True,
transformer_options=...)`` with q, k, v ``[1, H, S, D]`` views (transposes of the ``[S, H, D]`` rows: q and k
stride ``3*H*D`` per token inside the qkv buffer; ComfyUI >= 0.33 wraps them in ``AttentionTensorContainer``s and
unwraps them before calling an override that has no ``container_function``, as ours has none). ComfyUI expects
``[1, S, H*D]`` back (what ``attention_pytorch`` returns for ``skip_reshape=True``): :meth:`from_heads` returns
exactly that.

No copy: :meth:`MiniMaxH3Family.to_heads` hands the kernel ``q.transpose(1, 2)``, a ``[1, S, H, D]`` view of the
same memory (strides per b, token, head; unit stride on D), which the pre-pass and the main kernel read through
their strides.

Self-attention only: H3 has no cross-attention and no mask; other call shapes pass through untouched (R_LAYOUT),
and so do containers handed to us still wrapped. The 2-layer token refiner (text only) stays dense: ComfyUI runs
it in ``extra_conds`` (``preprocess_text_embeds``) without ``transformer_options``, so it never reaches an
override; only a caller feeding the model unrefined text states would run it inside the forward, where its
calls are text-length, below ``min_tokens``.

Block index: ComfyUI 0.33 - 0.34 write no ``transformer_options["block_index"]`` (the pack's block-index patch
through ``patches_replace["dit"][("double_block", i)]`` does; H3's loop passes ``transformer_options`` in the
patch's args); 0.35+ write it (and ``minimax_h3_layout``) in ``_forward``'s block loop.

Segments (:meth:`MiniMaxH3Family.segments`): the packed layout of each model call, read by the model-call wrapper
(outside compiled code) from ``minimax_payload["layout"]`` (built once per run by ``extra_conds``, 0.33+) or
``transformer_options["minimax_h3_layout"]``; the run report shows them, and ApplySLA's ``exact_prefix`` makes
every query attend the key blocks before the target video exactly (off by default: the router was trained
without it).

The routing is the training router of the Turbo-SLA LoRA (LightX2V ``dynamic_sparse_attn``, ``get_block_map``),
which is SLA's block mask without the linear branch: per head over the whole packed sequence, block means of q
and of k - mean_S(k), score = pooled q . pooled k, top ``keep`` key blocks per query block, then exact softmax
attention (scale D^-0.5) over the kept blocks only. No prefix protection, no diagonal, no linear branch, every
block and step. With no proj_l the main kernel and the PyTorch path compute that block-sparse softmax alone (the
kernel's pre-pass still sums phi(K)^T V on the way, unused). Deliberate differences (tests/test_minimax_h3.py
measures them):

* the pooled blocks and scores stay in fp32 here; LightX2V stores the pooled blocks (and the score matmul's
  output) in bf16. Rounding only swaps blocks whose scores tie to bf16 resolution, i.e. blocks the router holds
  equally relevant (random inputs: 99.6% of the kept blocks are the same); the fp32 mask equals a float64
  router's.
* keep count ``sla.spec.keep_count`` = ``max(1, min(K, floor(keep * K + 1e-9)))`` against LightX2V's
  ``max(1, min(K, int((1 - sparsity) * K)))``: equal for every K at the LoRA's sparsity 0.85 (keep 0.15), and at
  0.95, 0.7, 0.5. At sparsity 0.9 / 0.8, 1 - sparsity is 0.0999...98 / 0.1999...96 in floating point and the
  router keeps one block fewer wherever keep * K is whole (K = 20, 30, ... / 10, 15, ...); keep 0.10 / 0.20
  here keep the ratio as written.
* block sizes: LightX2V's sage2 operator (its SLA preset) routes 128x64 blocks except on sm90, where it uses
  64x128; the pack's kernels take block_k = 64 only, so 128x64 everywhere.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import AttentionCall, ModelFamily, Segments

# The Turbo-SLA LoRA's routing: LightX2V's preset sparsity_ratio 0.85.
H3_KEEP_RATIO = 0.15


class MiniMaxH3Family(ModelFamily):
    name = "MiniMax H3"
    description = "MiniMax H3 audio-video models (MiniMaxH3Model)"
    model_classes = ("MiniMaxH3Model",)
    # The refiner's text-only calls (if they ever arrive) are far below 2048 tokens; a 768p H3 call has >= 2 016
    # video tokens plus text and audio.
    defaults = dict(ModelFamily.defaults, keep_ratio=H3_KEEP_RATIO)
    head_dims = (128,)
    # minimax_h3_layout (0.35+) is an object, not a constant: a compiled call site cannot carry it.
    model_keys = ("block_index",)
    block_loop = "_forward"
    linear_branch = False
    layout_key = "minimax_h3_layout"

    def head_dim(self, dm) -> Optional[int]:
        attn = getattr(self.blocks(dm)[0], "attn", None)
        d = getattr(attn, "head_dim", None)
        return int(d) if d else None

    def own_layout(self, q, heads, kwargs) -> bool:
        # [1, H, S, D] views of the qkv buffer, answered [1, S, H*D]
        return (q.dim() == 4 and q.shape[1] == heads and bool(kwargs.get("skip_reshape"))
                and not kwargs.get("skip_output_reshape"))

    def to_heads(self, call: AttentionCall):
        # [B, H, S, D] -> [B, S, H, D] views: the kernels read them through their strides
        return call.q.transpose(1, 2), call.k.transpose(1, 2), call.v.transpose(1, 2)

    def from_heads(self, out: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        b, s, h, d = out.shape
        return out.reshape(b, s, h * d)

    def _layout(self, options, model_kwargs):
        # 0.33+: the PackedLayout extra_conds builds once per run rides in minimax_payload; 0.35+ also puts it in
        # transformer_options["minimax_h3_layout"] (the same object, when its signature matches the call)
        layout = options.get(self.layout_key) if isinstance(options, dict) else None
        if layout is None:
            payload = model_kwargs.get("minimax_payload")
            layout = payload.get("layout") if isinstance(payload, dict) else None
        return layout

    def model_written(self, options, model_kwargs) -> dict:
        layout = self._layout(options, model_kwargs)
        return {} if layout is None else {self.layout_key: layout}

    def segments(self, options, model_kwargs) -> Optional[Segments]:
        layout = self._layout(options, model_kwargs)
        try:
            segs = tuple((int(a), int(b), str(kind)) for a, b, kind in getattr(layout, "segments", None) or ())
        except (TypeError, ValueError):
            return None
        return segs or None

    def output_like(self, q: torch.Tensor) -> torch.Tensor:
        b, h, s, d = q.shape
        return q.new_empty((b, s, h * d))


MINIMAX_H3 = MiniMaxH3Family()
