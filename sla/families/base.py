"""What a model family tells the SLA runtime: :class:`ModelFamily` (subclassed once per family) and
:class:`AttentionCall`, one self-attention call read from ComfyUI's ``optimized_attention`` arguments.

Pure PyTorch; ComfyUI objects are duck-typed. The methods that read a call (:meth:`ModelFamily.read_call`) run in
traced code under ``torch.compile``: they may look only at shapes, dtypes and the call's constant arguments.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping, Optional, Tuple, Union

import torch

from ..spec import (DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q, DEFAULT_FEATURE_MAP, DEFAULT_KEEP_RATIO,
                    DEFAULT_MIN_TOKENS)


class UnsupportedModel(ValueError):
    """The MODEL is not of a family SLA serves (the message names the supported families)."""


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One self-attention call, as SLA sees it.

    q, k, v: the tensors ComfyUI passed, in the family's layout; heads: the head count; block: the block index (-1
    when ComfyUI did not say); length: tokens per sequence.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    heads: int
    block: int


# (start, stop, kind) spans of a packed sequence, e.g. ((0, 256, "text"), (256, 670, "audio"), (670, 9742, "video")).
Segments = Tuple[Tuple[int, int, str], ...]


def exact_prefix(segments: Optional[Segments], length: int) -> Optional[int]:
    """Tokens before the target video of a packed sequence of ``length`` tokens (what an exact prefix covers):
    the start of its last segment when that is the video and the segments end at ``length``, else None."""
    if not segments or segments[-1][1] != length or segments[-1][2] != "video":
        return None
    return int(segments[-1][0])


def describe_segments(segments: Segments) -> str:
    """'text 0-255 | audio 256-669 | video 670-9741' (inclusive token ranges)."""
    return " | ".join(f"{kind} {a}-{b - 1}" for a, b, kind in segments)


# Reasons a call is not the family's self-attention (the run report's "left to dense/previous attention").
R_CROSS = "cross-attention"
R_MASK = "mask"
R_LAYOUT = "layout"


def arg(args, kwargs, index: int, name: str, default=None):
    """Argument ``name`` of ``optimized_attention(q, k, v, heads, mask=None, ...)``, positional or keyword."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class ModelFamily:
    """One family of diffusion models. Subclasses set the class attributes and override what differs.

    name / description: short name for logs, and the phrase used in errors ("Wan video models (WanModel ...)").
    model_classes: class names (anywhere in the diffusion model's MRO) that belong to the family.
    defaults: the settings a loader applies when a checkpoint records none (keep_ratio, block_q, block_k,
    feature_map, min_tokens); by default TurboDiffusion's serving defaults (sla.spec).
    head_dims: attention head sizes its models have.
    model_keys: the ``transformer_options`` entries the model's forward writes before its attention calls
    (block_index, ...): a compiled call handed to another override gets them as the tracer saw them.
    block_loop: the model method holding the block loop (where ComfyUI writes ``block_index``, if it does).
    linear_branch: whether the family's SLA fine-tunes carry proj_l (False: sparse-only, as trained).
    layout_key: the ``transformer_options`` entry where the model writes its packed-sequence layout for attention
    patches, if it does (read by :meth:`segments` / :meth:`model_written`).
    """

    name: str = ""
    description: str = ""
    model_classes: Tuple[str, ...] = ()
    defaults: Mapping[str, object] = dict(keep_ratio=DEFAULT_KEEP_RATIO, block_q=DEFAULT_BLOCK_Q,
                                          block_k=DEFAULT_BLOCK_K, feature_map=DEFAULT_FEATURE_MAP,
                                          min_tokens=DEFAULT_MIN_TOKENS)
    head_dims: Tuple[int, ...] = ()
    model_keys: Tuple[str, ...] = ("block_index", "total_blocks", "block_type")
    block_loop: str = "forward_orig"
    linear_branch: bool = True
    layout_key: Optional[str] = None

    # -- the model --------------------------------------------------------------------------------------------
    def recognise(self, dm) -> bool:
        """Whether the diffusion model ``dm`` belongs to this family."""
        if dm is None or not any(c.__name__ in self.model_classes for c in type(dm).__mro__):
            return False
        return self.num_blocks(dm) > 0

    def blocks(self, dm):
        """The transformer blocks whose self-attention SLA serves, in block-index order."""
        return getattr(dm, "blocks", None) or ()

    def num_blocks(self, dm) -> int:
        return len(self.blocks(dm))

    def head_dim(self, dm) -> Optional[int]:
        """Attention head size of ``dm`` (None when it cannot be read)."""
        return None

    def sets_block_index(self, dm) -> bool:
        """Whether ComfyUI's block loop of ``type(dm)`` writes ``transformer_options["block_index"]`` itself;
        where it does not, the patch installs a per-block ``patches_replace`` patch that does."""
        return _source_mentions(type(dm), self.block_loop, "block_index")

    # -- one attention call (traced code) -----------------------------------------------------------------------
    def read_call(self, args, kwargs) -> Union[str, AttentionCall]:
        """The call as an :class:`AttentionCall` when it is this family's self-attention, else the reason it is
        not (R_CROSS, R_MASK, R_LAYOUT)."""
        q, k, v = arg(args, kwargs, 0, "q"), arg(args, kwargs, 1, "k"), arg(args, kwargs, 2, "v")
        heads = arg(args, kwargs, 3, "heads")
        # (still-wrapped AttentionTensorContainers, from a caller that did not unwrap them, are not ours to consume)
        if not all(torch.is_tensor(t) for t in (q, k, v)) or not isinstance(heads, int) or heads <= 0:
            return R_LAYOUT
        if kwargs.get("enable_gqa") or kwargs.get("scale") is not None:
            return R_LAYOUT  # grouped heads or a custom softmax scale: not what SLA computes
        if not self.own_layout(q, heads, kwargs):
            return R_LAYOUT
        if k.shape != q.shape or v.shape != q.shape:
            return R_CROSS
        if arg(args, kwargs, 4, "mask") is not None:
            return R_MASK
        to = kwargs.get("transformer_options")
        block = to.get("block_index") if isinstance(to, dict) else None
        return AttentionCall(q, k, v, heads, -1 if block is None else int(block))

    def own_layout(self, q: torch.Tensor, heads: int, kwargs) -> bool:
        """Whether q (with ``heads`` and the call's reshape kwargs) is in the layout of the family's self-attention."""
        raise NotImplementedError

    def to_heads(self, call: AttentionCall) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, L, H, D) views of the call's tensors (no copy)."""
        raise NotImplementedError

    def from_heads(self, out: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """The (B, L, H, D) output in the layout ComfyUI expects back from this call."""
        raise NotImplementedError

    # -- one model call (outside traced code) ----------------------------------------------------------------------
    def segments(self, options: Optional[dict], model_kwargs: Mapping) -> Optional[Segments]:
        """The packed sequence's segments ((start, stop, kind), ascending, contiguous) of a model call, from its
        ``transformer_options`` and the extra model kwargs ComfyUI passes (conditioning), or None: the family packs
        no sequence, or the call does not say. Default: None."""
        return None

    def model_written(self, options: Optional[dict], model_kwargs: Mapping) -> dict:
        """Objects the model's forward writes into ``transformer_options`` for attention patches before its
        attention calls (not constants, so a compiled call site cannot carry them), as the model call's
        ``transformer_options`` and extra kwargs already hold them: a compiled call handed to another override gets
        them back. Default: none."""
        return {}

    def output_like(self, q: torch.Tensor) -> torch.Tensor:
        """An empty contiguous tensor of the shape and dtype ComfyUI expects back from a self-attention call whose
        q is ``q`` (the fake of the custom op under torch.compile: it may read shapes only). Default: q's."""
        return torch.empty_like(q, memory_format=torch.contiguous_format)


_source_cache: dict = {}


def _source_mentions(cls, method: str, key: str) -> bool:
    """Whether ``cls.method``'s source writes ``transformer_options[key]`` (read once per class; False when the
    source cannot be read: installing the block-index patch is harmless)."""
    if (cls, method, key) not in _source_cache:
        try:
            src = inspect.getsource(getattr(cls, method))
            _source_cache[(cls, method, key)] = f'"{key}"' in src or f"'{key}'" in src
        except (AttributeError, OSError, TypeError):
            _source_cache[(cls, method, key)] = False
    return _source_cache[(cls, method, key)]
