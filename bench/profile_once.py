"""Run the SLA op a few times at shape A (H=12, L=32760, bf16, keep 5%) for a profiler to attach to:

    ncu --kernel-name regex:_sla_fwd|_prepass|_topk --launch-skip 3 --launch-count 3 python3 bench/profile_once.py
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402

kernels, launch = ba.load_pack()
keep = float(os.environ.get("KEEP", "0.05"))
q, k, v = ba.make_inputs(1, 32760, 12, 128, seed=1)
gen = torch.Generator(device="cuda").manual_seed(2)
w = torch.randn(128, 128, device="cuda", generator=gen) * 0.05
for _ in range(int(os.environ.get("REPS", "3"))):
    kernels.sla_forward(q, k, v, keep, w, None, "softmax", 128, 64)
torch.cuda.synchronize()
