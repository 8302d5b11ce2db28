"""What one ApplySLA installs on a model: :class:`SLAPatch`, owned by the patched model.

The patch lives in the closure of the model's attention override (functions survive ``ModelPatcher.clone()``'s
deep copy as the same object), so every clone of the patched model shares it and it is freed with the last of
them; a new ApplySLA makes a new patch. It holds what does not change during sampling: the model family, the
settings, the proj_l weights (:class:`.weights.ProjLWeights`), the override it chains to, where its run report
goes, and its ``token`` for the custom ops. Each sampling run gets a fresh :class:`.run.RunState` (``run``);
attention-map captures outlive their run here, one per map node, until the map node draws them.

Entry points, all run time (never traced):

* :meth:`attend_eager` (the override, not compiling) and :meth:`attend_compiled` (op ``self_attention``): one
  self-attention call, SLA or dense with the reason counted;
* :meth:`note_pass_through` (op ``note_call`` under compile): a call left to the previous/dense attention;
* :meth:`begin_run` / :meth:`end_run` (the ``OUTER_SAMPLE`` wrapper), :meth:`enter_model_call` /
  :meth:`leave_model_call` (the ``APPLY_MODEL`` wrapper).
"""
from __future__ import annotations

import itertools
import logging
from typing import Callable, Dict, Optional, Tuple

import torch

from ..families.base import AttentionCall, ModelFamily
from . import capture, ops
from .log import log, log_once
from .route import route
from .run import RunState, shape_key
from .settings import SLASettings
from .sparse_call import sla_call
from .stats import NOTED, PASS_THROUGH, R_DENSE_BLOCK, R_ERROR, R_WINDOW, report_text
from .timing import Interval
from .weights import ProjLWeights


class SLAPatch:
    """One installed SLA patch: family, settings, proj_l, the chained override, the current run.

    previous: the override that was installed before (receives every call SLA does not take), or None (ComfyUI's
    own attention). node_id / report: the ComfyUI node that applied it and ``report(text)`` showing text on it.
    """

    _uids = itertools.count(1)

    def __init__(self, family: ModelFamily, settings: SLASettings, weights: Optional[ProjLWeights] = None,
                 previous: Optional[Callable] = None, node_id: Optional[str] = None,
                 report: Optional[Callable[[str], None]] = None):
        self.family = family
        self.settings = settings
        self.weights = weights
        self.previous = previous
        self.node_id = node_id
        self.report = report
        self.uid = next(self._uids)
        self.token = ops.new_token(self)
        self.window: Optional[Tuple[float, float]] = None  # sigma thresholds converted at apply time
        self.run = RunState(settings, owner=self.uid)      # calls outside a sampling run count here
        self.captures: Dict[str, capture.CaptureRequest] = {}
        self.last_report: Optional[str] = None             # the run report of the last sampling run (SLA Run Report)
        self._depth = 0

    @property
    def stats(self):
        """Counters of the current (or last) run."""
        return self.run.stats

    # -- one attention call ------------------------------------------------------------------------------------
    def attend_eager(self, func: Callable, args: tuple, kwargs: dict, call: AttentionCall):
        """A self-attention call outside torch.compile: SLA, or ``previous(func, *args, **kwargs)`` /
        ``func(*args, **kwargs)`` exactly as ComfyUI made it."""
        to = kwargs.get("transformer_options")
        sigmas = to.get("sigmas") if isinstance(to, dict) else None
        if sigmas is not None and not torch.is_tensor(sigmas):
            sigmas = torch.tensor(float(sigmas))
        if self.run.segments is None and isinstance(to, dict) and self.family.layout_key in to:
            self._segments_of_call(to)

        def dense():
            return self.previous(func, *args, **kwargs) if self.previous is not None else func(*args, **kwargs)
        return self._serve(call, sigmas, dense)

    def _segments_of_call(self, options: dict) -> None:
        """The packed layout a model writes into the call's transformer_options (ComfyUI 0.35+ H3), where its
        model call carried none (eager calls only: a compiled call sees the model call's)."""
        try:
            segments = self.family.segments(options, {})
        except Exception:  # an odd layout: no segments, the call runs as without them
            return
        if segments is not None:
            self.run.segments = self.run.last_segments = segments

    def attend_compiled(self, q, k, v, heads: int, block: int, sigmas, site: int) -> torch.Tensor:
        """A self-attention call from the compiled model (op ``self_attention``); the dense path rebuilds
        ComfyUI's call from its call site (:func:`.ops.rebuild_call`). Returns a fresh contiguous tensor in the
        family's output layout (the shape of its :meth:`~sla.families.base.ModelFamily.output_like`)."""
        call = AttentionCall(q, k, v, heads, block)

        def dense():
            func, args, kwargs = ops.rebuild_call(site, q, k, v, self.run.call_options, block, self.run.call_written)
            return self.previous(func, *args, **kwargs) if self.previous is not None else func(*args, **kwargs)
        out = self._serve(call, sigmas, dense)
        if any(out is t or out.data_ptr() == t.data_ptr() for t in (q, k, v)):
            out = out.clone()  # a custom op's output must not alias its inputs
        return out.contiguous()

    def _serve(self, call: AttentionCall, sigmas, dense: Callable[[], torch.Tensor]):
        run = self.run
        st = run.stats
        st.calls += 1
        block = None if call.block < 0 else call.block
        q4, k4, v4 = self.family.to_heads(call)
        key = shape_key(q4)
        out = interval = None
        try:
            reason = route(self, run, q4, block, sigmas)
            if reason is None:
                interval = run.maybe_time(key, "sla", q4)
                try:
                    out, reason = sla_call(self, run, q4, k4, v4, block)
                except Exception:
                    run.failed.add(key)
                    raise
        except Exception as e:  # never crash sampling because of SLA
            if log_once(("error", self.uid, type(e).__name__), logging.WARNING,
                        "SLA: sparse attention failed (%s: %s); this call and the rest of this run's calls of "
                        "shape %s run dense, the next run tries again", type(e).__name__, e, tuple(q4.shape)):
                log.debug("SLA failure", exc_info=True)
            out, reason = None, R_ERROR
        if reason is None:
            st.sparse += 1
            out = self.family.from_heads(out, call)
        else:
            st.dense[reason] += 1
            interval = run.maybe_time(key, "dense", q4)  # a failed SLA attempt is not timed
            out = dense()
        kind = "sla" if reason is None else "dense"
        run.timing.count(key, kind)
        if interval is not None:
            run.timing.add(key, kind, interval.stop())
            if reason is None and run.timing.needs_dense(key):
                # once per shape and process: what this call would have cost dense, from the second of two
                # calls (the first may carry the dense backend's lazy set-up for this shape)
                both = Interval(q4.device)
                dense()
                extra = Interval(q4.device)
                dense()
                run.timing.add(key, "dense", extra.stop())
                run.timing.extra_dense.append(both.stop())
        if run.captures is not None:  # only while an SLA Attention Map node waits for a run
            for cap in run.captures:
                self._note_capture(run, cap, q4, k4, block, reason)
        return out

    def _note_capture(self, run: RunState, cap, q4, k4, block, reason) -> None:
        b = -1 if block is None else block
        cap.grid[(run.step, b)] = run.stats.last_keep if reason is None else 1.0
        if cap.q is None and b == cap.block and run.step == cap.step:
            cap.take(q4, k4)
            cap.keep = run.keep if reason is None else 1.0
            cap.sparse = reason is None
            cap.block_q, cap.block_k = self.settings.block_q, self.settings.block_k
            cap.prefix = run.stats.last_prefix if reason is None else 0
            cap.segments = run.segments

    def note_pass_through(self, reason: str) -> None:
        """Count a call the override left to the previous/dense attention."""
        self.run.stats.calls += 1
        self.run.stats.dense[reason] += 1

    def note_pass_through_code(self, code: int) -> None:
        self.note_pass_through(NOTED[code])

    # -- a sampling run ----------------------------------------------------------------------------------------
    def begin_run(self, window: Optional[Tuple[float, float]] = None, sigmas=None,
                  percent_to_sigma: Optional[Callable[[float], float]] = None,
                  replaced_by: Optional[str] = None) -> None:
        """Open a run with fresh state. ``window``: sigma thresholds from the model being sampled (None: those
        converted at apply time); ``sigmas``: the run's schedule; ``percent_to_sigma``: the model's;
        ``replaced_by``: a description of the override that replaced ours on the sampled model, if any."""
        self._depth += 1
        if self._depth > 1:
            return  # a nested run (a sampler inside a sampler) counts into the outer one
        self.run = RunState(self.settings, window if window is not None else self.window, sigmas, percent_to_sigma,
                            capture.requests_for_run(), timed=self.report is not None, owner=self.uid)
        self.run.replaced_by = replaced_by
        self.last_report = None

    def enter_model_call(self, t, options: Optional[dict], model_kwargs: Optional[dict] = None) -> Optional[Interval]:
        """Before each model call: its sigmas ``t``, transformer_options and extra model kwargs (the packed
        sequence's segments, for families that pack one)."""
        segments, written = None, None
        if model_kwargs is not None:
            try:
                segments = self.family.segments(options, model_kwargs)
                written = self.family.model_written(options, model_kwargs)
            except Exception as e:  # an odd layout must not fail the step
                log_once(("segments", self.uid, type(e).__name__), logging.WARNING,
                         "SLA: could not read the packed sequence's layout (%s: %s)", type(e).__name__, e)
        return self.run.enter_model_call(t, options, segments, written)

    def leave_model_call(self, interval: Optional[Interval]) -> None:
        self.run.leave_model_call(interval)

    def end_run(self, interrupted: bool = False) -> None:
        """Close a run and log its summary; ``interrupted``: the run raised (cancelled, OOM, ...)."""
        self._depth = max(0, self._depth - 1)
        if self._depth:
            return
        run = self.run
        if run.captures is not None and not interrupted:
            for c in run.captures:
                self.captures[str(c.map_node)] = c
        run.close()
        st = run.stats
        if st.calls == 0 and interrupted:
            return  # stopped before its first model call: nothing to report, and nothing is wrong with the patch
        if st.calls == 0 and run.replaced_by is not None:
            # (an override that wraps ours and calls it still reaches us: only a run without calls is replaced)
            self._report_text(f"SLA did not run: {run.replaced_by} replaced its attention after ApplySLA "
                              "(put ApplySLA after that node, or remove it)", logging.WARNING)
            return
        if st.calls == 0:
            self.last_report = ("SLA did not run: attention never went through it during this sampling run (another "
                                "node replaced the attention override, or the model does not use ComfyUI's "
                                "attention)")
            log.warning("SLA was applied to this model but attention never went through it during this sampling "
                        "run: another node may have replaced optimized_attention_override without chaining, or "
                        "the model does not call ComfyUI's optimized_attention (settings: %s)",
                        self.settings.describe())
            return
        line = st.summary(self.settings)
        self._finish_report(run)
        # A sampler half that lies wholly outside start/end (the Wan2.2 high-noise expert, say) is dense by
        # design: only warn when something other than the window turned every call away.
        by_design = {R_WINDOW, R_DENSE_BLOCK}
        unexpected = any(n for r, n in st.dense.items() if r not in PASS_THROUGH and r not in by_design)
        if self.settings.enabled and st.sparse == 0 and unexpected:
            log.warning("%s -- SLA was on but no self-attention call ran sparse", line)
        else:
            log.info(line)

    def _finish_report(self, run: RunState) -> None:
        """Log the short run report and send it to the node (where ComfyUI can show text on a node)."""
        try:
            text = report_text(run.stats, self.settings, run.timing.summary(),
                               {"seconds": run.seconds, "model_calls": run.model_calls,
                                "segments": run.last_segments})
        except Exception as e:  # a report must never fail a finished run
            log.debug("SLA: no run report (%s)", e, exc_info=True)
            return
        self._report_text(text, logging.INFO)

    def _report_text(self, text: str, level: int) -> None:
        self.last_report = text
        log.log(level, "SLA report%s: %s", f" (node {self.node_id})" if self.node_id is not None else "",
                text.replace("\n", "; "))
        if self.report is not None:
            try:
                self.report(text)
            except Exception as e:
                log_once(("report", self.uid), logging.WARNING, "SLA: could not show the run report on the node "
                         "(%s)", e)

    # -- attention map -------------------------------------------------------------------------------------------
    def take_capture(self, map_node: str) -> Optional[capture.CaptureRequest]:
        """The capture of the last run for ``map_node`` (removed from the patch: a map node draws it once), and
        the map node's request disarmed."""
        capture.disarm(str(map_node))
        return self.captures.pop(str(map_node), None)
