"""What a checkpoint is: ``CheckpointInfo`` (family, layout, shape facts, SLA blocks), Wan's fixed sizes, and the
one mapping of the SLA settings a checkpoint records to the pack's setting names (``SETTINGS``).

Filled in by ``plan.plan_checkpoint`` (with ``shapes.describe_base``) and returned by every loader.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Mapping

from ..spec import CHECKPOINT_DEFAULTS

log = logging.getLogger(__name__)

TILE = 128  # int8 checkpoints: one fp32 scale per TILE x TILE tile
WAN_HEAD_DIM = 128  # ComfyUI builds every Wan with num_heads = dim // 128
METADATA_PREFIX = "sla."  # safetensors metadata keys written by the converter

# The SLA settings a checkpoint may record: (pack name, type, name in SimpleTuner's sla_attention.pt, which keeps
# thu-ml SLA's own argument names). The converter writes them as METADATA_PREFIX + pack name.
SETTINGS = (("keep_ratio", float, "topk"), ("block_q", int, "blkq"), ("block_k", int, "blkk"),
            ("feature_map", str, "feature_map"))


def _recorded_key(naming: str, pack: str, simpletuner: str) -> str:
    """The key a setting is recorded under: by its pack name, in the converter's metadata, or by SimpleTuner."""
    return {"pack": pack, "metadata": METADATA_PREFIX + pack, "simpletuner": simpletuner}[naming]


def read_settings(recorded: Mapping[str, object], naming: str = "pack", where: str = "") -> Dict[str, object]:
    """The SLA settings present in ``recorded`` (keys spelled as ``naming``: "pack", "metadata" or "simpletuner"
    says), under pack names and types.

    A value of the wrong type (e.g. ``topk = "high"``) is left out with a warning naming ``where``; absent settings
    stay absent (``with_defaults`` fills them).
    """
    out: Dict[str, object] = {}
    for pack, kind, simpletuner in SETTINGS:
        key = _recorded_key(naming, pack, simpletuner)
        if key not in recorded:
            continue
        try:
            out[pack] = kind(recorded[key])
        except (TypeError, ValueError):
            log.warning("SLA: %s: ignoring the recorded setting %s=%r (expected %s)", where or "checkpoint", key,
                        recorded[key], kind.__name__)
    return out


def with_defaults(settings: Mapping[str, object]) -> Dict[str, object]:
    """``settings`` over TurboDiffusion's serving defaults (keep 0.10, blocks 128x64, softmax): every pack name."""
    return {**CHECKPOINT_DEFAULTS, **settings}


def settings_metadata(settings: Mapping[str, object]) -> Dict[str, str]:
    """What the converter records: ``{"sla.keep_ratio": "0.1", ...}``, one string per setting (defaults where
    ``settings`` has none), read back by ``read_settings(meta, "metadata")``."""
    full = with_defaults(read_settings(settings))
    return {_recorded_key("metadata", pack, st): str(full[pack]) for pack, _, st in SETTINGS}

@dataclasses.dataclass
class CheckpointInfo:
    """What a checkpoint is. ``sla_blocks``: block indices that carry proj_l weights."""

    family: str = "unknown"
    layout: str = "unknown"
    naming: str = "wan"  # base-weight names in the file: "wan", "diffusers" or "fastvideo"
    container: str = ""  # "safetensors" or "pth"
    quantized: bool = False
    num_blocks: int = 0
    sla_blocks: List[int] = dataclasses.field(default_factory=list)
    head_dim: int = WAN_HEAD_DIM
    dim: int = 0
    num_heads: int = 0
    in_dim: int = 0
    out_dim: int = 0
    ffn_dim: int = 0
    model_type: str = "t2v"
    prefixes: List[str] = dataclasses.field(default_factory=list)
    proj_l_shared: bool = False
    sla_settings: Dict[str, object] = dataclasses.field(default_factory=dict)
    source_layout: str = ""  # for files written by sla.convert: the layout they were converted from
    weight_dtype: str = ""

    @property
    def missing_sla_blocks(self) -> List[int]:
        have = set(self.sla_blocks)
        return [i for i in range(self.num_blocks) if i not in have]

    def summary(self) -> str:
        """One line for the log and the node output."""
        if self.proj_l_shared:
            sla = "SLA weights: one proj_l shared by all blocks"
        elif self.num_blocks:
            sla = f"SLA weights on {len(self.sla_blocks)}/{self.num_blocks} blocks"
        else:
            sla = f"SLA weights for {len(self.sla_blocks)} blocks"
        layout = self.layout + (f" (converted from {self.source_layout})" if self.source_layout else "")
        parts = [self.family if self.num_blocks else "SLA weights only", sla, f"layout {layout}",
                 f".{self.container}" if self.container else "",
                 "int8 tiles dequantized" + (f" to {self.weight_dtype}" if self.weight_dtype else "")
                 if self.quantized else "not quantized"]
        return " | ".join(p for p in parts if p)


def recorded_settings(info: CheckpointInfo) -> Dict[str, object]:
    """The SLA settings ``info`` says its checkpoint was trained or converted with, as pack setting names and types
    (keep_ratio float, block_q / block_k int, feature_map str); only those recorded, so ``{}`` for a file without
    SLA weights. Ranges and choices are not checked here (``SLASettings`` does)."""
    return read_settings(info.sla_settings or {}, "pack", info.layout)
