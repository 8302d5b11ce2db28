"""The proj_l registry: each patched model's proj_l tensors, outside ``model_options``.

``ModelPatcher.clone()`` deep-copies ``model_options``, so tensors must not live there: settings carry a small
integer ``weights_id`` instead, and the device copies the attention calls need are cached here.

Lifetime: every ``SLARuntime`` (one per installed patch; clones of a patched model share it, each ApplySLA makes a
new one) ``hold``s its ``weights_id``; when the last holder is garbage-collected the entry and its device copies are
freed. A file registered again under the same path with another size/mtime (the file changed) replaces the old
entry as the path's entry; the old one lives on only while a model still holds it.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import Dict, Optional, Tuple

import torch


ProjL = Dict[int, Tuple[torch.Tensor, Optional[torch.Tensor]]]


class _WeightsEntry:
    def __init__(self, proj_l: ProjL, source: Optional[str]):
        self.proj_l = proj_l
        self.source = source
        self.cache: Dict[Tuple[str, torch.dtype], ProjL] = {}
        # A zero-initialised, never fine-tuned proj_l adds exactly nothing: such blocks skip the linear branch.
        self.zero_blocks = frozenset(i for i, (w, b) in proj_l.items()
                                     if not w.any() and (b is None or not b.any()))


_registry: Dict[int, _WeightsEntry] = {}
_by_source: Dict[str, int] = {}
_by_path: Dict[str, int] = {}  # file path (the source up to its first '|') -> its newest entry
_holders: Dict[int, int] = {}  # weights_id -> live holders (SLARuntime objects)


def _path_of(source: str) -> str:
    return source.split("|", 1)[0]


def _forget(wid: int) -> None:
    """Drop entry ``wid`` and its device copies (caller holds the lock)."""
    entry = _registry.pop(wid, None)
    _holders.pop(wid, None)
    if entry is None:
        return
    entry.cache.clear()
    if entry.source is not None:
        if _by_source.get(entry.source) == wid:
            del _by_source[entry.source]
        if _by_path.get(_path_of(entry.source)) == wid:
            del _by_path[_path_of(entry.source)]
_ids = itertools.count(1)
_registry_lock = threading.Lock()


def register_proj_l(proj_l: ProjL, source: Optional[str] = None) -> int:
    """Store one model's proj_l tensors and return their ``weights_id``.

    proj_l: {block index: (W (D, D), b (D,) or None)}, any float dtype (kept on the CPU in fp32).
    source: an identity of the file (e.g. ``"path|size|mtime"``); registering the same source again returns the
    existing id instead of a second copy.
    """
    if not isinstance(proj_l, dict) or not proj_l:
        raise ValueError("register_proj_l needs a non-empty {block: (weight, bias)} dict")
    clean: ProjL = {}
    head_dim = None
    for block, pair in proj_l.items():
        w, b = pair
        if w.dim() != 2 or w.shape[0] != w.shape[1]:
            raise ValueError(f"proj_l of block {block}: weight must be square (D, D), got {tuple(w.shape)}")
        if head_dim is None:
            head_dim = w.shape[0]
        if w.shape[0] != head_dim:
            raise ValueError(f"proj_l of block {block}: weight {tuple(w.shape)} differs from the other blocks' "
                             f"({head_dim}, {head_dim})")
        if b is not None and tuple(b.shape) != (head_dim,):
            raise ValueError(f"proj_l of block {block}: bias must be ({head_dim},), got {tuple(b.shape)}")
        clean[int(block)] = (w.detach().to("cpu", torch.float32),
                             None if b is None else b.detach().to("cpu", torch.float32))
    with _registry_lock:
        if source is not None and source in _by_source:
            wid = _by_source[source]
            _registry[wid] = _WeightsEntry(clean, source)  # same file: refresh the tensors, keep the id
            return wid
        if source is not None:
            old = _by_path.pop(_path_of(source), None)
            if old is not None:
                old_entry = _registry.get(old)
                if old_entry is not None and _by_source.get(old_entry.source) == old:
                    del _by_source[old_entry.source]  # the file changed: never hand out the stale entry again
                if not _holders.get(old):
                    _forget(old)  # no model uses it: replaced now (else freed with its last holder)
        wid = next(_ids)
        _registry[wid] = _WeightsEntry(clean, source)
        if source is not None:
            _by_source[source] = wid
            _by_path[_path_of(source)] = wid
    return wid


def _release(wid: int) -> None:
    with _registry_lock:
        n = _holders.get(wid, 0) - 1
        if n > 0:
            _holders[wid] = n
        else:
            _forget(wid)


def hold(weights_id: Optional[int], owner: object) -> None:
    """Keep entry ``weights_id`` alive while ``owner`` (e.g. an SLARuntime) exists; freed with its last holder."""
    if weights_id is None:
        return
    with _registry_lock:
        if weights_id not in _registry:
            return
        _holders[weights_id] = _holders.get(weights_id, 0) + 1
    weakref.finalize(owner, _release, weights_id)


def registry_size() -> int:
    """Number of registered proj_l entries (tests, diagnostics)."""
    return len(_registry)


def has_weights(weights_id: Optional[int]) -> bool:
    return weights_id is not None and weights_id in _registry


def weights_blocks(weights_id: Optional[int]) -> Tuple[int, ...]:
    """Sorted block indices that have proj_l under ``weights_id`` (empty when unknown)."""
    entry = _registry.get(weights_id) if weights_id is not None else None
    return tuple(sorted(entry.proj_l)) if entry else ()


def weights_head_dim(weights_id: Optional[int]) -> Optional[int]:
    entry = _registry.get(weights_id) if weights_id is not None else None
    if not entry:
        return None
    return next(iter(entry.proj_l.values()))[0].shape[0]


def get_proj_l(weights_id: Optional[int], block: int, device, dtype: torch.dtype = torch.float32):
    """(W, b) of ``block`` on ``device`` in ``dtype`` (cached per device/dtype), or None when absent."""
    entry = _registry.get(weights_id) if weights_id is not None else None
    if entry is None or block not in entry.proj_l:
        return None
    key = (str(torch.device(device)), dtype)
    per_dev = entry.cache.get(key)
    if per_dev is None:
        per_dev = {i: (w.to(device, dtype), None if b is None else b.to(device, dtype))
                   for i, (w, b) in entry.proj_l.items()}
        entry.cache[key] = per_dev
    return per_dev[block]


def proj_l_is_zero(weights_id: Optional[int], block: int) -> bool:
    """True when ``block``'s proj_l is all zeros (weight and bias), so the linear branch contributes nothing."""
    entry = _registry.get(weights_id) if weights_id is not None else None
    return entry is not None and block in entry.zero_blocks


def unregister_proj_l(weights_id: int) -> None:
    """Drop an entry now, whoever holds it (its holders then run without proj_l)."""
    with _registry_lock:
        _forget(weights_id)
