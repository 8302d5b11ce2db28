"""The run-time half of the SLA patch: :class:`SLARuntime`, the mutable state of one installed patch.

Called by the custom ops (:mod:`.ops`) and the ComfyUI wrappers (:mod:`.patch`), always eagerly, never in traced
code (so a compiled model has nothing to recompile for, docs/RUNTIME.md):

* :meth:`SLARuntime.attend` (op ``self_attention``): one self-attention call, q, k, v [B, L, H*D] of one shape,
  run as SLA (:func:`.sparse_call.sla_call`) or dense with the reason counted; returns a contiguous
  [B, L, H*D] tensor in q's dtype. :meth:`SLARuntime.note_pass_through` (op ``note_call``) counts the calls
  left to the previous override or the dense ``func``.
* :meth:`SLARuntime.begin_run` / :meth:`SLARuntime.end_run` (``OUTER_SAMPLE`` wrapper): reset the counters,
  failures and sigma window; log the summary line and the run report. :meth:`SLARuntime.enter_model_call` /
  :meth:`SLARuntime.leave_model_call` (``APPLY_MODEL`` wrapper): a model call's global step, keep ratio, timing.

Also :data:`STEPS` (the process-wide step counter) and :func:`sdpa_attention`, the dense path until the model's
own attention function is known.
"""
from __future__ import annotations

import itertools
import logging
from typing import Callable, Dict, Optional, Tuple

import torch

from ..functional import triton_available
from ..spec import head_dim_supported
from . import capture, ops
from .log import log, log_once
from .schedule import StepCounter, sigma_to_percent
from .settings import SLASettings
from .sparse_call import sla_call
from .stats import (NOTED, PASS_THROUGH, R_DENSE_BLOCK, R_DEVICE, R_DISABLED, R_ERROR, R_HEAD, R_NO_INDEX,
                    R_SHORT, R_WINDOW, RunStats, report_text)
from .timing import Interval, RunTiming
from .weights import has_weights
from .weights import hold as hold_weights

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_DEVICES = ("cuda", "cpu", "mps", "xpu")

# Global step index of model calls, shared by every runtime of the process: the second half of a split sampler
# (another model, another runtime) continues the first half's step count.
if not hasattr(ops._SHARED, "steps"):
    ops._SHARED.steps = StepCounter()
STEPS = ops._SHARED.steps


def sdpa_attention(q, k, v, heads, **kwargs):
    """Dense attention on [B, L, H*D] q, k, v (the runtime's dense path until the model's own is known)."""
    b, length, hd = q.shape
    qh, kh, vh = (t.view(b, -1, heads, hd // heads).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(b, length, hd)


def _shape_key(q: torch.Tensor):
    return str(q.device), q.dtype, tuple(q.shape)


class SLARuntime:
    """Mutable state of one installed SLA patch: settings, chained override, window thresholds, counters.

    Lives in the override's closure (functions survive ``copy.deepcopy`` as the same object), so every clone of a
    patched model shares it, while a new ``ApplySLA`` makes a new one: clones with different settings never see
    each other's state. Everything here is read and written at run time, inside :mod:`.ops`' custom ops or in
    the run wrapper, never in traced code.
    """

    _uids = itertools.count(1)

    def __init__(self, settings: SLASettings, previous: Optional[Callable] = None):
        self.settings = settings
        hold_weights(settings.weights_id, self)  # the proj_l entry lives as long as some runtime uses it
        self.previous = previous
        self.uid = next(self._uids)
        self.token = ops.new_token(self)
        # ComfyUI's dense attention function; the override refreshes it on every call.
        self.dense_func: Callable = sdpa_attention
        self.stats = RunStats()
        self.sigma_window: Optional[Tuple[float, float]] = None  # (sigma at start_percent, at end_percent)
        self.run_depth = 0
        self._last_sigmas = None
        self._last_in_window = True
        self._triton_ok: Dict[str, bool] = {}
        # (device, dtype, shape) of calls whose SLA path raised in this run: the rest of the run sends them dense;
        # the next run tries again.
        self.failed: set = set()
        # ComfyUI id of the node that applied this patch (report target, capture key) and report(text), called
        # at the end of each run; both set by nodes/comfy_bridge.py.
        self.node_id: Optional[str] = None
        self.report: Optional[Callable[[str], None]] = None
        self.timing = RunTiming()
        self.timing_on = False  # only runs with a node to report to are timed (see begin_run)
        # Per model call (set by the model-call wrapper, read in the op): global step, keep ratio to run at.
        self.track_steps = False
        self.step = -1
        self.keep = settings.keep_ratio
        self._step_sigma: Optional[float] = None
        self._schedule = None
        self.percent_to_sigma: Optional[Callable[[float], float]] = None
        self.capture: Optional[list] = None  # CaptureRequests of armed SLA Attention Map nodes, this run

    # -- window ----------------------------------------------------------------------------------------------
    def set_sigma_window(self, sigma_start: float, sigma_end: float) -> None:
        """Thresholds from ``model_sampling.percent_to_sigma(start/end_percent)``: SLA runs while
        ``sigma_end <= sigma <= sigma_start``."""
        self.sigma_window = (float(sigma_start), float(sigma_end))
        self._last_sigmas = None

    def full_window(self) -> bool:
        s = self.settings
        return s.start_percent <= 0.0 and s.end_percent >= 1.0

    def in_window(self, sigmas: Optional[torch.Tensor]) -> bool:
        """Whether the current step (``sigmas``: ComfyUI's ``transformer_options["sigmas"]``) lies in the window."""
        if self.full_window():
            return True
        if sigmas is None:
            log_once(("no-sigma", self.uid), logging.WARNING,
                     "SLA: no current sigma in transformer_options: start/end_percent cannot be applied, "
                     "SLA runs on every call")
            return True
        if self.sigma_window is None:
            log_once(("no-window", self.uid), logging.WARNING,
                     "SLA: start/end_percent could not be converted to sigmas (no model_sampling): SLA runs on "
                     "every call")
            return True
        if sigmas is self._last_sigmas:  # one tensor per model call: convert (and sync) once per step
            return self._last_in_window
        sigma = float(sigmas.detach().reshape(-1).max())
        hi, lo = self.sigma_window
        self._last_sigmas = sigmas
        eps = 1e-5 * max(1.0, abs(sigma))  # sigmas arrive as fp32 tensors, thresholds as Python floats
        self._last_in_window = lo - eps <= sigma <= hi + eps
        return self._last_in_window

    # -- backend ---------------------------------------------------------------------------------------------
    def resolve_backend(self, q: torch.Tensor) -> str:
        """'triton' or 'torch' for this call, as :func:`sparse_linear_attention` will pick it."""
        want = self.settings.backend
        if want == "torch" or not q.is_cuda:
            if want == "triton":
                log_once(("triton-not-cuda", self.uid), logging.WARNING,
                         "SLA: backend 'triton' needs a CUDA device, got %s: using the PyTorch path", q.device)
            return "torch"
        dev = str(q.device)
        ok = self._triton_ok.get(dev)
        if ok is None:
            ok = self._triton_ok[dev] = triton_available(q.device)
        if not ok:
            level = logging.WARNING if want == "triton" else logging.INFO
            log_once(("triton-missing", self.uid), level,
                     "SLA: Triton kernel unavailable on %s (is triton / triton-windows installed?): using the "
                     "exact PyTorch path, which is slower", q.device)
            return "torch"
        return "triton"

    # -- the two run-time entry points (called from the custom ops) --------------------------------------------
    def note_pass_through(self, reason_code: int) -> None:
        """Count a call the override left to the previous/dense attention (``NOTED[reason_code]``)."""
        self.stats.calls += 1
        self.stats.dense[NOTED[reason_code]] += 1

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, block: Optional[int],
               sigmas: Optional[torch.Tensor]) -> torch.Tensor:
        """One self-attention call ([B, L, H*D] q, k, v of one shape): SLA, or dense with the reason counted.

        Never raises because of SLA: an error is logged once, that call runs dense, and so do the rest of this
        run's calls of the same shape. Returns a contiguous [B, L, H*D] tensor in q's dtype.
        """
        st = self.stats
        st.calls += 1
        key = _shape_key(q)
        out = interval = None
        try:
            reason = self._route(q, heads, block, sigmas)
            if reason is None:
                interval = self._maybe_time(key, "sla", q)
                try:
                    out, reason = sla_call(self, q, k, v, heads, block)
                except Exception:
                    self.failed.add(_shape_key(q))
                    raise
        except Exception as e:  # never crash sampling because of SLA
            if log_once(("error", self.uid, type(e).__name__), logging.WARNING,
                        "SLA: sparse attention failed (%s: %s); this call and the rest of this run's calls of "
                        "shape %s run dense, the next run tries again", type(e).__name__, e, tuple(q.shape)):
                log.debug("SLA failure", exc_info=True)
            out, reason = None, R_ERROR
        if reason is None:
            st.sparse += 1
            out = out.contiguous()
        else:
            st.dense[reason] += 1
            interval = self._maybe_time(key, "dense", q)  # a failed SLA attempt is not timed
            out = self.dense(q, k, v, heads, block).contiguous()
        kind = "sla" if reason is None else "dense"
        self.timing.count(key, kind)
        if interval is not None:
            self.timing.add(key, kind, interval.stop())
            if reason is None and self.timing.needs_dense(key):
                # once per shape and process: what this call would have cost dense, from the second of two
                # calls (the first may carry the dense backend's lazy set-up for this shape)
                both = Interval(q.device)
                self.dense(q, k, v, heads, block)
                extra = Interval(q.device)
                self.dense(q, k, v, heads, block)
                self.timing.add(key, "dense", extra.stop())
                self.timing.extra_dense.append(both.stop())
        if self.capture is not None:  # only while an SLA Attention Map node waits for a run
            for cap in self.capture:
                self._note_capture(cap, q, k, heads, block, reason)
        return out

    def _maybe_time(self, key, kind: str, q: torch.Tensor) -> Optional[Interval]:
        """A started interval when this call of (shape, kind) is one of the timed sample, else None."""
        if self.timing_on and self.timing.should_time(key, kind):
            return Interval(q.device)
        return None

    def _note_capture(self, cap, q, k, heads, block, reason) -> None:
        b = -1 if block is None else block
        cap.grid[(self.step, b)] = self.stats.last_keep if reason is None else 1.0
        if cap.q is None and b == cap.block and self.step == cap.step:
            cap.take(q, k, heads)
            cap.keep = self.keep if reason is None else 1.0
            cap.sparse = reason is None
            cap.block_q, cap.block_k = self.settings.block_q, self.settings.block_k

    def dense(self, q, k, v, heads: int, block: Optional[int]) -> torch.Tensor:
        """The attention SLA replaces: the previous override, else ComfyUI's dense function."""
        to = {} if block is None else {"block_index": block}
        if self.previous is not None:
            return self.previous(self.dense_func, q, k, v, heads=heads, transformer_options=to,
                                 _inside_attn_wrapper=True)
        return self.dense_func(q, k, v, heads=heads, transformer_options=to, _inside_attn_wrapper=True)

    def _route(self, q: torch.Tensor, heads: int, block: Optional[int], sigmas) -> Optional[str]:
        """None when this self-attention call runs SLA, else the reason it runs dense."""
        s = self.settings
        if not s.enabled:
            return R_DISABLED
        b, length, hd = q.shape
        if heads <= 0 or hd % heads or not head_dim_supported(hd // heads):
            return R_HEAD
        if length < s.min_tokens:
            return R_SHORT
        if block is not None and block in s.dense_blocks:
            return R_DENSE_BLOCK
        if not self.in_window(sigmas):
            return R_WINDOW
        if block is None and (s.dense_blocks or has_weights(s.weights_id)):
            # Without the index we can neither honour dense_blocks nor pick the block's proj_l.
            log_once(("no-index", self.uid), logging.WARNING,
                     "SLA: transformer_options has no block_index (the block-index patch did not run): "
                     "self-attention runs dense")
            return R_NO_INDEX
        if _shape_key(q) in self.failed:
            return R_ERROR
        if q.dtype not in SUPPORTED_DTYPES or q.device.type not in SUPPORTED_DEVICES:
            log_once(("device", self.uid, str(q.device), q.dtype), logging.WARNING,
                     "SLA: unsupported device/dtype %s/%s: attention runs dense for these calls", q.device, q.dtype)
            return R_DEVICE
        return None

    # -- run bracketing ----------------------------------------------------------------------------------------
    def begin_run(self, window: Optional[Tuple[float, float]] = None, sigmas=None,
                  percent_to_sigma: Optional[Callable[[float], float]] = None) -> None:
        """Open a run. ``sigmas``: the run's sigma schedule (tensor or list, last entry its end);
        ``percent_to_sigma``: the model's, for a linear keep_schedule."""
        self.run_depth += 1
        if self.run_depth > 1:
            return
        self.stats.reset()
        self.timing.reset()
        self.failed.clear()
        if window is not None:
            self.set_sigma_window(*window)
        self._last_sigmas = None
        if sigmas is not None:
            STEPS.begin([float(x) for x in torch.as_tensor(sigmas).detach().reshape(-1).cpu()])
        self._schedule = self.settings.schedule
        self.percent_to_sigma = percent_to_sigma
        self.capture = capture.requests_for_run()
        # Timing costs two extra dense calls per shape and process: only where a node shows the report.
        self.timing_on = self.report is not None
        self.track_steps = self._schedule is not None or self.capture is not None
        self.step, self._step_sigma, self.keep = -1, None, self.settings.keep_ratio

    def enter_model_call(self, t) -> Optional[Interval]:
        """Called by the model-call wrapper before each model call (``t``: its sigmas, a tensor): locate the
        step when a schedule or a capture needs it (one host read per model call), start the call's timer."""
        if self.track_steps and torch.is_tensor(t):
            sigma = float(t.detach().reshape(-1).max())
            if sigma != self._step_sigma:
                self._step_sigma = sigma
                self.step = STEPS.step(sigma)
                self.keep = self._keep_at(sigma)
        return Interval(t.device) if self.timing_on and torch.is_tensor(t) else None

    def _keep_at(self, sigma: float) -> float:
        sched = self._schedule
        if sched is None:
            return self.settings.keep_ratio
        progress = 0.0
        if sched.linear:
            if self.percent_to_sigma is not None:
                progress = sigma_to_percent(sigma, self.percent_to_sigma)
            else:
                log_once(("no-p2s", self.uid), logging.WARNING,
                         "SLA: keep_schedule needs the model's sigma schedule (model_sampling), which was not "
                         "found: its first value is used")
        return sched.keep_at(self.step, progress)

    def leave_model_call(self, interval: Optional[Interval]) -> None:
        if interval is not None:
            self.timing.model.append(interval.stop())

    def end_run(self, interrupted: bool = False) -> None:
        """Close a run and log its summary; ``interrupted``: the run raised (cancelled, OOM, ...)."""
        self.run_depth = max(0, self.run_depth - 1)
        if self.run_depth:
            return
        st = self.stats
        cap, self.capture, self.track_steps = self.capture, None, False
        if cap is not None and not interrupted:
            for c in cap:
                capture.finish(c, self.uid)
        if st.calls == 0 and interrupted:
            return  # stopped before its first model call: nothing to report, and nothing is wrong with the patch
        if st.calls == 0:
            log.warning("SLA was applied to this model but attention never went through it during this sampling "
                        "run: another node may have replaced optimized_attention_override without chaining, or "
                        "the model does not call ComfyUI's optimized_attention (settings: %s)",
                        self.settings.describe())
            return
        line = st.summary(self.settings)
        self._finish_report()
        # A sampler half that lies wholly outside start/end (the Wan2.2 high-noise expert, say) is dense by
        # design: only warn when something other than the window turned every call away.
        by_design = {R_WINDOW, R_DENSE_BLOCK}
        unexpected = any(n for r, n in st.dense.items() if r not in PASS_THROUGH and r not in by_design)
        if self.settings.enabled and st.sparse == 0 and unexpected:
            log.warning("%s -- SLA was on but no self-attention call ran sparse", line)
        else:
            log.info(line)

    def _finish_report(self) -> None:
        """Log the short run report and send it to the node (where ComfyUI can show text on a node)."""
        try:
            text = report_text(self.stats, self.settings, self.timing.summary())
        except Exception as e:  # a report must never fail a finished run
            log.debug("SLA: no run report (%s)", e, exc_info=True)
            return
        log.info("SLA report%s: %s", f" (node {self.node_id})" if self.node_id is not None else "",
                 text.replace("\n", "; "))
        if self.report is not None:
            try:
                self.report(text)
            except Exception as e:
                log_once(("report", self.uid), logging.WARNING, "SLA: could not show the run report on the node "
                         "(%s)", e)

