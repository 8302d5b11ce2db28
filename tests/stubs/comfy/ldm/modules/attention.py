"""Stand-in of comfy/ldm/modules/attention.py: ``wrap_attn`` (the per-model override hook),
``AttentionTensorContainer`` (ComfyUI >= 0.33: single-owner q, k, v, unwrapped before an override without a
``container_function``) and a dense ``optimized_attention`` on [B, L, H*D] tensors (or [B, H, L, D] with
``skip_reshape``)."""
import functools

import torch


class AttentionTensorContainer:
    """Single-owner tensor input consumed by an attention backend."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor

    def peek(self):
        if self.tensor is None:
            raise RuntimeError("attention tensor container has already been consumed")
        return self.tensor

    def take(self):
        tensor = self.peek()
        self.tensor = None
        return tensor


def wrap_attn(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        containers = None
        if len(args) >= 3 and isinstance(args[0], AttentionTensorContainer):
            containers = args[:3]
        if "_inside_attn_wrapper" in kwargs:
            if containers is not None:
                args = tuple(c.take() for c in containers) + args[3:]
            return func(*args, **kwargs)
        kwargs["_inside_attn_wrapper"] = True
        try:
            to = kwargs.get("transformer_options", None)
            if containers is not None:  # no container_function anywhere here: unwrap for override and func
                args = tuple(c.take() for c in containers) + args[3:]
            if to is not None and "optimized_attention_override" in to:
                return to["optimized_attention_override"](func, *args, **kwargs)
            return func(*args, **kwargs)
        finally:
            del kwargs["_inside_attn_wrapper"]
    return wrapper


@wrap_attn
def attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                      skip_output_reshape=False, **kwargs):
    if skip_reshape:
        b, _, _, d = q.shape
    else:
        b, _, hd = q.shape
        d = hd // heads
        q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    if mask is not None and mask.dim() == 2:
        mask = mask.unsqueeze(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(b, -1, heads * d)


optimized_attention = attention_pytorch
optimized_attention_masked = optimized_attention
