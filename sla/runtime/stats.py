"""What one sampling run of one patched model did: counters per call outcome, and the summary line built from them.

Filled at run time inside the ``comfyui_sla`` custom ops (:mod:`.ops`), never inside traced code.
"""
from __future__ import annotations

import collections
from typing import Optional

from ..families.base import R_CROSS, R_LAYOUT, R_MASK, describe_segments
from ..spec import format_blocks

# Reasons a call does not run SLA (keys of RunStats.dense).
R_DISABLED = "disabled"
R_HEAD = "head size"
R_SHORT = "below min_tokens"
R_DENSE_BLOCK = "dense_blocks"
R_WINDOW = "outside start/end"
R_NO_INDEX = "no block index"
R_DEVICE = "device/dtype"
R_PROJ = "proj_l shape"
R_ERROR = "error"
R_REPLACED = "override replaced"
# Calls that are not SLA's business at all (reported apart from self-attention that went dense).
PASS_THROUGH = (R_CROSS, R_MASK, R_LAYOUT)
# Reasons the traced side of the override decides itself, by their index (``comfyui_sla::note_call``'s code).
NOTED = PASS_THROUGH + (R_ERROR,)


class RunStats:
    """Counters of one sampling run of one patched model."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.calls = 0                       # every call that reached the override
        self.sparse = 0                      # self-attention calls that ran SLA
        self.dense = collections.Counter()   # reason -> calls
        self.keep_sum = 0.0                  # sum of realised keep fractions over sparse calls
        self.backends = collections.Counter()
        self.linear_blocks: set = set()      # blocks that ran with proj_l
        self.sparse_only_blocks: set = set()  # blocks that ran block-sparse without proj_l
        self.last_keep = 0.0                 # realised keep fraction of the latest sparse call
        self.step_keep: dict = {}            # global step -> [keep sum, sparse calls] (with a keep_schedule)
        self.last_prefix = 0                 # exact-prefix tokens of the latest sparse call
        self.prefix_calls = 0                # sparse calls that attended an exact prefix
        self.prefix_blocks = 0               # key blocks of the latest exact prefix

    def note_step_keep(self, step: int, keep: float) -> None:
        acc = self.step_keep.setdefault(step, [0.0, 0])
        acc[0] += keep
        acc[1] += 1

    def step_keeps(self) -> list:
        """[(global step, mean realised keep of its sparse calls)], by step."""
        return [(s, k / n) for s, (k, n) in sorted(self.step_keep.items())]

    @property
    def realised_keep(self) -> Optional[float]:
        return self.keep_sum / self.sparse if self.sparse else None

    @property
    def self_dense(self) -> int:
        return sum(n for r, n in self.dense.items() if r not in PASS_THROUGH)

    def summary(self, settings) -> str:
        keep = self.realised_keep
        keep_txt = (f"realised keep {keep:.3f} (sparsity {1 - keep:.1%})" if keep is not None
                    else "realised keep n/a")
        ordered = sorted(self.dense.items(), key=lambda x: -x[1])
        reasons = ", ".join(f"{r} {n}" for r, n in ordered if r not in PASS_THROUGH)
        passed = ", ".join(f"{r} {n}" for r, n in ordered if r in PASS_THROUGH)
        parts = [f"SLA run: {self.sparse} sparse / {self.self_dense} dense self-attention calls, {keep_txt}"
                 f" (asked {settings.keep_ratio:.2f})"]
        if self.backends:
            parts.append("backend " + ", ".join(f"{b} {n}" for b, n in sorted(self.backends.items())))
        if self.sparse:
            if self.linear_blocks:
                parts.append(f"linear branch (proj_l) on blocks {format_blocks(self.linear_blocks)}")
            if self.sparse_only_blocks:
                parts.append(f"block-sparse only (no proj_l) on blocks {format_blocks(self.sparse_only_blocks)}")
        parts.append("dense because: " + (reasons or "nothing"))
        if passed:
            parts.append("left to dense/previous attention: " + passed)
        return "; ".join(parts)


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def report_text(stats: RunStats, settings, timing: Optional[dict], run: Optional[dict] = None) -> str:
    """The run report shown on the node: a few short lines (calls and why, realised keep, timing, the run).

    ``timing``: :meth:`RunTiming.summary`'s dict (attn_ms, dense_ms, model_ms or None, cpu) or None.
    ``run``: {'seconds': wall time of the sampling run, measured, 'model_calls': n, 'segments': the packed
    sequence's (start, stop, kind) spans of the last model call, or None} or None.
    """
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(stats.dense.items(), key=lambda x: -x[1])
                        if r not in PASS_THROUGH)
    lines = [f"{stats.sparse} sparse / {stats.self_dense} dense self-attention calls"
             + (f" (dense: {reasons})" if reasons else "")]
    keep = stats.realised_keep
    if keep is not None:
        line = f"realised keep {keep:.3f} (sparsity {1 - keep:.0%})"
        per_step = stats.step_keeps()
        if per_step and settings.keep_schedule:
            line += "; per step " + " ".join(f"{k:.2f}" for _s, k in per_step)
        lines.append(line)
    segments = (run or {}).get("segments")
    if segments:
        line = "segments " + describe_segments(segments)
        if stats.prefix_calls:
            line += (f"; exact prefix: {stats.last_prefix} tokens ({stats.prefix_blocks} key blocks) in "
                     f"{stats.prefix_calls} calls")
        elif settings.exact_prefix:
            line += "; exact prefix: not applied (no call carried a matching layout)"
        lines.append(line)
    if timing is not None:
        attn, dense = timing["attn_ms"], timing["dense_ms"]
        if stats.sparse and attn and dense:
            speed = (f"{dense / attn:.1f}x faster" if dense >= attn else f"{attn / dense:.1f}x slower")
            line = f"attention {speed} ({_ms(attn)} vs ~{_ms(dense)} dense)"
        else:
            line = f"attention {_ms(attn)} (all dense)"
        model = timing.get("model_ms")
        if stats.sparse and attn and model is not None and model > 0:
            other = max(0.0, model - attn)
            line += f", step ~{(other + dense) / (other + attn):.1f}x (est.)"
        if timing.get("cpu"):
            line += " (CPU timing)"
        lines.append(line)
    if run is not None and run.get("model_calls"):
        seconds, calls = run["seconds"], run["model_calls"]
        lines.append(f"sampling run {_ms(seconds * 1000)} ({calls} model call{'s' if calls != 1 else ''}, "
                     f"{_ms(seconds * 1000 / calls)} each)")
    return "\n".join(lines)
