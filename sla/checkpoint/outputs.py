"""Output tensors: what each base tensor of a file becomes (``TRANSFORMS``) and in which dtype (``target_dtype``).

``plan_outputs`` gives one ``OutputTensor`` per base tensor, in file order: int8 tiles + scale are dequantised
(``dequant``), TurboDiffusion's Linear patch embedding is reshaped to a Conv3d (``patch``), everything else is
copied (``copy``; ComfyUI's scaled / quantised layers pass uncast). No tensor data is read here:
``stream.stream_outputs`` carries the entries out for the loaders and the converter.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch

from .info import CheckpointInfo
from .io import Reader
from .shapes import check_scale_shape


@dataclasses.dataclass
class OutputTensor:
    """One ComfyUI-native output tensor and where it comes from."""

    key: str  # ComfyUI-native output key
    src: str  # source key (raw, as in the file)
    kind: str  # a TRANSFORMS name: "copy" | "patch" (Linear -> Conv3d reshape) | "dequant"; or "scale" (W8A8 reading)
    shape: Tuple[int, ...]
    src_dtype: torch.dtype
    scale: Optional[str] = None  # source key of the tile scales (dequant)
    bias_dtype: Optional[torch.dtype] = None
    keep_dtype: bool = False  # ComfyUI scaled-fp8 / comfy_quant layers: never cast


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


@dataclasses.dataclass
class TransformContext:
    """What the transforms need to know about the whole file."""

    reader: Reader
    wan: Dict[str, str]
    int8: Set[str]
    info: CheckpointInfo
    kept_layers: Set[str]
    keep_all: bool


def _dequant(w: str, raw: str, c: TransformContext) -> Optional[OutputTensor]:
    if not w.endswith(".int8_weight"):
        return None
    b = w[: -len(".int8_weight")]
    bias_raw = c.wan.get(b + ".bias")
    out = OutputTensor(b + ".weight", raw, "dequant", c.reader.shape(raw), torch.int8, scale=c.wan[b + ".scale"],
                       bias_dtype=c.reader.dtype(bias_raw) if bias_raw else None)
    check_scale_shape(c.reader, raw, c.wan[b + ".scale"])
    return out


def _patch(w: str, raw: str, c: TransformContext) -> Optional[OutputTensor]:
    shape = c.reader.shape(raw)
    if w != "patch_embedding.weight" or len(shape) != 2:
        return None
    return OutputTensor(w, raw, "patch", (shape[0], c.info.in_dim, 1, 2, 2), c.reader.dtype(raw))


def _copy(w: str, raw: str, c: TransformContext) -> Optional[OutputTensor]:
    keep = c.keep_all or ("." in w and w[: w.rindex(".")] in c.kept_layers)
    return OutputTensor(w, raw, "copy", c.reader.shape(raw), c.reader.dtype(raw), keep_dtype=keep)


# Tried in order for every base tensor; the first that returns an entry decides (copy takes the rest).
TRANSFORMS: Tuple[Tuple[str, Callable[[str, str, TransformContext], Optional[OutputTensor]]], ...] = (
    ("dequant", _dequant), ("patch", _patch), ("copy", _copy))


def plan_outputs(c: TransformContext) -> List[OutputTensor]:
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
