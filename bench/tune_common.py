"""Steps shared by the tuning rounds (bench/tune_round7.py; the earlier rounds' scripts live at the commits
KERNEL_NOTES.md names): results as JSON lines (emit -> $OUT/tune.jsonl), inputs in ComfyUI's layout, a main-kernel
config checked against the float64 reference, variants checked and timed, the whole op old vs new at both
benchmark shapes, the GPU tests on the chosen defaults."""
from __future__ import annotations

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
_spec = importlib.util.spec_from_file_location("tkg", ROOT / "tests" / "test_kernel_gpu.py")
tkg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tkg)


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


def split_times(q, k, v, w, bias, keep):
    """Pre-pass, mask step, op with a fixed LUT, whole op (ms) at one keep ratio."""
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


def main_variants(variants, q, k, v, w, bias, seed0, default_name, keeps=(0.05, 0.10, 0.50)):
    """Check each main-kernel config (TMA path) against the float64 reference -- shape A at keep 5%, B=2 with a
    ragged tail, fp16 -- with seeds seed0 + i, +10, +20; then time the whole op with fixed LUTs at ``keeps``,
    twice, interleaved. Returns the name of the fastest correct config at 5% + 10%, unless it is within 1.5% of
    ``default_name``'s."""
    luts = {kp: launch.sla_forward_impl(q, k, v, kp, w, bias, return_lut=True)[1] for kp in keeps}
    res = {}
    for i, (name, cfg) in enumerate(variants.items()):
        cfg = dict(cfg, USE_TMA=True)
        try:
            checks = [check(cfg, 1, 32760, 12, 128, 0.05, torch.bfloat16, seed0 + i),
                      check(cfg, 2, 7001, 4, 128, 0.20, torch.bfloat16, seed0 + 10 + i),
                      check(cfg, 2, 4096, 4, 128, 0.30, torch.float16, seed0 + 20 + i)]
        except Exception as e:  # noqa: BLE001
            emit(stage="main check", variant=name, error=f"{type(e).__name__}: {str(e)[:300]}")
            continue
        ok = all(f and e < 1e-2 for f, e in checks)
        emit(stage="main check", variant=name, ok=ok, errs=[c[1] for c in checks], finite=[c[0] for c in checks])
        res[name] = dict(ok=ok, t={})
    for rep in range(2):
        for name in res:
            launch.CONFIG_OVERRIDE = dict(variants[name], USE_TMA=True)
            for kp in keeps:
                t = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, kp, w, bias, lut=luts[kp]), rep=150)
                res[name]["t"].setdefault(kp, []).append(t)
            launch.CONFIG_OVERRIDE = None
    for name, r in res.items():
        emit(stage="main A", variant=name, ok=r["ok"], op_ms_fixed_lut=r["t"])
    good = [n for n, r in res.items() if r["ok"]]
    score = {n: min(res[n]["t"][0.05]) + min(res[n]["t"][0.10]) for n in good}
    best = min(score, key=score.get)
    return default_name if score[best] > 0.985 * score[default_name] else best


def old_vs_new(old, new, q, k, v, w, bias):
    """Whole op at H=12, L=32 760, keep 5/10/20/50%: ``old()`` and ``new()`` set the launcher overrides, timed
    old, new, old, new; then the new defaults' time split at 5 / 10%."""
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


def old_vs_new_14b(old, new, seed, budget, after=None):
    """Whole op at H=40, L=75 600, keep 10%, old / new / old / new (skipped when under 200 s of ``budget`` are
    left); ``after(q, k, v)`` runs on the same inputs before they are freed. Free the shape-A inputs first."""
    if time.time() - T0 >= budget - 200:
        return
    (q, k, v), gen = make(1, 75600, 40, 128, torch.bfloat16, seed)
    w = torch.randn(128, 128, device="cuda", generator=gen) * 0.05
    row = {}
    for tag, setf in (("old", old), ("new", new), ("old again", old), ("new again", new)):
        setf()
        row[tag] = ba.bench_ms(lambda: kernels.sla_forward(q, k, v, 0.10, w, None, "softmax", 128, 64), rep=200)
    new()
    emit(stage="whole op", shape="H=40 L=75600", keep=0.10, ms=row)
    if after is not None:
        after(q, k, v)
    q = k = v = None  # free before the caller moves on
    torch.cuda.empty_cache()


def gpu_tests(files, budget, stage, **fields):
    """pytest on tests/``files`` in this process (the chosen defaults in force), errors logged to
    $OUT/errors.jsonl; skipped when under 150 s of ``budget`` are left."""
    if time.time() - T0 >= budget - 150:
        return
    import pytest
    os.environ["SLA_ERR_LOG"] = str(OUT / "errors.jsonl")
    rc = pytest.main(["-q", "-p", "no:cacheprovider"] + [str(ROOT / "tests" / f) for f in files])
    emit(stage=stage, rc=int(rc), **fields)
