"""The model families SLA serves, one module each: what the runtime and the nodes know about a model, as data.

:func:`family_of` recognises a diffusion model's family (raising :class:`UnsupportedModel`, which names the
supported families, otherwise). A new family is one module here defining a :class:`~.base.ModelFamily`, added to
:data:`FAMILIES`, plus its tests.
"""
from __future__ import annotations

from .base import AttentionCall, ModelFamily, UnsupportedModel
from .minimax_h3 import MINIMAX_H3
from .wan import WAN

FAMILIES = (WAN, MINIMAX_H3)


def family_of(diffusion_model) -> ModelFamily:
    """The family of ``diffusion_model`` (a torch module); UnsupportedModel naming what was found otherwise."""
    diffusion_model = getattr(diffusion_model, "_orig_mod", diffusion_model)  # a torch.compile'd module
    for family in FAMILIES:
        if family.recognise(diffusion_model):
            return family
    names = ", ".join(f.description for f in FAMILIES)
    raise UnsupportedModel(f"SLA supports {names}; this MODEL's diffusion model is "
                           f"{type(diffusion_model).__name__ if diffusion_model is not None else 'missing'}")


def family_named(name: str) -> ModelFamily:
    """The family whose ``name`` is ``name`` (KeyError otherwise): how the custom op's fake finds the output
    layout from a string argument."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


__all__ = ["FAMILIES", "AttentionCall", "ModelFamily", "UnsupportedModel", "family_named", "family_of"]
