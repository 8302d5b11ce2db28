"""Per-model attention patch of SLA, in plain PyTorch (no ComfyUI import: ComfyUI objects are duck-typed).

Pieces, all installed on a ``ModelPatcher`` clone by ``nodes/comfy_bridge.py``:

* :func:`make_attention_override` -> ``override(func, *args, **kwargs)`` for
  ``transformer_options["optimized_attention_override"]``. It takes Wan self-attention calls (q, k, v of one
  length L as [B, L, H*D], no mask) inside the configured window and runs :func:`sparse_linear_attention`;
  everything else goes to the override that was there before, or to the dense ``func``.
* :func:`make_block_index_patch` -> a ``patches_replace["dit"][("double_block", i)]`` patch that writes
  ``transformer_options["block_index"] = i`` for ComfyUI versions whose Wan block loop does not (0.3.6x).
* :func:`make_run_wrapper` -> an ``OUTER_SAMPLE`` wrapper bracketing one sampling run: it resets the counters,
  refreshes the sigma window from the model's schedule, and logs one summary line at the end (a WARNING when the
  override was never called).
The proj_l tensors live in :mod:`.weights` (settings carry only their ``weights_id``).
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Callable, Dict, Optional, Tuple

import torch

from ..functional import sparse_linear_attention, triton_available
from ..spec import KERNEL_HEAD_DIMS, head_dim_supported, keep_count, num_blocks
from .settings import SLASettings, format_blocks
from .weights import (ProjL, get_proj_l, has_weights, proj_l_is_zero, register_proj_l, unregister_proj_l,  # noqa: F401
                      weights_blocks, weights_head_dim)

log = logging.getLogger("comfyui_sla")

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_DEVICES = ("cuda", "cpu", "mps", "xpu")

# Reasons a call does not run SLA (keys of RunStats.dense).
R_DISABLED = "disabled"
R_CROSS = "cross-attention"
R_MASK = "mask"
R_LAYOUT = "layout"
R_HEAD = "head size"
R_SHORT = "below min_tokens"
R_DENSE_BLOCK = "dense_blocks"
R_WINDOW = "outside start/end"
R_NO_INDEX = "no block index"
R_DEVICE = "device/dtype"
R_PROJ = "proj_l shape"
R_ERROR = "error"
# Calls that are not SLA's business at all (reported apart from self-attention that went dense).
PASS_THROUGH = (R_CROSS, R_MASK, R_LAYOUT)

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


# ---------------------------------------------------------------------------------------------------------------
# run statistics and per-patch runtime state

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

    @property
    def realised_keep(self) -> Optional[float]:
        return self.keep_sum / self.sparse if self.sparse else None

    @property
    def self_dense(self) -> int:
        return sum(n for r, n in self.dense.items() if r not in PASS_THROUGH)

    def summary(self, settings: SLASettings) -> str:
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


class SLARuntime:
    """Mutable state of one installed SLA patch: settings, chained override, window thresholds, counters.

    Lives in the override's closure (functions survive ``copy.deepcopy`` as the same object), so every clone of a
    patched model shares it, while a new ``ApplySLA`` makes a new one: clones with different settings never see
    each other's state.
    """

    _uids = itertools.count(1)

    def __init__(self, settings: SLASettings, previous: Optional[Callable] = None):
        self.settings = settings
        self.previous = previous
        self.uid = next(self._uids)
        self.stats = RunStats()
        self.sigma_window: Optional[Tuple[float, float]] = None  # (sigma at start_percent, at end_percent)
        self.run_depth = 0
        self._last_sigmas = None
        self._last_in_window = True
        self._triton_ok: Dict[str, bool] = {}
        # (device, dtype, shape) of calls whose SLA path raised: they go straight to dense afterwards instead of
        # paying the failure (a kernel compile error, say) again on every call.
        self.failed: set = set()

    # -- window ----------------------------------------------------------------------------------------------
    def set_sigma_window(self, sigma_start: float, sigma_end: float) -> None:
        """Thresholds from ``model_sampling.percent_to_sigma(start/end_percent)``: SLA runs while
        ``sigma_end <= sigma <= sigma_start``."""
        self.sigma_window = (float(sigma_start), float(sigma_end))
        self._last_sigmas = None

    def full_window(self) -> bool:
        s = self.settings
        return s.start_percent <= 0.0 and s.end_percent >= 1.0

    def in_window(self, transformer_options: dict) -> bool:
        if self.full_window():
            return True
        sigmas = transformer_options.get("sigmas") if transformer_options else None
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
        if torch.is_tensor(sigmas):
            sigma = float(sigmas.detach().reshape(-1).max())
        else:
            sigma = float(sigmas)
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

    # -- run bracketing ----------------------------------------------------------------------------------------
    def begin_run(self, window: Optional[Tuple[float, float]] = None) -> None:
        self.run_depth += 1
        if self.run_depth > 1:
            return
        self.stats.reset()
        if window is not None:
            self.set_sigma_window(*window)
        self._last_sigmas = None

    def end_run(self, interrupted: bool = False) -> None:
        """Close a run and log its summary; ``interrupted``: the run raised (cancelled, OOM, ...)."""
        self.run_depth = max(0, self.run_depth - 1)
        if self.run_depth:
            return
        st = self.stats
        if st.calls == 0 and interrupted:
            return  # stopped before its first model call: nothing to report, and nothing is wrong with the patch
        if st.calls == 0:
            log.warning("SLA was applied to this model but attention never went through it during this sampling "
                        "run: another node may have replaced optimized_attention_override without chaining, or "
                        "the model does not call ComfyUI's optimized_attention (settings: %s)",
                        self.settings.describe())
            return
        line = st.summary(self.settings)
        # A sampler half that lies wholly outside start/end (the Wan2.2 high-noise expert, say) is dense by
        # design: only warn when something other than the window turned every call away.
        by_design = {R_WINDOW, R_DENSE_BLOCK}
        unexpected = any(n for r, n in st.dense.items() if r not in PASS_THROUGH and r not in by_design)
        if self.settings.enabled and st.sparse == 0 and unexpected:
            log.warning("%s -- SLA was on but no self-attention call ran sparse", line)
        else:
            log.info(line)


# ---------------------------------------------------------------------------------------------------------------
# the attention override

def _arg(args, kwargs, index, name, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _route(rt: SLARuntime, args, kwargs):
    """Decide whether this call runs SLA. Returns (reason or None, q, k, v, heads, block)."""
    s = rt.settings
    q, k, v = _arg(args, kwargs, 0, "q"), _arg(args, kwargs, 1, "k"), _arg(args, kwargs, 2, "v")
    heads = _arg(args, kwargs, 3, "heads")
    mask = _arg(args, kwargs, 4, "mask")
    none = (None,) * 5
    if not all(torch.is_tensor(t) for t in (q, k, v)) or heads is None:
        return (R_LAYOUT,) + none
    if kwargs.get("skip_reshape") or kwargs.get("skip_output_reshape") or q.dim() != 3:
        return (R_LAYOUT,) + none
    if k.shape != q.shape or v.shape != q.shape:
        return (R_CROSS,) + none
    if mask is not None:
        return (R_MASK,) + none
    if not s.enabled:
        return (R_DISABLED,) + none
    b, length, hd = q.shape
    heads = int(heads)
    if heads <= 0 or hd % heads or not head_dim_supported(hd // heads):
        return (R_HEAD,) + none
    if length < s.min_tokens:
        return (R_SHORT,) + none
    to = kwargs.get("transformer_options") or {}
    block = to.get("block_index")
    if block is not None and int(block) in s.dense_blocks:
        return (R_DENSE_BLOCK,) + none
    if not rt.in_window(to):
        return (R_WINDOW,) + none
    if block is None and (s.dense_blocks or has_weights(s.weights_id)):
        # Without the index we can neither honour dense_blocks nor pick the block's proj_l.
        log_once(("no-index", rt.uid), logging.WARNING,
                 "SLA: transformer_options has no block_index (the block-index patch did not run): "
                 "self-attention runs dense")
        return (R_NO_INDEX,) + none
    if (str(q.device), q.dtype, tuple(q.shape)) in rt.failed:
        return (R_ERROR,) + none
    if q.dtype not in SUPPORTED_DTYPES or q.device.type not in SUPPORTED_DEVICES:
        log_once(("device", rt.uid, str(q.device), q.dtype), logging.WARNING,
                 "SLA: unsupported device/dtype %s/%s: attention runs dense for these calls", q.device, q.dtype)
        return (R_DEVICE,) + none
    return None, q, k, v, heads, block


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
                 s.keep_ratio)
    backend = rt.resolve_backend(q)
    if backend == "triton":
        if d not in KERNEL_HEAD_DIMS:
            log_once(("triton-head", rt.uid, d), logging.INFO,
                     "SLA: the Triton kernel takes head sizes %s, this model has %d: using the PyTorch path",
                     KERNEL_HEAD_DIMS, d)
            backend = "torch"
    q4, k4, v4 = (t.unflatten(-1, (heads, d)) for t in (q, k, v))
    out = sparse_linear_attention(q4, k4, v4, s.keep_ratio,
                                  None if proj is None else proj[0], None if proj is None else proj[1],
                                  feature_map=s.feature_map, block_q=s.block_q, block_k=s.block_k,
                                  backend=backend)
    st = rt.stats
    nk = num_blocks(length, s.block_k)
    st.keep_sum += keep_count(nk, s.keep_ratio) / nk
    st.backends[backend] += 1
    if block is not None:
        (st.linear_blocks if proj is not None else st.sparse_only_blocks).add(int(block))
    return out.reshape(b, length, hd), None


def make_attention_override(settings: SLASettings, previous_override: Optional[Callable] = None,
                            runtime: Optional[SLARuntime] = None) -> Callable:
    """Build ``override(func, *args, **kwargs)`` for ``transformer_options["optimized_attention_override"]``.

    ``func(*args, **kwargs)`` is ComfyUI's dense attention; ``previous_override`` (another pack's override that
    was installed before) receives every call this one does not take. The returned function carries
    ``sla_runtime`` (its :class:`SLARuntime`), ``sla_settings`` and ``sla_previous`` for re-configuration.
    Never raises because of SLA: any error in the sparse path is logged once and the call runs dense.
    """
    rt = runtime if runtime is not None else SLARuntime(settings, previous_override)
    rt.settings, rt.previous = settings, previous_override

    def dense(func, args, kwargs):
        if rt.previous is not None:
            return rt.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def sla_attention_override(func, *args, **kwargs):
        st = rt.stats
        st.calls += 1
        try:  # routing included: an odd transformer_options (block_index, sigmas) must not crash sampling either
            out = None
            reason, q, k, v, heads, block = _route(rt, args, kwargs)
            if reason is None:
                try:
                    out, reason = _sla_call(rt, q, k, v, heads, block)
                except Exception:
                    rt.failed.add((str(q.device), q.dtype, tuple(q.shape)))
                    raise
        except Exception as e:  # never crash sampling because of SLA
            log_once(("error", rt.uid, type(e).__name__), logging.WARNING,
                     "SLA: sparse attention failed (%s: %s); this and similar calls run dense",
                     type(e).__name__, e, )
            log.debug("SLA failure", exc_info=True)
            out, reason = None, R_ERROR
        if reason is None:
            st.sparse += 1
            return out
        st.dense[reason] += 1
        return dense(func, args, kwargs)

    sla_attention_override.sla_runtime = rt
    sla_attention_override.sla_settings = settings
    sla_attention_override.sla_previous = previous_override
    return sla_attention_override


def is_sla_override(fn) -> bool:
    return callable(fn) and isinstance(getattr(fn, "sla_runtime", None), SLARuntime)


def make_run_wrapper(runtime: SLARuntime,
                     window_resolver: Optional[Callable[[object], Optional[Tuple[float, float]]]] = None):
    """``wrapper(executor, *args, **kwargs)`` for ComfyUI's ``WrappersMP.OUTER_SAMPLE``: brackets a sampling run.

    ``window_resolver(executor)`` returns (sigma_start, sigma_end) from the model being sampled (so a
    ModelSamplingSD3 shift applied after ApplySLA is honoured), or None to keep the thresholds set at apply time.
    """
    def sla_outer_sample_wrapper(executor, *args, **kwargs):
        window = None
        if window_resolver is not None and not runtime.full_window():
            try:
                window = window_resolver(executor)
            except Exception as e:  # a missing attribute must not break sampling
                log_once(("resolver", runtime.uid), logging.WARNING,
                         "SLA: could not read the sigma schedule (%s); keeping the window set at apply time", e)
        runtime.begin_run(window)
        try:
            result = executor(*args, **kwargs)
        except BaseException:
            runtime.end_run(interrupted=True)
            raise
        runtime.end_run()
        return result

    sla_outer_sample_wrapper.sla_runtime = runtime
    return sla_outer_sample_wrapper


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
