"""The SLA knobs, defined once: choice lists, defaults, the keep-count rule and their validation.

Plain Python (no torch, no Triton), so every layer imports it: ``nodes/`` for widgets, ``sla/`` for the math and
the settings record, ``kernels/`` for what its launchers accept. Semantics in ``docs/KERNEL_NOTES.md`` and the
README's "What it computes" (thu-ml/SLA ``main``, what TurboWan checkpoints were trained and served with).
"""
from __future__ import annotations

import math

# Feature maps phi of the linear branch, in the order of the kernels' integer codes (FEATURE_MAPS.index(name)).
FEATURE_MAPS = ("softmax", "elu", "relu")
BACKENDS = ("auto", "triton", "torch")
# 'auto': fp16 inputs compute in fp16, everything else in bf16 (upstream's rule).
COMPUTE_DTYPES = ("auto", "bf16", "fp16", "fp32")
BLOCK_Q_CHOICES = (128, 64)
BLOCK_K_CHOICES = (64,)
# Head sizes SLA takes at all (powers of two, 16-256), and those the Triton kernels take (every Wan model has
# 128); other supported sizes run the PyTorch path, unsupported ones stay dense.
HEAD_DIMS = (16, 32, 64, 128, 256)
KERNEL_HEAD_DIMS = (64, 128)

# The linear branch's denominator: phi(q) . sum phi(K) + LINEAR_EPS.
LINEAR_EPS = 1e-5

DEFAULT_KEEP_RATIO = 0.10
DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 64
DEFAULT_FEATURE_MAP = "softmax"
DEFAULT_MIN_TOKENS = 2048
# What TurboDiffusion serves its checkpoints with (also written as metadata by the converter).
CHECKPOINT_DEFAULTS = {"keep_ratio": DEFAULT_KEEP_RATIO, "block_q": DEFAULT_BLOCK_Q, "block_k": DEFAULT_BLOCK_K,
                       "feature_map": DEFAULT_FEATURE_MAP}


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError naming ``name``, what was found and the allowed values when ``value`` is not one."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_keep_ratio(keep_ratio) -> float:
    """``keep_ratio`` as a float in (0, 1]; ValueError naming the value otherwise."""
    try:
        r = float(keep_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"keep_ratio must be a number in (0, 1], got {keep_ratio!r}") from None
    if not (0.0 < r <= 1.0):
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    return r


def head_dim_supported(d: int) -> bool:
    """True when SLA (on any backend) takes attention heads of size ``d``."""
    return d in HEAD_DIMS


def num_blocks(length: int, block: int) -> int:
    """Number of blocks of ``block`` tokens covering ``length`` tokens (the last one may be partial)."""
    return (length + block - 1) // block


def keep_count(n_kblocks: int, keep_ratio: float) -> int:
    """Key blocks kept per query-block row: ``min(Nk, floor(keep_ratio * Nk))``, at least one.

    Upstream returns NaN rows when the product rounds to zero; we keep one block instead. The small epsilon stops
    0.3 * 10 = 2.9999999999999996 from flooring to 2.
    """
    r = check_keep_ratio(keep_ratio)
    return max(1, min(n_kblocks, int(math.floor(r * n_kblocks + 1e-9))))


def prefix_blocks(prefix_tokens: int, block_k: int, n_kblocks: int) -> int:
    """Key blocks covering the first ``prefix_tokens`` tokens (the exact prefix; a block the prefix ends inside
    counts whole), at most ``n_kblocks``."""
    return max(0, min(n_kblocks, num_blocks(int(prefix_tokens), block_k)))


def lut_width(n_kblocks: int, keep: int, n_prefix: int = 0) -> int:
    """Key blocks per query-block row of the LUT: the ``n_prefix`` prefix blocks every query attends plus the
    ``keep`` top-scoring blocks among the others, at most ``n_kblocks``."""
    return min(n_kblocks, keep + n_prefix)


def format_blocks(blocks) -> str:
    """Compact text of a block set: {0, 1, 2, 5} -> '0-2, 5' (inverse of ``settings.parse_dense_blocks``)."""
    items = sorted(blocks)
    parts, i = [], 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(parts)
