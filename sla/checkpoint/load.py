"""Reading a checkpoint into memory: ``load_checkpoint`` (base weights + proj_l), ``read_base_model`` (its body,
shared with ``sla.quant_load``) and ``load_proj_l`` (proj_l only).

The tensors come through ``stream.stream_outputs``, each into an owned tensor of its target dtype, so the peak
resident size is about the output model plus one band.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Callable, Dict, Optional, Tuple

import torch

from ..spec import format_blocks
from .io import CheckpointError, Reader, open_source, read_errors
from .info import WAN_HEAD_DIM, CheckpointInfo, read_settings, with_defaults
from .plan import Plan, plan_checkpoint
from .stream import ProgressFn, Targets, cast_to, read_proj_l, stream_outputs

log = logging.getLogger(__name__)

ALL_BLOCKS = -1  # proj_l dict key meaning "shared by every block" (SimpleTuner), see load_proj_l(num_blocks=...)


@dataclasses.dataclass
class LoadedCheckpoint:
    """``state_dict``: ComfyUI-native Wan weights (no proj_l); ``proj_l``: block -> (weight [D, D], bias [D]) fp32."""

    state_dict: Dict[str, torch.Tensor]
    proj_l: Dict[int, Tuple[torch.Tensor, torch.Tensor]]
    info: CheckpointInfo
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)


def simpletuner_payload(reader: Reader) -> Optional[dict]:
    """SimpleTuner's ``sla_attention.pt`` payload ({"state": ..., "version"/"settings"}) when ``reader`` holds one."""
    raw = getattr(reader, "raw", None)
    if isinstance(raw, dict) and isinstance(raw.get("state"), dict) and ("version" in raw or "settings" in raw):
        return raw
    return None


def plan_base_model(reader: Reader, simpletuner_advice: str) -> Plan:
    """``plan_checkpoint(reader, require_base=True)``, refusing SimpleTuner's ``sla_attention.pt`` first with the
    error "<path> is SimpleTuner's sla_attention.pt<simpletuner_advice>" (the caller says what to do instead)."""
    if simpletuner_payload(reader) is not None:
        raise CheckpointError(f"{reader.path!r} is SimpleTuner's sla_attention.pt{simpletuner_advice}")
    return plan_checkpoint(reader, require_base=True)


def _warn_partial(info: CheckpointInfo, path: str) -> None:
    if info.sla_blocks and info.num_blocks and len(info.sla_blocks) < info.num_blocks:
        log.warning("SLA: %s has proj_l weights for only %d of %d blocks; blocks %s have none and run block-sparse "
                    "attention only (no linear branch)", path, len(info.sla_blocks), info.num_blocks,
                    format_blocks(info.missing_sla_blocks))


def _dtype_name(dt: Optional[torch.dtype]) -> str:
    return "" if dt is None else str(dt).replace("torch.", "")


def read_base_model(path, targets: Targets, prepare: Callable[[str, CheckpointInfo], None], simpletuner_advice: str,
                    progress: ProgressFn = None) -> LoadedCheckpoint:
    """Open ``path``, plan it (``plan_base_model``), let ``prepare(path, info)`` refuse it or note the weight dtype,
    read every planned tensor through ``targets`` into an owned state dict, then the proj_l weights.

    Progress counts the base tensors and proj_l blocks; a partial set of proj_l is warned about. Raises
    CheckpointError (naming the file, and the tensor when one was being read) for anything unusable.
    """
    with read_errors(path), contextlib.closing(open_source(path)) as reader:
        plan = plan_base_model(reader, simpletuner_advice)
        prepare(reader.path, plan.info)
        total = len(plan.outputs) + len(plan.proj_l)
        sd = {t.key: t.materialise() for t in stream_outputs(reader, plan, targets, progress, total)}
        proj = read_proj_l(reader, plan)
        if progress is not None:
            progress(total, total)
        _warn_partial(plan.info, reader.path)
        return LoadedCheckpoint(sd, proj, plan.info, dict(getattr(reader, "metadata", {}) or {}))


def load_checkpoint(path, weight_dtype: Optional[torch.dtype] = None, progress: ProgressFn = None
                    ) -> LoadedCheckpoint:
    """Read an SLA Wan checkpoint of any supported layout into ComfyUI-native weights plus per-block proj_l.

    Args:
        path: ``.safetensors`` or ``.pth``/``.pt`` file (layout detected from its keys).
        weight_dtype: dtype of the returned weights (see ``outputs.target_dtype``); None keeps the file's dtypes and
            dequantises int8 tiles to bf16.
        progress: called as ``progress(done, total)`` after each tensor.
    Returns:
        LoadedCheckpoint with ``state_dict`` ready for ``comfy.sd.load_diffusion_model_state_dict`` (proj_l removed,
        prefixes stripped, patch embedding as Conv3d [dim, in_dim, 1, 2, 2]), ``proj_l`` {block: (W [D, D], b [D])}
        fp32 and ``info``.
    Raises:
        CheckpointError for anything that is not a usable Wan checkpoint.
    """
    def note_dtype(_, info: CheckpointInfo) -> None:
        info.weight_dtype = _dtype_name(weight_dtype) if weight_dtype is not None else (
            "bf16" if info.quantized else "")

    ck = read_base_model(path, cast_to(weight_dtype), note_dtype, ": it holds only the SLA proj_l weights, no base "
                         "model. Load the base model with the stock diffusion model loader and add these with 'Load "
                         "SLA Weights'", progress)
    log.info("SLA checkpoint %s: %s", os.fspath(path), ck.info.summary())
    return ck


def _load_simpletuner(reader: Reader, payload: dict, num_blocks: Optional[int]
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
    if not (isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise CheckpointError(f"{path!r}: SimpleTuner state.{WAN_HEAD_DIM}:{wan[0][1]}.proj_l holds "
                              f"{type(w).__name__}/{type(b).__name__}; expected tensors")
    if tuple(w.shape) != (WAN_HEAD_DIM, WAN_HEAD_DIM) or tuple(b.shape) != (WAN_HEAD_DIM,):
        raise CheckpointError(f"{path!r}: SimpleTuner state.{WAN_HEAD_DIM}:{wan[0][1]}.proj_l.weight/bias have shapes "
                              f"{list(w.shape)}/{list(b.shape)}; expected [{WAN_HEAD_DIM}, {WAN_HEAD_DIM}]/"
                              f"[{WAN_HEAD_DIM}]")
    pair = (w.to(torch.float32, copy=True), b.to(torch.float32, copy=True))
    if not (torch.isfinite(pair[0]).all() and torch.isfinite(pair[1]).all()):
        raise CheckpointError(f"{path!r}: SimpleTuner proj_l state.{WAN_HEAD_DIM}:{wan[0][1]} holds non-finite "
                              "values; the file is corrupt")
    info = CheckpointInfo(layout="simpletuner", container=reader.kind, proj_l_shared=True, head_dim=WAN_HEAD_DIM)
    st = payload.get("settings")
    info.sla_settings = with_defaults(read_settings(st if isinstance(st, dict) else {}, "simpletuner", path))
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
    with read_errors(path), contextlib.closing(open_source(path)) as reader:
        payload = simpletuner_payload(reader)
        if payload is not None:
            proj, info = _load_simpletuner(reader, payload, num_blocks)
        else:
            plan = plan_checkpoint(reader, require_base=False)
            info = plan.info
            proj = read_proj_l(reader, plan)
            _warn_partial(info, reader.path)
        if not proj:
            log.warning("SLA: %s holds no proj_l (SLA linear-branch) weights; SLA will run block-sparse only",
                        reader.path)
        log.info("SLA weights %s: %s", reader.path, info.summary())
        return proj, info


