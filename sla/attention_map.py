"""Pictures of what SLA did on one attention call: the block mask over the dense attention, and sparsity over steps.

Plain PyTorch; images are ComfyUI IMAGE tensors: float32 [1, H, W, 3] in [0, 1], on the CPU.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch

from .mask import block_lut, lut_to_mask
from .spec import num_blocks

# Largest side of the block map in cells*pixels before cells shrink to one pixel.
MAP_PIXELS = 768


def block_mask(q: torch.Tensor, k: torch.Tensor, keep_ratio: float, block_q: int, block_k: int,
               prefix: int = 0) -> torch.Tensor:
    """The kept-block mask SLA computes for (B, L, H, D) q, k at ``keep_ratio`` (and an exact ``prefix`` of that
    many tokens): (B, H, Nq, Nk) bool."""
    lut = block_lut(q, k, keep_ratio, block_q, block_k, prefix)
    return lut_to_mask(lut, num_blocks(k.shape[1], block_k))


def dense_block_mass(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int,
                     chunk: int = 1024) -> torch.Tensor:
    """Share of dense softmax attention each query block gives each key block, for one head.

    q, k: (1, L, 1, D), any float dtype. Returns (Nq, Nk) float32 on q's device; every row sums to 1 (the mean
    over the block's queries of their attention rows, summed per key block). Computed ``chunk`` queries at a time
    (never the full L x L matrix).
    """
    qh, kh = q[0, :, 0].float(), k[0, :, 0].float()
    length, d = qh.shape
    nq, nk = num_blocks(length, block_q), num_blocks(length, block_k)
    key_block = torch.arange(length, device=q.device) // block_k
    mass = torch.zeros(nq, nk, device=q.device)
    chunk = max(block_q, chunk - chunk % block_q)
    for start in range(0, length, chunk):
        rows = torch.softmax(qh[start:start + chunk] @ kh.T / math.sqrt(d), dim=-1)  # (c, L)
        per_key = torch.zeros(rows.shape[0], nk, device=q.device).index_add_(1, key_block, rows)
        qb = (torch.arange(start, start + rows.shape[0], device=q.device) // block_q)
        mass.index_add_(0, qb, per_key)
    counts = torch.bincount(torch.arange(length, device=q.device) // block_q, minlength=nq).float()
    return mass / counts[:, None]


def _cell(n_rows: int, n_cols: int, most: int = 16) -> int:
    return max(1, min(most, MAP_PIXELS // max(1, n_rows, n_cols)))


def draw_block_map(mask: torch.Tensor, background: torch.Tensor, segments=None, length: int = 0,
                   block_q: int = 128, block_k: int = 64) -> torch.Tensor:
    """(Nq, Nk) bool mask over (Nq, Nk) background in [0, 1] -> IMAGE [1, Nq*c, Nk*c, 3], c pixels a block.

    Kept blocks are lit amber with red exactly 1.0; dropped blocks have red exactly 0.0 and show the background
    in blue-green, so the mask reads back from the red channel. ``segments`` ((start, stop, kind) of a packed
    sequence of ``length`` tokens, or None): a line at each segment start, on both axes, drawn in the green and
    blue channels only (the red channel still is the mask).
    """
    m = mask.bool().cpu()
    bg = background.float().clamp(0, 1).cpu()
    kept = torch.stack([torch.ones_like(bg), 0.55 + 0.45 * bg, torch.full_like(bg, 0.1)], dim=-1)
    dropped = torch.stack([torch.zeros_like(bg), 0.6 * bg, 0.9 * bg], dim=-1)
    img = torch.where(m[..., None], kept, dropped)
    c = _cell(*m.shape)
    img = img.repeat_interleave(c, dim=0).repeat_interleave(c, dim=1)
    if segments and length:
        for start, _stop, _kind in segments:
            if 0 < start < length:
                row = min(img.shape[0] - 1, (start * c) // block_q)
                col = min(img.shape[1] - 1, (start * c) // block_k)
                img[row, :, 1:] = 1.0
                img[:, col, 1:] = 1.0
    return img[None].contiguous()


def attention_background(mass: torch.Tensor) -> torch.Tensor:
    """Per-row scaled, square-rooted block mass in [0, 1] (visible beside the few dominant blocks)."""
    top = mass.max(dim=-1, keepdim=True).values.clamp_min(1e-12)
    return (mass / top).sqrt()


def draw_sparsity_grid(grid: Dict[Tuple[int, int], float]) -> torch.Tensor:
    """{(step, block): realised keep} -> IMAGE [1, blocks*c, steps*c, 3]: one row per block, one column per step,
    brightness = sparsity (1 - keep; dense calls are black); blue where no call was seen."""
    if not grid:
        return torch.zeros(1, 16, 16, 3)
    steps = sorted({s for s, _b in grid})
    blocks = sorted({b for _s, b in grid})
    img = torch.zeros(len(blocks), len(steps), 3)
    img[..., 2] = 0.25
    for (s, b), keep in grid.items():
        v = 1.0 - float(keep)
        img[blocks.index(b), steps.index(s)] = torch.tensor([v, v, v * 0.6])
    c = _cell(len(blocks), len(steps), most=24)
    return img.repeat_interleave(c, dim=0).repeat_interleave(c, dim=1)[None].contiguous()
