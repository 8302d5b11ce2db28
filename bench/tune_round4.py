"""Fourth tuning round (KERNEL_NOTES.md): one warpgroup per program so two programs share an SM, and the
pre-pass's query means in their own launch. Every variant checked against the float64 reference, then timed in
one process.

    OUT=dir python3 bench/tune_round4.py [--tests] [--budget S]

1. Time split of the current default at shape A (pre-pass / mask / main kernel).
2. Pre-pass variants: outputs compared with the default's, then timed.
3. Main-kernel variants on the TMA path: checked (fresh random bf16/fp16 inputs, NaN-poisoned output, ragged
   tail, B=2), then timed as the whole op with the LUT fixed at keep 5/10/50%, twice, interleaved.
4. The fastest correct variants become the defaults in this process; whole op old vs new at shape A
   (5/10/20/50%) and at the 14B shape (10%); (--tests) tests/test_kernel_gpu.py on the new defaults.
Results: JSON lines in $OUT/tune.jsonl.

Record of a tuning round: the launch options it compares that lost were removed from the kernels afterwards
(commit "kernels: drop the options measured slower"); run it from the commit before that one to repeat it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tune_round2 as r2  # noqa: E402

ba, launch, kernels, emit, make, check = r2.ba, r2.launch, r2.kernels, r2.emit, r2.make, r2.check
r2.LOG = r2.OUT / "tune.jsonl"

OLD_PRE = dict(launch.PREPASS_DEFAULT)
OLD_MAIN = dict(launch.MAIN_TMA_DEFAULT)
PRE_VARIANTS = {
    "P0 default (one launch, 8/SM)": dict(OLD_PRE),
    "PQ separate query launch, 8/SM": dict(OLD_PRE, SEPARATE_Q=True),
    "PQ4 separate, 4/SM": dict(OLD_PRE, SEPARATE_Q=True, progs_per_sm=4),
    "PQ16 separate, 16/SM": dict(OLD_PRE, SEPARATE_Q=True, progs_per_sm=16),
    "PQ2 separate, 2 stages": dict(OLD_PRE, SEPARATE_Q=True, num_stages=2),
    "PQ8w separate, q 8 warps": dict(OLD_PRE, SEPARATE_Q=True, q_warps=8),
}
BASE = dict(OLD_MAIN)
MAIN_VARIANTS = {
    "M0 default (pairs, 8 warps)": dict(BASE),
    "S4 singles, 4 warps, 2 stages": dict(BASE, PAIR=False, num_warps=4, num_stages=2),
    "S4s3 singles, 4 warps, 3 stages": dict(BASE, PAIR=False, num_warps=4, num_stages=3),
    "S4t singles, 4 warps, tail via TMA": dict(BASE, PAIR=False, num_warps=4, num_stages=2, TMA_TAIL=True),
    "S4e singles, 4 warps, reciprocal epilogue": dict(BASE, PAIR=False, num_warps=4, num_stages=2, FAST_EPI=True),
}


def split_times(q, k, v, w, bias, keep):
    nk = (q.shape[1] + 63) // 64
    kb = launch._keep_count(nk, keep)
    pre = lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)  # noqa: E731
    qm, km, kv, ks, kt = pre()
    mask = lambda: launch.lut_from_means(qm, km, kt, q.shape[1], kb)  # noqa: E731
    lut = mask()
    whole = lambda: kernels.sla_forward(q, k, v, keep, w, bias, "softmax", 128, 64)  # noqa: E731
    fixed = lambda: launch.sla_forward_impl(q, k, v, keep, w, bias, lut=lut)  # noqa: E731
    return dict(prepass=ba.bench_ms(pre, rep=200), mask=ba.bench_ms(mask, rep=200),
                op_fixed_lut=ba.bench_ms(fixed, rep=200), whole=ba.bench_ms(whole, rep=200))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", action="store_true")
    ap.add_argument("--budget", type=float, default=560.0)
    args = ap.parse_args()
    emit(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=ba.triton.__version__)
    b, length, h, d = 1, 32760, 12, 128
    (q, k, v), gen = make(b, length, h, d, torch.bfloat16, 4242)
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05
    for kp in (0.05, 0.10):
        emit(stage="split", keep=kp, ms=split_times(q, k, v, w, bias, kp))

    ref = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
    pre = {}
    for rep in range(2):
        for name, cfg in PRE_VARIANTS.items():
            launch.PREPASS_OVERRIDE = cfg
            try:
                got = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
                ok = all(((a - r).norm() / r.norm()).item() < 1e-4 and bool(torch.isfinite(a).all())
                         for a, r in zip(got, ref))
                ms = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=200)
            except Exception as e:  # noqa: BLE001
                emit(stage="prepass", variant=name, error=f"{type(e).__name__}: {str(e)[:300]}")
                ok, ms = False, float("inf")
            finally:
                launch.PREPASS_OVERRIDE = None
            pre.setdefault(name, []).append(ms if ok else float("inf"))
    for name, t in pre.items():
        emit(stage="prepass", variant=name, ms=t)
    best_pre = min(pre, key=lambda n: min(pre[n]))
    if min(pre[best_pre]) > 0.97 * min(pre["P0 default (one launch, 8/SM)"]):
        best_pre = "P0 default (one launch, 8/SM)"

    keeps = (0.05, 0.10, 0.50)
    luts = {kp: launch.sla_forward_impl(q, k, v, kp, w, bias, return_lut=True)[1] for kp in keeps}
    res = {}
    for i, (name, cfg) in enumerate(MAIN_VARIANTS.items()):
        cfg = dict(cfg, USE_TMA=True)
        try:
            checks = [check(cfg, 1, 32760, 12, 128, 0.05, torch.bfloat16, 61 + i),
                      check(cfg, 2, 7001, 4, 128, 0.20, torch.bfloat16, 71 + i),
                      check(cfg, 2, 4096, 4, 128, 0.30, torch.float16, 81 + i)]
        except Exception as e:  # noqa: BLE001
            emit(stage="main check", variant=name, error=f"{type(e).__name__}: {str(e)[:300]}")
            continue
        ok = all(f and e < 1e-2 for f, e in checks)
        emit(stage="main check", variant=name, ok=ok, errs=[c[1] for c in checks], finite=[c[0] for c in checks])
        res[name] = dict(ok=ok, t={})
    for rep in range(2):
        for name in res:
            launch.CONFIG_OVERRIDE = dict(MAIN_VARIANTS[name], USE_TMA=True)
            for kp in keeps:
                t = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, kp, w, bias, lut=luts[kp]), rep=150)
                res[name]["t"].setdefault(kp, []).append(t)
            launch.CONFIG_OVERRIDE = None
    for name, r in res.items():
        emit(stage="main A", variant=name, ok=r["ok"], op_ms_fixed_lut=r["t"])
    good = [n for n, r in res.items() if r["ok"]]
    score = {n: min(res[n]["t"][0.05]) + min(res[n]["t"][0.10]) for n in good}
    best_main = min(score, key=score.get)
    if score[best_main] > 0.985 * score["M0 default (pairs, 8 warps)"]:
        best_main = "M0 default (pairs, 8 warps)"
    launch.PREPASS_DEFAULT.clear()
    launch.PREPASS_DEFAULT.update(PRE_VARIANTS[best_pre])
    launch.MAIN_TMA_DEFAULT.clear()
    launch.MAIN_TMA_DEFAULT.update(MAIN_VARIANTS[best_main])
    emit(stage="chosen", prepass=best_pre, main=best_main, PREPASS_DEFAULT=launch.PREPASS_DEFAULT,
         MAIN_TMA_DEFAULT=launch.MAIN_TMA_DEFAULT)

    def old():
        launch.PREPASS_OVERRIDE, launch.CONFIG_OVERRIDE = OLD_PRE, dict(OLD_MAIN, USE_TMA=True)

    def new():
        launch.PREPASS_OVERRIDE, launch.CONFIG_OVERRIDE = None, None

    for kp in (0.05, 0.10, 0.20, 0.50):
        row = {}
        for tag, setf in (("old", old), ("new", new), ("old again", old), ("new again", new)):
            setf()
            row[tag] = ba.bench_ms(lambda: kernels.sla_forward(q, k, v, kp, w, bias, "softmax", 128, 64), rep=300)
        new()
        emit(stage="whole op", shape="H=12 L=32760", keep=kp, ms=row)
    new()
    for kp in (0.05, 0.10):
        emit(stage="split new", keep=kp, ms=split_times(q, k, v, w, bias, kp))
    del q, k, v
    torch.cuda.empty_cache()
    if time.time() - r2.T0 < args.budget - 200:
        (q, k, v), gen = make(1, 75600, 40, 128, torch.bfloat16, 99)
        w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
        row = {}
        for tag, setf in (("old", old), ("new", new), ("old again", old), ("new again", new)):
            setf()
            row[tag] = ba.bench_ms(lambda: kernels.sla_forward(q, k, v, 0.10, w, None, "softmax", 128, 64), rep=200)
        new()
        emit(stage="whole op", shape="H=40 L=75600", keep=0.10, ms=row)
        del q, k, v
        torch.cuda.empty_cache()
    if args.tests and time.time() - r2.T0 < args.budget - 150:
        import pytest
        os.environ["SLA_ERR_LOG"] = str(r2.OUT / "errors.jsonl")
        rc = pytest.main(["-q", "-p", "no:cacheprovider", str(r2.ROOT / "tests" / "test_kernel_gpu.py")])
        emit(stage="pytest test_kernel_gpu.py", rc=int(rc), prepass_cfg=launch.PREPASS_DEFAULT,
             main_cfg=launch.MAIN_TMA_DEFAULT)
    emit(stage="done")


if __name__ == "__main__":
    main()
