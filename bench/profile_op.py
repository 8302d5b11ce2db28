"""GPU time of every kernel in one whole SLA op (torch.profiler), at the benchmark shapes:

    python3 bench/profile_op.py [--keep 0.05 0.10]

Prints, per shape and keep ratio, each CUDA kernel the op launches (pre-pass, the mask's elementwise / matmul /
top-k, the proj_l fold, the main kernel) with its mean GPU time over 20 ops, and the op's wall time per call
with the GPU kept busy (what the gaps between launches add).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as ba  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=float, nargs="*", default=[0.05, 0.10])
    args = ap.parse_args()
    kernels, _ = ba.load_pack()
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {ba.triton.__version__}")
    for b, length, h in ((1, 32760, 12), (1, 75600, 40)):
        q, k, v = ba.make_inputs(b, length, h, 128, seed=1)
        gen = torch.Generator(device="cuda").manual_seed(2)
        w = torch.randn(128, 128, device="cuda", generator=gen) * 0.05
        bias = torch.randn(128, device="cuda", generator=gen) * 0.05
        for keep in args.keep:
            op = lambda: kernels.sla_forward(q, k, v, ba.keep_blocks(length, keep), w, bias, "softmax", 128, 64)  # noqa: E731
            for _ in range(3):
                op()
            torch.cuda.synchronize()
            n = 20
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(n):
                    op()
                torch.cuda.synchronize()
            rows = [(e.key, e.device_time_total / n / 1e3, e.count // n) for e in prof.key_averages()
                    if e.device_time_total > 0]
            rows.sort(key=lambda r: -r[1])
            total = sum(r[1] for r in rows)
            print(f"H={h} L={length} keep {keep}: kernels {total:.3f} ms per op, whole op {ba.bench_ms(op):.3f} ms")
            for name, ms, cnt in rows:
                print(f"    {ms:8.4f} ms  x{cnt}  {name[:110]}")
        q = k = v = None  # free before the next shape
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
