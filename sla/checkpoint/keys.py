"""Key naming of the Wan checkpoint layouts the pack reads: prefixes, base-weight naming, proj_l aliases, families.

Pure string logic (no tensors read here), used by ``plan.py`` and ``shapes.py`` (and ``convert.py`` for the name it
writes).

Base-weight namings mapped to ComfyUI's (= Wan's original = TurboDiffusion's) names:

- ``wan``:        ``blocks.N.self_attn.q``, ``ffn.0``, ``norm3``, ``modulation``, ``head.head``, ``head.modulation`` ...
- ``diffusers``:  Diffusers ``WanTransformer3DModel`` (``blocks.N.attn1.to_q``, ``attn1.to_out.0``, ``ffn.net.0.proj``,
                  ``norm2`` (the affine cross-attention norm), ``scale_shift_table``, ``condition_embedder.*``,
                  ``proj_out``).
- ``fastvideo``:  FastVideo's internal module names, which its TurboDiffusion converters also write
                  (``blocks.N.to_q``, ``to_out``, ``attn2.to_out``, ``ffn.fc_in``, ``self_attn_residual_norm.norm``,
                  ``condition_embedder.text_embedder.fc_in``, ``time_embedder.mlp.fc_in``, ``time_modulation.linear``).

proj_l aliases (one ``Linear(head_dim, head_dim)`` per block):

- ``turbodiffusion``: ``blocks.N.self_attn.attn_op.local_attn.proj_l.{weight,bias}``
- ``fastvideo``:      ``blocks.N.attn1.attn_impl.proj_l.*``
- ``sglang``:         ``blocks.N.attn1.local_attn.proj_l.*``
- ``diffusers``:      ``blocks.N.attn1.attn_op.local_attn.proj_l.*`` (TurboWan exports renamed to Diffusers)
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

# Whole-key prefixes that trainers/wrappers add; stripped when they lead a key.
LEADING_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "net.", "module.", "_orig_mod.", "transformer.")
# Wrapper segments inserted anywhere in a key (activation checkpointing, FSDP, torch.compile).
INNER_WRAPPERS = ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod.")

PROJ_L_STYLES = {
    "turbodiffusion": "self_attn.attn_op.local_attn.proj_l",
    "fastvideo": "attn1.attn_impl.proj_l",
    "sglang": "attn1.local_attn.proj_l",
    "diffusers": "attn1.attn_op.local_attn.proj_l",
}
# Canonical name the pack writes (TurboDiffusion's, so ComfyUI-native files look like TurboDiffusion's).
PROJ_L_KEY = "blocks.{i}.self_attn.attn_op.local_attn.proj_l.{p}"
_PROJ_L_RE = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(v) for v in PROJ_L_STYLES.values())
                        + r")\.(weight|bias)$")
_STYLE_BY_INFIX = {v: k for k, v in PROJ_L_STYLES.items()}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

# ---- Diffusers / FastVideo -> Wan names. Block-level entries act on the part after ``blocks.N.``.
_DIFFUSERS_TOP = [
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    ("proj_out.", "head.head."),
    ("scale_shift_table", "head.modulation"),
    ("patch_embedding.", "patch_embedding."),
]
_FASTVIDEO_TOP = [
    ("condition_embedder.text_embedder.fc_in.", "text_embedding.0."),
    ("condition_embedder.text_embedder.fc_out.", "text_embedding.2."),
    ("condition_embedder.time_embedder.mlp.fc_in.", "time_embedding.0."),
    ("condition_embedder.time_embedder.mlp.fc_out.", "time_embedding.2."),
    ("condition_embedder.time_modulation.linear.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.fc_in.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.fc_out.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    ("patch_embedding.proj.", "patch_embedding."),
    ("proj_out.", "head.head."),
    ("scale_shift_table", "head.modulation"),
    ("patch_embedding.", "patch_embedding."),
]
# Cross-attention names Diffusers and FastVideo share (they differ only in the output projection's). No entry is a
# prefix of another in the block tables, so their order does not matter.
_CROSS_ATTN_BLOCK = [
    ("attn2.to_q.", "cross_attn.q."), ("attn2.to_k.", "cross_attn.k."), ("attn2.to_v.", "cross_attn.v."),
    ("attn2.norm_q.", "cross_attn.norm_q."), ("attn2.norm_k.", "cross_attn.norm_k."),
    ("attn2.add_k_proj.", "cross_attn.k_img."), ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
]
_DIFFUSERS_BLOCK = [
    ("attn1.to_q.", "self_attn.q."), ("attn1.to_k.", "self_attn.k."), ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."), ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_out.0.", "cross_attn.o."), *_CROSS_ATTN_BLOCK,
    ("norm2.", "norm3."), ("ffn.net.0.proj.", "ffn.0."), ("ffn.net.2.", "ffn.2."),
    ("scale_shift_table", "modulation"),
]
_FASTVIDEO_BLOCK = [
    ("to_q.", "self_attn.q."), ("to_k.", "self_attn.k."), ("to_v.", "self_attn.v."), ("to_out.", "self_attn.o."),
    ("norm_q.", "self_attn.norm_q."), ("norm_k.", "self_attn.norm_k."),
    ("attn2.to_out.", "cross_attn.o."), *_CROSS_ATTN_BLOCK,
    ("self_attn_residual_norm.norm.", "norm3."), ("ffn.fc_in.", "ffn.0."), ("ffn.fc_out.", "ffn.2."),
    ("scale_shift_table", "modulation"),
]

# Base-weight namings -> (top-level, block-level) renames to Wan's names; "wan" needs none.
NAMINGS = {"wan": None, "diffusers": (_DIFFUSERS_TOP, _DIFFUSERS_BLOCK), "fastvideo": (_FASTVIDEO_TOP, _FASTVIDEO_BLOCK)}

# Markers: a key that only one naming produces.
_DIFFUSERS_MARKERS = ("condition_embedder.", "proj_out.", "attn1.to_q.", "ffn.net.0.proj.")
_FASTVIDEO_MARKERS = ("self_attn_residual_norm.", "ffn.fc_in.", "time_modulation.")
_WAN_MARKERS = ("head.modulation", "self_attn.q.", "ffn.0.", "text_embedding.0.")

LORA_MARKERS = ("lora_A", "lora_B", "lora_up", "lora_down", ".lora.", "lora_te", "lora_unet", ".alpha",
                ".diff_b", ".hada_", ".lokr_")

_OTHER_FAMILIES = [
    ("double_blocks.", "a Flux/HunyuanVideo-style DiT (double_blocks)"),
    ("joint_blocks.", "a Stable Diffusion 3 MMDiT (joint_blocks)"),
    ("input_blocks.", "a Stable Diffusion UNet (input_blocks)"),
    ("down_blocks.", "a Diffusers UNet (down_blocks)"),
    ("transformer_blocks.", "a Diffusers transformer that is not Wan (transformer_blocks)"),
    ("encoder.block.", "a T5/UMT5 text encoder"),
    ("shared.weight", "a T5/UMT5 text encoder"),
    ("decoder.conv_in", "a VAE"),
    ("decoder.middle", "a Wan VAE"),
    ("encoder.conv1", "a Wan VAE"),
    ("visual.", "a CLIP vision model"),
    ("vision_model.", "a CLIP vision model"),
    ("text_model.", "a CLIP text model"),
    ("layers.", "an LLM/Lumina-style transformer (layers.N)"),
    ("vace_blocks.", "a Wan VACE model"),
]


def strip_wrappers(key: str) -> Tuple[str, List[str]]:
    """Remove trainer prefixes and wrapper segments. Returns (clean key, removed pieces)."""
    removed = []
    changed = True
    while changed:
        changed = False
        for p in LEADING_PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                removed.append(p)
                changed = True
    for w in INNER_WRAPPERS:
        if w in key:
            key = key.replace(w, "")
            removed.append(w)
    return key, removed


def match_proj_l(key: str) -> Optional[Tuple[int, str, str]]:
    """(block, style, 'weight'|'bias') when ``key`` (already stripped) is a proj_l key of a known layout."""
    m = _PROJ_L_RE.match(key)
    if not m:
        return None
    return int(m.group(1)), _STYLE_BY_INFIX[m.group(2)], m.group(3)


def detect_naming(keys: Iterable[str]) -> Tuple[str, Dict[str, str]]:
    """Base-weight naming of stripped keys: 'wan', 'diffusers' or 'fastvideo'; plus one example key per naming seen.

    Several namings in one file are reported by the caller as a mixed-layout error.
    """
    seen: Dict[str, str] = {}
    for k in keys:
        if "proj_l." in k:
            continue
        m = _BLOCK_RE.match(k)
        rest = m.group(2) if m else k
        if any(rest.startswith(x) or k.startswith(x) for x in _DIFFUSERS_MARKERS):
            seen.setdefault("diffusers", k)
        elif any(rest.startswith(x) or k.startswith(x) for x in _FASTVIDEO_MARKERS):
            seen.setdefault("fastvideo", k)
        elif m and (rest.startswith("to_q.") or rest.startswith("to_out.")):
            seen.setdefault("fastvideo", k)
        elif any(rest.startswith(x) or k == x for x in _WAN_MARKERS):
            seen.setdefault("wan", k)
    # Diffusers and FastVideo share condition_embedder.image_embedder.* and scale_shift_table; FastVideo-only
    # block names decide.
    if "fastvideo" in seen and "diffusers" in seen:
        d = seen["diffusers"]
        if d.startswith("condition_embedder.") and not any(
                x in d for x in ("linear_1", "linear_2", "time_proj", "ff.net")):
            del seen["diffusers"]
    if not seen:
        return "wan", seen
    if len(seen) == 1:
        return next(iter(seen)), seen
    return "mixed", seen


def to_wan_key(key: str, naming: str) -> str:
    """Map a stripped base-weight key of ``naming`` to ComfyUI's Wan name (unknown keys pass through)."""
    if NAMINGS[naming] is None:
        return key
    top, blk = NAMINGS[naming]
    m = _BLOCK_RE.match(key)
    if m:
        i, rest = m.group(1), m.group(2)
        for a, b in blk:
            if rest.startswith(a) or rest == a:
                return f"blocks.{i}.{b}{rest[len(a):]}"
        return key
    for a, b in top:
        if key.startswith(a) or key == a:
            return b + key[len(a):]
    return key


def is_lora_key(key: str) -> bool:
    return any(m in key for m in LORA_MARKERS)


def guess_other_family(keys: List[str]) -> str:
    """A short description of what a non-Wan state dict looks like, for error messages."""
    for marker, name in _OTHER_FAMILIES:
        for k in keys:
            if k.startswith(marker) or ("." + marker) in k:
                return name
    return "an unknown model"


def wan_family(dim: int, num_blocks: int, in_dim: int, out_dim: int, has_img_emb: bool) -> str:
    """Human name of a Wan variant from its shapes (Wan2.2 A14B experts have the Wan2.1 14B shapes)."""
    kind = "I2V" if (has_img_emb or in_dim == 36) else "T2V"
    if dim == 1536 and num_blocks == 30:
        return f"Wan2.1 {kind} 1.3B"
    if dim == 5120 and num_blocks == 40:
        if in_dim == 36 and not has_img_emb:
            return "Wan2.2 I2V A14B expert"
        if kind == "T2V":
            return "Wan2.1 T2V 14B / Wan2.2 T2V A14B expert"
        return "Wan2.1 I2V 14B"
    if dim == 3072 and num_blocks == 30 and in_dim == 48:
        return "Wan2.2 TI2V 5B"
    return f"Wan {kind} (dim {dim}, {num_blocks} blocks)"


def block_index(key: str) -> Optional[int]:
    m = _BLOCK_RE.match(key)
    return int(m.group(1)) if m else None

