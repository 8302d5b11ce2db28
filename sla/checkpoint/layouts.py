"""The checkpoint layouts the pack recognises, as one table: which layout a file is, from facts about its keys.

A file is described by three independent axes, each answered by its own table, because published files mix them
(a Diffusers-named file may carry FastVideo's proj_l names; any naming may carry int8 tiles):

- base-weight naming (``keys.NAMINGS``: how its keys are recognised and mapped to Wan's names),
- proj_l naming (``keys.PROJ_L_STYLES``),
- tensor transforms (``outputs.TRANSFORMS``: int8 tiles dequantised, TurboDiffusion's Linear patch embedding
  reshaped to a Conv3d, everything else copied; ComfyUI's scaled-fp8 layers pass uncast), decided tensor by tensor.

``LAYOUTS`` names the combination: the first row whose ``detect`` accepts the file's ``Facts`` gives
``CheckpointInfo.layout``. To add a layout: add its key names to ``keys`` (a ``NAMINGS`` row and/or a
``PROJ_L_STYLES`` entry) if they are new, then one ``Layout`` row here, placed before any row that would also match.
SimpleTuner's ``sla_attention.pt`` (a pickled payload, not a state dict) is read by ``load.load_proj_l`` alone.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the planner found in a file (no tensor data), the input of every ``Layout.detect``."""

    naming: str  # base-weight naming: a key of keys.NAMINGS
    proj_style: Optional[str]  # key of keys.PROJ_L_STYLES, None without proj_l
    has_base: bool  # holds a Wan base model (head.modulation), not only proj_l
    quantized: bool  # int8 tiles + scales (TurboDiffusion -quant.pth)
    linear_patch: bool  # patch embedding stored as TurboDiffusion's Linear [dim, in_dim*4]
    prefixes: Tuple[str, ...]  # trainer prefixes / wrapper segments removed from the keys
    source_layout: str  # sla.source_layout metadata of files written by the converter ("" otherwise)


@dataclasses.dataclass(frozen=True)
class Layout:
    """One recognised layout: ``detect(facts)`` says whether a file is one; ``label(facts)`` its summary name."""

    name: str
    detect: Callable[[Facts], bool]
    label: Optional[Callable[[Facts], str]] = None  # None: the name itself

    def describe(self, f: Facts) -> str:
        return self.label(f) if self.label is not None else self.name


def _proj_style_layout(style: str) -> Layout:
    """Layouts named after their proj_l keys; the base naming is added when it is another one."""
    return Layout(style, lambda f: f.proj_style == style,
                  lambda f: style + (f" ({f.naming} names)" if f.has_base and f.naming != style else ""))


def _naming_layout(naming: str) -> Layout:
    """Files known only by their base-weight names (no proj_l of their own naming)."""
    return Layout(naming + " names", lambda f: f.naming == naming)


# First match wins.
LAYOUTS: Tuple[Layout, ...] = (
    _proj_style_layout("fastvideo"),
    _proj_style_layout("sglang"),
    _proj_style_layout("diffusers"),
    _naming_layout("diffusers"),
    _naming_layout("fastvideo"),
    Layout("turbodiffusion-int8", lambda f: f.quantized),
    # TurboDiffusion's own trainer writes the Linear patch embedding and the net. / activation-checkpoint prefixes.
    Layout("turbodiffusion", lambda f: f.has_base and (
        f.linear_patch or "net." in f.prefixes or "_checkpoint_wrapped_module." in f.prefixes)),
    Layout("comfyui-sla", lambda f: bool(f.source_layout)),
    Layout("comfyui", lambda f: f.has_base),
    # proj_l-only files with TurboDiffusion's proj_l names
    Layout("turbodiffusion", lambda f: True),
)


def detect_layout(facts: Facts, layouts: Tuple[Layout, ...] = LAYOUTS) -> str:
    """``CheckpointInfo.layout`` of a file: the label of the first row of ``layouts`` that accepts ``facts``."""
    for layout in layouts:
        if layout.detect(facts):
            return layout.describe(facts)
    raise AssertionError("the last LAYOUTS row accepts every file")

