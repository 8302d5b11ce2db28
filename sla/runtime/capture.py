"""Capture of one self-attention call's q/k for the SLA Attention Map node, armed before the sampling run.

The map node arms a :class:`CaptureRequest` under the id of the node that applied SLA to its model (ApplySLA or
a loader) before anything executes; the runtime of that node takes it when its next run begins
(:meth:`SLARuntime.begin_run`) and, at run time inside the custom op, copies q/k of the requested (block, head,
step) call and notes every call's realised keep per (step, block). Nothing is armed when the node is not in the
graph: the op then only checks one attribute for None.

The tables are one per process (the pack may be imported under several module names), like ops' runtime table.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import types
from typing import Dict, Optional

import torch

_SHARED = sys.modules.setdefault("_comfyui_sla_capture", types.ModuleType("_comfyui_sla_capture"))
if not hasattr(_SHARED, "armed"):
    _SHARED.armed = {}      # id of the node that applied SLA -> CaptureRequest
    _SHARED.results = {}    # id of the map node -> CaptureRequest (filled)
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


def arm(source_node: str, request: CaptureRequest) -> None:
    """Ask the runtime applied by node ``source_node`` to capture during its next run."""
    with _SHARED.lock:
        _SHARED.armed[str(source_node)] = request
        _SHARED.results.pop(str(request.map_node), None)


def take_armed(source_node: Optional[str]) -> Optional[CaptureRequest]:
    """The request armed for ``source_node`` (removed from the table), or None."""
    if source_node is None or not _SHARED.armed:
        return None
    with _SHARED.lock:
        return _SHARED.armed.pop(str(source_node), None)


def finish(request: CaptureRequest) -> None:
    """Publish a request after its run (for the map node to read)."""
    request.done = True
    with _SHARED.lock:
        _SHARED.results[str(request.map_node)] = request


def result(map_node: str) -> Optional[CaptureRequest]:
    with _SHARED.lock:
        return _SHARED.results.get(str(map_node))
