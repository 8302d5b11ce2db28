"""proj_l weights of one patched model: :class:`ProjLWeights`, held by the model's patch (no process registry).

A checkpoint's proj_l is one Linear(D, D) per attention layer, applied on the head dimension. The tensors are kept on
the CPU in fp32; the copies the attention calls need are made once per (device, dtype). The object lives in the
closure of the model's attention override (``ModelPatcher.clone()`` deep-copies ``model_options`` but not
functions), so every clone of the model shares it and it is freed with the last model that uses it.
"""
from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple

import torch

ProjL = Dict[int, Tuple[torch.Tensor, Optional[torch.Tensor]]]


class ProjLWeights:
    """proj_l per block: {block: (W [D, D], b [D] or None)}, fp32 on the CPU, with per-device copies.

    ``source``: what the weights were read from (a file name), for logs. Raises ValueError for an empty dict,
    non-square weights, mixed sizes or a bias of the wrong shape.
    """

    def __init__(self, proj_l: ProjL, source: Optional[str] = None):
        if not isinstance(proj_l, dict) or not proj_l:
            raise ValueError("proj_l needs a non-empty {block: (weight, bias)} dict")
        clean: ProjL = {}
        head_dim = None
        for block, (w, b) in proj_l.items():
            if w.dim() != 2 or w.shape[0] != w.shape[1]:
                raise ValueError(f"proj_l of block {block}: weight must be square (D, D), got {tuple(w.shape)}")
            head_dim = w.shape[0] if head_dim is None else head_dim
            if w.shape[0] != head_dim:
                raise ValueError(f"proj_l of block {block}: weight {tuple(w.shape)} differs from the other blocks' "
                                 f"({head_dim}, {head_dim})")
            if b is not None and tuple(b.shape) != (head_dim,):
                raise ValueError(f"proj_l of block {block}: bias must be ({head_dim},), got {tuple(b.shape)}")
            clean[int(block)] = (w.detach().to("cpu", torch.float32),
                                 None if b is None else b.detach().to("cpu", torch.float32))
        self.proj_l = clean
        self.source = source
        self.head_dim: int = head_dim
        # A zero-initialised, never fine-tuned proj_l adds exactly nothing: such blocks skip the linear branch.
        self.zero_blocks = frozenset(i for i, (w, b) in clean.items() if not w.any() and (b is None or not b.any()))
        self._copies: Dict[Tuple[str, torch.dtype], ProjL] = {}
        self._lock = threading.Lock()

    @property
    def blocks(self) -> Tuple[int, ...]:
        """Sorted block indices that have proj_l."""
        return tuple(sorted(self.proj_l))

    def is_zero(self, block: int) -> bool:
        """True when ``block``'s proj_l is all zeros (weight and bias): the linear branch contributes nothing."""
        return block in self.zero_blocks

    def get(self, block: int, device, dtype: torch.dtype = torch.float32):
        """(W, b) of ``block`` on ``device`` in ``dtype`` (all blocks copied once per device/dtype), or None."""
        if block not in self.proj_l:
            return None
        key = (str(torch.device(device)), dtype)
        copies = self._copies.get(key)
        if copies is None:
            with self._lock:
                copies = self._copies.get(key)
                if copies is None:
                    copies = {i: (w.to(device, dtype), None if b is None else b.to(device, dtype))
                              for i, (w, b) in self.proj_l.items()}
                    self._copies[key] = copies
        return copies[block]

    def describe(self) -> str:
        from ..spec import format_blocks
        return f"proj_l on blocks {format_blocks(self.blocks)}"
