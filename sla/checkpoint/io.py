"""Tensor-by-tensor reading and writing of checkpoint files, without ever holding a file twice in memory.

- ``open_source(path)`` returns a reader over a ``.safetensors`` file (opened by the safetensors library's
  ``safe_open``, which validates the header and memory-maps the file copy-on-write, so it is never modified) or a
  torch ``.pth``/``.pt`` file (``torch.load(weights_only=True, mmap=True)``; never unsafe pickle). The container
  is recognised from the file's first bytes, not its name.
- ``reader.get(key)`` returns a tensor that may be a view of the mapping; ``reader.release(tensor)`` hands its pages
  back to the OS (``madvise(MADV_DONTNEED)`` on Linux) once the caller has made its own converted copy, so the
  resident size never grows to the file's size.
- ``SafetensorsWriter`` writes a safetensors file tensor by tensor (header first, from known shapes/dtypes).

``Reader`` is the whole interface the planner, loader and converter use: another reader only has to provide it and
be returned by ``open_source``. Every failure to read is a ``CheckpointError`` naming the file (and the tensor).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import mmap
import os
import pickle
import re
import struct
import sys
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

import torch

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the key or problem and what was expected."""


def file_error(path, e: BaseException, key: Optional[str] = None) -> CheckpointError:
    """Any failure while reading ``path`` as a CheckpointError naming the file (and tensor when known)."""
    at = f" at tensor {key!r}" if key else ""
    first = (str(e).splitlines() or [""])[0][:300]
    return CheckpointError(f"{os.fspath(path)!r}: cannot be read{at}: {type(e).__name__}: {first}")


@contextlib.contextmanager
def read_errors(path, key: Optional[str] = None) -> Iterator[None]:
    """Within the block, any failure but a CheckpointError becomes ``file_error(path, e, key)``: RecursionError,
    IndexError, OSError ... from a corrupt file are still problems with that file."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:
        raise file_error(path, e, key) from e


class Reader(Protocol):
    """What ``open_source`` returns. Keys are the file's raw tensor names; nothing is read before ``get``."""

    path: str
    kind: str  # container name for the summary: "safetensors" or "pth"
    metadata: Dict[str, str]  # safetensors ``__metadata__`` ({} for torch files)

    def keys(self) -> List[str]: ...

    def shape(self, key: str) -> Tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str) -> torch.Tensor:
        """The tensor as stored (any dtype/shape of the file); may be a view of a memory map."""

    def release(self, t: torch.Tensor) -> None:
        """Hand the pages behind ``t`` (a tensor from ``get`` or a slice of one) back once it has been copied."""

    def drop(self, key: str) -> None:
        """Forget ``key`` after its last use so that its storage can be freed."""

    def close(self) -> None: ...


ST_DTYPES: Dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        ST_DTYPES[_name] = getattr(torch, _attr)
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}

_PAGE = mmap.PAGESIZE
_libc = None


def _madvise_dontneed(addr: int, length: int) -> None:
    """Drop the pages of [addr, addr+length) from this process (Linux); clean file-backed pages re-read on access."""
    global _libc
    if not sys.platform.startswith("linux") or length <= 0:
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        # Only whole pages strictly inside the range: a page shared with a neighbour that is still needed stays.
        start = (addr + _PAGE - 1) // _PAGE * _PAGE
        end = (addr + length) // _PAGE * _PAGE
        if end > start:
            _libc.madvise(start, end - start, 4)  # MADV_DONTNEED
    except Exception:  # best effort: only memory use depends on it
        pass


def sniff(path: str) -> str:
    """'safetensors', 'torch-zip' or 'torch-legacy' from the file's first bytes; CheckpointError otherwise."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e}") from e
    if size == 0:
        raise CheckpointError(f"{path!r} is empty (0 bytes); expected a .safetensors or .pth checkpoint")
    if head[:4] == b"GGUF":
        raise CheckpointError(
            f"{path!r} is a GGUF file: load it with a GGUF model loader, then add the SLA weights with "
            "'Load SLA Weights' from a file that holds proj_l tensors (.safetensors or .pth)")
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    # safetensors before the pickle check: its first byte is the low byte of the header length, which is 0x80 for
    # one header length in 32 (lengths are 8-aligned); a pickle's byte 8 is never '{' (torch's magic number).
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n > size - 8:
            raise CheckpointError(
                f"{path!r} is truncated: its safetensors header says {n} bytes but the file has {size - 8} "
                "after the length field")
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-legacy"
    raise CheckpointError(
        f"{path!r} is not a checkpoint this pack can read: expected a safetensors file or a torch .pth/.pt "
        f"(zip) file, found first bytes {head[:8]!r}")


# Readers refuse files beyond these sizes: a Wan 14B int8 file has about 1 700 tensors and a 200 kB header.
MAX_TENSORS = 100_000
MAX_NESTING = 32  # dict levels inside a torch checkpoint (real ones use 1-3)

# What the safetensors library checks when it opens a file (verified on crafted files by
# tests/test_checkpoint_fuzz.py): header length within the file and at most 100 MB; the header is a JSON object of
# entries {dtype, shape, data_offsets} with known dtype names, shapes and offsets of non-negative integers and a
# ``__metadata__`` of string values only; every tensor's byte length equals its shape times its dtype size; the
# offsets tile the data section exactly (no overlap, no gap, nothing after the last tensor). This module adds:
# a tensor-count limit, a readable message naming the first bad entry, and the dtypes torch can hold.


def _diagnose_safetensors(path: str) -> str:
    """Name the first header entry that breaks the format's rules (for the error message only: the library decides
    whether a file is valid). '' when nothing specific is found."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            size = os.fstat(f.fileno()).st_size
            if n > min(size - 8, 100_000_000):
                return f"header length field says {n} bytes (file holds {size - 8}; the format allows 100 MB)"
            header = json.loads(f.read(n).decode("utf-8"))
    except RecursionError:
        return "the header's JSON is nested too deeply"
    except Exception as e:  # the library's own message already says what is wrong
        return f"header unreadable ({type(e).__name__})"
    if not isinstance(header, dict):
        return f"header is a JSON {type(header).__name__}, expected an object"
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        return f"__metadata__ is {type(meta).__name__} {str(meta)[:80]}, expected an object of strings"
    spans = []
    for k, e in header.items():
        if not isinstance(e, dict):
            return f"tensor {k!r}: entry is {type(e).__name__}, expected an object with dtype, shape, data_offsets"
        dt, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if dt not in ST_DTYPES:
            return f"tensor {k!r}: dtype {dt!r}, expected one of {sorted(ST_DTYPES)}"
        if not (isinstance(shape, list) and all(type(x) is int and x >= 0 for x in shape)):
            return f"tensor {k!r}: shape {str(shape)[:80]}, expected a list of non-negative integers"
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(x) is int and x >= 0 for x in offs)):
            return f"tensor {k!r}: data_offsets {str(offs)[:80]}, expected [begin, end] non-negative integers"
        need = ST_DTYPES[dt].itemsize
        for x in shape:
            need *= x
        if offs[1] - offs[0] != need:
            return (f"tensor {k!r}: shape {shape} {dt} needs {need} bytes, data_offsets {offs} span "
                    f"{offs[1] - offs[0]}")
        spans.append((offs[0], offs[1], k))
    spans.sort()
    pos, prev = 0, None
    for b, end, k in spans:
        if b != pos:
            what = f"overlaps {prev!r}" if b < pos else f"leaves a gap of {b - pos} bytes after {prev!r}"
            return f"tensor {k!r}: data_offsets [{b}, {end}] {what}"
        pos, prev = end, k
    if pos != size - 8 - n:
        return f"the tensors cover {pos} bytes of data but the file holds {size - 8 - n}"
    return ""


class SafetensorsReader:
    """Lazy reader of a safetensors file through the safetensors library (``safe_open``: a private memory map; the
    library validates the header and offsets, see above)."""

    kind = "safetensors"

    def __init__(self, path: str):
        from safetensors import safe_open
        self.path = path
        try:
            self._f = safe_open(path, framework="pt")
        except Exception as e:  # SafetensorError, OSError, ...
            why = _diagnose_safetensors(path)
            raise CheckpointError(f"{path!r} is corrupt or crafted: the safetensors library refused it: "
                                  f"{str(e).splitlines()[0][:300]}"
                                  + (f" ({why})" if why else "")) from e
        try:
            names = list(self._f.keys())
            if len(names) > MAX_TENSORS:
                raise CheckpointError(f"{path!r} lists {len(names)} tensors; expected at most {MAX_TENSORS} "
                                      "(a Wan model has a few thousand at most)")
            self.metadata: Dict[str, str] = dict(self._f.metadata() or {})
            self._entries: Dict[str, Tuple[torch.dtype, Tuple[int, ...]]] = {}
            for k in names:
                sl = self._f.get_slice(k)
                dt = sl.get_dtype()
                if dt not in ST_DTYPES:
                    raise CheckpointError(f"{path!r}: tensor {k!r} has dtype {dt}, expected one of "
                                          f"{sorted(ST_DTYPES)}")
                self._entries[k] = (ST_DTYPES[dt], tuple(int(x) for x in sl.get_shape()))
        except Exception:
            self.close()
            raise

    def keys(self) -> List[str]:
        return list(self._entries)

    def shape(self, key: str) -> Tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key][0]

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._f.get_tensor(key)
        except Exception as e:
            raise CheckpointError(f"{self.path!r}: cannot read tensor {key!r}: {str(e).splitlines()[0][:300]}") from e

    def release(self, t: torch.Tensor) -> None:
        if t.numel():
            _madvise_dontneed(t.data_ptr(), t.numel() * t.element_size())

    def drop(self, key: str) -> None:
        """Nothing to forget: every tensor is a view of the map, whose pages ``release`` already handed back."""

    def close(self) -> None:
        # Views of the map may still be referenced by callers; the map is unmapped when they are gone.
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            try:
                f.__exit__(None, None, None)
            except Exception:
                pass


def _flatten(obj: Any, path: str, out: Dict[str, Any]) -> None:
    """Nested dicts -> {"a.b.c": leaf}, iteratively (no recursion), at most ``MAX_NESTING`` levels deep."""
    stack = [(obj, "", 1)]
    while stack:
        d, prefix, depth = stack.pop()
        if depth > MAX_NESTING:
            raise CheckpointError(f"{path!r}: dicts nested more than {MAX_NESTING} levels deep (at {prefix[:80]!r}"
                                  "...); expected a state dict of tensors")
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                stack.append((v, key + ".", depth + 1))
            else:
                out[key] = v
            if len(out) > MAX_TENSORS:
                raise CheckpointError(f"{path!r} holds more than {MAX_TENSORS} entries; expected a Wan state dict")


def _refusal(path: str, e: Exception) -> CheckpointError:
    """The weights_only refusal, naming what was blocked (torch's message is several paragraphs)."""
    msg = str(e)
    glob = re.search(r"GLOBAL ([\w.]+)", msg)
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    why = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation"))
                and "weights_only" not in ln[:40]), lines[0] if lines else type(e).__name__)
    what = f"the global {glob.group(1)}" if glob else "content that is not a tensor"
    return CheckpointError(
        f"{path!r} refused: it needs more than tensors to load ({what}: {why[:400]}). This pack unpickles nothing "
        "but tensors; "
        "re-save the file as a plain state dict or safetensors from a trusted environment")


# Top-level containers trainers wrap a state dict in.
_WRAPPER_KEYS = ("state_dict", "model", "module", "net", "ema", "model_ema", "generator")


class TorchReader:
    """Reader of a torch checkpoint through ``torch.load(weights_only=True, mmap=True)`` (mmap only for zip files)."""

    kind = "pth"

    def __init__(self, path: str, container: str):
        self.path = path
        self.metadata: Dict[str, str] = {}
        mmap_ok = container == "torch-zip"
        if container == "torch-zip":
            try:
                with zipfile.ZipFile(path) as z:
                    z.namelist()
            except Exception as e:  # BadZipFile, OSError, struct errors, ...
                raise CheckpointError(
                    f"{path!r} is truncated or corrupt: the torch zip archive cannot be read ({e}); "
                    "re-download the file") from e
        # torch >= 2.13 hands any *path* ending in .safetensors to safetensors.load_file: a torch file under that
        # name (the container is known from its bytes) is read through a file object instead, without mmap.
        by_name = os.fspath(path).endswith(".safetensors")
        mmap_ok = mmap_ok and not by_name
        self.mmapped = mmap_ok
        try:
            if by_name:
                with open(path, "rb") as f:
                    obj = torch.load(f, map_location="cpu", weights_only=True)
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap_ok)
        except pickle.UnpicklingError as e:
            raise _refusal(path, e) from e
        except RecursionError as e:
            raise CheckpointError(f"{path!r}: its pickle is nested too deeply to read; expected a state dict") from e
        except MemoryError as e:
            raise CheckpointError(f"{path!r} is corrupt: reading it asked for more memory than there is") from e
        except Exception as e:  # RuntimeError, EOFError, OSError, ValueError, KeyError, zip errors, ...
            first = (str(e).splitlines() or [""])[0][:300]
            raise CheckpointError(
                f"{path!r} is truncated or corrupt: torch.load failed ({type(e).__name__}: {first})") from e
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, expected a dict of tensors (a state dict)")
        self.raw = obj
        # Unwrap {"state_dict": {...}} style containers that hold nothing else of interest.
        for _ in range(3):
            tensor_keys = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
            inner = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
            if not tensor_keys and inner:
                obj = obj[inner[0]]
            else:
                break
        flat: Dict[str, Any] = {}
        _flatten(obj, path, flat)
        self._tensors = {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}
        if not (isinstance(self.raw.get("state"), dict)):
            self.raw = None  # only SimpleTuner payloads need the raw object; let converted tensors be freed

    def keys(self) -> List[str]:
        return list(self._tensors)

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensors[key].dtype

    def get(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def release(self, t: torch.Tensor) -> None:
        # Only file-backed (mmap) pages may be dropped: they are re-read from the file if touched again. Dropping
        # pages of a heap allocation (legacy non-zip files) would zero them, including any tensor sharing them.
        if self.mmapped and t.numel():
            _madvise_dontneed(t.data_ptr(), t.numel() * t.element_size())

    def drop(self, key: str) -> None:
        """Forget a tensor so its storage can be freed (non-mmap loads)."""
        self._tensors.pop(key, None)

    def close(self) -> None:
        self._tensors = {}
        self.raw = None


def open_source(path: str) -> Reader:
    """A reader for ``path`` (SafetensorsReader or TorchReader), chosen from the file's content."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    container = sniff(path)
    if container == "safetensors":
        return SafetensorsReader(path)
    return TorchReader(path, container)


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor: the header (from shapes/dtypes) first, then each tensor's bytes.

    Usage: ``w = SafetensorsWriter(f, [(key, shape, dtype), ...], metadata)``, then ``w.write(key, tensor)`` in the
    same order.
    """

    def __init__(self, f, entries: List[Tuple[str, Tuple[int, ...], torch.dtype]], metadata: Optional[dict] = None):
        self.f = f
        header: Dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        off = 0
        self._order = []
        for key, shape, dt in entries:
            if dt not in ST_NAMES:
                raise CheckpointError(f"cannot write {key!r}: dtype {dt} has no safetensors name")
            numel = 1
            for s in shape:
                numel *= int(s)
            n = numel * torch.empty((), dtype=dt).element_size()
            header[key] = {"dtype": ST_NAMES[dt], "shape": [int(s) for s in shape], "data_offsets": [off, off + n]}
            self._order.append((key, tuple(int(s) for s in shape), dt, n))
            off += n
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * ((8 - len(raw) % 8) % 8)  # keep tensor data 8-byte aligned
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        self._i = 0

    def write(self, key: str, t: torch.Tensor) -> None:
        k, shape, dt, n = self._order[self._i]
        if k != key or tuple(t.shape) != shape or t.dtype != dt:
            raise RuntimeError(f"writer order/shape mismatch at {key!r}: planned {k!r} {shape} {dt}, "
                               f"got {tuple(t.shape)} {t.dtype}")
        self.write_parts(key, [t])

    def write_parts(self, key: str, parts) -> None:
        """Write the next planned tensor from consecutive pieces (e.g. row bands) of its dtype."""
        k, shape, dt, n = self._order[self._i]
        if k != key:
            raise RuntimeError(f"writer order mismatch: planned {k!r}, got {key!r}")
        written = 0
        for t in parts:
            if t.dtype != dt:
                raise RuntimeError(f"{key!r}: part of dtype {t.dtype}, planned {dt}")
            if t.numel():
                self.f.write(t.contiguous().view(torch.uint8).reshape(-1).numpy().data)
                written += t.numel() * t.element_size()
        if written != n:
            raise RuntimeError(f"{key!r}: wrote {written} bytes, planned {n}")
        self._i += 1

    def done(self) -> bool:
        return self._i == len(self._order)

