"""Handing a loaded state dict over to a model builder without two full copies of the weights in memory.

``consume_on_copy`` wraps each tensor so that it frees its own storage once a loader has copied it into a
parameter; ``plain_tensors`` unwraps any tensor a loader adopted instead of copying. Needs only torch.
"""
from __future__ import annotations

import contextlib
from typing import Dict

import torch

# Tokens of the consume_on_copy blocks now open: a wrapped tensor frees itself only inside its own block.
_ACTIVE_CONSUMERS: set = set()


class _ConsumeOnCopy(torch.Tensor):
    """A state-dict tensor that frees its own storage right after it has been copied into a parameter.

    ``Module.load_state_dict`` copies each entry with ``param.copy_(input)``; when ``input`` is one of these (while
    its ``consume_on_copy`` block is active) its storage is released at once, so a model built from the dict never
    coexists with a second full copy of its weights. Any other operation behaves exactly as on a plain tensor and
    returns plain tensors.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name == "detach" and args and isinstance(args[0], _ConsumeOnCopy) and isinstance(out, torch.Tensor):
            # nn.Parameter(t) requires detach() to keep the type. A loader that adopts the tensor this way keeps its
            # storage alive, so neither it nor the original is ever freed (plain_tensors() unwraps it later).
            out = out.as_subclass(_ConsumeOnCopy)
            out._sla_consume_token = None
            args[0]._sla_consume_token = None
            return out
        if (name == "copy_" and len(args) > 1 and isinstance(args[1], _ConsumeOnCopy)
                and getattr(args[1], "_sla_consume_token", None) in _ACTIVE_CONSUMERS):
            src, dst = args[1], args[0]
            with torch._C.DisableTorchFunctionSubclass():
                shares = dst.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
                if not shares and src.untyped_storage().nbytes():
                    src.untyped_storage().resize_(0)
        return out


@contextlib.contextmanager
def consume_on_copy(state_dict: Dict[str, torch.Tensor]):
    """Hand ``state_dict`` over to a loader that copies it into freshly allocated parameters (ComfyUI's
    ``comfy.sd.load_diffusion_model_state_dict``), freeing each tensor as soon as it has been copied.

    Peak memory of building the model drops from ~2x to ~1x the model size. ``state_dict`` is emptied (its tensors
    are consumed); use only the yielded dict, only inside the block. Afterwards call ``plain_tensors(module)`` on
    the built model in case a loader adopted a tensor instead of copying it.

    Example::

        with consume_on_copy(loaded.state_dict) as sd:
            model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options)
        plain_tensors(model.model.diffusion_model)
    """
    token = object()
    wrapped = {}
    for k, v in state_dict.items():
        t = v.as_subclass(_ConsumeOnCopy)
        t._sla_consume_token = token
        wrapped[k] = t
    state_dict.clear()
    _ACTIVE_CONSUMERS.add(token)
    try:
        yield wrapped
    finally:
        _ACTIVE_CONSUMERS.discard(token)


def plain_tensors(module: torch.nn.Module) -> int:
    """Turn any parameter/buffer of ``module`` that is a ``consume_on_copy`` tensor back into a plain tensor
    (same storage). Returns how many were converted (0 when the loader copied everything)."""
    n = 0
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and (isinstance(p, _ConsumeOnCopy) or isinstance(p.data, _ConsumeOnCopy)):
                with torch._C.DisableTorchFunctionSubclass():
                    plain = p.detach().as_subclass(torch.Tensor)
                m._parameters[name] = torch.nn.Parameter(plain, requires_grad=p.requires_grad)
                n += 1
        for name, b in list(m._buffers.items()):
            if isinstance(b, _ConsumeOnCopy):
                m._buffers[name] = b.as_subclass(torch.Tensor)
                n += 1
    return n
