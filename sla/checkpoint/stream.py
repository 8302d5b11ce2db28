"""Streaming a planned checkpoint's tensors: ``stream_outputs``, the one loop that ``load_checkpoint``,
``load_checkpoint_int8`` and the converter run over ``Plan.outputs``, and the band-level reading under it.

Memory: tensors are read one at a time from the reader (a memory map) in row bands, converted to the target dtype
band by band (int8 tiles dequantised one band of 128-row tiles at a time, fp8 cast while reading), checked for
NaN/Inf, and the map's pages are handed back, so the extra memory of any one tensor is about one band. What the
bands become is the caller's: one owned tensor each (``StreamedTensor.materialise``) or bytes in a file.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from .info import TILE
from .io import CheckpointError, Reader, read_errors
from .outputs import OutputTensor, output_dtype
from .plan import Plan

ProgressFn = Optional[Callable[[int, int], None]]
# What one planned tensor is read as: (entry to read, its dtype) pairs, e.g. a weight and its int8 tile scales.
Targets = Callable[[Reader, OutputTensor], List[Tuple[OutputTensor, torch.dtype]]]

BAND_ELEMS = 1 << 23  # elements per streamed band (32 MB in fp32): bounds the extra memory of any one tensor


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


def _check_scale(reader: Reader, key: str, scale: torch.Tensor) -> None:
    """Raise naming ``key`` when the int8 tile scales ``scale`` [ceil(out/128), ceil(in/128)] hold NaN or Inf."""
    if not torch.isfinite(scale.float()).all():
        raise CheckpointError(f"{reader.path!r}: scale {key!r} holds non-finite values; the file is corrupt")


def iter_bands(reader: Reader, o: OutputTensor, dtype: torch.dtype, band_elems: Optional[int] = None):
    """Yield the output tensor of plan entry ``o`` as consecutive row bands of ``dtype``, releasing the source's
    mapped pages band by band (so even a 300 MB embedding never sits in memory twice).

    Bands are [rows, ...] slices along dim 0 (multiples of 128 rows for int8 tiles). A band may be a view of the
    source map when no conversion is needed: consume it before asking for the next one. Kinds: ``dequant`` (int8
    tiles times their scales), ``patch`` (reshaped to ``o.shape``), ``copy``, and ``scale`` (int8 tile scales read
    as they are, for W8A8).
    """
    band_elems = band_elems or BAND_ELEMS
    src = reader.get(o.src)
    try:
        if o.kind == "dequant":
            sc = reader.get(o.scale)
            _check_scale(reader, o.scale, sc)
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
        if o.kind == "scale":
            _check_scale(reader, o.src, src)
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


def _named_bands(reader: Reader, o: OutputTensor, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """``iter_bands``, with any failure while reading raised as a CheckpointError naming the file and ``o.src``."""
    with read_errors(reader.path, o.src):
        yield from iter_bands(reader, o, dtype)


@dataclasses.dataclass
class StreamedTensor:
    """One output tensor on its way out of the file: ``key`` (ComfyUI-native), ``shape``, ``dtype``, and ``bands``,
    its consecutive row bands [rows, ...] of ``dtype`` (read lazily; consume them before the next tensor)."""

    key: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    bands: Iterator[torch.Tensor]
    path: str  # the file and source key, for error messages
    src: str

    def materialise(self) -> torch.Tensor:
        """The whole tensor, [shape] of ``dtype``, owned (no view of the file's map), filled band by band."""
        with read_errors(self.path, self.src):  # an allocation failure names the tensor too
            out = torch.empty(self.shape, dtype=self.dtype)
            if out.ndim == 0 or out.numel() == 0:
                for part in self.bands:
                    out.copy_(part.reshape(out.shape))
                return out
            flat = out.view(out.shape[0], -1)
            r = 0
            for part in self.bands:
                h = part.shape[0]
                flat[r: r + h].copy_(part.reshape(h, -1))
                r += h
            assert r == flat.shape[0]
            return out


def cast_to(weight_dtype: Optional[torch.dtype]) -> Targets:
    """Targets reading each planned tensor as itself in ``output_dtype(o, weight_dtype)`` (int8 tiles dequantised)."""
    return lambda reader, o: [(o, output_dtype(o, weight_dtype))]


def planned_entries(reader: Reader, plan: Plan, targets: Targets) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) of every tensor ``stream_outputs(reader, plan, targets)`` yields, in its order."""
    return [(t.key, t.shape, dt) for o in plan.outputs for t, dt in targets(reader, o)]


def stream_outputs(reader: Reader, plan: Plan, targets: Targets, progress: ProgressFn = None,
                   total: Optional[int] = None) -> Iterator[StreamedTensor]:
    """Every planned base tensor, in file order, as the StreamedTensors ``targets`` makes of it.

    Once the caller has consumed a planned tensor's bands (the next one is asked for), its source and scale are
    dropped from the reader and ``progress(done, total)`` is called (``total`` defaults to ``len(plan.outputs)``;
    the readers count proj_l in it too). NaN/Inf, corrupt scales and read failures raise a CheckpointError naming
    the file and tensor.
    """
    total = len(plan.outputs) if total is None else total
    for done, o in enumerate(plan.outputs, 1):
        for t, dt in targets(reader, o):
            yield StreamedTensor(t.key, t.shape, dt, _named_bands(reader, t, dt), reader.path, t.src)
        reader.drop(o.src)  # its last use: a non-mmap reader frees it now
        if o.scale:
            reader.drop(o.scale)
        if progress is not None:
            progress(done, total)


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
