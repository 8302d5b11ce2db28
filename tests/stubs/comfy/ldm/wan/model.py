"""Stand-in of comfy/ldm/wan/model.py: Wan attention and block loop, on token sequences.

Same class names, attention calls and block loop as ComfyUI; bodies reduced (no patch embedding, RoPE or
modulation: x is already a [B, L, dim] token sequence, context a [B, Lc, dim] text embedding).
``WanModel`` behaves like ComfyUI >= 0.5 (writes transformer_options["block_index"]); ``WanModelLegacy`` like
0.3.6x (does not).
"""
import torch
import torch.nn as nn

from comfy.ldm.modules.attention import optimized_attention


class WanSelfAttention(nn.Module):
    def __init__(self, dim, num_heads, window_size=(-1, -1), qk_norm=True, eps=1e-6, kv_dim=None,
                 operation_settings={}):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        kv_dim = kv_dim or dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x, freqs, transformer_options={}):
        b, s = x.shape[:2]
        x = optimized_attention(self.q(x).view(b, s, -1), self.k(x).view(b, s, -1), self.v(x).view(b, s, -1),
                                heads=self.num_heads, transformer_options=transformer_options)
        return self.o(x)


class WanT2VCrossAttention(WanSelfAttention):
    def forward(self, x, context, transformer_options={}, **kwargs):
        q, k, v = self.q(x), self.k(context), self.v(context)
        x = optimized_attention(q, k, v, heads=self.num_heads, transformer_options=transformer_options)
        return self.o(x)


class WanAttentionBlock(nn.Module):
    def __init__(self, cross_attn_type, dim, ffn_dim, num_heads, window_size=(-1, -1), qk_norm=True,
                 cross_attn_norm=False, eps=1e-6, operation_settings={}):
        super().__init__()
        self.self_attn = WanSelfAttention(dim, num_heads)
        self.cross_attn = WanT2VCrossAttention(dim, num_heads)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))

    def forward(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        x = x + self.self_attn(x, freqs, transformer_options=transformer_options)
        x = x + self.cross_attn(x, context, context_img_len=context_img_len, transformer_options=transformer_options)
        return x + self.ffn(x)


class Head(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim))
        self.head = nn.Linear(dim, dim)

    def forward(self, x, e):
        return self.head(x)


class WanModel(nn.Module):
    def __init__(self, model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=256, ffn_dim=512,
                 freq_dim=256, text_dim=4096, out_dim=16, num_heads=2, num_layers=3, window_size=(-1, -1),
                 qk_norm=True, cross_attn_norm=True, eps=1e-6, image_model=None, device=None, dtype=None,
                 operations=None):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.blocks = nn.ModuleList([WanAttentionBlock("t2v_cross_attn", dim, ffn_dim, num_heads)
                                     for _ in range(num_layers)])
        self.head = Head(dim)

    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        return self.forward_orig(x, timestep, context, clip_fea=clip_fea, transformer_options=transformer_options)

    def forward_orig(self, x, t, context, clip_fea=None, freqs=None, transformer_options={}, **kwargs):
        e0 = None
        context_img_len = None
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        transformer_options["total_blocks"] = len(self.blocks)
        transformer_options["block_type"] = "double"
        for i, block in enumerate(self.blocks):
            transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"],
                                         context_img_len=context_img_len,
                                         transformer_options=args["transformer_options"])}
                out = blocks_replace[("double_block", i)](
                    {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": transformer_options},
                    {"original_block": block_wrap})
                x = out["img"]
            else:
                x = block(x, e=e0, freqs=freqs, context=context, context_img_len=context_img_len,
                          transformer_options=transformer_options)
        return self.head(x, e0)


class WanModelLegacy(WanModel):
    """The 0.3.6x block loop: no block_index in transformer_options."""

    def forward_orig(self, x, t, context, clip_fea=None, freqs=None, transformer_options={}, **kwargs):
        e0 = None
        context_img_len = None
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.blocks):
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"],
                                         context_img_len=context_img_len,
                                         transformer_options=args["transformer_options"])}
                out = blocks_replace[("double_block", i)](
                    {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": transformer_options},
                    {"original_block": block_wrap})
                x = out["img"]
            else:
                x = block(x, e=e0, freqs=freqs, context=context, context_img_len=context_img_len,
                          transformer_options=transformer_options)
        return self.head(x, e0)
