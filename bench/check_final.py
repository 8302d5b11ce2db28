"""Quick check of the current defaults: whole op and its parts at both benchmark shapes (keep 5/10%).

    python3 bench/check_final.py
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402

kernels, launch = ba.load_pack()
print(json.dumps(dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=ba.triton.__version__,
                      prepass=launch.PREPASS_DEFAULT, main=launch.MAIN_TMA_DEFAULT, topk=launch.TOPK_DEFAULT)))
for (b, length, h) in ((1, 32760, 12), (1, 75600, 40)):
    q, k, v = ba.make_inputs(b, length, h, 128, seed=3)
    w = torch.randn(128, 128, device="cuda") * 0.05
    nk = (length + 63) // 64
    pre = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=100)
    qm, km, _, _, kt = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
    for keep in (0.05, 0.10):
        kb = launch._keep_count(nk, keep)
        mask = ba.bench_ms(lambda: launch.lut_from_means(qm, km, kt, length, kb), rep=100)
        whole = ba.bench_ms(lambda: kernels.sla_forward(q, k, v, keep, w, None, "softmax", 128, 64), rep=200)
        print(json.dumps(dict(H=h, L=length, keep=keep, whole_ms=round(whole, 4), prepass_ms=round(pre, 4),
                              mask_ms=round(mask, 4))), flush=True)
    del q, k, v
    torch.cuda.empty_cache()
