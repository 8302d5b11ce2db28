"""keep_schedule: the keep ratio per sampling step, parsed from ApplySLA's text and located by sigma.

Plain Python (no ComfyUI, no torch). Two forms:

* ``"0.3, 0.15, 0.1"``: one value per sampling step, the last one holding for later steps. Steps are counted
  over the whole schedule: a sampling run that starts at the sigma where the previous run ended (the second
  KSamplerAdvanced of a Wan2.2 split) continues the previous run's step count (:class:`StepCounter`).
* ``"0.3 -> 0.1"``: linear in sampling progress from the first to the second value, progress being the percent
  whose ``model_sampling.percent_to_sigma`` is the step's sigma (what start/end_percent use), so both halves of a
  split sampler agree without any bookkeeping.
"""
from __future__ import annotations

import dataclasses
import re
import threading
from typing import Callable, List, Optional, Sequence, Tuple

from ..spec import check_keep_ratio

_ARROW = re.compile(r"\s*->\s*")


@dataclasses.dataclass(frozen=True)
class KeepSchedule:
    """values: keep ratios in (0, 1]; linear: True for ``a -> b`` (exactly two values), False for a per-step list."""

    values: Tuple[float, ...]
    linear: bool = False

    def keep_at(self, step: int, progress: float) -> float:
        """Keep ratio at global step index ``step`` (list form) / sampling progress in [0, 1] (linear form)."""
        if self.linear:
            p = min(1.0, max(0.0, float(progress)))
            return self.values[0] + (self.values[1] - self.values[0]) * p
        return self.values[min(max(0, int(step)), len(self.values) - 1)]

    def describe(self) -> str:
        if self.linear:
            return f"{self.values[0]:g} -> {self.values[1]:g}"
        return ", ".join(f"{v:g}" for v in self.values)


def _value(token: str, text: str) -> float:
    try:
        return check_keep_ratio(token)
    except ValueError:
        raise ValueError(f"keep_schedule: bad token {token!r} in {text!r}: expected keep ratios in (0, 1] like "
                         f"'0.3, 0.15, 0.1' or '0.3 -> 0.1'") from None


def parse_keep_schedule(text: Optional[str]) -> Optional[KeepSchedule]:
    """``"0.3, 0.15, 0.1"`` / ``"0.3 -> 0.1"`` -> :class:`KeepSchedule`; empty / None -> None (use keep_ratio).

    Raises ``ValueError`` naming the first bad token (not a number, outside (0, 1], a third arrow value).
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"keep_schedule must be a string like '0.3, 0.15, 0.1', got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        return None
    if "->" in stripped:
        parts = _ARROW.split(stripped)
        if len(parts) != 2:
            raise ValueError(f"keep_schedule: bad token {'->'.join(parts[2:])!r} in {text!r}: a linear schedule "
                             f"has exactly two values, e.g. '0.3 -> 0.1'")
        return KeepSchedule(tuple(_value(p.strip(), text) for p in parts), linear=True)
    tokens = [t for t in re.split(r"[,;\s]+", stripped) if t]
    return KeepSchedule(tuple(_value(t, text) for t in tokens))


def sigma_to_percent(sigma: float, percent_to_sigma: Callable[[float], float], iters: int = 40) -> float:
    """Sampling progress in [0, 1] whose ``percent_to_sigma`` is ``sigma`` (bisection: that function decreases)."""
    lo, hi = 0.0, 1.0
    if sigma >= float(percent_to_sigma(0.0)):
        return 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float(percent_to_sigma(mid)) > sigma:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


# The end of the last sampling run: (final sigma, global index of its next step). The one record shared across
# models: a split sampler's second half samples another model (the low-noise expert) and continues the first half's
# step count. Written once per run, outside any compiled region.
_last_end: List[Optional[Tuple[float, int]]] = [None]
_last_end_lock = threading.Lock()


class StepCounter:
    """Global step index of a model call from its sigma, for one sampling run.

    ``StepCounter(sigmas)`` at the start of a run (its sigma list, last entry the end): a run that starts where the
    previous run ended continues its step count. ``step(sigma)`` per model call: the index of the last run sigma
    >= ``sigma`` (so samplers with several model calls per step stay on one step), plus that offset.
    """

    def __init__(self, sigmas: Sequence[float] = ()):
        self.sigmas = [float(s) for s in sigmas]
        with _last_end_lock:
            cont = _last_end[0]
            self.offset = cont[1] if cont is not None and self.sigmas and _close(self.sigmas[0], cont[0]) else 0
            if len(self.sigmas) >= 2:
                _last_end[0] = (self.sigmas[-1], self.offset + len(self.sigmas) - 1)

    def step(self, sigma: float) -> int:
        idx = 0
        for i, s in enumerate(self.sigmas[:-1]):
            if s >= sigma or _close(s, sigma):
                idx = i
            else:
                break
        return self.offset + idx
