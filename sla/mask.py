"""Block-mask prediction of SLA (thu-ml/SLA ``main`` semantics), in plain PyTorch.

Every function takes q, k in the (B, L, H, D) layout that ComfyUI and TurboDiffusion hand over and works on
strided views: nothing here copies the full q or k.
"""
from __future__ import annotations

import torch

from .spec import keep_count, lut_width, num_blocks, prefix_blocks


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of x over each block of ``block`` tokens along dim 1, accumulated in fp32.

    x: (B, L, H, D), any float dtype.  Returns (B, H, ceil(L / block), D) float32; the last, partial block is
    divided by its true token count.
    """
    b, length, h, d = x.shape
    nb = num_blocks(length, block)
    pad = nb * block - length
    xf = x.float()
    if pad:
        xf = torch.nn.functional.pad(xf, (0, 0, 0, 0, 0, pad))
    sums = xf.view(b, nb, block, h, d).sum(dim=2)  # (B, nb, H, D)
    counts = torch.full((nb,), float(block), device=x.device)
    if nb:  # L = 0 has no block at all
        counts[-1] = float(length - (nb - 1) * block)
    return (sums / counts.view(1, nb, 1, 1)).permute(0, 2, 1, 3).contiguous()


def block_scores(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    """Block scores S = mean_q(block) @ mean_k'(block)^T with smooth-k (k' = k - mean over L of k).

    q, k: (B, L, H, D).  Returns (B, H, Nq, Nk) float32.  No 1/sqrt(D) and no softmax: neither changes a
    per-row top-k.
    """
    k_mean = k.float().mean(dim=1, keepdim=True)  # (B, 1, H, D)
    qb = block_means(q, block_q)
    # mean over a block of (k - k_mean) == block mean of k - k_mean; saves materialising k'.
    kb = block_means(k, block_k) - k_mean.permute(0, 2, 1, 3)
    return qb @ kb.transpose(-1, -2)


def block_lut(q: torch.Tensor, k: torch.Tensor, keep_ratio: float, block_q: int = 128,
              block_k: int = 64, prefix: int = 0) -> torch.Tensor:
    """Indices of the kept key blocks for every query block.

    Returns (B, H, Nq, W) int32, each row sorted ascending (sorting changes nothing in the math; it makes key
    reads walk memory forwards). W = :func:`lut_width`: the key blocks covering the first ``prefix`` tokens
    (every query attends them; 0: none) plus the :func:`keep_count` top-scoring blocks among the others.
    """
    scores = block_scores(q, k, block_q, block_k)
    nk = scores.shape[-1]
    n_prefix = prefix_blocks(prefix, block_k, nk)
    width = lut_width(nk, keep_count(nk, keep_ratio), n_prefix)
    if width == nk:
        idx = torch.arange(width, device=q.device).expand(scores.shape)
    else:
        if n_prefix:
            scores[..., :n_prefix] = float("inf")   # taken first; the top-k runs over the rest
        idx = torch.topk(scores, width, dim=-1, sorted=False).indices
        idx = idx.sort(dim=-1).values
    return idx.to(torch.int32).contiguous()


def lut_to_mask(lut: torch.Tensor, n_kblocks: int) -> torch.Tensor:
    """(B, H, Nq, keep) block indices -> (B, H, Nq, Nk) bool block mask."""
    mask = torch.zeros(*lut.shape[:-1], n_kblocks, dtype=torch.bool, device=lut.device)
    mask.scatter_(-1, lut.long(), True)
    return mask
