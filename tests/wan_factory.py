"""Tiny random Wan checkpoints in every layout the pack reads (test helper; no ComfyUI import).

``make_wan_state_dict`` builds the keys and shapes of ComfyUI's ``comfy.ldm.wan.model.WanModel`` (ComfyUI-native
naming, the same as Wan's original and TurboDiffusion's) plus, optionally, TurboDiffusion's per-block proj_l keys
``blocks.{i}.self_attn.attn_op.local_attn.proj_l.{weight,bias}``. The ``to_*`` functions turn that native dict into
the other published layouts; ``save_pth`` / ``save_safetensors`` write them.

Layouts (see the loader in ``sla/checkpoint/``):

- native:           ComfyUI names, ``patch_embedding.weight`` as Conv3d [dim, in_dim, 1, 2, 2].
- turbodiffusion:   same names, ``patch_embedding.weight`` flattened to a Linear [dim, in_dim*1*2*2] in (c, kt, kh, kw)
                    order, norm weights fp32, everything else bf16; optional ``net.`` / ``_checkpoint_wrapped_module.``
                    prefixes.
- turbodiffusion quant: as above, but every Linear inside ``blocks`` except proj_l is ``int8_weight`` (int8 [out, in])
                    + ``scale`` (fp32 [ceil(out/128), ceil(in/128)], W ~= int8 * scale per 128x128 tile, scale =
                    tile amax / 128 as TurboDiffusion's quant kernel computes it) + ``bias``.
- diffusers (FastVideo-style proj_l ``blocks.{i}.attn1.attn_impl.proj_l.*``) and sglang (``blocks.{i}.attn1.
                    local_attn.proj_l.*``): Diffusers ``WanTransformer3DModel`` names for the base weights.
- simpletuner:      a separate ``sla_attention.pt``: ``{"settings": {...}, "state": {"128:bf16": {"proj_l.weight",
                    "proj_l.bias"}}, "version": 1}`` -- ONE proj_l shared by every layer of that head size/dtype.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional

import torch

TD_PROJ_L = "blocks.{i}.self_attn.attn_op.local_attn.proj_l.{p}"
FASTVIDEO_PROJ_L = "blocks.{i}.attn1.attn_impl.proj_l.{p}"
SGLANG_PROJ_L = "blocks.{i}.attn1.local_attn.proj_l.{p}"
DIFFUSERS_PROJ_L = "blocks.{i}.attn1.attn_op.local_attn.proj_l.{p}"

TILE = 128

# Linear layers inside each block (ComfyUI names, without the ``blocks.{i}.`` prefix and ``.weight``).
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                 "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
BLOCK_LINEARS_I2V = ("cross_attn.k_img", "cross_attn.v_img")


def _is_norm_key(key: str) -> bool:
    """Norm parameters (RMSNorm / affine LayerNorm) -- TurboDiffusion keeps these fp32."""
    parts = key.split(".")
    return any(p.startswith("norm") for p in parts[:-1]) or key.startswith("img_emb.proj.0.") \
        or key.startswith("img_emb.proj.4.")


def make_wan_state_dict(dim: int = 256, num_heads: int = 2, num_layers: int = 3, ffn_dim: int = 512,
                        in_dim: int = 16, out_dim: int = 16, text_dim: int = 4096, freq_dim: int = 256,
                        i2v: bool = False, seed: int = 0,
                        dtype: torch.dtype = torch.float32, proj_l: bool = True, proj_scale: float = 0.05,
                        proj_l_blocks=None, meta: bool = False) -> Dict[str, torch.Tensor]:
    """Random Wan weights with the exact keys/shapes of ComfyUI's ``WanModel`` (+ TurboDiffusion proj_l keys).

    Args:
        dim, num_heads, ...: WanModel constructor arguments (head_dim = dim // num_heads; ComfyUI detects
            num_heads = dim // 128, so use head_dim 128).
        i2v: Wan2.1 I2V: CLIP projection ``img_emb.*`` plus ``cross_attn.k_img/v_img/norm_k_img`` (ComfyUI picks the
            I2V cross-attention from ``img_emb.proj.0.bias``). Wan2.2-A14B I2V experts have neither: use
            ``i2v=False, in_dim=36``.
        dtype: dtype of every tensor except proj_l (always fp32, as TurboDiffusion declares it).
        proj_l: add ``blocks.{i}.self_attn.attn_op.local_attn.proj_l.{weight [hd, hd], bias [hd]}``.
        proj_scale: std of the random proj_l values (0 gives the zero-initialised, un-fine-tuned layer).
        proj_l_blocks: iterable of block indices that get proj_l (default: all).
        meta: shapes only (tensors on the "meta" device), for real model sizes without the memory.

    Returns:
        dict key -> tensor (CPU, contiguous).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=None):
        if meta:
            return torch.empty(*shape, dtype=dtype, device="meta")
        fan_in = shape[-1] if len(shape) > 1 else 1
        s = std if std is not None else 1.0 / math.sqrt(fan_in)
        return (torch.randn(*shape, generator=g) * s).to(dtype)

    def norm_w(n):
        if meta:
            return torch.empty(n, dtype=dtype, device="meta")
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    sd: Dict[str, torch.Tensor] = {}

    def linear(name, out_f, in_f):
        sd[f"{name}.weight"] = rnd(out_f, in_f)
        sd[f"{name}.bias"] = rnd(out_f, std=0.02)

    sd["patch_embedding.weight"] = rnd(dim, in_dim, 1, 2, 2, std=1.0 / math.sqrt(in_dim * 4))
    sd["patch_embedding.bias"] = rnd(dim, std=0.02)
    linear("text_embedding.0", dim, text_dim)
    linear("text_embedding.2", dim, dim)
    linear("time_embedding.0", dim, freq_dim)
    linear("time_embedding.2", dim, dim)
    linear("time_projection.1", dim * 6, dim)
    for i in range(num_layers):
        b = f"blocks.{i}."
        for n in ("q", "k", "v", "o"):
            linear(b + "self_attn." + n, dim, dim)
        sd[b + "self_attn.norm_q.weight"] = norm_w(dim)
        sd[b + "self_attn.norm_k.weight"] = norm_w(dim)
        sd[b + "norm3.weight"] = norm_w(dim)
        sd[b + "norm3.bias"] = rnd(dim, std=0.02)
        for n in ("q", "k", "v", "o"):
            linear(b + "cross_attn." + n, dim, dim)
        sd[b + "cross_attn.norm_q.weight"] = norm_w(dim)
        sd[b + "cross_attn.norm_k.weight"] = norm_w(dim)
        if i2v:
            linear(b + "cross_attn.k_img", dim, dim)
            linear(b + "cross_attn.v_img", dim, dim)
            sd[b + "cross_attn.norm_k_img.weight"] = norm_w(dim)
        linear(b + "ffn.0", ffn_dim, dim)
        linear(b + "ffn.2", dim, ffn_dim)
        sd[b + "modulation"] = rnd(1, 6, dim, std=1.0 / math.sqrt(dim))
    linear("head.head", out_dim * 4, dim)
    sd["head.modulation"] = rnd(1, 2, dim, std=1.0 / math.sqrt(dim))
    if i2v:
        sd["img_emb.proj.0.weight"] = norm_w(1280)
        sd["img_emb.proj.0.bias"] = rnd(1280, std=0.02)
        linear("img_emb.proj.1", 1280, 1280)
        linear("img_emb.proj.3", dim, 1280)
        sd["img_emb.proj.4.weight"] = norm_w(dim)
        sd["img_emb.proj.4.bias"] = rnd(dim, std=0.02)
    if proj_l:
        hd = dim // num_heads
        blocks = range(num_layers) if proj_l_blocks is None else proj_l_blocks
        for i in blocks:
            if meta:
                sd[TD_PROJ_L.format(i=i, p="weight")] = torch.empty(hd, hd, device="meta")
                sd[TD_PROJ_L.format(i=i, p="bias")] = torch.empty(hd, device="meta")
                continue
            sd[TD_PROJ_L.format(i=i, p="weight")] = torch.randn(hd, hd, generator=g) * proj_scale
            sd[TD_PROJ_L.format(i=i, p="bias")] = torch.randn(hd, generator=g) * proj_scale
    return sd


def split_proj_l(sd: Dict[str, torch.Tensor]):
    """(base dict without proj_l, {block: (weight, bias)}) from a native/TurboDiffusion-named dict."""
    base, proj = {}, {}
    for k, v in sd.items():
        if ".attn_op.local_attn.proj_l." in k:
            i = int(k.split(".")[1])
            w, b = proj.get(i, (None, None))
            proj[i] = (v, b) if k.endswith(".weight") else (w, v)
        else:
            base[k] = v
    return base, proj


# ---------------------------------------------------------------- TurboDiffusion

def to_turbodiffusion(native: Dict[str, torch.Tensor], prefix: str = "", wrapped: bool = False,
                      proj_l_dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """TurboDiffusion ``.pth`` layout: Linear patch embedding, fp32 norms, bf16 rest, optional prefixes.

    ``prefix`` (e.g. ``"net."``) goes before every key; ``wrapped`` inserts ``_checkpoint_wrapped_module.`` after
    ``blocks.{i}.`` as activation checkpointing does.
    """
    out = {}
    for k, v in native.items():
        if k == "patch_embedding.weight":
            v = v.reshape(v.shape[0], -1)  # (c, kt, kh, kw) flatten order == Conv3d weight memory order
        if ".proj_l." in k:
            v = v.to(proj_l_dtype)
        elif _is_norm_key(k):
            v = v.to(torch.float32)
        else:
            v = v.to(torch.bfloat16)
        out[k] = v.contiguous()
    return add_prefixes(out, prefix=prefix, wrapped=wrapped)


def quantize_tiles(w: torch.Tensor):
    """TurboDiffusion-style symmetric int8 quantisation per 128x128 tile.

    Args:
        w: [out, in] float weight.
    Returns:
        (int8 [out, in], fp32 scale [ceil(out/128), ceil(in/128)]) with w ~= int8 * scale (tile-broadcast).
    """
    out_f, in_f = w.shape
    rb, cb = -(-out_f // TILE), -(-in_f // TILE)
    wf = w.float()
    pad = torch.zeros(rb * TILE, cb * TILE)
    pad[:out_f, :in_f] = wf.abs()
    amax = pad.view(rb, TILE, cb, TILE).amax(dim=(1, 3)).clamp_min(1e-8)
    scale = amax / 128.0  # TurboDiffusion's kernel: int8_max = 128, scale_inv = amax / 128
    full = scale.repeat_interleave(TILE, 0).repeat_interleave(TILE, 1)[:out_f, :in_f]
    q = torch.round(wf / full).clamp(-128, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_tiles(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Reference dequantisation (fp32 [out, in]) for tests."""
    out_f, in_f = q.shape
    full = scale.repeat_interleave(TILE, 0).repeat_interleave(TILE, 1)[:out_f, :in_f]
    return q.float() * full


def to_turbodiffusion_quant(native: Dict[str, torch.Tensor], prefix: str = "", wrapped: bool = False
                            ) -> Dict[str, torch.Tensor]:
    """TurboDiffusion ``-quant.pth`` layout: block Linears (not proj_l) as int8 tiles + fp32 scale + bf16 bias."""
    td = to_turbodiffusion(native)
    out = {}
    for k, v in td.items():
        is_block_linear = (k.startswith("blocks.") and k.endswith(".weight") and ".proj_l." not in k
                           and v.ndim == 2)
        if is_block_linear:
            base = k[: -len(".weight")]
            q, s = quantize_tiles(v)
            out[base + ".int8_weight"] = q
            out[base + ".scale"] = s
        else:
            out[k] = v
    return add_prefixes(out, prefix=prefix, wrapped=wrapped)


def add_prefixes(sd: Dict[str, torch.Tensor], prefix: str = "", wrapped: bool = False) -> Dict[str, torch.Tensor]:
    """Rename keys as a trainer would: ``prefix`` before every key, ``_checkpoint_wrapped_module.`` in blocks."""
    out = {}
    for k, v in sd.items():
        if wrapped and k.startswith("blocks."):
            parts = k.split(".", 2)
            k = f"{parts[0]}.{parts[1]}._checkpoint_wrapped_module.{parts[2]}"
        out[prefix + k] = v
    return out


# ---------------------------------------------------------------- Diffusers / FastVideo / sglang

def native_to_diffusers_key(k: str) -> str:
    """ComfyUI/Wan-native key -> Diffusers ``WanTransformer3DModel`` key (base weights only)."""
    top = {
        "text_embedding.0.": "condition_embedder.text_embedder.linear_1.",
        "text_embedding.2.": "condition_embedder.text_embedder.linear_2.",
        "time_embedding.0.": "condition_embedder.time_embedder.linear_1.",
        "time_embedding.2.": "condition_embedder.time_embedder.linear_2.",
        "time_projection.1.": "condition_embedder.time_proj.",
        "img_emb.proj.0.": "condition_embedder.image_embedder.norm1.",
        "img_emb.proj.1.": "condition_embedder.image_embedder.ff.net.0.proj.",
        "img_emb.proj.3.": "condition_embedder.image_embedder.ff.net.2.",
        "img_emb.proj.4.": "condition_embedder.image_embedder.norm2.",
        "head.head.": "proj_out.",
    }
    if k == "head.modulation":
        return "scale_shift_table"
    if k == "img_emb.emb_pos":
        return "condition_embedder.image_embedder.pos_embed"
    for a, b in top.items():
        if k.startswith(a):
            return b + k[len(a):]
    if k.startswith("blocks."):
        _, i, rest = k.split(".", 2)
        blk = {
            "self_attn.q.": "attn1.to_q.", "self_attn.k.": "attn1.to_k.", "self_attn.v.": "attn1.to_v.",
            "self_attn.o.": "attn1.to_out.0.", "self_attn.norm_q.": "attn1.norm_q.",
            "self_attn.norm_k.": "attn1.norm_k.",
            "cross_attn.q.": "attn2.to_q.", "cross_attn.k.": "attn2.to_k.", "cross_attn.v.": "attn2.to_v.",
            "cross_attn.o.": "attn2.to_out.0.", "cross_attn.norm_q.": "attn2.norm_q.",
            "cross_attn.norm_k.": "attn2.norm_k.", "cross_attn.k_img.": "attn2.add_k_proj.",
            "cross_attn.v_img.": "attn2.add_v_proj.", "cross_attn.norm_k_img.": "attn2.norm_added_k.",
            "norm3.": "norm2.", "ffn.0.": "ffn.net.0.proj.", "ffn.2.": "ffn.net.2.",
        }
        if rest == "modulation":
            return f"blocks.{i}.scale_shift_table"
        for a, b in blk.items():
            if rest.startswith(a):
                return f"blocks.{i}.{b}{rest[len(a):]}"
    return k  # patch_embedding.* keeps its name (Conv3d in Diffusers too)


def native_to_fastvideo_key(k: str) -> str:
    """ComfyUI/Wan-native key -> FastVideo's internal module name (what its TurboDiffusion converters write)."""
    top = {
        "text_embedding.0.": "condition_embedder.text_embedder.fc_in.",
        "text_embedding.2.": "condition_embedder.text_embedder.fc_out.",
        "time_embedding.0.": "condition_embedder.time_embedder.mlp.fc_in.",
        "time_embedding.2.": "condition_embedder.time_embedder.mlp.fc_out.",
        "time_projection.1.": "condition_embedder.time_modulation.linear.",
        "img_emb.proj.0.": "condition_embedder.image_embedder.norm1.",
        "img_emb.proj.1.": "condition_embedder.image_embedder.ff.fc_in.",
        "img_emb.proj.3.": "condition_embedder.image_embedder.ff.fc_out.",
        "img_emb.proj.4.": "condition_embedder.image_embedder.norm2.",
        "head.head.": "proj_out.",
    }
    if k == "head.modulation":
        return "scale_shift_table"
    for a, b in top.items():
        if k.startswith(a):
            return b + k[len(a):]
    if k.startswith("blocks."):
        _, i, rest = k.split(".", 2)
        blk = {
            "self_attn.q.": "to_q.", "self_attn.k.": "to_k.", "self_attn.v.": "to_v.", "self_attn.o.": "to_out.",
            "self_attn.norm_q.": "norm_q.", "self_attn.norm_k.": "norm_k.",
            "cross_attn.q.": "attn2.to_q.", "cross_attn.k.": "attn2.to_k.", "cross_attn.v.": "attn2.to_v.",
            "cross_attn.o.": "attn2.to_out.", "cross_attn.norm_q.": "attn2.norm_q.",
            "cross_attn.norm_k.": "attn2.norm_k.", "cross_attn.k_img.": "attn2.add_k_proj.",
            "cross_attn.v_img.": "attn2.add_v_proj.", "cross_attn.norm_k_img.": "attn2.norm_added_k.",
            "norm3.": "self_attn_residual_norm.norm.", "ffn.0.": "ffn.fc_in.", "ffn.2.": "ffn.fc_out.",
        }
        if rest == "modulation":
            return f"blocks.{i}.scale_shift_table"
        for a, b in blk.items():
            if rest.startswith(a):
                return f"blocks.{i}.{b}{rest[len(a):]}"
    return k


def to_diffusers(native: Dict[str, torch.Tensor], proj_l_style: str = "fastvideo",
                 dtype: torch.dtype = torch.bfloat16, naming: str = "diffusers") -> Dict[str, torch.Tensor]:
    """Diffusers-named (or FastVideo-internal-named, ``naming="fastvideo"``) Wan with proj_l as FastVideo
    (``attn1.attn_impl``), sglang (``attn1.local_attn``) or Diffusers-TurboWan (``attn1.attn_op.local_attn``) keys."""
    pattern = {"fastvideo": FASTVIDEO_PROJ_L, "sglang": SGLANG_PROJ_L, "diffusers": DIFFUSERS_PROJ_L}[proj_l_style]
    rename = native_to_diffusers_key if naming == "diffusers" else native_to_fastvideo_key
    base, proj = split_proj_l(native)
    out = {rename(k): v.to(dtype).contiguous() for k, v in base.items()}
    for i, (w, b) in proj.items():
        if w is not None:
            out[pattern.format(i=i, p="weight")] = w.float().contiguous()
        if b is not None:
            out[pattern.format(i=i, p="bias")] = b.float().contiguous()
    return out


# ---------------------------------------------------------------- SimpleTuner

def simpletuner_payload(weight: torch.Tensor, bias: torch.Tensor, dtype_token: str = "bf16",
                        settings: Optional[dict] = None) -> dict:
    """SimpleTuner's ``sla_attention.pt`` payload (structure from its AttentionBackendController._serialize_state)."""
    hd = weight.shape[0]
    return {
        "settings": settings if settings is not None else
        {"topk": 0.2, "feature_map": "softmax", "blkq": 64, "blkk": 64, "tie_feature_map_qk": True},
        "state": {f"{hd}:{dtype_token}": {"proj_l.weight": weight.float().clone(), "proj_l.bias": bias.float().clone()}},
        "version": 1,
    }


# ---------------------------------------------------------------- writers

def save_pth(sd, path) -> str:
    path = os.fspath(path)
    torch.save(sd, path)
    return path


def save_safetensors(sd: Dict[str, torch.Tensor], path, metadata: Optional[dict] = None) -> str:
    from safetensors.torch import save_file
    path = os.fspath(path)
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata=metadata)
    return path


def native_reference(native: Dict[str, torch.Tensor], dtype: Optional[torch.dtype] = None):
    """What the loader should return for ``native`` (proj_l removed), optionally cast to ``dtype``."""
    base, proj = split_proj_l(native)
    if dtype is not None:
        base = {k: v.to(dtype) for k, v in base.items()}
    return base, proj
