"""Stand-in of comfy/ldm/minimax/model.py (MiniMax H3): its attention call and block loop, on token rows.

Same class names, attention call and block-loop contract as ComfyUI 0.33: a fused ``qkv_proj``; q and k
normalised and rotated in place on the qkv buffer (so they stay strided views of it), v cloned; q, k, v handed
over as ``AttentionTensorContainer``s of ``[1, H, S, D]`` transposes with ``mask=None, skip_reshape=True``; the
output ``[1, S, H*D]``; the loop runs ``patches_replace["dit"][("double_block", i)]`` with ComfyUI's args dict and
writes no block index. ``MiniMaxH3ModelNew`` has the 0.35+ loop (``minimax_h3_layout`` in transformer_options
before the token refiner runs, ``block_index`` before each DiT block, ``layout`` and ``attention`` in the patch
args, v not cloned).

Bodies reduced: no patchify, adaLN or audio/video heads. ``x`` is ``[1, rows, hidden]`` already embedded target
rows (audio then video), ``context`` ``[1, text, hidden]`` refined text (or ``[1, text, text_dim]`` raw states:
then the token refiner runs inside the forward with transformer_options, as 0.33's ``_forward`` does).
"""
import torch
import torch.nn as nn

from comfy.ldm.modules.attention import AttentionTensorContainer, optimized_attention


def rope_rotation_table(angles, dtype):
    """[S, rot_dim] pair angles -> [1, S, 1, rot_dim/2, 2, 2] rotation matrices."""
    half = angles.shape[-1] // 2
    c, s = torch.cos(angles[:, :half]), torch.sin(angles[:, :half])
    return torch.stack([c, -s, s, c], dim=-1).reshape(1, angles.shape[0], 1, half, 2, 2).to(dtype)


def rms_rope_split_half_(q, k, table, qw, kw, eps):
    """In place on [1, S, H, D] views: per-head RMSNorm, then split-half RoPE on the first rot_dim dims."""
    half = table.shape[-3]
    for x, w in ((q, qw), (k, kw)):
        y = torch.nn.functional.rms_norm(x, (x.shape[-1],), w, eps)
        a, b = y[..., :half], y[..., half:2 * half]
        rot = table[..., 0, 0] * a + table[..., 0, 1] * b, table[..., 1, 0] * a + table[..., 1, 1] * b
        x.copy_(torch.cat([rot[0], rot[1], y[..., 2 * half:]], dim=-1))


class Attention(nn.Module):
    def __init__(self, hidden, heads, head_dim, eps, dtype=None, device=None, operations=None):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.qkv_proj = nn.Linear(hidden, inner * 3, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=eps)
        self.out_proj = nn.Linear(inner, hidden, bias=False)
        self.clone_v = True

    def forward(self, x, rope_freqs=None, transformer_options={}):
        s = x.shape[0]
        q, k, v = self.qkv_proj(x).split(self.heads * self.head_dim, dim=-1)
        v = v.view(s, self.heads, self.head_dim)
        if rope_freqs is not None:
            q = q.view(1, s, self.heads, self.head_dim)
            k = k.view(1, s, self.heads, self.head_dim)
            rms_rope_split_half_(q, k, rope_freqs, self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)
            q = q[0]
            k = k[0]
        else:
            q = self.q_norm(q.view(s, self.heads, self.head_dim))
            k = self.k_norm(k.view(s, self.heads, self.head_dim))
        if self.clone_v:
            v = v.clone()
        q = AttentionTensorContainer(q.transpose(0, 1).unsqueeze(0))
        k = AttentionTensorContainer(k.transpose(0, 1).unsqueeze(0))
        v = AttentionTensorContainer(v.transpose(0, 1).unsqueeze(0))
        out = optimized_attention(q, k, v, self.heads, mask=None, skip_reshape=True,
                                  transformer_options=transformer_options)
        return self.out_proj(out.squeeze(0))


class MLP(nn.Module):
    def __init__(self, hidden, ffn, dtype=None, device=None, operations=None):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn * 2, bias=False)
        self.fc2 = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(nn.functional.silu(a) * b)


class RefinerBlock(nn.Module):
    def __init__(self, hidden, heads, head_dim, ffn, eps, qk_eps, dtype=None, device=None, operations=None):
        super().__init__()
        self.norm1 = nn.RMSNorm(hidden, eps=eps)
        self.norm2 = nn.RMSNorm(hidden, eps=eps)
        self.attn = Attention(hidden, heads, head_dim, qk_eps)
        self.mlp = MLP(hidden, ffn)

    def forward(self, x, transformer_options={}):
        x = self.attn(self.norm1(x), transformer_options=transformer_options) + x
        return self.mlp(self.norm2(x)) + x


class TokenRefiner(nn.Module):
    def __init__(self, num_layers, hidden, heads, head_dim, ffn, eps, qk_eps, final_eps,
                 dtype=None, device=None, operations=None):
        super().__init__()
        self.blocks = nn.ModuleList([RefinerBlock(hidden, heads, head_dim, ffn, eps, qk_eps)
                                     for _ in range(num_layers)])
        self.final_norm = nn.RMSNorm(hidden, eps=final_eps)

    def forward(self, x, transformer_options={}):
        for block in self.blocks:
            x = block(x, transformer_options=transformer_options)
        return self.final_norm(x)


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, head_dim, ffn, t_dim, eps, qk_eps, dtype=None, device=None,
                 operations=None):
        super().__init__()
        self.norm1 = nn.RMSNorm(hidden, eps=eps)
        self.norm2 = nn.RMSNorm(hidden, eps=eps)
        self.attn = Attention(hidden, heads, head_dim, qk_eps)
        self.mlp = MLP(hidden, ffn)

    def forward(self, x, t_emb, mod_segments, rope_freqs, transformer_options={}, attention=None):
        attention = self.attn if attention is None else attention
        x = x + attention(self.norm1(x) + t_emb, rope_freqs=rope_freqs, transformer_options=transformer_options)
        return x + self.mlp(self.norm2(x))


class PackedLayout:
    """Segment table (start, stop, kind) of the packed sequence [text | audio | video]."""

    def __init__(self, text_len, audio_rows, video_rows):
        self.seq_len = text_len + audio_rows + video_rows
        self.signature = (text_len, audio_rows, video_rows)
        a, b = text_len, text_len + audio_rows
        self.segments = [(0, a, "text"), (a, b, "audio"), (b, self.seq_len, "video")]


class MiniMaxH3Model(nn.Module):
    def __init__(self, hidden_size=256, num_layers=2, token_refiner_num_layers=2, num_attention_heads=2,
                 attention_head_dim=128, ffn_hidden_size=512, text_dim=64, audio_rows=40, rope_inv_freq_len=16,
                 norm_eps=1e-5, qk_norm_eps=1e-5, final_norm_eps=1e-5, dtype=None, device=None, operations=None,
                 **kwargs):
        super().__init__()
        self.hidden_size = hidden_size
        self.audio_rows = audio_rows
        self.condition_proj = nn.Linear(text_dim, hidden_size)
        self.time_proj = nn.Linear(1, hidden_size)
        self.rope = nn.Module()
        inv = 1.0 / (10000.0 ** (torch.arange(rope_inv_freq_len, dtype=torch.float32) / rope_inv_freq_len))
        self.rope.register_buffer("inv_freq", inv)
        self.token_refiner = TokenRefiner(token_refiner_num_layers, hidden_size, num_attention_heads,
                                          attention_head_dim, ffn_hidden_size, norm_eps, qk_norm_eps,
                                          final_norm_eps)
        self.blocks = nn.ModuleList([
            DiTBlock(hidden_size, num_attention_heads, attention_head_dim, ffn_hidden_size, hidden_size,
                     norm_eps, qk_norm_eps) for _ in range(num_layers)])
        self.final = nn.Linear(hidden_size, hidden_size)

    def preprocess_text_embeds(self, text_states):
        """[B, L, text_dim] -> [B, L, hidden] refined text (what extra_conds runs once per sampling)."""
        if text_states.shape[-1] == self.hidden_size:
            return text_states
        return self.token_refiner(self.condition_proj(text_states[0])).unsqueeze(0)

    def rope_freqs(self, seq_len, device):
        # 3 axes x 16 frequencies of one position per token: rot_dim 96 of 128
        pos = torch.arange(seq_len, dtype=torch.float32, device=device)
        half = (pos[:, None] * self.rope.inv_freq[None]).repeat(1, 3)
        return torch.cat((half, half), dim=-1)

    def forward(self, x, timestep, context, transformer_options={}, minimax_payload=None, denoise_mask=None,
                audio_denoise_mask=None, **kwargs):
        return self._forward(x, timestep, context, transformer_options, minimax_payload=minimax_payload, **kwargs)

    def _publish_layout(self, layout, transformer_options):
        """0.33 - 0.34 publish no layout."""

    def _embed(self, x, timestep, context, transformer_options, payload=None):
        if x.shape[0] != 1:
            raise ValueError("MiniMax H3 supports batch size 1")
        text_states = context[0]
        layout = (payload or {}).get("layout")   # extra_conds' prebuilt layout, used when its signature matches
        signature = (text_states.shape[0], self.audio_rows, x.shape[1] - self.audio_rows)
        if layout is None or layout.signature != signature:
            layout = PackedLayout(*signature)
        self._publish_layout(layout, transformer_options)
        if text_states.shape[-1] != self.hidden_size:
            text_states = self.token_refiner(self.condition_proj(text_states),
                                             transformer_options=transformer_options)
        h = torch.cat([text_states.to(x.dtype), x[0]], dim=0)
        t_emb = self.time_proj(timestep.reshape(-1, 1)[:1].to(x.dtype) / 1000.0)
        rope = rope_rotation_table(self.rope_freqs(layout.seq_len, x.device), x.dtype)
        return h, t_emb, [(0, layout.seq_len, 0)], rope, layout

    def _forward(self, x, timestep, context, transformer_options={}, minimax_payload=None, denoise_mask=None,
                 audio_denoise_mask=None, **kwargs):
        h, t_emb, mod_segments, rope_freqs, layout = self._embed(x, timestep, context, transformer_options, minimax_payload)
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.blocks):
            if ("double_block", i) in blocks_replace:
                def block_wrap(args):
                    return {"img": block(args["img"], args["t_emb"], args["mod_segments"], args["rope_freqs"],
                                         transformer_options=args["transformer_options"])}
                h = blocks_replace[("double_block", i)](
                    {"img": h, "t_emb": t_emb, "mod_segments": mod_segments, "rope_freqs": rope_freqs,
                     "transformer_options": transformer_options},
                    {"original_block": block_wrap})["img"]
            else:
                h = block(h, t_emb, mod_segments, rope_freqs, transformer_options=transformer_options)
        return self.final(h[layout.segments[1][0]:]).unsqueeze(0)


class MiniMaxH3ModelNew(MiniMaxH3Model):
    """The 0.35+ model: block_index and minimax_h3_layout in transformer_options, v a view of the qkv buffer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for block in list(self.blocks) + list(self.token_refiner.blocks):
            block.attn.clone_v = False

    def _publish_layout(self, layout, transformer_options):
        # before the token refiner runs (inside the forward), as 0.35+ does: refiner calls see it too
        transformer_options["minimax_h3_layout"] = layout

    def _forward(self, x, timestep, context, transformer_options={}, minimax_payload=None, denoise_mask=None,
                 audio_denoise_mask=None, **kwargs):
        h, t_emb, mod_segments, rope_freqs, layout = self._embed(x, timestep, context, transformer_options, minimax_payload)
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.blocks):
            transformer_options["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def block_wrap(args):
                    return {"img": block(args["img"], args["t_emb"], args["mod_segments"], args["rope_freqs"],
                                         transformer_options=args["transformer_options"],
                                         attention=args.get("attention"))}
                h = blocks_replace[("double_block", i)](
                    {"img": h, "t_emb": t_emb, "mod_segments": mod_segments, "rope_freqs": rope_freqs,
                     "layout": layout, "transformer_options": transformer_options},
                    {"original_block": block_wrap})["img"]
            else:
                h = block(h, t_emb, mod_segments, rope_freqs, transformer_options=transformer_options)
        return self.final(h[layout.segments[1][0]:]).unsqueeze(0)
