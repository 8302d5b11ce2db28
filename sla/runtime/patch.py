"""Per-model attention patch of SLA, in plain PyTorch (no ComfyUI import: ComfyUI objects are duck-typed).

Pieces, all installed on a ``ModelPatcher`` clone by ``nodes/comfy_bridge.py``:

* :func:`make_attention_override` -> ``override(func, *args, **kwargs)`` for
  ``transformer_options["optimized_attention_override"]``. What it does inside the (possibly compiled) model is
  only what is the same on every call: calls that are not Wan self-attention (cross-attention, masks, other
  layouts) go to the override that was there before, or to the dense ``func``; self-attention goes to the custom
  op ``comfyui_sla::self_attention`` (:mod:`.ops`), whose run-time half, :meth:`SLARuntime.attend`, decides SLA or
  dense (settings, sigma window, dense blocks, earlier failures) and keeps the counters. Under ``torch.compile``
  nothing that changes between calls is read in traced code, so there is nothing to recompile for
  (docs/RUNTIME.md).
* :func:`make_block_index_patch` -> a ``patches_replace["dit"][("double_block", i)]`` patch that writes
  ``transformer_options["block_index"] = i`` for ComfyUI versions whose Wan block loop does not (0.3.6x).
* :func:`make_run_wrapper` -> an ``OUTER_SAMPLE`` wrapper bracketing one sampling run (outside any compiled
  region): it resets the counters and the failures, refreshes the sigma window from the model's schedule, and logs
  one summary line at the end (a WARNING when the override was never called), plus the short run report it also
  hands to ``SLARuntime.report`` (the node in the UI).
* :func:`make_model_call_wrapper` -> an ``APPLY_MODEL`` wrapper (outside any compiled region): per model call it
  locates the global step from the call's sigma (keep_schedule, attention-map capture) and times the call.

Per-call behaviour added since (keep per step, timing samples, capture) lives in those wrappers or in
:meth:`SLARuntime.attend`, the custom op's run-time half: traced code still reads nothing that changes between
calls, so a compiled model is not recompiled for them (tests/test_compile.py).

The proj_l tensors live in :mod:`.weights` (settings carry only their ``weights_id``).
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Callable, Dict, Optional, Tuple

import torch

from ..functional import sparse_linear_attention, triton_available
from ..spec import KERNEL_HEAD_DIMS, head_dim_supported, keep_count, num_blocks
from . import capture, ops
from .schedule import StepCounter, sigma_to_percent
from .settings import SLASettings
from .stats import (NOTED, PASS_THROUGH, R_CROSS, R_DENSE_BLOCK, R_DEVICE, R_DISABLED, R_ERROR, R_HEAD,  # noqa: F401
                    R_LAYOUT, R_MASK, R_NO_INDEX, R_PROJ, R_SHORT, R_WINDOW, RunStats, report_text)
from .timing import Interval, RunTiming
from .weights import hold as hold_weights
from .weights import (ProjL, get_proj_l, has_weights, proj_l_is_zero, register_proj_l, unregister_proj_l,  # noqa: F401
                      weights_blocks, weights_head_dim)

log = logging.getLogger("comfyui_sla")

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_DEVICES = ("cuda", "cpu", "mps", "xpu")

# ---------------------------------------------------------------------------------------------------------------
# logging once

_logged_once: set = set()
_log_lock = threading.Lock()


def log_once(key, level: int, msg: str, *args) -> bool:
    """Log ``msg`` at ``level`` the first time ``key`` is seen in this process; returns whether it logged."""
    with _log_lock:
        if key in _logged_once:
            return False
        _logged_once.add(key)
    log.log(level, msg, *args)
    return True


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
                    out, reason = _sla_call(self, q, k, v, heads, block)
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
                # once per shape and process: what this call would have cost dense
                extra = Interval(q.device)
                self.dense(q, k, v, heads, block)
                self.timing.add(key, "dense", extra.stop())
                self.timing.extra_dense.append(extra)
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
        # Timing costs one extra dense call per shape and process: only where a node shows the report.
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


# ---------------------------------------------------------------------------------------------------------------
# the SLA call (run time)

def _sla_call(rt: SLARuntime, q, k, v, heads, block):
    """Run SLA on [B, L, H*D] q, k, v; returns [B, L, H*D] in q's dtype, or None with a dense reason."""
    s = rt.settings
    b, length, hd = q.shape
    d = hd // heads
    proj = None
    if has_weights(s.weights_id):
        proj = get_proj_l(s.weights_id, int(block), q.device)
        if proj is not None and proj[0].shape[0] != d:
            log_once(("proj-shape", rt.uid), logging.WARNING,
                     "SLA: proj_l is %dx%d but the model's attention head size is %d: self-attention runs dense",
                     proj[0].shape[0], proj[0].shape[1], d)
            return None, R_PROJ
        if proj is not None and proj_l_is_zero(s.weights_id, int(block)):
            proj = None  # same output, and the kernel skips the linear branch (~7% of its time)
    else:
        log_once(("training-free", rt.uid), logging.INFO,
                 "SLA: this model has no SLA (proj_l) weights, it was not fine-tuned for SLA: running "
                 "training-free block-sparse attention (keep %.2f); raise keep_ratio if quality drops",
                 rt.keep)
    backend = rt.resolve_backend(q)
    if backend == "triton":
        if d not in KERNEL_HEAD_DIMS:
            log_once(("triton-head", rt.uid, d), logging.INFO,
                     "SLA: the Triton kernel takes head sizes %s, this model has %d: using the PyTorch path",
                     KERNEL_HEAD_DIMS, d)
            backend = "torch"
    q4, k4, v4 = (t.unflatten(-1, (heads, d)) for t in (q, k, v))
    keep_ratio = rt.keep  # keep_ratio, or the keep_schedule's value at this step (set per model call)
    out = sparse_linear_attention(q4, k4, v4, keep_ratio,
                                  None if proj is None else proj[0], None if proj is None else proj[1],
                                  feature_map=s.feature_map, block_q=s.block_q, block_k=s.block_k,
                                  backend=backend)
    st = rt.stats
    nk = num_blocks(length, s.block_k)
    st.last_keep = keep_count(nk, keep_ratio) / nk
    st.keep_sum += st.last_keep
    if rt.track_steps:
        st.note_step_keep(rt.step, st.last_keep)
    st.backends[backend] += 1
    if block is not None:
        (st.linear_blocks if proj is not None else st.sparse_only_blocks).add(int(block))
    return out.reshape(b, length, hd), None



# ---------------------------------------------------------------------------------------------------------------
# the attention override (traced by torch.compile: reads nothing that changes between calls)

def _shape_key(q: torch.Tensor):
    return str(q.device), q.dtype, tuple(q.shape)


def _arg(args, kwargs, index, name, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _pass_through_reason(args, kwargs) -> Optional[str]:
    """Why this call is not Wan self-attention ([B, L, H*D] q, k, v of one shape, no mask), or None."""
    q, k, v = _arg(args, kwargs, 0, "q"), _arg(args, kwargs, 1, "k"), _arg(args, kwargs, 2, "v")
    if not all(torch.is_tensor(t) for t in (q, k, v)) or _arg(args, kwargs, 3, "heads") is None:
        return R_LAYOUT
    if kwargs.get("skip_reshape") or kwargs.get("skip_output_reshape") or q.dim() != 3:
        return R_LAYOUT
    if k.shape != q.shape or v.shape != q.shape:
        return R_CROSS
    if _arg(args, kwargs, 4, "mask") is not None:
        return R_MASK
    return None


def _step_inputs(kwargs) -> Tuple[int, Optional[torch.Tensor]]:
    """(block index or -1, current sigmas as a tensor or None) from ``transformer_options``."""
    to = kwargs.get("transformer_options")
    if not isinstance(to, dict):
        return -1, None
    block, sigmas = to.get("block_index"), to.get("sigmas")
    if sigmas is not None and not torch.is_tensor(sigmas):
        sigmas = torch.tensor(float(sigmas))
    return (-1 if block is None else int(block)), sigmas


def make_attention_override(settings: SLASettings, previous_override: Optional[Callable] = None,
                            runtime: Optional[SLARuntime] = None) -> Callable:
    """Build ``override(func, *args, **kwargs)`` for ``transformer_options["optimized_attention_override"]``.

    ``func(*args, **kwargs)`` is ComfyUI's dense attention; ``previous_override`` (another pack's override that
    was installed before) receives every call this one does not take. The returned function carries
    ``sla_runtime`` (its :class:`SLARuntime`), ``sla_settings`` and ``sla_previous`` for re-configuration.
    Never raises because of SLA: an unusable call runs dense (``SLARuntime.attend`` does the same for errors
    in the sparse path).
    """
    rt = runtime if runtime is not None else SLARuntime(settings, previous_override)
    rt.settings, rt.previous = settings, previous_override

    def sla_attention_override(func, *args, **kwargs):
        rt.dense_func = func  # a plain store: under torch.compile a replayed side effect, not a guard
        try:
            reason = _pass_through_reason(args, kwargs)
            if reason is None:
                block, sigmas = _step_inputs(kwargs)
                q, k, v = _arg(args, kwargs, 0, "q"), _arg(args, kwargs, 1, "k"), _arg(args, kwargs, 2, "v")
                heads = int(_arg(args, kwargs, 3, "heads"))
        except Exception as e:  # an odd call or transformer_options must not crash sampling either
            log_once(("odd-call", rt.uid, type(e).__name__), logging.WARNING,
                     "SLA: could not read this attention call (%s: %s); it runs dense", type(e).__name__, e)
            reason = R_ERROR
        if reason is not None:
            ops.note_call(rt.token, NOTED.index(reason))
            if rt.previous is not None:
                return rt.previous(func, *args, **kwargs)
            return func(*args, **kwargs)
        return ops.self_attention(q, k, v, rt.token, heads, block, sigmas)

    sla_attention_override.sla_runtime = rt
    sla_attention_override.sla_settings = settings
    sla_attention_override.sla_previous = previous_override
    return sla_attention_override


def is_sla_override(fn) -> bool:
    return callable(fn) and isinstance(getattr(fn, "sla_runtime", None), SLARuntime)


def make_run_wrapper(runtime: SLARuntime,
                     window_resolver: Optional[Callable[[object], Optional[Tuple[float, float]]]] = None,
                     sampling_resolver: Optional[Callable[[object], Optional[Callable[[float], float]]]] = None):
    """``wrapper(executor, *args, **kwargs)`` for ComfyUI's ``WrappersMP.OUTER_SAMPLE``: brackets a sampling run.

    ``window_resolver(executor)`` returns (sigma_start, sigma_end) from the model being sampled (so a
    ModelSamplingSD3 shift applied after ApplySLA is honoured), or None to keep the thresholds set at apply time.
    ``sampling_resolver(executor)`` returns that model's ``percent_to_sigma`` (for a linear keep_schedule).
    The run's sigmas are ``outer_sample``'s fourth argument.
    """
    def sla_outer_sample_wrapper(executor, *args, **kwargs):
        window = None
        if window_resolver is not None and not runtime.full_window():
            try:
                window = window_resolver(executor)
            except Exception as e:  # a missing attribute must not break sampling
                log_once(("resolver", runtime.uid), logging.WARNING,
                         "SLA: could not read the sigma schedule (%s); keeping the window set at apply time", e)
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        p2s = None
        if sampling_resolver is not None:
            try:
                p2s = sampling_resolver(executor)
            except Exception as e:
                log_once(("sampling", runtime.uid), logging.WARNING,
                         "SLA: could not read the model's sigma schedule (%s): keep_schedule '->' runs at its "
                         "first value", e)
        runtime.begin_run(window, sigmas, p2s)
        try:
            result = executor(*args, **kwargs)
        except BaseException:
            runtime.end_run(interrupted=True)
            raise
        runtime.end_run()
        return result

    sla_outer_sample_wrapper.sla_runtime = runtime
    return sla_outer_sample_wrapper


def make_model_call_wrapper(runtime: SLARuntime):
    """``wrapper(executor, x, t, ...)`` for ComfyUI's ``WrappersMP.APPLY_MODEL`` (outside any compiled region):
    tells the runtime the step of each model call (for keep_schedule and the map capture) and times the call
    (for the run report's step estimate)."""
    def sla_model_call_wrapper(executor, *args, **kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("t")
        interval = runtime.enter_model_call(t)
        out = executor(*args, **kwargs)
        runtime.leave_model_call(interval)
        return out

    sla_model_call_wrapper.sla_runtime = runtime
    return sla_model_call_wrapper


def make_block_index_patch(index: int, previous: Optional[Callable] = None) -> Callable:
    """``patches_replace["dit"][("double_block", index)]`` patch: sets ``transformer_options["block_index"]``
    (as ComfyUI >= 0.5 does itself) and runs the previous patch or the original block."""
    def sla_block_index_patch(args, extra):
        to = args.get("transformer_options")
        if isinstance(to, dict):
            to["block_index"] = index
        if previous is not None:
            return previous(args, extra)
        return extra["original_block"](args)

    sla_block_index_patch.sla_block_index = index
    sla_block_index_patch.sla_previous = previous
    return sla_block_index_patch
