"""Planning: from a reader's key names and shapes (no tensor data) to every output tensor and the file's description.

``plan_checkpoint`` runs a few short steps: strip trainer prefixes, reject LoRAs, split proj_l from base weights,
map base names to Wan's (``keys``), check the base model and int8 pairs, describe and check the base model's shapes
(``shapes``), decide each output tensor's transform (``outputs.TRANSFORMS``), check proj_l shapes, and name the
layout (``layouts.LAYOUTS``). Every problem is a ``CheckpointError`` naming the key and what was expected.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Set, Tuple

import torch

from . import keys as K
from .info import METADATA_PREFIX, TILE, WAN_HEAD_DIM, CheckpointInfo, read_settings, with_defaults
from .io import CheckpointError, Reader
from .layouts import Facts, detect_layout
from .outputs import OutputTensor, TransformContext, plan_outputs
from .shapes import SCALE_SUFFIXES, check_base_shapes, check_proj_l, describe_base

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """How a file maps onto ComfyUI-native keys: base tensors, proj_l sources, and the detected info."""

    outputs: List[OutputTensor]
    proj_l: Dict[int, Dict[str, str]]  # block -> {"weight": src key, "bias": src key}
    info: CheckpointInfo
    has_base: bool


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
    layers = {w[: w.rindex(".")] for w in wan if w.endswith(SCALE_SUFFIXES)}
    keep_all = "scaled_fp8" in wan
    if layers or keep_all:
        log.info("SLA: %s uses ComfyUI's scaled/quantised weight format; those weights are passed through "
                 "unchanged for ComfyUI to load", path)
    return layers, keep_all


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
        pshape = describe_base(reader, wan, info)
        check_base_shapes(reader, wan, info, kept_layers)
        outputs = plan_outputs(TransformContext(reader, wan, int8, info, kept_layers, keep_all))
    check_proj_l(reader, proj, info, has_base)
    if not has_base:
        info.head_dim = WAN_HEAD_DIM
    info.sla_blocks = sorted(proj)

    info.layout = detect_layout(Facts(naming, proj_style, has_base, info.quantized, len(pshape) == 2,
                                      tuple(prefixes), info.source_layout))
    # Files from the converter record their settings; others were fine-tuned at TurboDiffusion's defaults.
    info.sla_settings = (with_defaults(read_settings(meta, "metadata", path)) if info.source_layout
                         else (with_defaults({}) if proj else {}))
    return Plan(outputs, proj, info, has_base)
