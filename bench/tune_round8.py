"""Eighth tuning round (KERNEL_NOTES.md): the experimental warp-specialised sparse kernel (WS_HOPPER: _linear_kernel
writes the linear branch, then _sla_fwd_ws_kernel, whose key loop Triton 3.6's Hopper warp specialisation turns into
a producer warp and two consumer warpgroups). The path was removed after this round: run from commit 25eada2.

    OUT=dir python3 bench/tune_round8.py [--tests] [--budget S]

Result (H100 80GB HBM3, torch 2.11.0+cu130, Triton 3.6.0, 2026-11-27; bench/results/h100_2026-11-27_round8.jsonl):
the default passed its checks, then the first warp-specialised check never returned (killed after 540 s);
bench/ws_hang_check.py then showed the kernel hangs at every shape, down to B=1, L=256, H=1.

Method as tune_round7.py: each variant checked against the float64 reference (fresh random bf16/fp16 inputs,
NaN-poisoned output, ragged tail, B=2), timed as the whole op with the LUT fixed (5/10/50%), twice, interleaved;
the fastest correct one (if > 1.5% ahead) becomes the default in this process; whole op old vs new at both shapes;
(--tests) the GPU test files. JSON in $OUT.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tune_common as tc  # noqa: E402
import tune_round2 as r2  # noqa: E402

ba, launch, kernels, emit, make = r2.ba, r2.launch, r2.kernels, r2.emit, r2.make
OLD_MAIN = dict(launch.MAIN_TMA_DEFAULT)
MAIN_VARIANTS = {
    "M0 default": dict(OLD_MAIN),
    "WS2 warp-specialised, 2 stages": dict(OLD_MAIN, WS_HOPPER=True, ws_warps=4, ws_stages=2),
    "WS3 warp-specialised, 3 stages": dict(OLD_MAIN, WS_HOPPER=True, ws_warps=4, ws_stages=3),
    "WS4 warp-specialised, 4 stages": dict(OLD_MAIN, WS_HOPPER=True, ws_warps=4, ws_stages=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", action="store_true")
    ap.add_argument("--budget", type=float, default=560.0)
    args = ap.parse_args()
    emit(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=ba.triton.__version__)
    (q, k, v), gen = make(1, 32760, 12, 128, torch.bfloat16, 4711)
    w = torch.randn(128, 128, device="cuda", generator=gen) * 0.05
    bias = torch.randn(128, device="cuda", generator=gen) * 0.05
    best = tc.main_variants(MAIN_VARIANTS, q, k, v, w, bias, 121, "M0 default")
    launch.MAIN_TMA_DEFAULT.clear()
    launch.MAIN_TMA_DEFAULT.update(MAIN_VARIANTS[best])
    emit(stage="chosen", main=best, MAIN_TMA_DEFAULT=launch.MAIN_TMA_DEFAULT)

    def old():
        launch.CONFIG_OVERRIDE = dict(OLD_MAIN, USE_TMA=True)

    def new():
        launch.CONFIG_OVERRIDE = None

    tc.old_vs_new(old, new, q, k, v, w, bias)
    del q, k, v
    torch.cuda.empty_cache()
    tc.old_vs_new_14b(old, new, 96, args.budget)
    if args.tests:
        tc.gpu_tests(["test_kernel_gpu.py"], args.budget, "pytest gpu tests", main=launch.MAIN_TMA_DEFAULT)
    emit(stage="done")


if __name__ == "__main__":
    main()
