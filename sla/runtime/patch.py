"""The ComfyUI hooks of the SLA patch, in plain PyTorch (no ComfyUI import: ComfyUI objects are duck-typed).

Factories for what ``nodes/comfy_bridge.py`` installs on a ``ModelPatcher`` clone; each hook hands the work to
the patch's :class:`~.runtime.SLARuntime` (:mod:`.runtime`, the run-time half):

* :func:`make_attention_override` -> ``override(func, *args, **kwargs)`` for
  ``transformer_options["optimized_attention_override"]``. What it does inside the (possibly compiled) model is
  only what is the same on every call: calls that are not Wan self-attention (cross-attention, masks, other
  layouts; see :func:`_pass_through_reason`) go to the override that was there before, or to the dense
  ``func``; self-attention (q, k, v [B, L, H*D] of one shape) goes to the custom op
  ``comfyui_sla::self_attention`` (:mod:`.ops`), whose run-time half, :meth:`SLARuntime.attend`, decides SLA or
  dense and keeps the counters. Under ``torch.compile`` nothing that changes between calls is read in traced
  code, so there is nothing to recompile for (docs/RUNTIME.md, tests/test_compile.py).
  :func:`is_sla_override` tells such an override apart.
* :func:`make_block_index_patch` -> a ``patches_replace["dit"][("double_block", i)]`` patch that writes
  ``transformer_options["block_index"] = i`` for ComfyUI versions whose Wan block loop does not (0.3.6x).
* :func:`make_run_wrapper` -> an ``OUTER_SAMPLE`` wrapper bracketing one sampling run (outside any compiled
  region) with :meth:`SLARuntime.begin_run` / :meth:`SLARuntime.end_run`: counters and failures reset, sigma
  window refreshed from the model's schedule, summary line and run report at the end.
* :func:`make_model_call_wrapper` -> an ``APPLY_MODEL`` wrapper (outside any compiled region): per model call it
  locates the global step from the call's sigma (keep_schedule, attention-map capture) and times the call.

Re-exports :class:`SLARuntime`, the dense-reason codes of :mod:`.stats` and the proj_l registry of
:mod:`.weights` (settings carry only its ``weights_id``) for code that imports them from here.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Tuple

import torch

from . import ops
from .log import log_once
from .runtime import SLARuntime
from .settings import SLASettings
from .stats import (NOTED, PASS_THROUGH, R_CROSS, R_DENSE_BLOCK, R_DEVICE, R_DISABLED, R_ERROR, R_HEAD,  # noqa: F401
                    R_LAYOUT, R_MASK, R_NO_INDEX, R_PROJ, R_SHORT, R_WINDOW)
from .weights import (ProjL, get_proj_l, has_weights, proj_l_is_zero, register_proj_l, unregister_proj_l,  # noqa: F401
                      weights_blocks, weights_head_dim)


# ---------------------------------------------------------------------------------------------------------------
# the attention override (traced by torch.compile: reads nothing that changes between calls)

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