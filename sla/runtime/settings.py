"""Per-model SLA configuration: a small, immutable, deep-copyable record (no tensors, no ComfyUI import).

An :class:`SLASettings` is what the ``ApplySLA`` node's widgets describe. It lives in the model's patch
(:mod:`.sla_patch`), and a plain-dict copy of it is kept in ``model_options["sla"]`` for
introspection; the proj_l tensors are the patch's too. Choices and defaults come from :mod:`sla.spec`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import FrozenSet, Optional

from .schedule import KeepSchedule, parse_keep_schedule
from ..spec import (BACKENDS, BLOCK_K_CHOICES, BLOCK_Q_CHOICES, DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q,
                    DEFAULT_FEATURE_MAP, DEFAULT_KEEP_RATIO, DEFAULT_MIN_TOKENS, FEATURE_MAPS, check_choice,
                    check_keep_ratio, format_blocks)

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
    keep_schedule: keep ratio per sampling step ('0.3, 0.15, 0.1' or '0.3 -> 0.1', :mod:`.schedule`); empty:
        keep_ratio on every step.
    exact_prefix: every query block also attends, exactly, every key block of the packed sequence's prefix
        segments (the rows before the target video: text, conditioning, references, audio) for families whose
        calls carry such a layout (MiniMax H3); the top-k picks its ``keep`` blocks among the others. Off:
        the training router as it is (no protected prefix).
    """

    keep_ratio: float = DEFAULT_KEEP_RATIO
    start_percent: float = 0.0
    end_percent: float = 1.0
    dense_blocks: FrozenSet[int] = frozenset()
    block_q: int = DEFAULT_BLOCK_Q
    block_k: int = DEFAULT_BLOCK_K
    feature_map: str = DEFAULT_FEATURE_MAP
    min_tokens: int = DEFAULT_MIN_TOKENS
    backend: str = "auto"
    enabled: bool = True
    keep_schedule: str = ""
    exact_prefix: bool = False

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
        object.__setattr__(self, "keep_ratio", check_keep_ratio(self.keep_ratio))
        object.__setattr__(self, "start_percent", float(self.start_percent))
        object.__setattr__(self, "end_percent", float(self.end_percent))
        object.__setattr__(self, "enabled", bool(self.enabled))
        object.__setattr__(self, "exact_prefix", bool(self.exact_prefix))

        for name in ("start_percent", "end_percent"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.start_percent > self.end_percent:
            raise ValueError(f"start_percent ({self.start_percent}) must not be above end_percent "
                             f"({self.end_percent})")
        check_choice("block_q", self.block_q, BLOCK_Q_CHOICES)
        check_choice("block_k", self.block_k, BLOCK_K_CHOICES)
        check_choice("feature_map", self.feature_map, FEATURE_MAPS)
        check_choice("backend", self.backend, BACKENDS)
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")
        sched = parse_keep_schedule(self.keep_schedule)  # raises naming the bad token
        object.__setattr__(self, "keep_schedule", sched.describe() if sched is not None else "")

    @property
    def full_window(self) -> bool:
        """True when start/end_percent cover the whole run (no sigma window to check)."""
        return self.start_percent <= 0.0 and self.end_percent >= 1.0

    @property
    def schedule(self) -> Optional[KeepSchedule]:
        """The parsed keep_schedule, or None (keep_ratio on every step)."""
        return parse_keep_schedule(self.keep_schedule)

    def replace(self, **changes) -> "SLASettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain, JSON-friendly dict (what is stored in ``model_options["sla"]``)."""
        d = dataclasses.asdict(self)
        d["dense_blocks"] = sorted(self.dense_blocks)
        return d

    def describe(self) -> str:
        """One-line human summary for logs."""
        dense = format_blocks(self.dense_blocks) or "none"
        keep = (f"keep schedule {self.keep_schedule}" if self.keep_schedule else
                f"keep {self.keep_ratio:.2f} (sparsity {1 - self.keep_ratio:.0%})")
        return (f"{keep}, window "
                f"{self.start_percent:.2f}-{self.end_percent:.2f}, blocks {self.block_q}x{self.block_k}, "
                f"phi {self.feature_map}, dense blocks {dense}, min_tokens {self.min_tokens}, "
                f"backend {self.backend}{', exact prefix' if self.exact_prefix else ''}, "
                f"{'enabled' if self.enabled else 'DISABLED'}")
