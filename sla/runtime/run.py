"""One sampling run of one patched model: :class:`RunState`, made fresh by the run wrapper for every run.

Holds what a run learns and counts: its sigma window, step and keep per model call (keep_schedule, captures), the
shapes that failed in it, its counters (:mod:`.stats`), timing (:mod:`.timing`) and attention-map captures
(:mod:`.capture`). Read and written at run time only (the run and model-call wrappers, the custom ops), never in
traced code.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional, Tuple

import torch

from .capture import CaptureRequest
from .log import log_once
from .schedule import StepCounter, sigma_to_percent
from .settings import SLASettings
from .stats import RunStats
from .timing import Interval, RunTiming


def shape_key(q: torch.Tensor) -> tuple:
    return str(q.device), q.dtype, tuple(q.shape)


class RunState:
    """The state of one sampling run.

    window: (sigma at start_percent, sigma at end_percent), or None when it could not be converted (SLA then runs
    on every call). sigmas: the run's schedule (for step numbers). percent_to_sigma: the model's (a linear
    keep_schedule). captures: the armed SLA Attention Map requests, or None. timed: time attention for the report.
    """

    def __init__(self, settings: SLASettings, window: Optional[Tuple[float, float]] = None, sigmas=None,
                 percent_to_sigma: Optional[Callable[[float], float]] = None,
                 captures: Optional[List[CaptureRequest]] = None, timed: bool = False, owner: object = None):
        self.settings = settings
        self.owner = owner  # the patch's uid: log_once keys
        self.stats = RunStats()
        self.timing = RunTiming()
        self.timed = timed
        self.failed: set = set()  # shape keys whose sparse call raised: dense for the rest of this run
        self.window = window
        self.full_window = settings.full_window
        self.schedule = settings.schedule
        self.percent_to_sigma = percent_to_sigma
        self.captures = captures
        self.track_steps = self.schedule is not None or captures is not None
        self.steps = StepCounter([] if sigmas is None else
                                 [float(x) for x in torch.as_tensor(sigmas).detach().reshape(-1).cpu()])
        self.step, self.keep = -1, settings.keep_ratio
        self._step_sigma: Optional[float] = None
        self._last_sigmas = None
        self._last_in_window = True
        # transformer_options of the model call in progress: the dense path of a compiled call rebuilds
        # ComfyUI's call from them (ops.rebuild_call).
        self.call_options: Optional[dict] = None
        # the packed sequence's segments of the model call in progress (families that pack one), and the last seen
        self.segments = None
        self.last_segments = None
        self.call_written: dict = {}   # what the model writes into transformer_options (ModelFamily.model_written)
        self.replaced_by: Optional[str] = None  # another node's override that replaced ours on the sampled model
        self.model_calls = 0
        self.started = time.perf_counter()
        self.seconds: Optional[float] = None  # wall time of the whole run, set by close()

    # -- per model call (the model-call wrapper) ---------------------------------------------------------------
    def enter_model_call(self, t, options: Optional[dict], segments=None, written=None) -> Optional[Interval]:
        """Before each model call (``t``: its sigmas): locate the step when a schedule or a capture needs it (one
        host read per model call), remember the call's transformer_options and packed-sequence ``segments``, start
        the call's timer."""
        self.call_options = options
        self.call_written = written or {}
        self.segments = segments
        if segments is not None:
            self.last_segments = segments
        self.model_calls += 1
        if self.track_steps and torch.is_tensor(t):
            sigma = float(t.detach().reshape(-1).max())
            if sigma != self._step_sigma:
                self._step_sigma = sigma
                self.step = self.steps.step(sigma)
                self.keep = self._keep_at(sigma)
        return Interval(t.device) if self.timed and torch.is_tensor(t) else None

    def leave_model_call(self, interval: Optional[Interval]) -> None:
        self.call_options = None
        self.call_written = {}
        self.segments = None
        if interval is not None:
            self.timing.model.append(interval.stop())

    def _keep_at(self, sigma: float) -> float:
        sched = self.schedule
        if sched is None:  # steps tracked for a capture only
            return self.settings.keep_ratio
        progress = 0.0
        if sched.linear:
            if self.percent_to_sigma is not None:
                progress = sigma_to_percent(sigma, self.percent_to_sigma)
            else:
                log_once(("no-p2s", self.owner), logging.WARNING,
                         "SLA: keep_schedule needs the model's sigma schedule (model_sampling), which was not "
                         "found: its first value is used")
        return sched.keep_at(self.step, progress)

    # -- per attention call ----------------------------------------------------------------------------------------
    def in_window(self, sigmas: Optional[torch.Tensor]) -> bool:
        """Whether the current step (``sigmas``: ComfyUI's ``transformer_options["sigmas"]``) lies in the window."""
        if self.full_window:
            return True
        if sigmas is None:
            log_once(("no-sigma", self.owner), logging.WARNING,
                     "SLA: no current sigma in transformer_options: start/end_percent cannot be applied, "
                     "SLA runs on every call")
            return True
        if self.window is None:
            log_once(("no-window", self.owner), logging.WARNING,
                     "SLA: start/end_percent could not be converted to sigmas (no model_sampling): SLA runs on "
                     "every call")
            return True
        if sigmas is self._last_sigmas:  # one tensor per model call: convert (and sync) once per step
            return self._last_in_window
        sigma = float(sigmas.detach().reshape(-1).max())
        hi, lo = self.window
        eps = 1e-5 * max(1.0, abs(sigma))  # sigmas arrive as fp32 tensors, thresholds as Python floats
        self._last_sigmas, self._last_in_window = sigmas, lo - eps <= sigma <= hi + eps
        return self._last_in_window

    def maybe_time(self, key: tuple, kind: str, q: torch.Tensor) -> Optional[Interval]:
        """A started interval when this call of (shape, kind) is one of the timed sample, else None."""
        if self.timed and self.timing.should_time(key, kind):
            return Interval(q.device)
        return None

    def close(self) -> None:
        """The run is over: its wall time (after the GPU's queued work), and no more references to its tensors."""
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # once per run, outside the hot path: what the user waited for
        self.seconds = time.perf_counter() - self.started
        self.call_options = None
        self._last_sigmas = None
        self.captures = None
