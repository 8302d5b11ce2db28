"""The ComfyUI hooks of the SLA patch, in plain PyTorch (no ComfyUI import: ComfyUI objects are duck-typed).

Factories for what ``nodes/comfy_bridge.py`` installs on a ``ModelPatcher`` clone; each hook hands the work to the
patch's :class:`~.sla_patch.SLAPatch`:

* :func:`make_attention_override` -> ``override(func, *args, **kwargs)`` for
  ``transformer_options["optimized_attention_override"]``. The model family (:mod:`sla.families`) says which calls
  are its self-attention; every other call goes on, exactly as ComfyUI made it, to the override that was there
  before or to ComfyUI's ``func``. Self-attention: outside ``torch.compile`` the patch routes it in Python (SLA, or
  the previous override / ``func`` with ComfyUI's own args and kwargs); under compile it goes to the custom op
  ``comfyui_sla::self_attention`` (:mod:`.ops`), so nothing that changes between calls is read in traced code and
  there is nothing to recompile for (docs/RUNTIME.md, tests/test_compile.py).
* :func:`make_block_index_patch` -> a ``patches_replace["dit"][("double_block", i)]`` patch that writes
  ``transformer_options["block_index"] = i`` for ComfyUI versions whose block loop does not.
* :func:`make_run_wrapper` -> an ``OUTER_SAMPLE`` wrapper bracketing one sampling run (outside any compiled
  region) with :meth:`SLAPatch.begin_run` / :meth:`SLAPatch.end_run`: a fresh run state, the sigma window from the
  sampled model, whether another node replaced our override, the summary line and run report at the end.
* :func:`make_model_call_wrapper` -> an ``APPLY_MODEL`` wrapper (outside any compiled region): per model call the
  step (keep_schedule, attention-map capture), the call's transformer_options (the compiled dense path), timing.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Tuple

import torch

from . import ops
from .log import log_once
from .sla_patch import SLAPatch
from .stats import NOTED, R_ERROR, R_LAYOUT

OVERRIDE_KEY = "optimized_attention_override"


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def make_attention_override(patch: SLAPatch) -> Callable:
    """Build ``override(func, *args, **kwargs)`` for ``transformer_options["optimized_attention_override"]``.

    ``func(*args, **kwargs)`` is ComfyUI's attention; ``patch.previous`` (another pack's override installed
    before) receives every call this one does not run sparse, with the same args and kwargs. The returned function
    carries ``sla_patch``. Never raises because of SLA: an unusable call runs dense.
    """
    family = patch.family

    def sla_attention_override(func, *args, **kwargs):
        try:
            call = family.read_call(args, kwargs)
            if not isinstance(call, str) and any(torch.is_tensor(x) for n, x in kwargs.items()
                                                 if n not in ("q", "k", "v")):
                call = R_LAYOUT  # a tensor we do not know (an attention bias, say): not ours to drop
        except Exception as e:  # an odd call or transformer_options must not crash sampling either
            log_once(("odd-call", patch.uid, type(e).__name__), logging.WARNING,
                     "SLA: could not read this attention call (%s: %s); it runs dense", type(e).__name__, e)
            call = R_ERROR
        if isinstance(call, str):
            if _compiling():
                ops.note_call(patch.token, NOTED.index(call))
            else:
                patch.note_pass_through(call)
            if patch.previous is not None:
                return patch.previous(func, *args, **kwargs)
            return func(*args, **kwargs)
        if not _compiling():
            return patch.attend_eager(func, args, kwargs, call)
        to = kwargs.get("transformer_options")
        sigmas = to.get("sigmas") if isinstance(to, dict) else None
        if sigmas is not None and not torch.is_tensor(sigmas):
            sigmas = torch.tensor(float(sigmas))
        site = ops.call_site(func, args, kwargs, family.model_keys)
        return ops.self_attention(call.q, call.k, call.v, patch.token, call.heads, call.block, sigmas, site,
                                  family.name)

    sla_attention_override.sla_patch = patch
    return sla_attention_override


def is_sla_override(fn) -> bool:
    return callable(fn) and isinstance(getattr(fn, "sla_patch", None), SLAPatch)


def describe_override(fn) -> str:
    """A name for another node's attention override, for the run report."""
    if fn is None:
        return "a node that removed the attention override"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if "set_model_optimized_attention" in name:  # what ComfyUI's Model Attention Backend node installs
        return "ComfyUI's Model Attention Backend (set_model_optimized_attention)"
    module = getattr(fn, "__module__", None) or ""
    return f"another attention override ({module + '.' if module else ''}{name})"


def make_run_wrapper(patch: SLAPatch,
                     window_resolver: Optional[Callable[[object], Optional[Tuple[float, float]]]] = None,
                     sampling_resolver: Optional[Callable[[object], Optional[Callable[[float], float]]]] = None,
                     override_resolver: Optional[Callable[[object], object]] = None):
    """``wrapper(executor, *args, **kwargs)`` for ComfyUI's ``WrappersMP.OUTER_SAMPLE``: brackets a sampling run.

    ``window_resolver(executor)`` returns (sigma_start, sigma_end) from the model being sampled (so a
    ModelSamplingSD3 shift applied after ApplySLA is honoured), or None to keep the thresholds set at apply time.
    ``sampling_resolver(executor)`` returns that model's ``percent_to_sigma`` (for a linear keep_schedule).
    ``override_resolver(executor)`` returns the attention override installed on the model being sampled (to see
    whether a later node replaced ours). The run's sigmas are ``outer_sample``'s fourth argument.
    """
    def sla_outer_sample_wrapper(executor, *args, **kwargs):
        window = _guarded(window_resolver, executor, patch, "sigma schedule; keeping the window set at apply "
                          "time") if not patch.settings.full_window else None
        p2s = _guarded(sampling_resolver, executor, patch, "model's sigma schedule: keep_schedule '->' runs at "
                       "its first value")
        replaced = None
        if override_resolver is not None:
            current = _guarded(override_resolver, executor, patch, "attention override", missing=_UNKNOWN)
            if current is not _UNKNOWN and not _chains_to(current, patch):
                replaced = describe_override(current)
        sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
        patch.begin_run(window, sigmas, p2s, replaced)
        try:
            result = executor(*args, **kwargs)
        except BaseException:
            patch.end_run(interrupted=True)
            raise
        patch.end_run()
        return result

    sla_outer_sample_wrapper.sla_patch = patch
    return sla_outer_sample_wrapper


def _guarded(resolver, executor, patch: SLAPatch, what: str, missing=None):
    if resolver is None:
        return missing
    try:
        return resolver(executor)
    except Exception as e:  # a missing attribute must not break sampling
        log_once(("resolver", what, patch.uid), logging.WARNING, "SLA: could not read the %s (%s)", what, e)
        return missing


def _chains_to(fn, patch: SLAPatch, depth: int = 8) -> bool:
    """Whether override ``fn`` is ``patch``'s override or an SLA override that chains to it."""
    for _ in range(depth):
        own = getattr(fn, "sla_patch", None)
        if own is None:
            return False
        if own is patch:
            return True
        fn = own.previous
    return False


_UNKNOWN = object()


def make_model_call_wrapper(patch: SLAPatch):
    """``wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, ...)`` for ComfyUI's
    ``WrappersMP.APPLY_MODEL`` (outside any compiled region): tells the patch the step and transformer_options of
    each model call, and times the call (for the run report's step estimate)."""
    def sla_model_call_wrapper(executor, *args, **kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("t")
        options = kwargs.get("transformer_options", args[5] if len(args) > 5 else None)
        interval = patch.enter_model_call(t, options if isinstance(options, dict) else None, kwargs)
        try:
            return executor(*args, **kwargs)
        finally:
            patch.leave_model_call(interval)

    sla_model_call_wrapper.sla_patch = patch
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