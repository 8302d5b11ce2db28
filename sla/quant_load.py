"""Read a TurboDiffusion ``-quant`` checkpoint keeping its block Linears as int8 tiles (the W8A8 path).

Same planning and tensor reading as :func:`sla.checkpoint.load_checkpoint`, except for the int8 weights of Wan block
Linears (:func:`sla.quant.is_w8a8_block_linear`): those stay int8 and their tile scales come along under
``<layer>.int8_scale``. Everything else is what ``load_checkpoint(path, weight_dtype=None)`` returns (the file's
dtypes: bf16 weights, fp32 norms; any int8 tile outside the blocks dequantised to bf16).
"""
from __future__ import annotations

import logging
import torch

from . import checkpoint as C
from .checkpoint import load as L
from .checkpoint.outputs import output_dtype
from .quant import is_w8a8_block_linear

log = logging.getLogger(__name__)

__all__ = ["SCALE_SUFFIX", "load_checkpoint_int8", "expected_layer_names", "summary_int8"]

SCALE_SUFFIX = ".int8_scale"  # state-dict key of a W8A8 layer's tile scales, beside its int8 ``.weight``


def load_checkpoint_int8(path, progress: L.ProgressFn = None) -> C.LoadedCheckpoint:
    """Load an SLA Wan ``-quant`` checkpoint with int8 block Linears kept as int8.

    Returns:
        LoadedCheckpoint whose ``state_dict`` holds, for each W8A8 layer ``L``: ``L.weight`` int8 [out, in],
        ``L.int8_scale`` fp32 [ceil(out/128), ceil(in/128)] and ``L.bias``; the rest as ``load_checkpoint`` gives it.
        ``info.weight_dtype`` is ``"int8 (W8A8)"``.
    Raises:
        CheckpointError for unusable files and for files without int8 tiles (nothing to keep: load them with
        another weight_dtype).
    """
    reader = C.open_source(path)
    try:
        plan = L.plan_base_model(reader, ": it holds no base model")
        info = plan.info
        if not info.quantized:
            raise C.CheckpointError(
                f"{reader.path!r} (layout {info.layout}) has no int8 tiles: weight_dtype 'int8 (W8A8)' serves "
                "TurboDiffusion's -quant checkpoints; pick default, bf16, fp16 or fp8 for this file")
        info.weight_dtype = "int8 (W8A8)"
        total = len(plan.outputs) + len(plan.proj_l)
        sd = {}
        kept, dequantised = 0, []
        for done, o in enumerate(plan.outputs, 1):
            layer = o.key[: -len(".weight")] if o.key.endswith(".weight") else ""
            if o.kind == "dequant" and is_w8a8_block_linear(layer):
                sd[o.key] = _owned(reader, o.src, torch.int8)
                sc = _owned(reader, o.scale, torch.float32)
                if not torch.isfinite(sc).all():
                    raise C.CheckpointError(f"{reader.path!r}: scale {o.scale!r} holds non-finite values; the file "
                                            "is corrupt")
                sd[layer + SCALE_SUFFIX] = sc
                kept += 1
            else:
                if o.kind == "dequant":
                    dequantised.append(o.key)
                sd[o.key] = L._materialise(reader, o, output_dtype(o, None))
            reader.drop(o.src)
            if o.scale:
                reader.drop(o.scale)
            if progress is not None:
                progress(done, total)
        if dequantised:
            log.info("SLA W8A8: %d int8 layers outside the Wan blocks' Linears are dequantised (e.g. %s)",
                     len(dequantised), dequantised[0])
        proj = L.read_proj_l(reader, plan)
        if progress is not None:
            progress(total, total)
        L._warn_partial(info, reader.path)
        log.info("SLA checkpoint %s: %s; %d Linear layers kept as int8 tiles", reader.path, info.summary(), kept)
        return C.LoadedCheckpoint(sd, proj, info, dict(getattr(reader, "metadata", {}) or {}))
    finally:
        reader.close()


def _owned(reader, key: str, dtype: torch.dtype) -> torch.Tensor:
    """A copy of one source tensor in ``dtype`` that no longer references the file's map."""
    src = reader.get(key)
    try:
        return src.to(dtype, copy=True).contiguous()
    finally:
        reader.release(src)


def expected_layer_names(state_dict) -> list:
    """Names (no suffix) of the W8A8 layers in a state dict from :func:`load_checkpoint_int8`."""
    return sorted(k[: -len(SCALE_SUFFIX)] for k in state_dict if k.endswith(SCALE_SUFFIX))


def summary_int8(info: C.CheckpointInfo) -> str:
    """``info.summary()`` with the quantisation part saying the tiles were kept."""
    text = info.summary()
    old = "int8 tiles dequantized to " + info.weight_dtype
    return text.replace(old, "int8 tiles kept (W8A8)") if old in text else text + " | int8 tiles kept (W8A8)"
