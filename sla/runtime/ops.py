"""The two torch custom ops through which a patched model's attention calls reach the SLA runtime.

``torch.compile`` sees each as one opaque call, so everything that changes between calls (the sigma window, the
counters, proj_l, dense fallback after an error) is read inside them at run time and never becomes a dynamo guard
(docs/RUNTIME.md). The runtime is found through ``token``, a one-element CPU int64 tensor that is an ordinary
graph input: two clones with different settings share a compiled graph and still each reach their own runtime,
also where ComfyUI's TorchCompileModel drops the guards on ``transformer_options``.

* ``comfyui_sla::self_attention(q, k, v, token, heads, block, sigmas) -> out``: q, k, v [B, L, H*D] of one
  shape; runs SLA or the runtime's dense path; returns a contiguous [B, L, H*D] tensor in q's dtype.
* ``comfyui_sla::note_call(token, reason)``: counts a call left to the previous/dense attention (cross-attention,
  masked, other layouts, unreadable); it declares ``token`` mutated only so that no compiler removes it.
"""
from __future__ import annotations

import sys
import types
import weakref
from typing import Optional

import torch

# The pack may be imported under several module names in one process (ComfyUI, tests); the ops are registered
# once, so the token -> runtime table they read must be one table per process, not one per module copy.
_SHARED = sys.modules.setdefault("_comfyui_sla_runtimes", types.ModuleType("_comfyui_sla_runtimes"))
if not hasattr(_SHARED, "table"):
    _SHARED.table = weakref.WeakValueDictionary()
    _SHARED.next_token = 1
_NS = "comfyui_sla"


def new_token(runtime) -> torch.Tensor:
    """Register ``runtime`` (weakly: it lives as long as the model that holds its override) under a new token."""
    token = _SHARED.next_token
    _SHARED.next_token += 1
    _SHARED.table[token] = runtime
    return torch.tensor([token], dtype=torch.int64)


def runtime_of(token: torch.Tensor):
    """The runtime registered under ``token`` (raises KeyError when its model is gone)."""
    return _SHARED.table[int(token[0])]


def _existing(name: str):
    try:
        return getattr(getattr(torch.ops, _NS), name)
    except (AttributeError, RuntimeError):
        return None


def _register_self_attention():
    op = _existing("self_attention")
    if op is not None:
        return op

    @torch.library.custom_op(f"{_NS}::self_attention", mutates_args=())
    def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, token: torch.Tensor, heads: int,
                       block: int, sigmas: Optional[torch.Tensor]) -> torch.Tensor:
        return runtime_of(token).attend(q, k, v, heads, None if block < 0 else block, sigmas)

    @self_attention.register_fake
    def _fake(q, k, v, token, heads, block, sigmas):
        return torch.empty_like(q, memory_format=torch.contiguous_format)

    return self_attention


def _register_note_call():
    op = _existing("note_call")
    if op is not None:
        return op

    @torch.library.custom_op(f"{_NS}::note_call", mutates_args=("token",))
    def note_call(token: torch.Tensor, reason: int) -> None:
        runtime_of(token).note_pass_through(reason)

    @note_call.register_fake
    def _fake(token, reason):
        return None

    return note_call


self_attention = _register_self_attention()
note_call = _register_note_call()
