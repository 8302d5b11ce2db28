"""Shape checks of a Wan checkpoint, from key names and shapes alone (no tensor data read).

``describe_base`` reads the model's configuration (dim, blocks, in/out/ffn dims, family) off a few tensors;
``expected_shapes`` / ``check_base_shapes`` then hold every base tensor to that configuration; ``check_scale_shape``
checks an int8 layer's tile scales and ``check_proj_l`` the proj_l pairs. Every problem is a ``CheckpointError``
naming the key, the shape found and the shape expected.
"""
from __future__ import annotations

import math
from typing import Dict, Set, Tuple

import torch

from . import keys as K
from .info import TILE, WAN_HEAD_DIM, CheckpointInfo
from .io import CheckpointError, Reader

CLIP_DIM = 1280  # ComfyUI's MLPProj(1280, dim) for the I2V / FLF image embedding
# Module names of ComfyUI's Wan variants (VACE, camera, S2V, HuMo, Animate, ...) whose tensors are passed through
# with ComfyUI checking them: any other name that is not a Wan tensor is an error.
VARIANT_MODULES = frozenset((
    "vace_blocks", "vace_patch_embedding", "control_adapter", "ref_conv", "casual_audio_encoder", "audio_injector",
    "trainable_cond_mask", "frame_packer", "motion_encoder", "face_adapter", "face_encoder", "pose_patch_embedding",
    "audio_proj", "audio_cross_attn", "audio_cross_attn_wrapper", "norm1_audio", "cond_encoder", "injector",
    "fuser_blocks", "before_proj", "after_proj", "zip_frame_buckets", "audio_proj_glob_1", "audio_proj_glob_2",
    "audio_proj_glob_3", "audio_proj_glob_norm", "rope_embedder", "scaled_fp8"))
# Suffixes of ComfyUI's scaled / quantised layer formats (checked by ComfyUI when it applies them).
SCALE_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")


def describe_base(reader: Reader, wan: Dict[str, str], info: CheckpointInfo) -> Tuple[int, ...]:
    """Fill the model's shape facts into ``info``; returns the patch embedding's stored shape."""
    path = reader.path
    mshape = tuple(reader.shape(wan["head.modulation"]))
    if len(mshape) != 3 or mshape[:2] != (1, 2) or mshape[2] < 1:
        raise CheckpointError(f"{path!r}: {wan['head.modulation']!r} has shape {list(mshape)}; expected [1, 2, dim] "
                              "(Wan's output-head modulation)")
    dim = mshape[2]
    info.dim = dim
    blocks = {K.block_index(w) for w in wan if w.startswith("blocks.")}
    blocks.discard(None)
    info.num_blocks = (max(blocks) + 1) if blocks else 0
    if blocks and len(blocks) != info.num_blocks:
        missing = sorted(set(range(info.num_blocks)) - blocks)
        raise CheckpointError(f"{path!r}: blocks {missing} are missing (found blocks up to "
                              f"{info.num_blocks - 1}); expected every block 0..{info.num_blocks - 1}")
    info.num_heads = max(1, dim // WAN_HEAD_DIM)
    info.head_dim = dim // info.num_heads
    if "patch_embedding.weight" not in wan:
        raise CheckpointError(f"{path!r}: no patch_embedding.weight; expected it in a Wan diffusion model")
    pshape = reader.shape(wan["patch_embedding.weight"])
    if len(pshape) == 5:
        info.in_dim = pshape[1]
    elif len(pshape) == 2 and pshape[1] % 4 == 0:
        info.in_dim = pshape[1] // 4
    else:
        raise CheckpointError(
            f"{path!r}: {wan['patch_embedding.weight']!r} has shape {list(pshape)}; expected a Conv3d "
            f"[dim, in_dim, 1, 2, 2] or TurboDiffusion's Linear [dim, in_dim*4]")
    if pshape[0] != dim:
        raise CheckpointError(f"{path!r}: {wan['patch_embedding.weight']!r} has {pshape[0]} output channels but "
                              f"head.modulation says dim {dim}")
    if "head.head.weight" in wan and len(reader.shape(wan["head.head.weight"])) == 2:
        info.out_dim = reader.shape(wan["head.head.weight"])[0] // 4
    for cand in ("blocks.0.ffn.0.weight", "blocks.0.ffn.0.int8_weight"):
        if cand in wan and len(reader.shape(wan[cand])) == 2:
            info.ffn_dim = reader.shape(wan[cand])[0]
    has_img = "img_emb.proj.0.bias" in wan
    info.model_type = "i2v" if has_img else "t2v"
    info.family = K.wan_family(dim, info.num_blocks, info.in_dim, info.out_dim, has_img)
    return pshape


def expected_shapes(info: CheckpointInfo, text_dim: int, freq_dim: int) -> Dict[str, Tuple]:
    """Wan key (``blocks.N`` written ``blocks.*``) -> shape for ``info``'s configuration; -1 in a dimension means
    "any size" (detected from that very tensor)."""
    d, f, o = info.dim, info.ffn_dim or -1, (info.out_dim * 4) if info.out_dim else -1
    e: Dict[str, Tuple] = {
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, text_dim), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, freq_dim), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
        "head.head.weight": (o, d), "head.head.bias": (o,), "head.modulation": (1, 2, d),
        "img_emb.proj.0.weight": (CLIP_DIM,), "img_emb.proj.0.bias": (CLIP_DIM,),
        "img_emb.proj.1.weight": (CLIP_DIM, CLIP_DIM), "img_emb.proj.1.bias": (CLIP_DIM,),
        "img_emb.proj.3.weight": (d, CLIP_DIM), "img_emb.proj.3.bias": (d,),
        "img_emb.proj.4.weight": (d,), "img_emb.proj.4.bias": (d,), "img_emb.emb_pos": (1, -1, CLIP_DIM),
        "blocks.*.modulation": (1, 6, d),
        "blocks.*.norm3.weight": (d,), "blocks.*.norm3.bias": (d,),
        "blocks.*.ffn.0.weight": (f, d), "blocks.*.ffn.0.bias": (f,),
        "blocks.*.ffn.2.weight": (d, f), "blocks.*.ffn.2.bias": (d,),
    }
    for a in ("self_attn", "cross_attn"):
        for lin in ("q", "k", "v", "o") + (("k_img", "v_img") if a == "cross_attn" else ()):
            e[f"blocks.*.{a}.{lin}.weight"] = (d, d)
            e[f"blocks.*.{a}.{lin}.bias"] = (d,)
        for n in ("norm_q", "norm_k") + (("norm_k_img",) if a == "cross_attn" else ()):
            e[f"blocks.*.{a}.{n}.weight"] = (d,)
    return e


def _fits(shape: Tuple[int, ...], want: Tuple) -> bool:
    return len(shape) == len(want) and all(w == -1 or s == w for s, w in zip(shape, want))


def check_base_shapes(reader: Reader, wan: Dict[str, str], info: CheckpointInfo,
                      kept_layers: Set[str] = frozenset()) -> None:
    """Every base tensor against the detected Wan configuration: a wrong shape or an unknown tensor is an error
    naming the key, the shape found and the shape expected. Layers in ComfyUI's own quantised formats
    (``kept_layers``: packed shapes such as NVFP4's) are left to ComfyUI, which checks them when it loads them."""
    path = reader.path

    def second(key: str) -> int:
        s = reader.shape(wan[key]) if key in wan else ()
        return s[1] if len(s) == 2 else -1

    text_dim, freq_dim = second("text_embedding.0.weight"), second("time_embedding.0.weight")
    rules = expected_shapes(info, text_dim, freq_dim)
    why = (f"dim {info.dim} from head.modulation, ffn_dim {info.ffn_dim} from blocks.0.ffn.0, "
           f"out_dim {info.out_dim} from head.head.weight")
    if "head.head.weight" in wan and reader.shape(wan["head.head.weight"])[0] % 4:
        raise CheckpointError(f"{path!r}: {wan['head.head.weight']!r} has shape "
                              f"{list(reader.shape(wan['head.head.weight']))}; expected [out_dim*4, {info.dim}]")
    for w, raw in wan.items():
        if w == "patch_embedding.weight" or w.endswith(SCALE_SUFFIXES):
            continue  # checked by describe_base / passed to ComfyUI, which applies the scales
        if "." in w and w[: w.rindex(".")] in kept_layers:
            continue
        if w.endswith(".scale") and w[: -len(".scale")] + ".int8_weight" in wan:
            continue  # check_scale_shape
        i = K.block_index(w)
        generic = w if i is None else "blocks.*." + w.split(".", 2)[2]
        if generic.endswith(".int8_weight"):
            generic = generic[: -len(".int8_weight")] + ".weight"
        want = rules.get(generic)
        shape = tuple(reader.shape(raw))
        if want is None:
            head = w.split(".")[2] if i is not None and w.count(".") >= 2 else w.split(".")[0]
            if head in VARIANT_MODULES or (i is None and w.split(".")[0] in VARIANT_MODULES):
                continue
            raise CheckpointError(f"{path!r}: unexpected tensor {raw!r} of shape {list(shape)}: not a tensor of a "
                                  "Wan diffusion model (nor of ComfyUI's Wan variants); expected only Wan weights "
                                  "and SLA proj_l")
        if not _fits(shape, want):
            exp = "[" + ", ".join("*" if x == -1 else str(x) for x in want) + "]"
            raise CheckpointError(f"{path!r}: {raw!r} has shape {list(shape)}; expected {exp} for this Wan model "
                                  f"({why})")
        dt = reader.dtype(raw)
        if not (dt.is_floating_point or (w.endswith(".int8_weight") and dt == torch.int8)):
            raise CheckpointError(f"{path!r}: {raw!r} has dtype {dt}; expected a floating-point weight")


def check_scale_shape(reader: Reader, qkey: str, skey: str) -> None:
    """The tile scales ``skey`` of int8 weight ``qkey``: one per TILE x TILE tile."""
    out_f, in_f = reader.shape(qkey)
    want = (math.ceil(out_f / TILE), math.ceil(in_f / TILE))
    got = tuple(reader.shape(skey))
    if got != want:
        raise CheckpointError(f"{reader.path!r}: scale {skey!r} has shape {list(got)}; expected {list(want)} "
                              f"(one per {TILE}x{TILE} tile of {qkey!r} [{out_f}, {in_f}])")


def check_proj_l(reader: Reader, proj: Dict[int, Dict[str, str]], info: CheckpointInfo, has_base: bool) -> None:
    """Both halves of every proj_l, [D, D] / [D] at the model's head size, for blocks the model has."""
    path = reader.path
    d = info.head_dim if has_base else WAN_HEAD_DIM
    why = f"head_dim = dim {info.dim} / {info.num_heads} heads" if has_base else "Wan's head size"
    for i in sorted(proj):
        parts = proj[i]
        for p in ("weight", "bias"):
            if p not in parts:
                other = next(iter(parts.values()))
                raise CheckpointError(f"{path!r}: {other!r} has no matching proj_l {p}; expected both "
                                      f"proj_l.weight [D, D] and proj_l.bias [D] for block {i}")
        ws, bs = reader.shape(parts["weight"]), reader.shape(parts["bias"])
        if tuple(ws) != (d, d):
            raise CheckpointError(f"{path!r}: proj_l weight {parts['weight']!r} has shape {list(ws)}; expected "
                                  f"[{d}, {d}] ({why})")
        if tuple(bs) != (d,):
            raise CheckpointError(f"{path!r}: proj_l bias {parts['bias']!r} has shape {list(bs)}; expected "
                                  f"[{d}] ({why})")
        if has_base and i >= info.num_blocks:
            raise CheckpointError(f"{path!r}: proj_l key {parts['weight']!r} is for block {i} but the model has "
                                  f"{info.num_blocks} blocks (0..{info.num_blocks - 1})")
