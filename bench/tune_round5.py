"""Fifth tuning round (KERNEL_NOTES.md): the linear branch computed before the key loop and parked in the output
tile (LIN_FIRST), reciprocal epilogue, and the top-k kernel with several rows per program (one warp per row).

    OUT=dir python3 bench/tune_round5.py [--tests] [--budget S]

Same method as tune_round4.py: every main-kernel variant checked against the float64 reference (fresh random
bf16/fp16 inputs, NaN-poisoned output, ragged tail, B=2), then timed as the whole op with the LUT fixed, twice,
interleaved; top-k variants must give the same LUT as one row per program. The fastest correct variants become
the defaults in this process; whole op old vs new at both shapes; (--tests) tests/test_kernel_gpu.py.
Results: JSON lines in $OUT/tune.jsonl.

Record of a tuning round: the launch options it compares that lost were removed from the kernels afterwards
(commit "kernels: drop the options measured slower"); run it from the commit before that one to repeat it.
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

OLD_PRE = dict(launch.PREPASS_DEFAULT)
OLD_MAIN = dict(launch.MAIN_TMA_DEFAULT)
OLD_TOPK = dict(launch.TOPK_DEFAULT)
TOPK_VARIANTS = {
    "T1 one row, 4 warps (as before)": dict(rows=1, num_warps=4),
    "T2 two rows": dict(rows=2, num_warps=None),
    "T4 four rows": dict(rows=4, num_warps=None),
    "T8 eight rows": dict(rows=8, num_warps=None),
    "T4w8 four rows, 8 warps": dict(rows=4, num_warps=8),
}
MAIN_VARIANTS = {
    "M0 default": dict(OLD_MAIN),
    "E reciprocal epilogue": dict(OLD_MAIN, FAST_EPI=True),
    "LF linear first": dict(OLD_MAIN, LIN_FIRST=True),
    "LFE linear first + reciprocal": dict(OLD_MAIN, LIN_FIRST=True, FAST_EPI=True),
    "LF3 linear first, 3 stages": dict(OLD_MAIN, LIN_FIRST=True, num_stages=3),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", action="store_true")
    ap.add_argument("--budget", type=float, default=560.0)
    args = ap.parse_args()
    emit(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=ba.triton.__version__)
    (q, k, v), gen = make(1, 32760, 12, 128, torch.bfloat16, 555)
    d = 128
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05
    for kp in (0.05, 0.10):
        emit(stage="split old", keep=kp, ms=tc.split_times(q, k, v, w, bias, kp))

    # top-k
    qm, km, kv, ks, kt = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
    topk = {}
    for shape_name, (qq, kk, vv) in (("A", (q, k, v)),):
        for kp in (0.05, 0.10):
            nkb = launch._keep_count((qq.shape[1] + 63) // 64, kp)
            launch.TOPK_OVERRIDE = TOPK_VARIANTS["T1 one row, 4 warps (as before)"]
            ref = launch.lut_from_means(qm, km, kt, qq.shape[1], nkb)
            for rep in range(2):
                for name, cfg in TOPK_VARIANTS.items():
                    launch.TOPK_OVERRIDE = cfg
                    same = bool(torch.equal(launch.lut_from_means(qm, km, kt, qq.shape[1], nkb), ref))
                    ms = ba.bench_ms(lambda: launch.lut_from_means(qm, km, kt, qq.shape[1], nkb), rep=200)
                    topk.setdefault(name, []).append(ms if same else float("inf"))
            launch.TOPK_OVERRIDE = None
    for name, t in topk.items():
        emit(stage="topk (mask step)", variant=name, ms=t)
    best_topk = min(topk, key=lambda n: sum(topk[n]))

    best_main = tc.main_variants(MAIN_VARIANTS, q, k, v, w, bias, 91, "M0 default")
    launch.MAIN_TMA_DEFAULT.clear()
    launch.MAIN_TMA_DEFAULT.update(MAIN_VARIANTS[best_main])
    launch.TOPK_DEFAULT.clear()
    launch.TOPK_DEFAULT.update(TOPK_VARIANTS[best_topk])
    emit(stage="chosen", main=best_main, topk=best_topk, MAIN_TMA_DEFAULT=launch.MAIN_TMA_DEFAULT,
         TOPK_DEFAULT=launch.TOPK_DEFAULT)

    def old():
        launch.PREPASS_OVERRIDE, launch.CONFIG_OVERRIDE = OLD_PRE, dict(OLD_MAIN, USE_TMA=True)
        launch.TOPK_OVERRIDE = OLD_TOPK if False else TOPK_VARIANTS["T1 one row, 4 warps (as before)"]

    def new():
        launch.PREPASS_OVERRIDE, launch.CONFIG_OVERRIDE, launch.TOPK_OVERRIDE = None, None, None

    tc.old_vs_new(old, new, q, k, v, w, bias)
    del q, k, v
    torch.cuda.empty_cache()
    tc.old_vs_new_14b(old, new, 98, args.budget)
    if args.tests:
        tc.gpu_tests(["test_kernel_gpu.py", "test_patch_gpu.py"], args.budget, "pytest gpu tests",
                     main_cfg=launch.MAIN_TMA_DEFAULT, topk=launch.TOPK_DEFAULT)
    emit(stage="done")


if __name__ == "__main__":
    main()
