"""Attention timing of one sampling run, without host synchronisation in the hot path.

A timed interval is a pair of CUDA events recorded on the current stream (read only when the run is over, after
one ``torch.cuda.synchronize``) or, off CUDA, two ``time.perf_counter`` readings. Used at run time only: inside
the ``comfyui_sla`` custom ops and the model-call / run wrappers, never in traced code.

The dense time of a shape is measured once per process (:data:`DENSE_MS`): from a dense call of that shape that
happens anyway, else from the second of two extra dense calls run beside a sampled sparse call (the first may
carry the dense backend's lazy set-up; a one-off cost of two dense attention calls per shape).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import torch

# Time every TIME_EVERY-th call of a shape and kind (SLA / dense), starting with its second (the first may carry
# Triton autotuning or a backend's lazy set-up).
TIME_EVERY = 8

# (device, dtype, shape) -> measured dense ms per call: a property of the GPU and the shape, not of one model, so
# one table per process spares every model the extra dense calls of the estimate.
DENSE_MS: Dict[tuple, float] = {}


class Interval:
    """One timed interval: CUDA events (``cuda``) or perf_counter seconds (CPU and other devices)."""

    __slots__ = ("cuda", "start", "end")

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start, self.end = time.perf_counter(), None

    def stop(self) -> "Interval":
        if self.cuda:
            self.end.record()
        else:
            self.end = time.perf_counter()
        return self

    def ms(self) -> float:
        """Elapsed milliseconds; for CUDA events only after they completed (see :func:`settle`)."""
        if self.cuda:
            return float(self.start.elapsed_time(self.end))
        return (self.end - self.start) * 1000.0


def settle(intervals) -> None:
    """Wait once for every CUDA interval in ``intervals`` to complete (end of a run, outside the hot path)."""
    for it in intervals:
        if it.cuda:
            it.end.synchronize()


class RunTiming:
    """Timed intervals of one run: attention calls per (shape key, 'sla' | 'dense') and model calls."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.calls: Dict[Tuple[tuple, str], int] = {}          # (shape key, kind) -> calls seen (for sampling)
        self.counts: Dict[Tuple[tuple, str], int] = {}         # (shape key, kind) -> calls
        self.samples: Dict[Tuple[tuple, str], List[Interval]] = {}
        self.extra_dense: List[Interval] = []                  # one-off dense measurements inside model calls
        self.model: List[Interval] = []
        self.cpu = False

    def should_time(self, key: tuple, kind: str) -> bool:
        """Count a call of (``key``, ``kind``) and say whether to time it."""
        n = self.calls.get((key, kind), 0)
        self.calls[(key, kind)] = n + 1
        return n % TIME_EVERY == 1

    def count(self, key: tuple, kind: str) -> None:
        self.counts[(key, kind)] = self.counts.get((key, kind), 0) + 1

    def add(self, key: tuple, kind: str, interval: Interval) -> None:
        self.samples.setdefault((key, kind), []).append(interval)
        self.cpu = self.cpu or not interval.cuda

    def needs_dense(self, key: tuple) -> bool:
        return key not in DENSE_MS and not self.samples.get((key, "dense"))

    def summary(self) -> Optional[dict]:
        """{'attn_ms', 'dense_ms', 'model_ms' (None if unmeasured), 'cpu'} for the run's self-attention, or None
        when some shape that ran has no timing to estimate from."""
        every = [it for v in self.samples.values() for it in v] + self.extra_dense + self.model
        if not every:
            return None
        settle(every)
        mean = {k: sum(i.ms() for i in v) / len(v) for k, v in self.samples.items() if v}
        for (key, kind), m in mean.items():
            if kind == "dense":
                DENSE_MS[key] = m
        attn = dense = 0.0
        for (key, kind), n in self.counts.items():
            dense_ms = mean.get((key, "dense"), DENSE_MS.get(key))
            ran_ms = dense_ms if kind == "dense" else mean.get((key, "sla"))
            if dense_ms is None or ran_ms is None:
                return None
            attn += ran_ms * n
            dense += dense_ms * n
        model = None
        if self.model:
            # the one-off dense measurements ran inside model calls: not part of a step
            model = sum(i.ms() for i in self.model) - sum(i.ms() for i in self.extra_dense)
        return {"attn_ms": attn, "dense_ms": dense, "model_ms": model, "cpu": self.cpu}
