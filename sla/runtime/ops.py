"""The torch custom ops through which a compiled patched model reaches its SLA patch, and the call-site table.

``torch.compile`` sees each op as one opaque call, so everything that changes between calls (the sigma window,
the counters, the keep schedule, dense fallback after an error) is read inside it at run time and never becomes a
dynamo guard (docs/RUNTIME.md). The patch is found through ``token``, a one-element CPU int64 tensor that is an
ordinary graph input: two clones with different settings share a compiled graph and still each reach their own
patch, also where ComfyUI's TorchCompileModel drops the guards on ``transformer_options``.

* ``comfyui_sla::self_attention(q, k, v, token, heads, block, sigmas, site, family) -> out``: one
  self-attention call (q, k, v as ComfyUI passed them); runs SLA, or hands the call to the previous override /
  ComfyUI's attention, rebuilt from call site ``site``; returns a fresh contiguous tensor in q's dtype, shaped as
  model family ``family`` (its name) expects (:meth:`~sla.families.base.ModelFamily.output_like`: Wan q's shape,
  MiniMax H3 ``[1, S, H*D]`` for q ``[1, H, S, D]``).
* ``comfyui_sla::note_call(token, reason)``: counts a call left to the previous/dense attention (cross-attention,
  masked, other layouts); it declares ``token`` mutated only so that no compiler removes it.

A call site (:func:`call_site`) is what the tracer saw constant about one attention call: ComfyUI's attention
function, the positional and keyword arguments that are not tensors, and the entries of ``transformer_options``
that the model's forward writes (block_index, total_blocks, ...; the sampler's entries come from the model call's
own transformer_options at run time). It is interned while tracing, so the compiled graph
carries only its number.
"""
from __future__ import annotations

import itertools
import threading
import weakref
from typing import Optional

import torch

from ..families import family_named

_NS = "comfyui_sla"
_patches: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
_tokens = itertools.count(1)


def new_token(patch) -> torch.Tensor:
    """Register ``patch`` (weakly: it lives as long as the models that hold its override) under a new token."""
    token = next(_tokens)
    _patches[token] = patch
    return torch.tensor([token], dtype=torch.int64)


def patch_of(token: torch.Tensor):
    """The patch registered under ``token`` (KeyError when its model is gone)."""
    return _patches[int(token[0])]


# -- call sites ------------------------------------------------------------------------------------------------
_sites: list = []
_sites_lock = threading.Lock()
_SCALARS = (bool, int, float, str, type(None))


@torch._dynamo.assume_constant_result
def _intern(record) -> int:
    with _sites_lock:
        for i, known in enumerate(_sites):
            if known == record:
                return i
        _sites.append(record)
        return len(_sites) - 1


def call_site(func, args, kwargs, model_keys=()) -> int:
    """Number of the call site of ``func(*args, **kwargs)`` (interned while tracing: a constant of the graph).

    The record: (func, number of positional args, ((index, value) of the non-tensor positional args),
    ((name, value) of the kwargs but transformer_options), ((key, value) of the ``model_keys`` entries of
    transformer_options that hold constants) or None when the call had no transformer_options). ``model_keys``:
    the entries the model's own forward writes (the family's ``model_keys``); only those are read, since reading
    the others would make dynamo guard on them.
    """
    to = kwargs.get("transformer_options")
    scalars = None
    if isinstance(to, dict):
        scalars = []
        for key in model_keys:
            v = to.get(key)
            # block_index is the op's own argument (it may be symbolic: dynamo makes an int that changes between
            # calls of one frame an input); a call site holds constants only
            if key in to and key != "block_index" and isinstance(v, _SCALARS):
                scalars.append((key, v))
        scalars = tuple(scalars)
    record = (func, len(args),
              tuple((i, a) for i, a in enumerate(args) if not torch.is_tensor(a)),
              tuple((n, v) for n, v in kwargs.items() if n != "transformer_options"),
              scalars)
    return _intern(record)


def rebuild_call(site: int, q, k, v, options: Optional[dict], block: int = -1, written: Optional[dict] = None):
    """(func, args, kwargs) of call site ``site`` with tensors q, k, v, its transformer_options being ``options``
    (the model call's, or empty) updated with what the model writes there (``written``:
    ``ModelFamily.model_written``), the entries the tracer saw for this call and ``block_index`` (when ``block`` >=
    0)."""
    func, n_args, fixed_args, fixed_kwargs, scalars = _sites[site]
    args = [q, k, v] + [None] * (n_args - 3)
    for i, a in fixed_args:
        args[i] = a
    kwargs = dict(fixed_kwargs)
    if scalars is not None:
        to = dict(options or {})
        to.update(written or {})
        to.update(scalars)
        if block >= 0:
            to["block_index"] = block
        kwargs["transformer_options"] = to
    return func, tuple(args[:n_args]), kwargs


# -- the ops -----------------------------------------------------------------------------------------------------
def _existing(name: str):
    try:
        return getattr(getattr(torch.ops, _NS), name)
    except (AttributeError, RuntimeError):
        return None


def _register_self_attention():
    op = _existing("self_attention")
    if op is not None:  # a module reload (tests): the op is the process's, its body finds this module's table
        return op

    @torch.library.custom_op(f"{_NS}::self_attention", mutates_args=())
    def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, token: torch.Tensor, heads: int,
                       block: int, sigmas: Optional[torch.Tensor], site: int, family: str) -> torch.Tensor:
        return patch_of(token).attend_compiled(q, k, v, heads, block, sigmas, site)

    @self_attention.register_fake
    def _fake(q, k, v, token, heads, block, sigmas, site, family):
        return family_named(family).output_like(q)

    return self_attention


def _register_note_call():
    op = _existing("note_call")
    if op is not None:
        return op

    @torch.library.custom_op(f"{_NS}::note_call", mutates_args=("token",))
    def note_call(token: torch.Tensor, reason: int) -> None:
        patch_of(token).note_pass_through_code(reason)

    @note_call.register_fake
    def _fake(token, reason):
        return None

    return note_call


self_attention = _register_self_attention()
note_call = _register_note_call()
