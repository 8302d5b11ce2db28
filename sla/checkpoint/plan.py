"""Planning: from a reader's key names and shapes (no tensor data) to every output tensor and the file's description.

``plan_checkpoint`` runs a few short steps: strip trainer prefixes, reject LoRAs, split proj_l from base weights,
map base names to Wan's (``keys``), check the base model and int8 pairs, decide each output tensor's transform
(``TRANSFORMS``), check proj_l shapes, and name the layout (``layouts.LAYOUTS``). Every problem is a
``CheckpointError`` naming the key and what was expected.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch

from ..spec import CHECKPOINT_DEFAULTS
from . import keys as K
from .io import CheckpointError, Reader
from .layouts import Facts, detect_layout

log = logging.getLogger(__name__)

TILE = 128
WAN_HEAD_DIM = 128  # ComfyUI builds every Wan with num_heads = dim // 128
METADATA_PREFIX = "sla."


@dataclasses.dataclass
class CheckpointInfo:
    """What a checkpoint is. ``sla_blocks``: block indices that carry proj_l weights."""

    family: str = "unknown"
    layout: str = "unknown"
    naming: str = "wan"  # base-weight names in the file: "wan", "diffusers" or "fastvideo"
    container: str = ""  # "safetensors" or "pth"
    quantized: bool = False
    num_blocks: int = 0
    sla_blocks: List[int] = dataclasses.field(default_factory=list)
    head_dim: int = WAN_HEAD_DIM
    dim: int = 0
    num_heads: int = 0
    in_dim: int = 0
    out_dim: int = 0
    ffn_dim: int = 0
    model_type: str = "t2v"
    prefixes: List[str] = dataclasses.field(default_factory=list)
    proj_l_shared: bool = False
    sla_settings: Dict[str, object] = dataclasses.field(default_factory=dict)
    source_layout: str = ""  # for files written by sla.convert: the layout they were converted from
    weight_dtype: str = ""

    @property
    def missing_sla_blocks(self) -> List[int]:
        have = set(self.sla_blocks)
        return [i for i in range(self.num_blocks) if i not in have]

    def summary(self) -> str:
        """One line for the log and the node output."""
        if self.proj_l_shared:
            sla = "SLA weights: one proj_l shared by all blocks"
        elif self.num_blocks:
            sla = f"SLA weights on {len(self.sla_blocks)}/{self.num_blocks} blocks"
        else:
            sla = f"SLA weights for {len(self.sla_blocks)} blocks"
        layout = self.layout + (f" (converted from {self.source_layout})" if self.source_layout else "")
        parts = [self.family if self.num_blocks else "SLA weights only", sla, f"layout {layout}",
                 f".{self.container}" if self.container else "",
                 "int8 tiles dequantized" + (f" to {self.weight_dtype}" if self.weight_dtype else "")
                 if self.quantized else "not quantized"]
        return " | ".join(p for p in parts if p)


@dataclasses.dataclass
class OutputTensor:
    """One ComfyUI-native output tensor and where it comes from."""

    key: str  # ComfyUI-native output key
    src: str  # source key (raw, as in the file)
    kind: str  # a TRANSFORMS name: "copy" | "patch" (Linear -> Conv3d reshape) | "dequant"
    shape: Tuple[int, ...]
    src_dtype: torch.dtype
    scale: Optional[str] = None  # source key of the tile scales (dequant)
    bias_dtype: Optional[torch.dtype] = None
    keep_dtype: bool = False  # ComfyUI scaled-fp8 / comfy_quant layers: never cast


@dataclasses.dataclass
class Plan:
    """How a file maps onto ComfyUI-native keys: base tensors, proj_l sources, and the detected info."""

    outputs: List[OutputTensor]
    proj_l: Dict[int, Dict[str, str]]  # block -> {"weight": src key, "bias": src key}
    info: CheckpointInfo
    has_base: bool


def target_dtype(key: str, shape: Tuple[int, ...], src: torch.dtype, weight_dtype: Optional[torch.dtype],
                 dequant: bool = False, bias_dtype: Optional[torch.dtype] = None, keep: bool = False) -> torch.dtype:
    """Output dtype of one tensor.

    ``weight_dtype`` None keeps the file's dtypes (dequantised int8 weights take their bias's dtype, else bf16).
    16/32-bit ``weight_dtype`` applies to every floating tensor. An fp8 ``weight_dtype`` applies to Linear weight
    matrices only (2-D ``*.weight``), as ComfyUI's fp8 files do: biases, norms and modulation keep a 16/32-bit dtype.
    """
    if keep:
        return src
    if weight_dtype is None:
        if dequant:
            return bias_dtype if bias_dtype is not None and bias_dtype.is_floating_point else torch.bfloat16
        return src
    if not (dequant or src.is_floating_point):
        return src
    if weight_dtype.itemsize >= 2:
        return weight_dtype
    if dequant or (len(shape) == 2 and key.endswith(".weight")):
        return weight_dtype
    return src if src.itemsize >= 2 else torch.bfloat16


def output_dtype(o: OutputTensor, weight_dtype: Optional[torch.dtype]) -> torch.dtype:
    """``target_dtype`` of a plan entry."""
    return target_dtype(o.key, o.shape, o.src_dtype, weight_dtype, o.kind == "dequant", o.bias_dtype, o.keep_dtype)


# ----------------------------------------------------------------------------------------------- steps

def _strip_keys(reader: Reader) -> Tuple[Dict[str, str], List[str]]:
    """Clean key -> raw key with trainer prefixes / wrapper segments removed, and the removed pieces in order."""
    clean: Dict[str, str] = {}
    prefixes: List[str] = []
    for raw in reader.keys():
        c, removed = K.strip_wrappers(raw)
        for p in removed:
            if p not in prefixes:
                prefixes.append(p)
        if c in clean:
            raise CheckpointError(
                f"{reader.path!r} mixes two layouts: keys {clean[c]!r} and {raw!r} both name {c!r} once trainer "
                "prefixes are removed; expected one copy of each weight")
        clean[c] = raw
    lora = [c for c in clean if K.is_lora_key(c)]
    if lora:
        raise CheckpointError(
            f"{reader.path!r} looks like a LoRA ({len(lora)} LoRA tensors, e.g. {clean[lora[0]]!r}), not a Wan "
            "diffusion model: load it with a LoRA loader (e.g. LoraLoaderModelOnly) after the model loader")
    return clean, prefixes


def _split_proj_l(path: str, clean: Dict[str, str]
                  ) -> Tuple[Dict[int, Dict[str, str]], Optional[str], Dict[str, str]]:
    """(block -> {"weight"/"bias": raw key}, proj_l style or None, clean base key -> raw key)."""
    proj: Dict[int, Dict[str, str]] = {}
    styles: Dict[str, str] = {}
    base: Dict[str, str] = {}
    for c, raw in clean.items():
        if "proj_l" not in c:
            base[c] = raw
            continue
        m = K.match_proj_l(c)
        if m is None:
            raise CheckpointError(
                f"{path!r}: unrecognised proj_l key {raw!r}; expected blocks.N.<"
                + " | ".join(K.PROJ_L_STYLES.values()) + ">.{weight,bias}")
        i, style, p = m
        styles.setdefault(style, raw)
        proj.setdefault(i, {})[p] = raw
    if len(styles) > 1:
        ex = ", ".join(f"{s}: {k!r}" for s, k in styles.items())
        raise CheckpointError(f"{path!r} mixes two proj_l layouts ({ex}); expected one layout per file")
    return proj, next(iter(styles), None), base


def _map_to_wan(path: str, base: Dict[str, str]) -> Tuple[str, Dict[str, str]]:
    """(base naming, Wan key -> raw key)."""
    naming, seen = K.detect_naming(base)
    if naming == "mixed":
        ex = ", ".join(f"{n}: {k!r}" for n, k in seen.items())
        raise CheckpointError(f"{path!r} mixes two layouts of the base weights ({ex}); expected one naming")
    wan: Dict[str, str] = {}
    for c, raw in base.items():
        w = K.to_wan_key(c, naming)
        if w in wan:
            raise CheckpointError(f"{path!r} mixes two layouts: {wan[w]!r} and {raw!r} both map to {w!r}")
        wan[w] = raw
    return naming, wan


def _require_base(path: str, wan: Dict[str, str], base: Dict[str, str], proj: dict, require_base: bool) -> bool:
    """Whether the file holds a Wan base model; raise when one is required (or nothing usable is there)."""
    if "head.modulation" in wan:
        return True
    if wan and (require_base or not proj):
        other = K.guess_other_family(list(base))
        raise CheckpointError(
            f"{path!r} is not a Wan diffusion model: no 'head.modulation' key (ComfyUI's Wan detection key); "
            f"found {other}, e.g. keys {', '.join(repr(k) for k in list(base)[:3])}")
    if require_base:
        raise CheckpointError(
            f"{path!r} holds only SLA proj_l weights ({len(proj)} blocks) and no Wan base model: load the base "
            "model with the stock diffusion model loader and add these with 'Load SLA Weights'")
    return False


def _int8_layers(reader: Reader, wan: Dict[str, str]) -> Set[str]:
    """Layers stored as int8 tiles + scale (checked to come in complete pairs)."""
    path = reader.path
    int8 = {w[: -len(".int8_weight")] for w in wan if w.endswith(".int8_weight")}
    scales = {w[: -len(".scale")] for w in wan if w.endswith(".scale")}
    for b in sorted(int8):
        if b not in scales:
            raise CheckpointError(
                f"{path!r}: int8 weight {wan[b + '.int8_weight']!r} has no scale; expected {b + '.scale'!r} "
                f"(fp32 [ceil(out/{TILE}), ceil(in/{TILE})], one per {TILE}x{TILE} tile)")
        if b + ".weight" in wan:
            raise CheckpointError(
                f"{path!r} mixes quantised and plain copies of one layer: {wan[b + '.weight']!r} and "
                f"{wan[b + '.int8_weight']!r}; expected one of them")
        if reader.dtype(wan[b + ".int8_weight"]) != torch.int8:
            raise CheckpointError(f"{path!r}: {wan[b + '.int8_weight']!r} is {reader.dtype(wan[b + '.int8_weight'])},"
                                  " expected torch.int8")
    for b in sorted(scales - int8):
        raise CheckpointError(f"{path!r}: scale {wan[b + '.scale']!r} has no int8 weight; expected "
                              f"{b + '.int8_weight'!r} beside it")
    return int8


def _kept_layers(path: str, wan: Dict[str, str]) -> Tuple[Set[str], bool]:
    """ComfyUI's own scaled/quantised layers (scaled_fp8, *.scale_weight, *.weight_scale, *.comfy_quant), whose
    tensors must reach ComfyUI unchanged (it applies the scales itself); (layers, whole file)."""
    scaled_suffixes = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
    layers = {w[: w.rindex(".")] for w in wan if w.endswith(scaled_suffixes)}
    keep_all = "scaled_fp8" in wan
    if layers or keep_all:
        log.info("SLA: %s uses ComfyUI's scaled/quantised weight format; those weights are passed through "
                 "unchanged for ComfyUI to load", path)
    return layers, keep_all


def _describe_base(reader: Reader, wan: Dict[str, str], info: CheckpointInfo) -> Tuple[int, ...]:
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


# ----------------------------------------------------------------------------------------------- shapes

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
            continue  # checked by _describe_base / passed to ComfyUI, which applies the scales
        if "." in w and w[: w.rindex(".")] in kept_layers:
            continue
        if w.endswith(".scale") and w[: -len(".scale")] + ".int8_weight" in wan:
            continue  # _check_scale_shape
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


# ----------------------------------------------------------------------------------------------- transforms

@dataclasses.dataclass
class _Ctx:
    """What the transforms need to know about the whole file."""

    reader: Reader
    wan: Dict[str, str]
    int8: Set[str]
    info: CheckpointInfo
    kept_layers: Set[str]
    keep_all: bool


def _dequant(w: str, raw: str, c: _Ctx) -> Optional[OutputTensor]:
    if not w.endswith(".int8_weight"):
        return None
    b = w[: -len(".int8_weight")]
    bias_raw = c.wan.get(b + ".bias")
    out = OutputTensor(b + ".weight", raw, "dequant", c.reader.shape(raw), torch.int8, scale=c.wan[b + ".scale"],
                       bias_dtype=c.reader.dtype(bias_raw) if bias_raw else None)
    _check_scale_shape(c.reader, raw, c.wan[b + ".scale"])
    return out


def _patch(w: str, raw: str, c: _Ctx) -> Optional[OutputTensor]:
    shape = c.reader.shape(raw)
    if w != "patch_embedding.weight" or len(shape) != 2:
        return None
    return OutputTensor(w, raw, "patch", (shape[0], c.info.in_dim, 1, 2, 2), c.reader.dtype(raw))


def _copy(w: str, raw: str, c: _Ctx) -> Optional[OutputTensor]:
    keep = c.keep_all or ("." in w and w[: w.rindex(".")] in c.kept_layers)
    return OutputTensor(w, raw, "copy", c.reader.shape(raw), c.reader.dtype(raw), keep_dtype=keep)


# Tried in order for every base tensor; the first that returns an entry decides (copy takes the rest).
TRANSFORMS: Tuple[Tuple[str, Callable[[str, str, _Ctx], Optional[OutputTensor]]], ...] = (
    ("dequant", _dequant), ("patch", _patch), ("copy", _copy))


def plan_outputs(c: _Ctx) -> List[OutputTensor]:
    """One output entry per base tensor in file order; the scales of int8 layers travel with their weights."""
    outputs = []
    for w, raw in c.wan.items():
        if w.endswith(".scale") and w[: -len(".scale")] in c.int8:
            continue
        for _, make in TRANSFORMS:
            o = make(w, raw, c)
            if o is not None:
                outputs.append(o)
                break
    return outputs


def _check_scale_shape(reader: Reader, qkey: str, skey: str) -> None:
    out_f, in_f = reader.shape(qkey)
    want = (math.ceil(out_f / TILE), math.ceil(in_f / TILE))
    got = tuple(reader.shape(skey))
    if got != want:
        raise CheckpointError(f"{reader.path!r}: scale {skey!r} has shape {list(got)}; expected {list(want)} "
                              f"(one per {TILE}x{TILE} tile of {qkey!r} [{out_f}, {in_f}])")


def _check_proj_l(reader: Reader, proj: Dict[int, Dict[str, str]], info: CheckpointInfo, has_base: bool) -> None:
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


def settings_from_metadata(meta: Dict[str, str]) -> Dict[str, object]:
    """SLA settings recorded by the converter (``sla.keep_ratio`` ...), the checkpoint defaults where absent."""
    s: Dict[str, object] = dict(CHECKPOINT_DEFAULTS)
    conv = {"keep_ratio": float, "block_q": int, "block_k": int, "feature_map": str}
    for k, f in conv.items():
        v = meta.get(METADATA_PREFIX + k)
        if v is not None:
            try:
                s[k] = f(v)
            except ValueError:
                log.warning("SLA: ignoring bad metadata %s=%r", METADATA_PREFIX + k, v)
    return s


# ----------------------------------------------------------------------------------------------- the plan

def plan_checkpoint(reader: Reader, require_base: bool = True) -> Plan:
    """Inspect a reader's keys/shapes (no tensor data read) and decide every output tensor; raise on bad input."""
    path = reader.path
    if not reader.keys():
        raise CheckpointError(f"{path!r} holds no tensors; expected a Wan diffusion model state dict")
    clean, prefixes = _strip_keys(reader)
    proj, proj_style, base = _split_proj_l(path, clean)
    naming, wan = _map_to_wan(path, base)

    meta = getattr(reader, "metadata", {}) or {}
    info = CheckpointInfo(container=reader.kind, prefixes=prefixes, naming=naming,
                          source_layout=meta.get(METADATA_PREFIX + "source_layout", ""))
    has_base = _require_base(path, wan, base, proj, require_base)
    int8 = _int8_layers(reader, wan)
    info.quantized = bool(int8)
    kept_layers, keep_all = _kept_layers(path, wan)

    outputs: List[OutputTensor] = []
    pshape: Tuple[int, ...] = ()
    if has_base:
        pshape = _describe_base(reader, wan, info)
        check_base_shapes(reader, wan, info, kept_layers)
        outputs = plan_outputs(_Ctx(reader, wan, int8, info, kept_layers, keep_all))
    _check_proj_l(reader, proj, info, has_base)
    if not has_base:
        info.head_dim = WAN_HEAD_DIM
    info.sla_blocks = sorted(proj)

    info.layout = detect_layout(Facts(naming, proj_style, has_base, info.quantized, len(pshape) == 2,
                                      tuple(prefixes), info.source_layout))
    info.sla_settings = (settings_from_metadata(meta) if info.source_layout
                         else (dict(CHECKPOINT_DEFAULTS) if proj else {}))
    return Plan(outputs, proj, info, has_base)
