"""Read a TurboDiffusion ``-quant`` checkpoint keeping its block Linears as int8 tiles (the W8A8 path).

Same planning and tensor reading as :func:`sla.checkpoint.load_checkpoint`, except for the int8 weights of Wan block
Linears (:func:`sla.quant.is_w8a8_block_linear`): those stay int8 and their tile scales come along under
``<layer>.int8_scale``. Everything else is what ``load_checkpoint(path, weight_dtype=None)`` returns (the file's
dtypes: bf16 weights, fp32 norms; any int8 tile outside the blocks dequantised to bf16).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import List

import torch

from . import checkpoint as C
from .checkpoint import load as L
from .checkpoint.outputs import OutputTensor, output_dtype
from .checkpoint.stream import ProgressFn, Targets
from .quant import is_w8a8_block_linear

log = logging.getLogger(__name__)

__all__ = ["SCALE_SUFFIX", "load_checkpoint_int8", "expected_layer_names", "summary_int8"]

SCALE_SUFFIX = ".int8_scale"  # state-dict key of a W8A8 layer's tile scales, beside its int8 ``.weight``


def load_checkpoint_int8(path, progress: ProgressFn = None) -> C.LoadedCheckpoint:
    """Load an SLA Wan ``-quant`` checkpoint with int8 block Linears kept as int8.

    Returns:
        LoadedCheckpoint whose ``state_dict`` holds, for each W8A8 layer ``L``: ``L.weight`` int8 [out, in],
        ``L.int8_scale`` fp32 [ceil(out/128), ceil(in/128)] and ``L.bias``; the rest as ``load_checkpoint`` gives it.
        ``info.weight_dtype`` is ``"int8 (W8A8)"``.
    Raises:
        CheckpointError for unusable files and for files without int8 tiles (nothing to keep: load them with
        another weight_dtype).
    """
    dequantised: List[str] = []
    ck = L.read_base_model(path, _keep_block_tiles(dequantised), _require_tiles, ": it holds no base model",
                           progress)
    if dequantised:
        log.info("SLA W8A8: %d int8 layers outside the Wan blocks' Linears are dequantised (e.g. %s)",
                 len(dequantised), dequantised[0])
    log.info("SLA checkpoint %s: %s; %d Linear layers kept as int8 tiles", os.fspath(path), ck.info.summary(),
             len(expected_layer_names(ck.state_dict)))
    return ck


def _require_tiles(path: str, info: C.CheckpointInfo) -> None:
    """Refuse a file without int8 tiles (before any tensor is read); note the weight dtype otherwise."""
    if not info.quantized:
        raise C.CheckpointError(
            f"{path!r} (layout {info.layout}) has no int8 tiles: weight_dtype 'int8 (W8A8)' serves "
            "TurboDiffusion's -quant checkpoints; pick default, bf16, fp16 or fp8 for this file")
    info.weight_dtype = "int8 (W8A8)"


def _keep_block_tiles(dequantised: List[str]) -> Targets:
    """Targets keeping the int8 tiles of Wan block Linears: int8 ``L.weight`` [out, in] as stored and fp32
    ``L.int8_scale`` [ceil(out/128), ceil(in/128)]; everything else in the file's dtypes (int8 tiles of other layers
    dequantised, their keys appended to ``dequantised``)."""
    def targets(reader, o: OutputTensor):
        layer = o.key[: -len(".weight")] if o.key.endswith(".weight") else ""
        if o.kind != "dequant" or not is_w8a8_block_linear(layer):
            if o.kind == "dequant":
                dequantised.append(o.key)
            return [(o, output_dtype(o, None))]
        tiles = dataclasses.replace(o, kind="copy", scale=None)
        scale = OutputTensor(layer + SCALE_SUFFIX, o.scale, "scale", reader.shape(o.scale), reader.dtype(o.scale))
        return [(tiles, torch.int8), (scale, torch.float32)]
    return targets


def expected_layer_names(state_dict) -> list:
    """Names (no suffix) of the W8A8 layers in a state dict from :func:`load_checkpoint_int8`."""
    return sorted(k[: -len(SCALE_SUFFIX)] for k in state_dict if k.endswith(SCALE_SUFFIX))


def summary_int8(info: C.CheckpointInfo) -> str:
    """``info.summary()`` with the quantisation part saying the tiles were kept."""
    text = info.summary()
    old = "int8 tiles dequantized to " + info.weight_dtype
    return text.replace(old, "int8 tiles kept (W8A8)") if old in text else text + " | int8 tiles kept (W8A8)"
