"""Capture of one self-attention call's q/k for the SLA Attention Map node, armed before the sampling run.

The map node arms a request (block, head, step) under its own node id while the prompt is validated, i.e. before
anything executes (ComfyUI does not tell a node at that point which model will reach it). Every SLA run that
begins while a request is armed (:meth:`SLARuntime.begin_run`) gets its own :class:`CaptureRequest` copy and, at
run time inside the custom op, copies q/k of the requested call and notes every call's realised keep per (step,
block); the result is kept per (map node, runtime). The map node then reads the one of the runtime of the model
it receives, and disarms. Nothing is armed when the node is not in the graph: the op then only checks one
attribute for None.

The tables are one per process (the pack may be imported under several module names), like ops' runtime table.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import types
from typing import Dict, List, Optional

import torch

_SHARED = sys.modules.setdefault("_comfyui_sla_capture", types.ModuleType("_comfyui_sla_capture"))
if not hasattr(_SHARED, "armed"):
    _SHARED.armed = {}      # id of the map node -> (block, head, step)
    _SHARED.results = {}    # (id of the map node, runtime uid) -> CaptureRequest (filled)
    _SHARED.lock = threading.Lock()


@dataclasses.dataclass
class CaptureRequest:
    """What to capture (block, head, global step) and, after the run, what was captured.

    q, k: (1, L, 1, D) of batch entry 0 and the requested head, on the model's device, in the call's dtype.
    keep: keep ratio the call ran at (1.0 when it ran dense); sparse: whether it ran SLA.
    grid: (step, block) -> realised keep fraction of that call (1.0 for dense calls), for every self-attention
    call of the run.
    """

    map_node: str
    block: int
    head: int
    step: int
    q: Optional[torch.Tensor] = None
    k: Optional[torch.Tensor] = None
    keep: Optional[float] = None
    sparse: bool = False
    block_q: int = 128
    block_k: int = 64
    heads: int = 0
    grid: Dict[tuple, float] = dataclasses.field(default_factory=dict)
    done: bool = False

    def take(self, q: torch.Tensor, k: torch.Tensor, heads: int) -> None:
        """Copy head ``self.head`` of batch entry 0 from [B, L, H*D] q, k."""
        d = q.shape[-1] // heads
        h = min(max(0, self.head), heads - 1)
        self.heads = heads
        self.q = q[:1].unflatten(-1, (heads, d))[:, :, h:h + 1].detach().clone()
        self.k = k[:1].unflatten(-1, (heads, d))[:, :, h:h + 1].detach().clone()


def arm(map_node: str, block: int, head: int, step: int) -> None:
    """Capture (block, head, step) in the SLA runs that begin from now until :func:`disarm`."""
    with _SHARED.lock:
        _SHARED.armed[str(map_node)] = (int(block), int(head), int(step))


def disarm(map_node: str) -> None:
    with _SHARED.lock:
        _SHARED.armed.pop(str(map_node), None)


def requests_for_run() -> Optional[List[CaptureRequest]]:
    """Fresh requests for a run that begins now (None when nothing is armed: the common case)."""
    if not _SHARED.armed:
        return None
    with _SHARED.lock:
        return [CaptureRequest(node, *spec) for node, spec in _SHARED.armed.items()] or None


def finish(request: CaptureRequest, runtime_uid: int) -> None:
    """Publish a request after its run (for the map node to read)."""
    request.done = True
    with _SHARED.lock:
        _SHARED.results[(str(request.map_node), runtime_uid)] = request


def result(map_node: str, runtime_uid: int) -> Optional[CaptureRequest]:
    """The latest capture of ``map_node``'s request in a run of runtime ``runtime_uid``, or None."""
    with _SHARED.lock:
        return _SHARED.results.get((str(map_node), runtime_uid))
