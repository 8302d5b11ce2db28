"""What a checkpoint is: ``CheckpointInfo`` (family, layout, shape facts, SLA blocks) and Wan's fixed sizes.

Filled in by ``plan.plan_checkpoint`` (with ``shapes.describe_base``) and returned by every loader.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List

TILE = 128  # int8 checkpoints: one fp32 scale per TILE x TILE tile
WAN_HEAD_DIM = 128  # ComfyUI builds every Wan with num_heads = dim // 128

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

