"""Load SLA (Sparse-Linear Attention) Wan checkpoints of every published layout as ComfyUI-native weights + proj_l.

No ComfyUI import: ``nodes/`` calls these functions and hands ``LoadedCheckpoint.state_dict`` to
``comfy.sd.load_diffusion_model_state_dict``.

Layouts (detected from the tensor names and shapes, never from the file name; container from the first bytes):

=====================  =====================================================================================
``turbodiffusion``     TurboDiffusion ``.pth`` as published: Wan names, ``patch_embedding.weight`` as a Linear
                       [dim, in_dim*1*2*2] (flattened (c, kt, kh, kw)), fp32 norms, bf16 rest, optional ``net.`` /
                       ``_checkpoint_wrapped_module.`` prefixes, ``blocks.N.self_attn.attn_op.local_attn.proj_l``.
``turbodiffusion-int8`` its ``-quant.pth``: block Linears (not proj_l) as ``int8_weight`` [out, in] + fp32 ``scale``
                       [ceil(out/128), ceil(in/128)] (W = int8 * scale per 128x128 tile) + ``bias``.
``comfyui``            ComfyUI-native Wan names (Conv3d patch embedding), e.g. written by ``sla.convert``; ComfyUI's
                       scaled-fp8 / ``comfy_quant`` layers pass through uncast for ComfyUI to apply their scales.
``fastvideo`` / ``sglang`` / ``diffusers``  Diffusers- or FastVideo-named base weights with proj_l under
                       ``attn1.attn_impl`` / ``attn1.local_attn`` / ``attn1.attn_op.local_attn``.
``simpletuner``        SimpleTuner's separate ``sla_attention.pt``: one proj_l shared by every layer
                       (``load_proj_l`` only).
=====================  =====================================================================================

Memory: tensors are read one at a time from a memory map (safetensors parsed here; ``.pth`` through
``torch.load(weights_only=True, mmap=True)``), converted into an owned tensor of the target dtype (int8 tiles are
dequantised one 128-row tile at a time) and the map's pages are handed back, so the peak resident size is about the
output model plus one tensor. Input files are opened read-only / copy-on-write and never modified.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import ckpt_keys as K
from .ckpt_io import CheckpointError, TorchReader, open_source
from .spec import format_blocks

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "CheckpointInfo", "LoadedCheckpoint", "load_checkpoint", "load_proj_l",
           "ALL_BLOCKS", "SLA_DEFAULTS", "TILE", "dequantize_int8_tiles", "plan_checkpoint", "target_dtype",
           "METADATA_PREFIX", "consume_on_copy", "plain_tensors"]

TILE = 128
ALL_BLOCKS = -1  # proj_l dict key meaning "shared by every block" (SimpleTuner), see load_proj_l(num_blocks=...)
WAN_HEAD_DIM = 128  # ComfyUI builds every Wan with num_heads = dim // 128
# TurboDiffusion's serving defaults, which its checkpoints were fine-tuned for.
SLA_DEFAULTS = {"keep_ratio": 0.10, "block_q": 128, "block_k": 64, "feature_map": "softmax"}
METADATA_PREFIX = "sla."

ProgressFn = Optional[Callable[[int, int], None]]


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
class LoadedCheckpoint:
    """``state_dict``: ComfyUI-native Wan weights (no proj_l); ``proj_l``: block -> (weight [D, D], bias [D]) fp32."""

    state_dict: Dict[str, torch.Tensor]
    proj_l: Dict[int, Tuple[torch.Tensor, torch.Tensor]]
    info: CheckpointInfo
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- planning

@dataclasses.dataclass
class _Out:
    key: str  # ComfyUI-native output key
    src: str  # source key (raw, as in the file)
    kind: str  # "copy" | "patch" (Linear -> Conv3d reshape) | "dequant"
    shape: Tuple[int, ...]
    src_dtype: torch.dtype
    scale: Optional[str] = None  # source key of the tile scales (dequant)
    bias_dtype: Optional[torch.dtype] = None
    keep_dtype: bool = False  # ComfyUI scaled-fp8 / comfy_quant layers: never cast


@dataclasses.dataclass
class Plan:
    """How a file maps onto ComfyUI-native keys: base tensors, proj_l sources, and the detected info."""

    outputs: List[_Out]
    proj_l: Dict[int, Dict[str, str]]  # block -> {"weight": src key, "bias": src key}
    info: CheckpointInfo
    has_base: bool


def _is_float(dt: torch.dtype) -> bool:
    return dt.is_floating_point


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
    if not (dequant or _is_float(src)):
        return src
    if weight_dtype.itemsize >= 2:
        return weight_dtype
    if dequant or (len(shape) == 2 and key.endswith(".weight")):
        return weight_dtype
    return src if src.itemsize >= 2 else torch.bfloat16


def _simpletuner_payload(reader) -> Optional[dict]:
    raw = getattr(reader, "raw", None)
    if isinstance(raw, dict) and isinstance(raw.get("state"), dict) and ("version" in raw or "settings" in raw):
        return raw
    return None


def plan_checkpoint(reader, require_base: bool = True) -> Plan:
    """Inspect a reader's keys/shapes (no tensor data read) and decide every output tensor; raise on bad input."""
    path = reader.path
    keys = reader.keys()
    if not keys:
        raise CheckpointError(f"{path!r} holds no tensors; expected a Wan diffusion model state dict")

    clean: Dict[str, str] = {}  # clean key -> raw key
    prefixes: List[str] = []
    for raw in keys:
        c, removed = K.strip_wrappers(raw)
        for p in removed:
            if p not in prefixes:
                prefixes.append(p)
        if c in clean:
            raise CheckpointError(
                f"{path!r} mixes two layouts: keys {clean[c]!r} and {raw!r} both name {c!r} once trainer prefixes "
                "are removed; expected one copy of each weight")
        clean[c] = raw

    lora = [c for c in clean if K.is_lora_key(c)]
    if lora:
        raise CheckpointError(
            f"{path!r} looks like a LoRA ({len(lora)} LoRA tensors, e.g. {clean[lora[0]]!r}), not a Wan diffusion "
            "model: load it with a LoRA loader (e.g. LoraLoaderModelOnly) after the model loader")

    # ---- proj_l
    proj: Dict[int, Dict[str, str]] = {}
    styles: Dict[str, str] = {}
    base: Dict[str, str] = {}
    for c, raw in clean.items():
        if "proj_l" in c:
            m = K.match_proj_l(c)
            if m is None:
                raise CheckpointError(
                    f"{path!r}: unrecognised proj_l key {raw!r}; expected blocks.N.<"
                    + " | ".join(K.PROJ_L_STYLES.values()) + ">.{weight,bias}")
            i, style, p = m
            styles.setdefault(style, raw)
            proj.setdefault(i, {})[p] = raw
        else:
            base[c] = raw
    if len(styles) > 1:
        ex = ", ".join(f"{s}: {k!r}" for s, k in styles.items())
        raise CheckpointError(f"{path!r} mixes two proj_l layouts ({ex}); expected one layout per file")
    proj_style = next(iter(styles), None)

    # ---- base naming
    naming, seen = K.detect_naming(base)
    if naming == "mixed":
        ex = ", ".join(f"{n}: {k!r}" for n, k in seen.items())
        raise CheckpointError(f"{path!r} mixes two layouts of the base weights ({ex}); expected one naming")
    wan: Dict[str, str] = {}  # wan key -> raw key
    for c, raw in base.items():
        w = K.to_wan_key(c, naming)
        if w in wan:
            raise CheckpointError(f"{path!r} mixes two layouts: {wan[w]!r} and {raw!r} both map to {w!r}")
        wan[w] = raw

    info = CheckpointInfo(container=reader.kind, prefixes=prefixes)
    meta = getattr(reader, "metadata", {}) or {}
    info.source_layout = meta.get(METADATA_PREFIX + "source_layout", "")

    has_base = "head.modulation" in wan
    if not has_base:
        if wan and (require_base or not proj):
            other = K.guess_other_family(list(base))
            raise CheckpointError(
                f"{path!r} is not a Wan diffusion model: no 'head.modulation' key (ComfyUI's Wan detection key); "
                f"found {other}, e.g. keys {', '.join(repr(k) for k in list(base)[:3])}")
        if require_base:
            raise CheckpointError(
                f"{path!r} holds only SLA proj_l weights ({len(proj)} blocks) and no Wan base model: load the base "
                "model with the stock diffusion model loader and add these with 'Load SLA Weights'")

    # ---- quantised pairs
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
    info.quantized = bool(int8)

    # ComfyUI's own scaled/quantised formats (scaled_fp8, *.scale_weight, *.weight_scale, *.comfy_quant): those
    # layers' tensors must reach ComfyUI unchanged (it applies the scales itself), so no dtype cast touches them.
    scaled_suffixes = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
    scaled_layers = {w[: w.rindex(".")] for w in wan if w.endswith(scaled_suffixes)}
    keep_all = "scaled_fp8" in wan
    if scaled_layers or keep_all:
        log.info("SLA: %s uses ComfyUI's scaled/quantised weight format; those weights are passed through "
                 "unchanged for ComfyUI to load", path)

    outputs: List[_Out] = []
    if has_base:
        dim = reader.shape(wan["head.modulation"])[-1]
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
        if "head.head.weight" in wan:
            info.out_dim = reader.shape(wan["head.head.weight"])[0] // 4
        for cand in ("blocks.0.ffn.0.weight", "blocks.0.ffn.0.int8_weight"):
            if cand in wan:
                info.ffn_dim = reader.shape(wan[cand])[0]
        has_img = "img_emb.proj.0.bias" in wan
        info.model_type = "i2v" if has_img else "t2v"
        info.family = K.wan_family(dim, info.num_blocks, info.in_dim, info.out_dim, has_img)

        for w, raw in wan.items():
            if w.endswith(".scale") and w[: -len(".scale")] in int8:
                continue
            if w.endswith(".int8_weight"):
                b = w[: -len(".int8_weight")]
                bias_raw = wan.get(b + ".bias")
                outputs.append(_Out(b + ".weight", raw, "dequant", reader.shape(raw), torch.int8,
                                    scale=wan[b + ".scale"],
                                    bias_dtype=reader.dtype(bias_raw) if bias_raw else None))
                _check_scale_shape(path, reader, raw, wan[b + ".scale"])
            elif w == "patch_embedding.weight" and len(pshape) == 2:
                outputs.append(_Out(w, raw, "patch", (pshape[0], info.in_dim, 1, 2, 2), reader.dtype(raw)))
            else:
                keep = keep_all or ("." in w and w[: w.rindex(".")] in scaled_layers)
                outputs.append(_Out(w, raw, "copy", reader.shape(raw), reader.dtype(raw), keep_dtype=keep))

    # ---- proj_l checks
    hd = info.head_dim if has_base else None
    for i in sorted(proj):
        parts = proj[i]
        for p in ("weight", "bias"):
            if p not in parts:
                other = next(iter(parts.values()))
                raise CheckpointError(f"{path!r}: {other!r} has no matching proj_l {p}; expected both "
                                      f"proj_l.weight [D, D] and proj_l.bias [D] for block {i}")
        ws, bs = reader.shape(parts["weight"]), reader.shape(parts["bias"])
        d = hd if hd is not None else WAN_HEAD_DIM
        why = (f"head_dim = dim {info.dim} / {info.num_heads} heads" if has_base
               else "Wan's head size")
        if tuple(ws) != (d, d):
            raise CheckpointError(f"{path!r}: proj_l weight {parts['weight']!r} has shape {list(ws)}; expected "
                                  f"[{d}, {d}] ({why})")
        if tuple(bs) != (d,):
            raise CheckpointError(f"{path!r}: proj_l bias {parts['bias']!r} has shape {list(bs)}; expected "
                                  f"[{d}] ({why})")
        if has_base and i >= info.num_blocks:
            raise CheckpointError(f"{path!r}: proj_l key {parts['weight']!r} is for block {i} but the model has "
                                  f"{info.num_blocks} blocks (0..{info.num_blocks - 1})")
    if not has_base:
        info.head_dim = WAN_HEAD_DIM
    info.sla_blocks = sorted(proj)

    # ---- layout name
    info.naming = naming
    if proj_style in ("fastvideo", "sglang", "diffusers"):
        info.layout = proj_style + (f" ({naming} names)" if has_base and naming != proj_style else "")
    elif naming != "wan":
        info.layout = naming + " names"
    elif info.quantized:
        info.layout = "turbodiffusion-int8"
    elif has_base and (len(pshape) == 2 or "net." in prefixes or "_checkpoint_wrapped_module." in prefixes):
        info.layout = "turbodiffusion"
    elif info.source_layout:
        info.layout = "comfyui-sla"
    else:
        info.layout = "comfyui" if has_base else "turbodiffusion"
    info.sla_settings = _settings_from_metadata(meta) if info.source_layout else (dict(SLA_DEFAULTS) if proj else {})
    return Plan(outputs, proj, info, has_base)


def _settings_from_metadata(meta: Dict[str, str]) -> Dict[str, object]:
    s: Dict[str, object] = dict(SLA_DEFAULTS)
    conv = {"keep_ratio": float, "block_q": int, "block_k": int, "feature_map": str}
    for k, f in conv.items():
        v = meta.get(METADATA_PREFIX + k)
        if v is not None:
            try:
                s[k] = f(v)
            except ValueError:
                log.warning("SLA: ignoring bad metadata %s=%r", METADATA_PREFIX + k, v)
    return s


def _check_scale_shape(path, reader, qkey, skey):
    out_f, in_f = reader.shape(qkey)
    want = (math.ceil(out_f / TILE), math.ceil(in_f / TILE))
    got = tuple(reader.shape(skey))
    if got != want:
        raise CheckpointError(f"{path!r}: scale {skey!r} has shape {list(got)}; expected {list(want)} "
                              f"(one per {TILE}x{TILE} tile of {qkey!r} [{out_f}, {in_f}])")


# ----------------------------------------------------------------------------------------------- tensors

def dequantize_int8_tiles(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype,
                          out: Optional[torch.Tensor] = None, chunk_elems: int = 1 << 23) -> torch.Tensor:
    """W = q * scale[i // 128, j // 128], computed in fp32 one band of 128-row tiles at a time, stored as ``dtype``.

    Args:
        q: int8 [out, in]. scale: [ceil(out/128), ceil(in/128)] (fp32). dtype: output dtype.
        chunk_elems: elements per fp32 work buffer (default 8M = 32 MB), reused for every band.
    Returns:
        [out, in] tensor of ``dtype`` (``out`` if given). Extra memory: the work buffer only.
    """
    out_f, in_f = q.shape
    if out is None:
        out = torch.empty((out_f, in_f), dtype=dtype)
    if q.numel() == 0:
        return out
    sf = scale.to(torch.float32)
    full = in_f // TILE  # column tiles that are complete; a partial last tile is handled separately
    rows = max(TILE, (chunk_elems // max(in_f, 1)) // TILE * TILE)
    buf = torch.empty((min(rows, out_f), in_f), dtype=torch.float32)
    for r0 in range(0, out_f, rows):
        r1 = min(r0 + rows, out_f)
        h = r1 - r0
        t = buf[:h]
        t.copy_(q[r0:r1])
        # per-row scales of this band: [h, col_tiles]
        sc = sf[r0 // TILE: (r1 + TILE - 1) // TILE].repeat_interleave(TILE, 0)[:h]
        if full:
            t[:, : full * TILE].view(h, full, TILE).mul_(sc[:, :full, None])
        if in_f % TILE:
            t[:, full * TILE:].mul_(sc[:, full:full + 1])
        out[r0:r1].copy_(t)
    return out


BAND_ELEMS = 1 << 23  # elements per streamed band (32 MB in fp32): bounds the extra memory of any one tensor


def iter_bands(reader, o: _Out, dtype: torch.dtype, band_elems: Optional[int] = None):
    """Yield the output tensor of plan entry ``o`` as consecutive row bands of ``dtype``, releasing the source's
    mapped pages band by band (so even a 300 MB embedding never sits in memory twice).

    Bands are [rows, ...] slices along dim 0 (multiples of 128 rows for int8 tiles). A band may be a view of the
    source map when no conversion is needed: consume it before asking for the next one.
    """
    band_elems = band_elems or BAND_ELEMS
    src = reader.get(o.src)
    try:
        if o.kind == "dequant":
            sc = reader.get(o.scale)
            if not torch.isfinite(sc.float()).all():
                raise CheckpointError(f"{reader.path!r}: scale {o.scale!r} holds non-finite values; the file is "
                                      "corrupt")
            out_f, in_f = src.shape
            rows = max(TILE, (band_elems // max(in_f, 1)) // TILE * TILE)
            for r0 in range(0, out_f, rows):
                r1 = min(r0 + rows, out_f)
                yield dequantize_int8_tiles(src[r0:r1], sc[r0 // TILE: (r1 + TILE - 1) // TILE], dtype)
                reader.release(src[r0:r1])
            reader.release(sc)
            return
        # TurboDiffusion flattens the patch embedding as (c, kt, kh, kw), the Conv3d weight's own memory order, so
        # a reshape is the whole conversion.
        v = src.reshape(o.shape) if o.kind == "patch" else src
        if v.ndim == 0 or v.numel() == 0:
            yield v.to(dtype, copy=True)
            return
        flat = v.reshape(v.shape[0], -1)
        rows = max(1, band_elems // max(flat.shape[1], 1))
        for r0 in range(0, flat.shape[0], rows):
            part = flat[r0: r0 + rows]
            yield part if part.dtype == dtype else part.to(dtype)
            reader.release(part)
    finally:
        reader.release(src)


def _materialise(reader, o: _Out, dtype: torch.dtype) -> torch.Tensor:
    """One owned output tensor for plan entry ``o``, filled band by band."""
    out = torch.empty(o.shape, dtype=dtype)
    if out.ndim == 0 or out.numel() == 0:
        for part in iter_bands(reader, o, dtype):
            out.copy_(part.reshape(out.shape))
        return out
    flat = out.view(out.shape[0], -1)
    r = 0
    for part in iter_bands(reader, o, dtype):
        h = part.shape[0]
        flat[r: r + h].copy_(part.reshape(h, -1))
        r += h
    assert r == flat.shape[0]
    return out


def _read_proj_l(reader, plan: Plan) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for i, parts in sorted(plan.proj_l.items()):
        pair = []
        for p in ("weight", "bias"):
            s = reader.get(parts[p])
            pair.append(s.to(torch.float32, copy=True))
            reader.release(s)
        w, b = pair
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise CheckpointError(f"{reader.path!r}: proj_l of block {i} ({parts['weight']!r}) holds non-finite "
                                  "values; the file is corrupt")
        out[i] = (w, b)
    return out


def _warn_partial(info: CheckpointInfo, path: str) -> None:
    if info.sla_blocks and info.num_blocks and len(info.sla_blocks) < info.num_blocks:
        log.warning("SLA: %s has proj_l weights for only %d of %d blocks; blocks %s have none and run block-sparse "
                    "attention only (no linear branch)", path, len(info.sla_blocks), info.num_blocks,
                    _ranges(info.missing_sla_blocks))


# '0-2, 5' for [0, 1, 2, 5]: the same compact form the patch logs use.
_ranges = format_blocks


def _dtype_name(dt: Optional[torch.dtype]) -> str:
    return "" if dt is None else str(dt).replace("torch.", "")


def load_checkpoint(path, weight_dtype: Optional[torch.dtype] = None, progress: ProgressFn = None
                    ) -> LoadedCheckpoint:
    """Read an SLA Wan checkpoint of any supported layout into ComfyUI-native weights plus per-block proj_l.

    Args:
        path: ``.safetensors`` or ``.pth``/``.pt`` file (layout detected from its keys).
        weight_dtype: dtype of the returned weights (see ``target_dtype``); None keeps the file's dtypes and
            dequantises int8 tiles to bf16.
        progress: called as ``progress(done, total)`` after each tensor.
    Returns:
        LoadedCheckpoint with ``state_dict`` ready for ``comfy.sd.load_diffusion_model_state_dict`` (proj_l removed,
        prefixes stripped, patch embedding as Conv3d [dim, in_dim, 1, 2, 2]), ``proj_l`` {block: (W [D, D], b [D])}
        fp32 and ``info``.
    Raises:
        CheckpointError for anything that is not a usable Wan checkpoint.
    """
    reader = open_source(path)
    try:
        if _simpletuner_payload(reader) is not None:
            raise CheckpointError(
                f"{reader.path!r} is SimpleTuner's sla_attention.pt: it holds only the SLA proj_l weights, no base "
                "model. Load the base model with the stock diffusion model loader and add these with "
                "'Load SLA Weights'")
        plan = plan_checkpoint(reader, require_base=True)
        info = plan.info
        info.weight_dtype = _dtype_name(weight_dtype) if weight_dtype is not None else (
            "bf16" if info.quantized else "")
        total = len(plan.outputs) + len(plan.proj_l)
        done = 0
        sd: Dict[str, torch.Tensor] = {}
        for o in plan.outputs:
            dt = target_dtype(o.key, o.shape, o.src_dtype, weight_dtype, o.kind == "dequant", o.bias_dtype,
                              o.keep_dtype)
            sd[o.key] = _materialise(reader, o, dt)
            if isinstance(reader, TorchReader):
                reader.drop(o.src)
                if o.scale:
                    reader.drop(o.scale)
            done += 1
            if progress is not None:
                progress(done, total)
        proj = _read_proj_l(reader, plan)
        if progress is not None:
            progress(total, total)
        _warn_partial(info, reader.path)
        log.info("SLA checkpoint %s: %s", reader.path, info.summary())
        return LoadedCheckpoint(sd, proj, info, dict(getattr(reader, "metadata", {}) or {}))
    finally:
        reader.close()


def _load_simpletuner(reader, payload: dict, num_blocks: Optional[int]
                      ) -> Tuple[Dict[int, Tuple[torch.Tensor, torch.Tensor]], CheckpointInfo]:
    path = reader.path
    state = payload["state"]
    cands = []
    for key, tensors in state.items():
        try:
            hd_s, token = str(key).split(":", 1)
            hd = int(hd_s)
        except ValueError:
            log.warning("SLA: %s: skipping SimpleTuner state entry %r (expected '<head_dim>:<dtype>')", path, key)
            continue
        if not isinstance(tensors, dict) or "proj_l.weight" not in tensors or "proj_l.bias" not in tensors:
            raise CheckpointError(f"{path!r}: SimpleTuner state entry {key!r} lacks proj_l.weight/proj_l.bias; "
                                  f"found {sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__}")
        cands.append((hd, token, tensors))
    wan = [c for c in cands if c[0] == WAN_HEAD_DIM]
    if not wan:
        found = ", ".join(f"{hd}:{tok}" for hd, tok, _ in cands) or "nothing"
        raise CheckpointError(f"{path!r}: SimpleTuner sla_attention.pt has no proj_l for head size {WAN_HEAD_DIM} "
                              f"(Wan); found {found}")
    order = {"fp32": 0, "bf16": 1, "fp16": 2}
    wan.sort(key=lambda c: order.get(c[1], 3))
    if len(wan) > 1:
        log.warning("SLA: %s holds several SimpleTuner proj_l states (%s); using %s", path,
                    ", ".join(f"{WAN_HEAD_DIM}:{c[1]}" for c in wan), f"{WAN_HEAD_DIM}:{wan[0][1]}")
    w, b = wan[0][2]["proj_l.weight"], wan[0][2]["proj_l.bias"]
    if tuple(w.shape) != (WAN_HEAD_DIM, WAN_HEAD_DIM) or tuple(b.shape) != (WAN_HEAD_DIM,):
        raise CheckpointError(f"{path!r}: SimpleTuner state.{WAN_HEAD_DIM}:{wan[0][1]}.proj_l.weight/bias have shapes "
                              f"{list(w.shape)}/{list(b.shape)}; expected [{WAN_HEAD_DIM}, {WAN_HEAD_DIM}]/"
                              f"[{WAN_HEAD_DIM}]")
    pair = (w.to(torch.float32, copy=True), b.to(torch.float32, copy=True))
    info = CheckpointInfo(layout="simpletuner", container=reader.kind, proj_l_shared=True, head_dim=WAN_HEAD_DIM)
    st = payload.get("settings") or {}
    info.sla_settings = dict(SLA_DEFAULTS)
    for src, dst, f in (("topk", "keep_ratio", float), ("blkq", "block_q", int), ("blkk", "block_k", int),
                        ("feature_map", "feature_map", str)):
        if src in st:
            try:
                info.sla_settings[dst] = f(st[src])
            except (TypeError, ValueError):
                pass
    if num_blocks:
        info.num_blocks = num_blocks
        info.sla_blocks = list(range(num_blocks))
        return {i: pair for i in range(num_blocks)}, info
    return {ALL_BLOCKS: pair}, info


def load_proj_l(path, num_blocks: Optional[int] = None
                ) -> Tuple[Dict[int, Tuple[torch.Tensor, torch.Tensor]], CheckpointInfo]:
    """Read only the proj_l tensors of a file (safetensors: only those bytes are touched).

    Args:
        path: any layout ``load_checkpoint`` reads, a proj_l-only file, or SimpleTuner's ``sla_attention.pt``.
        num_blocks: for SimpleTuner's shared proj_l: expand it to blocks 0..num_blocks-1. Without it the dict is
            ``{ALL_BLOCKS: (W, b)}`` (``ALL_BLOCKS == -1``: apply to every block).
    Returns:
        ({block: (weight [D, D] fp32, bias [D] fp32)}, CheckpointInfo). An empty dict when the file has none.
    """
    reader = open_source(path)
    try:
        payload = _simpletuner_payload(reader)
        if payload is not None:
            proj, info = _load_simpletuner(reader, payload, num_blocks)
        else:
            plan = plan_checkpoint(reader, require_base=False)
            info = plan.info
            proj = _read_proj_l(reader, plan)
            _warn_partial(info, reader.path)
        if not proj:
            log.warning("SLA: %s holds no proj_l (SLA linear-branch) weights; SLA will run block-sparse only",
                        reader.path)
        log.info("SLA weights %s: %s", reader.path, info.summary())
        return proj, info
    finally:
        reader.close()


# ----------------------------------------------------------------------------------------------- handing over

_ACTIVE_CONSUMERS: set = set()


class _ConsumeOnCopy(torch.Tensor):
    """A state-dict tensor that frees its own storage right after it has been copied into a parameter.

    ``Module.load_state_dict`` copies each entry with ``param.copy_(input)``; when ``input`` is one of these (while
    its ``consume_on_copy`` block is active) its storage is released at once, so a model built from the dict never
    coexists with a second full copy of its weights. Any other operation behaves exactly as on a plain tensor and
    returns plain tensors.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name == "detach" and args and isinstance(args[0], _ConsumeOnCopy) and isinstance(out, torch.Tensor):
            # nn.Parameter(t) requires detach() to keep the type. A loader that adopts the tensor this way keeps its
            # storage alive, so neither it nor the original is ever freed (plain_tensors() unwraps it later).
            out = out.as_subclass(_ConsumeOnCopy)
            out._sla_consume_token = None
            args[0]._sla_consume_token = None
            return out
        if (name == "copy_" and len(args) > 1 and isinstance(args[1], _ConsumeOnCopy)
                and getattr(args[1], "_sla_consume_token", None) in _ACTIVE_CONSUMERS):
            src, dst = args[1], args[0]
            with torch._C.DisableTorchFunctionSubclass():
                shares = dst.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
                if not shares and src.untyped_storage().nbytes():
                    src.untyped_storage().resize_(0)
        return out


@contextlib.contextmanager
def consume_on_copy(state_dict: Dict[str, torch.Tensor]):
    """Hand ``state_dict`` over to a loader that copies it into freshly allocated parameters (ComfyUI's
    ``comfy.sd.load_diffusion_model_state_dict``), freeing each tensor as soon as it has been copied.

    Peak memory of building the model drops from ~2x to ~1x the model size. ``state_dict`` is emptied (its tensors
    are consumed); use only the yielded dict, only inside the block. Afterwards call ``plain_tensors(module)`` on
    the built model in case a loader adopted a tensor instead of copying it.

    Example::

        with consume_on_copy(loaded.state_dict) as sd:
            model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options)
        plain_tensors(model.model.diffusion_model)
    """
    token = object()
    wrapped = {}
    for k, v in state_dict.items():
        t = v.as_subclass(_ConsumeOnCopy)
        t._sla_consume_token = token
        wrapped[k] = t
    state_dict.clear()
    _ACTIVE_CONSUMERS.add(token)
    try:
        yield wrapped
    finally:
        _ACTIVE_CONSUMERS.discard(token)


def plain_tensors(module: torch.nn.Module) -> int:
    """Turn any parameter/buffer of ``module`` that is a ``consume_on_copy`` tensor back into a plain tensor
    (same storage). Returns how many were converted (0 when the loader copied everything)."""
    n = 0
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and (isinstance(p, _ConsumeOnCopy) or isinstance(p.data, _ConsumeOnCopy)):
                with torch._C.DisableTorchFunctionSubclass():
                    plain = p.detach().as_subclass(torch.Tensor)
                m._parameters[name] = torch.nn.Parameter(plain, requires_grad=p.requires_grad)
                n += 1
        for name, b in list(m._buffers.items()):
            if isinstance(b, _ConsumeOnCopy):
                m._buffers[name] = b.as_subclass(torch.Tensor)
                n += 1
    return n
