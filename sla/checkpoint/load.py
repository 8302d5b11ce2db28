"""Reading a planned checkpoint: ``load_checkpoint`` (base weights + proj_l) and ``load_proj_l`` (proj_l only).

Memory: tensors are read one at a time from the reader (a memory map), converted into an owned tensor of the
target dtype in row bands (int8 tiles dequantised one band of 128-row tiles at a time, fp8 cast while reading) and
the map's pages are handed back, so the peak resident size is about the output model plus one band.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Dict, Optional, Tuple

import torch

from ..spec import format_blocks
from .io import CheckpointError, Reader, open_source
from .info import TILE, WAN_HEAD_DIM, CheckpointInfo, read_settings, with_defaults
from .outputs import OutputTensor, output_dtype
from .plan import Plan, plan_checkpoint

log = logging.getLogger(__name__)

ALL_BLOCKS = -1  # proj_l dict key meaning "shared by every block" (SimpleTuner), see load_proj_l(num_blocks=...)

ProgressFn = Optional[Callable[[int, int], None]]


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


def _check_finite(reader: Reader, key: str, band: torch.Tensor, row: int) -> None:
    """Raise naming ``key`` when ``band`` (rows from ``row`` of its output) holds NaN or Inf."""
    if not band.dtype.is_floating_point or band.numel() == 0:
        return
    t = band.to(torch.float16) if band.dtype.itemsize == 1 else band  # fp8 has no isfinite; fp16 keeps NaN/Inf
    ok = torch.isfinite(t)
    if not bool(ok.all()):
        bad = int((~ok).sum())
        raise CheckpointError(f"{reader.path!r}: {key!r} holds {bad} non-finite values (NaN/Inf) from row {row} of "
                              "its weights; the file is corrupt (a model with them renders black frames)")


def file_error(path, e: BaseException, key: Optional[str] = None) -> CheckpointError:
    """Any failure while reading ``path`` as a CheckpointError naming the file (and tensor when known)."""
    at = f" at tensor {key!r}" if key else ""
    first = (str(e).splitlines() or [""])[0][:300]
    return CheckpointError(f"{os.fspath(path)!r}: cannot be read{at}: {type(e).__name__}: {first}")


BAND_ELEMS = 1 << 23  # elements per streamed band (32 MB in fp32): bounds the extra memory of any one tensor


def iter_bands(reader: Reader, o: OutputTensor, dtype: torch.dtype, band_elems: Optional[int] = None):
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
                band = dequantize_int8_tiles(src[r0:r1], sc[r0 // TILE: (r1 + TILE - 1) // TILE], dtype)
                _check_finite(reader, o.src, band, r0)
                yield band
                reader.release(src[r0:r1])
            reader.release(sc)
            return
        # TurboDiffusion flattens the patch embedding as (c, kt, kh, kw), the Conv3d weight's own memory order, so
        # a reshape is the whole conversion.
        v = src.reshape(o.shape) if o.kind == "patch" else src
        if v.ndim == 0 or v.numel() == 0:
            _check_finite(reader, o.src, v, 0)
            yield v.to(dtype, copy=True)
            return
        flat = v.reshape(v.shape[0], -1)
        rows = max(1, band_elems // max(flat.shape[1], 1))
        for r0 in range(0, flat.shape[0], rows):
            part = flat[r0: r0 + rows]
            out = part if part.dtype == dtype else part.to(dtype)
            _check_finite(reader, o.src, out, r0)
            yield out
            reader.release(part)
    finally:
        reader.release(src)


def _materialise(reader: Reader, o: OutputTensor, dtype: torch.dtype) -> torch.Tensor:
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


def read_proj_l(reader: Reader, plan: Plan) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    """{block: (weight [D, D], bias [D])} as owned fp32 copies of the planned proj_l tensors."""
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
                    format_blocks(info.missing_sla_blocks))


def _dtype_name(dt: Optional[torch.dtype]) -> str:
    return "" if dt is None else str(dt).replace("torch.", "")


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
    current = None
    reader = None
    try:
        reader = open_source(path)
        plan = plan_base_model(reader, ": it holds only the SLA proj_l weights, no base model. Load the base model "
                               "with the stock diffusion model loader and add these with 'Load SLA Weights'")
        info = plan.info
        info.weight_dtype = _dtype_name(weight_dtype) if weight_dtype is not None else (
            "bf16" if info.quantized else "")
        total = len(plan.outputs) + len(plan.proj_l)
        done = 0
        sd: Dict[str, torch.Tensor] = {}
        for o in plan.outputs:
            current = o.src
            dt = output_dtype(o, weight_dtype)
            sd[o.key] = _materialise(reader, o, dt)
            reader.drop(o.src)
            if o.scale:
                reader.drop(o.scale)
            done += 1
            if progress is not None:
                progress(done, total)
        current = None
        proj = read_proj_l(reader, plan)
        if progress is not None:
            progress(total, total)
        _warn_partial(info, reader.path)
        log.info("SLA checkpoint %s: %s", reader.path, info.summary())
        return LoadedCheckpoint(sd, proj, info, dict(getattr(reader, "metadata", {}) or {}))
    except CheckpointError:
        raise
    except Exception as e:  # RecursionError, IndexError, TypeError, OSError, ...: still a problem with the file
        raise file_error(path, e, current) from e
    finally:
        if reader is not None:
            reader.close()


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
    reader = None
    try:
        reader = open_source(path)
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
    except CheckpointError:
        raise
    except Exception as e:
        raise file_error(path, e) from e
    finally:
        if reader is not None:
            reader.close()


