"""Seventh tuning round (KERNEL_NOTES.md): the query tile through a TMA descriptor (Q_TMA) and the linear summary
requested before the key loop (KV_EARLY), to take the epilogue's dependent global loads off the tile's critical
path (bench/tile_costs.py: the linear epilogue costs ~4 us per tile).

    OUT=dir python3 bench/tune_round7.py [--tests] [--budget S]

Each main-kernel variant checked against the float64 reference (tune_common.main_variants), timed as the whole op
with the LUT fixed (5/10/50%), twice, interleaved; the fastest correct one (if > 1.5% ahead) becomes the
default in this process; whole op old vs new at both shapes; (--tests) the GPU test files. JSON in $OUT.

Its options (Q_TMA, KV_EARLY) are still launcher keys, so it runs from the current tree; the earlier rounds'
scripts live at the commits KERNEL_NOTES.md names.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tune_common as tc  # noqa: E402

ba, launch, emit, make = tc.ba, tc.launch, tc.emit, tc.make
OLD_MAIN = dict(launch.MAIN_TMA_DEFAULT)
MAIN_VARIANTS = {
    "M0 default": dict(OLD_MAIN),
    "QT query via TMA": dict(OLD_MAIN, Q_TMA=True),
    "KE summary early": dict(OLD_MAIN, KV_EARLY=True),
    "QTKE both": dict(OLD_MAIN, Q_TMA=True, KV_EARLY=True),
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
        tc.gpu_tests(["test_kernel_gpu.py", "test_kernel.py"], args.budget, "pytest gpu tests",
                     main=launch.MAIN_TMA_DEFAULT)
    emit(stage="done")


if __name__ == "__main__":
    main()
