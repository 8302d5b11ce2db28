"""Capture of one self-attention call's q/k for the SLA Attention Map node, armed before the sampling run.

The map node arms a request (block, head, step) under its own node id while the prompt is validated, i.e. before
anything executes (ComfyUI does not tell a node at that point which model will reach it): :func:`arm` records it in
the one small table of armed requests. Every SLA run that begins while a request is armed gets its own
:class:`CaptureRequest` copy and, inside the custom op, copies q/k of the requested call to the CPU and notes every
call's realised keep per (step, block). After the run the filled request is kept by the model's patch, one per map
node, until that map node draws it (:meth:`SLAPatch.take_capture`), which also disarms it.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional

import torch

_armed: Dict[str, tuple] = {}  # id of the map node -> (block, head, step)
_armed_lock = threading.Lock()


@dataclasses.dataclass
class CaptureRequest:
    """What to capture (block, head, global step) and, after the run, what was captured.

    q, k: (1, L, 1, D) of batch entry 0 and the requested head, on the CPU, in the call's dtype.
    keep: keep ratio the call ran at (1.0 when it ran dense); sparse: whether it ran SLA.
    grid: (step, block) -> realised keep fraction of that call (1.0 for dense calls), for every self-attention
    call of the run. prefix: exact-prefix tokens the captured call attended (0: none); segments: the packed
    sequence's (start, stop, kind) spans of its model call, or None.
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
    prefix: int = 0
    segments: Optional[tuple] = None

    def take(self, q4: torch.Tensor, k4: torch.Tensor) -> None:
        """Copy head ``self.head`` of batch entry 0 from (B, L, H, D) q, k to the CPU."""
        heads = q4.shape[2]
        h = min(max(0, self.head), heads - 1)
        self.heads = heads
        self.q = q4[:1, :, h:h + 1].detach().to("cpu", copy=True)
        self.k = k4[:1, :, h:h + 1].detach().to("cpu", copy=True)


def arm(map_node: str, block: int, head: int, step: int) -> None:
    """Capture (block, head, step) in the SLA runs that begin from now until :func:`disarm`."""
    with _armed_lock:
        _armed[str(map_node)] = (int(block), int(head), int(step))


def disarm(map_node: str) -> None:
    with _armed_lock:
        _armed.pop(str(map_node), None)


def armed_count() -> int:
    return len(_armed)


def requests_for_run() -> Optional[List[CaptureRequest]]:
    """Fresh requests for a run that begins now (None when nothing is armed: the common case)."""
    if not _armed:
        return None
    with _armed_lock:
        return [CaptureRequest(node, *spec) for node, spec in _armed.items()] or None
