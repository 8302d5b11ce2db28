"""Per-model SLA configuration: a small, immutable, deep-copyable record (no tensors, no ComfyUI import).

An :class:`SLASettings` is what the ``ApplySLA`` node's widgets describe. It lives in the closure of the attention
override installed on a ``ModelPatcher`` clone, and a plain-dict copy of it is kept in
``model_options["transformer_options"]["sla"]`` for introspection; the proj_l tensors themselves live in the
module-level registry of :mod:`sla.patch`, referenced here only by ``weights_id``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import FrozenSet, Optional

from .functional import BACKENDS
from .reference import FEATURE_MAPS, VARIANTS
from .spec import format_blocks  # defined in spec (checkpoint code needs it without the runtime); re-exported here

BLOCK_Q_CHOICES = (128, 64)
BLOCK_K_CHOICES = (64,)
DEFAULT_KEEP_RATIO = 0.10
DEFAULT_MIN_TOKENS = 2048
# Largest block index accepted in ``dense_blocks``: Wan has 30 or 40 blocks; this only catches typos like "1000".
MAX_BLOCK_INDEX = 255

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_dense_blocks(text: Optional[str]) -> FrozenSet[int]:
    """Parse a block list such as ``"0, 1, 28-29"`` (commas or spaces, inclusive ranges) into a frozenset.

    Empty / None -> empty set. Raises ``ValueError`` naming the first bad token (e.g. ``"x"``, ``"5-2"``,
    ``"-3"``, ``"300"``).
    """
    if text is None:
        return frozenset()
    if not isinstance(text, str):
        raise ValueError(f"dense_blocks must be a string like '0, 1, 28-29', got {type(text).__name__}")
    out = set()
    # "28 - 29" is one range: glue the dash to its neighbours before splitting on commas/spaces.
    for token in re.split(r"[,;\s]+", re.sub(r"(?<=\d)\s*-\s*", "-", text.strip())):
        if not token:
            continue
        m = _RANGE.match(token)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"dense_blocks: bad token {token!r}: range start {lo} is above its end {hi} "
                                 f"(expected e.g. '28-29')")
        elif token.isdigit():
            lo = hi = int(token)
        else:
            raise ValueError(f"dense_blocks: bad token {token!r}: expected block indices and inclusive ranges "
                             f"separated by commas, e.g. '0, 1, 28-29'")
        if hi > MAX_BLOCK_INDEX:
            raise ValueError(f"dense_blocks: bad token {token!r}: block index {hi} is above {MAX_BLOCK_INDEX}")
        out.update(range(lo, hi + 1))
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class SLASettings:
    """What SLA does on one model.

    keep_ratio: share of key blocks each query block attends exactly (sparsity = 1 - keep_ratio), (0, 1].
    start_percent / end_percent: sampling progress window in which SLA runs (converted to sigma thresholds by
        the model's own sampling schedule; outside it self-attention runs dense).
    dense_blocks: block indices that always run dense.
    block_q / block_k: query / key block sizes of the block mask (tokens).
    feature_map: phi of the linear branch ('softmax', 'elu', 'relu').
    min_tokens: self-attention calls with fewer tokens run dense.
    backend: 'auto' (Triton on CUDA when available, else PyTorch), 'triton', 'torch'.
    enabled: False routes every call to the previous/dense path (A/B comparisons).
    weights_id: key of this model's proj_l tensors in :mod:`sla.patch`'s registry (None: training-free).
    variant: 'main' (TurboWan semantics) or 'sla1'.
    """

    keep_ratio: float = DEFAULT_KEEP_RATIO
    start_percent: float = 0.0
    end_percent: float = 1.0
    dense_blocks: FrozenSet[int] = frozenset()
    block_q: int = 128
    block_k: int = 64
    feature_map: str = "softmax"
    min_tokens: int = DEFAULT_MIN_TOKENS
    backend: str = "auto"
    enabled: bool = True
    weights_id: Optional[int] = None
    variant: str = "main"

    def __post_init__(self):
        # Normalise types first (widgets deliver strings for combos, lists for sets).
        if isinstance(self.dense_blocks, str):
            object.__setattr__(self, "dense_blocks", parse_dense_blocks(self.dense_blocks))
        else:
            object.__setattr__(self, "dense_blocks", frozenset(int(b) for b in self.dense_blocks))
        for name in ("block_q", "block_k", "min_tokens"):
            try:
                object.__setattr__(self, name, int(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}") from None
        object.__setattr__(self, "keep_ratio", float(self.keep_ratio))
        object.__setattr__(self, "start_percent", float(self.start_percent))
        object.__setattr__(self, "end_percent", float(self.end_percent))
        object.__setattr__(self, "enabled", bool(self.enabled))

        if not (0.0 < self.keep_ratio <= 1.0):
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        for name in ("start_percent", "end_percent"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.start_percent > self.end_percent:
            raise ValueError(f"start_percent ({self.start_percent}) must not be above end_percent "
                             f"({self.end_percent})")
        if self.block_q not in BLOCK_Q_CHOICES:
            raise ValueError(f"block_q must be one of {BLOCK_Q_CHOICES}, got {self.block_q}")
        if self.block_k not in BLOCK_K_CHOICES:
            raise ValueError(f"block_k must be one of {BLOCK_K_CHOICES}, got {self.block_k}")
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {self.feature_map!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")

    def replace(self, **changes) -> "SLASettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain, JSON-friendly dict (what is stored in ``transformer_options["sla"]``)."""
        d = dataclasses.asdict(self)
        d["dense_blocks"] = sorted(self.dense_blocks)
        return d

    def describe(self) -> str:
        """One-line human summary for logs."""
        dense = format_blocks(self.dense_blocks) or "none"
        return (f"keep {self.keep_ratio:.2f} (sparsity {1 - self.keep_ratio:.0%}), window "
                f"{self.start_percent:.2f}-{self.end_percent:.2f}, blocks {self.block_q}x{self.block_k}, "
                f"phi {self.feature_map}, dense blocks {dense}, min_tokens {self.min_tokens}, "
                f"backend {self.backend}, {'enabled' if self.enabled else 'DISABLED'}")
