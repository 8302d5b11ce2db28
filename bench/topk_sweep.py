"""Top-k kernel launch configurations at the benchmark shapes' score matrices (H100 notes in KERNEL_NOTES.md):

    python3 bench/topk_sweep.py

Times launch.lut_from_means (centring, fp32 score matmul, top-k) from real pre-pass means, for rows per program
x num_warps, and checks each LUT equals the default's.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402


def main():
    _, launch = ba.load_pack()
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {ba.triton.__version__}")
    for b, length, h, keep in ((1, 32760, 12, 0.05), (1, 75600, 40, 0.05), (1, 75600, 40, 0.10)):
        q, k, v = ba.make_inputs(b, length, h, 128, seed=1)
        qm, km, _, _, kt = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
        nk = km.shape[2]
        kb = launch._keep_count(nk, keep)
        ref = launch.lut_from_means(qm, km, kt, length, kb)
        for rows, warps in ((1, 2), (1, 4), (1, 8), (1, 16), (2, 2), (2, 4), (2, 8)):
            launch.TOPK_OVERRIDE = dict(rows=rows, num_warps=warps)
            lut = launch.lut_from_means(qm, km, kt, length, kb)
            same = torch.equal(lut, ref)
            ms = ba.bench_ms(lambda: launch.lut_from_means(qm, km, kt, length, kb), rep=100)
            print(f"H={h} L={length} Nk={nk} keep {kb}: rows/program {rows} warps {warps}: mask step {ms:.3f} ms"
                  f"{'' if same else '  LUT DIFFERS'}", flush=True)
        launch.TOPK_OVERRIDE = None
        q = k = v = None  # free before the next shape
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
