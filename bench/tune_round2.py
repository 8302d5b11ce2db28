"""Second tuning round of the SLA kernels (KERNEL_NOTES.md): every variant built, checked and timed in one process.

    OUT=dir python3 bench/tune_round2.py [--tests] [--table]

1. Pre-pass variants (v's columns split over programs, warps, register cap, programs per SM): outputs compared
   with the current default's (fp32 summaries and means), then timed.
2. Main-kernel variants on the TMA path (epilogue reciprocals, tail through descriptors, polynomial exp2, single
   key blocks with a register cap so two programs fit per SM): each checked against the float64 reference on
   fresh random bf16/fp16 inputs with a NaN-poisoned output, then timed with the LUT fixed.
3. The fastest correct variants become launch.PREPASS_DEFAULT / launch.MAIN_TMA_DEFAULT in this process; the
   whole op is timed against the old default, then (--tests) tests/test_kernel_gpu.py runs in this process on the
   new default and (--table) the benchmark table of bench_attention.py is printed.
Results: JSON lines in $OUT/tune.jsonl, the test log in $OUT/pytest.log.

Record of a tuning round: the launch options it compares that lost were removed from the kernels afterwards
(commit "kernels: drop the options measured slower"); run it from the commit before that one to repeat it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import bench_attention as ba  # noqa: E402

OUT = pathlib.Path(os.environ.get("OUT", "/tmp"))
T0 = time.time()
LOG = OUT / "tune.jsonl"


def emit(**kw):
    kw["t"] = round(time.time() - T0, 1)
    with open(LOG, "a") as f:
        f.write(json.dumps(kw, default=str) + "\n")
    print(json.dumps(kw, default=str), flush=True)


kernels, launch = ba.load_pack()
spec = importlib.util.spec_from_file_location("tkg", ROOT / "tests" / "test_kernel_gpu.py")
tkg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tkg)

OLD_PRE = dict(launch.PREPASS_DEFAULT)
OLD_MAIN = dict(launch.MAIN_TMA_DEFAULT)
PRE_VARIANTS = {
    "P0 default (split 1, 4 warps, 3 stages, 8/SM)": dict(OLD_PRE),
    "P1 split 2, 8 warps, 2 stages, maxnreg 128": dict(progs_per_sm=8, num_warps=8, num_stages=2, SPLIT=2, maxnreg=128),
    "P2 split 2, 8 warps, 3 stages, maxnreg 128": dict(progs_per_sm=8, num_warps=8, num_stages=3, SPLIT=2, maxnreg=128),
    "P3 split 2, 8 warps, 2 stages, maxnreg 128, 4/SM": dict(progs_per_sm=4, num_warps=8, num_stages=2, SPLIT=2,
                                                            maxnreg=128),
    "P4 split 2, 8 warps, 2 stages, maxnreg 128, 16/SM": dict(progs_per_sm=16, num_warps=8, num_stages=2, SPLIT=2,
                                                             maxnreg=128),
    "P5 split 4, 4 warps, 2 stages, maxnreg 168": dict(progs_per_sm=8, num_warps=4, num_stages=2, SPLIT=4,
                                                      maxnreg=168),
    "P6 split 2, 4 warps, 3 stages": dict(progs_per_sm=8, num_warps=4, num_stages=3, SPLIT=2, maxnreg=None),
}
BASE_MAIN = dict(num_warps=8, num_stages=2, PAIR=True, TMA_TAIL=False, FAST_EPI=False, POLY=0, maxnreg=None)
MAIN_VARIANTS = {
    "M0 default (pairs, 2 stages)": dict(BASE_MAIN),
    "M1 + reciprocal epilogue": dict(BASE_MAIN, FAST_EPI=True),
    "M2 + tail via TMA": dict(BASE_MAIN, FAST_EPI=True, TMA_TAIL=True),
    "M3 + poly exp2 on 1/4": dict(BASE_MAIN, FAST_EPI=True, TMA_TAIL=True, POLY=2),
    "M4 singles, maxnreg 128 (2/SM), epi+tail": dict(BASE_MAIN, PAIR=False, FAST_EPI=True, TMA_TAIL=True,
                                                     maxnreg=128),
    "M5 singles, maxnreg 128 (2/SM)": dict(BASE_MAIN, PAIR=False, maxnreg=128),
    "M6 singles, 1/SM, epi+tail": dict(BASE_MAIN, PAIR=False, FAST_EPI=True, TMA_TAIL=True),
    "M7 pairs, 1 stage, maxnreg 128 (2/SM), epi+tail": dict(BASE_MAIN, num_stages=1, FAST_EPI=True, TMA_TAIL=True,
                                                            maxnreg=128),
}


def make(b, length, h, d, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(b, length, 3 * h * d, device="cuda", generator=gen).to(dtype)
    return tuple(qkv[..., i * h * d:(i + 1) * h * d].view(b, length, h, d) for i in range(3)), gen


def check(cfg, b, length, h, d, keep, dtype, seed):
    """Relative L2 error vs float64 on sampled query blocks, NaN-poisoned output, with this main config."""
    (q, k, v), gen = make(b, length, h, d, dtype, seed)
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.2
    bias = torch.randn(d, device="cuda", generator=gen) * 0.2
    launch.CONFIG_OVERRIDE = cfg
    try:
        out = torch.full(q.shape, float("nan"), device="cuda", dtype=dtype)
        out, lut = launch.sla_forward_impl(q, k, v, keep, w, bias, "softmax", 128, 64, "main", return_lut=True,
                                           out=out)
        torch.cuda.synchronize()
    finally:
        launch.CONFIG_OVERRIDE = None
    finite = bool(torch.isfinite(out).all())
    nq = lut.shape[2]
    qb = sorted({0, 1, nq // 3, nq // 2, nq - 2, nq - 1})
    ref, rows = tkg.reference_rows(q, k, v, lut, qb, w, bias, "softmax", 128, 64, "main",
                                   torch.float16 if dtype == torch.float16 else torch.bfloat16)
    err = ((out[:, rows].double() - ref).norm() / ref.norm()).item()
    return finite, err


R3_PRE = {
    "P0 default": dict(OLD_PRE),
    "P7 q programs x4 tokens": dict(OLD_PRE, Q_MULT=4),
    "P8 q programs x8 tokens": dict(OLD_PRE, Q_MULT=8),
}
M5 = dict(BASE_MAIN, PAIR=False, maxnreg=128)
R3_MAIN = {
    "M0 default (pairs, 2 stages)": dict(BASE_MAIN),
    "M5 singles, maxnreg 128 (2/SM)": dict(M5),
    "M8 M5 + reciprocal epilogue": dict(M5, FAST_EPI=True),
    "M9 M5 + tail via TMA": dict(M5, TMA_TAIL=True),
}


def round3(args):
    """Third round: longer query programs in the pre-pass; the two-programs-per-SM single-block config for long
    LUT rows (keep-dependent dispatch)."""
    b, length, h, d = 1, 32760, 12, 128
    (q, k, v), gen = make(b, length, h, d, torch.bfloat16, 4321)
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05
    ref = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
    pre = {}
    for rep in range(2):
        for name, cfg in R3_PRE.items():
            launch.PREPASS_OVERRIDE = cfg
            got = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
            ok = all(((a - r).norm() / r.norm()).item() < 1e-4 for a, r in zip(got, ref))
            ms = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=200)
            launch.PREPASS_OVERRIDE = None
            pre.setdefault(name, []).append(ms if ok else float("inf"))
    for name, t in pre.items():
        emit(stage="r3 prepass", variant=name, ms=t)
    best_pre = min(pre, key=lambda n: min(pre[n]))
    if min(pre[best_pre]) > 0.97 * min(pre["P0 default"]):
        best_pre = "P0 default"                       # keep the default unless it is clearly beaten

    keeps = (0.05, 0.10, 0.20, 0.50)
    luts = {kp: launch.sla_forward_impl(q, k, v, kp, w, bias, return_lut=True)[1] for kp in keeps}
    res = {}
    for name, cfg in R3_MAIN.items():
        cfg = dict(cfg, USE_TMA=True)
        checks = [check(cfg, 1, 32760, 12, 128, 0.50, torch.bfloat16, 51),
                  check(cfg, 2, 7001, 4, 128, 0.20, torch.bfloat16, 52),
                  check(cfg, 2, 4096, 4, 128, 0.30, torch.float16, 53)]
        ok = all(f and e < 1e-2 for f, e in checks)
        emit(stage="r3 check", variant=name, ok=ok, errs=[c[1] for c in checks], finite=[c[0] for c in checks])
        res[name] = dict(ok=ok, t={})
    for rep in range(2):
        for name, cfg in R3_MAIN.items():
            launch.CONFIG_OVERRIDE = dict(cfg, USE_TMA=True)
            for kp in keeps:
                t = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, kp, w, bias, lut=luts[kp]), rep=150)
                res[name]["t"].setdefault(kp, []).append(t)
            launch.CONFIG_OVERRIDE = None
    nk = (length + 63) // 64
    for name, r in res.items():
        emit(stage="r3 main A", variant=name, ok=r["ok"], op_ms_fixed_lut=r["t"])
    # 14B shape, 10%: default vs the single-block configs
    del q, k, v
    torch.cuda.empty_cache()
    (q2, k2, v2), gen = make(1, 75600, 40, 128, torch.bfloat16, 77)
    w2 = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    lut2 = launch.sla_forward_impl(q2, k2, v2, 0.10, w2, None, return_lut=True)[1]
    t14 = {}
    for rep in range(2):
        for name, cfg in R3_MAIN.items():
            launch.CONFIG_OVERRIDE = dict(cfg, USE_TMA=True)
            t14.setdefault(name, []).append(
                ba.bench_ms(lambda: launch.sla_forward_impl(q2, k2, v2, 0.10, w2, None, lut=lut2), rep=300))
            launch.CONFIG_OVERRIDE = None
    emit(stage="r3 main 14B 10%", ms=t14)
    del q2, k2, v2
    torch.cuda.empty_cache()

    # choose: default = best at 5% + 10%; long config = best single-block variant where it wins at every
    # measured point from some keep-block count on (by > 1.5%)
    good = [n for n, r in res.items() if r["ok"]]
    score = {n: min(res[n]["t"][0.05]) + min(res[n]["t"][0.10]) for n in good}
    best_default = min(score, key=score.get)
    if score[best_default] > 0.985 * score["M0 default (pairs, 2 stages)"]:
        best_default = "M0 default (pairs, 2 stages)"
    points = [(int(kp * nk), {n: min(res[n]["t"][kp]) for n in good}) for kp in keeps]
    points.append((int(0.10 * ((75600 + 63) // 64)), {n: min(t14[n]) for n in good}))
    points.sort()
    long_name, threshold = None, None
    for cand in [n for n in good if n != best_default and not R3_MAIN[n]["PAIR"]]:
        wins = [(kb, t[cand] < 0.985 * t[best_default]) for kb, t in points]
        thr = None
        for i, (kb, _) in enumerate(wins):
            if all(wn for _, wn in wins[i:]):
                thr = kb
                break
        if thr is not None and (threshold is None or thr < threshold or
                                (thr == threshold and points[-1][1][cand] < points[-1][1][long_name])):
            long_name, threshold = cand, thr
    launch.PREPASS_DEFAULT.update(R3_PRE[best_pre])
    launch.MAIN_TMA_DEFAULT.clear()
    launch.MAIN_TMA_DEFAULT.update(R3_MAIN[best_default])
    if long_name:
        launch.MAIN_TMA_LONG = dict(R3_MAIN[long_name])
        launch.LONG_KEEP_BLOCKS = threshold
    emit(stage="r3 chosen", prepass=best_pre, default=best_default, long=long_name, long_keep_blocks=threshold,
         points=points, PREPASS_DEFAULT=launch.PREPASS_DEFAULT, MAIN_TMA_DEFAULT=launch.MAIN_TMA_DEFAULT,
         MAIN_TMA_LONG=launch.MAIN_TMA_LONG)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds; later stages are skipped past it")
    ap.add_argument("--round3", action="store_true", help="third round only, then --tests/--table on its choice")
    args = ap.parse_args()
    emit(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=ba.triton.__version__)
    if args.round3:
        round3(args)
        finish(args)
        return

    b, length, h, d = 1, 32760, 12, 128
    (q, k, v), gen = make(b, length, h, d, torch.bfloat16, 1234)
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05

    # 1. pre-pass
    launch.PREPASS_OVERRIDE = None
    ref = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
    pre_res = {}
    for name, cfg in PRE_VARIANTS.items():
        launch.PREPASS_OVERRIDE = cfg
        try:
            got = launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16)
            torch.cuda.synchronize()
            errs = {n: ((a - r).norm() / r.norm()).item() for n, a, r in
                    zip(("qmean", "kmean", "kv", "ks", "ktot"), got, ref)}
            ok = all(e < 1e-4 for e in errs.values()) and all(bool(torch.isfinite(a).all()) for a in got)
            ms = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=200)
            ms2 = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=200)
        except Exception as e:  # noqa: BLE001
            emit(stage="prepass", variant=name, error=f"{type(e).__name__}: {str(e)[:300]}")
            continue
        finally:
            launch.PREPASS_OVERRIDE = None
        pre_res[name] = (ok, min(ms, ms2))
        emit(stage="prepass", variant=name, ok=ok, ms=ms, ms_again=ms2, max_rel_err=max(errs.values()))

    # 2. main kernel: correctness, then timing with fixed LUTs (op with LUT given minus nothing: same pre-pass
    # in every variant, so differences are the main kernel's)
    luts = {kp: launch.sla_forward_impl(q, k, v, kp, w, bias, return_lut=True)[1] for kp in (0.05, 0.10, 0.50)}
    main_res = {}
    for name, cfg in MAIN_VARIANTS.items():
        cfg = dict(cfg, USE_TMA=True)
        try:
            checks = [check(cfg, 1, 32760, 12, 128, 0.05, torch.bfloat16, 11 + len(main_res)),
                      check(cfg, 2, 7001, 4, 128, 0.20, torch.bfloat16, 21 + len(main_res)),   # odd leftover + tail
                      check(cfg, 2, 4096, 4, 128, 0.30, torch.float16, 31 + len(main_res))]    # no tail
            ok = all(f and e < 1e-2 for f, e in checks)
            launch.CONFIG_OVERRIDE = cfg
            times = {}
            for kp, lut in luts.items():
                times[kp] = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, kp, w, bias, lut=lut), rep=200)
            times["0.05 again"] = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, 0.05, w, bias,
                                                                               lut=luts[0.05]), rep=200)
        except Exception as e:  # noqa: BLE001
            emit(stage="main", variant=name, error=f"{type(e).__name__}: {str(e)[:300]}")
            continue
        finally:
            launch.CONFIG_OVERRIDE = None
        main_res[name] = (ok, times)
        emit(stage="main", variant=name, ok=ok, errs=[c[1] for c in checks], finite=[c[0] for c in checks],
             op_ms_fixed_lut=times)

    # 3. choose
    pre_ok = {n: t for n, (ok, t) in pre_res.items() if ok}
    best_pre = min(pre_ok, key=pre_ok.get)
    main_ok = {n: min(t[0.05], t["0.05 again"]) + t[0.10] for n, (ok, t) in main_res.items() if ok}
    best_main = min(main_ok, key=main_ok.get)
    launch.PREPASS_DEFAULT.clear()
    launch.PREPASS_DEFAULT.update(PRE_VARIANTS[best_pre])
    launch.MAIN_TMA_DEFAULT.clear()
    launch.MAIN_TMA_DEFAULT.update(MAIN_VARIANTS[best_main])
    emit(stage="chosen", prepass=best_pre, prepass_cfg=launch.PREPASS_DEFAULT, main=best_main,
         main_cfg=launch.MAIN_TMA_DEFAULT)

    finish(args)


def finish(args):
    b, length, h, d = 1, 32760, 12, 128
    (q, k, v), gen = make(b, length, h, d, torch.bfloat16, 999)
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05

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
    del q, k, v
    torch.cuda.empty_cache()
    if time.time() - T0 < args.budget - 200:
        (q, k, v), gen = make(1, 75600, 40, 128, torch.bfloat16, 99)
        w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
        row = {}
        for tag, setf in (("old", old), ("new", new)):
            setf()
            row[tag] = ba.bench_ms(lambda: kernels.sla_forward(q, k, v, 0.10, w, None, "softmax", 128, 64), rep=300)
        new()
        emit(stage="whole op", shape="H=40 L=75600", keep=0.10, ms=row)
        del q, k, v
        torch.cuda.empty_cache()

    if args.tests and time.time() - T0 < args.budget - 150:
        import pytest
        os.environ["SLA_ERR_LOG"] = str(OUT / "errors.jsonl")
        rc = pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_kernel_gpu.py")])
        emit(stage="pytest test_kernel_gpu.py", rc=int(rc), prepass_cfg=launch.PREPASS_DEFAULT,
             main_cfg=launch.MAIN_TMA_DEFAULT, long_cfg=launch.MAIN_TMA_LONG, long_keep_blocks=launch.LONG_KEEP_BLOCKS)
    if args.table and time.time() - T0 < args.budget - 90:
        shapes = ba.SHAPES if time.time() - T0 < args.budget - 150 else ba.SHAPES[:1]
        rows = ba.kernel_table(kernels, launch, shapes, ba.KEEPS, with_thu=False)
        emit(stage="table", rows=rows)
    emit(stage="done")


if __name__ == "__main__":
    main()
