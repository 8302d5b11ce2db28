"""Stand-in of comfy/ldm/modules/attention.py: ``wrap_attn`` (the per-model override hook) and a dense
``optimized_attention`` on [B, L, H*D] tensors."""
import functools

import torch


def wrap_attn(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if "_inside_attn_wrapper" in kwargs:
            return func(*args, **kwargs)
        kwargs["_inside_attn_wrapper"] = True
        try:
            to = kwargs.get("transformer_options", None)
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
