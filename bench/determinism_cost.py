"""What the deterministic pre-pass costs, and whether the op repeats bit for bit (CUDA GPU, one process).

    python3 bench/determinism_cost.py [--out results.jsonl] [--repeats 20] [--samples 30]
                                      [--key-progs 1 2 4 8] [--no-baseline] [--shapes A C]

For each shape (A: B=1 H=12 L=32760, C: B=1 H=40 L=75600; D=128, bf16, ComfyUI's [B, L, H*D] layout, proj_l with a
bias, block_q=128, block_k=64) and keep (5%, 10%), every variant of the pre-pass is timed on the whole op and on the
pre-pass alone: CUDA events around each call, L2 flushed before it (as triton.testing.do_bench does), median of
``--samples`` after a warm-up, taken in rounds that alternate the variants (slow drifts of the clock hit them
alike). Variants: the default (deterministic); ``--key-progs N``: the deterministic pre-pass with N key programs
per multiprocessor; the atomic baseline (``DETERMINISTIC=False``, the pre-pass as it was before: fp32 atomics,
8 key programs per multiprocessor) unless ``--no-baseline``. Then each variant's op is called ``--repeats`` times
on the same inputs and compared with its first output (torch.equal; the baseline is expected to differ).

Writes one JSON object per line to ``--out`` (default stdout): an "env" row (torch, triton, CUDA, GPU, SMs), one
"time" row per (shape, keep, variant) and one "repeat" row per (shape, keep, variant). No network needed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import statistics
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK = "comfyui_sla"
SHAPES = {"A": (1, 32760, 12, 128), "C": (1, 75600, 40, 128)}
KEEPS = (0.05, 0.10)
BLOCK_Q, BLOCK_K = 128, 64
BASELINE = dict(DETERMINISTIC=False, key_progs_per_sm=8)


def load_pack():
    """The pack's ``kernels.launch``, ``kernels.prepass`` and ``sla.spec`` (the repository as ``comfyui_sla``)."""
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack as _load
    _load()
    return tuple(importlib.import_module(f"{PACK}.{m}") for m in ("kernels.launch", "kernels.prepass", "sla.spec"))


def env_row() -> dict:
    import triton
    props = torch.cuda.get_device_properties(0)
    return dict(kind="env", torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                gpu=props.name, sms=props.multi_processor_count, capability=list(torch.cuda.get_device_capability(0)))


def make_inputs(b, length, h, d, seed=0):
    """q, k, v (B, L, H, D) bf16 views of one [B, L, 3*H*D] tensor; proj_l weight (D, D) and bias (D,), fp32."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(b, length, 3 * h * d, device="cuda", dtype=torch.bfloat16, generator=gen)
    q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].view(b, length, h, d) for i in range(3))
    w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
    bias = torch.randn(d, device="cuda", generator=gen) * 0.05
    return q, k, v, w, bias


def time_rounds(fns: dict, samples: int, rounds: int = 3, warmup: int = 5) -> dict:
    """Milliseconds of each callable in ``fns`` (name -> fn): ``samples`` CUDA-event timings each, taken in
    ``rounds`` alternating rounds, L2 flushed before every call; returns name -> list of times."""
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    per_round = -(-samples // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            events = []
            for _ in range(per_round):
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events.append((start, end))
            torch.cuda.synchronize()
            times[name] += [s.elapsed_time(e) for s, e in events]
    return times


def summary(ts: list) -> dict:
    """Median and the 20th / 80th percentiles (ms) of a list of times."""
    qs = statistics.quantiles(ts, n=5)
    return dict(median_ms=round(statistics.median(ts), 4), p20_ms=round(qs[0], 4), p80_ms=round(qs[3], 4),
                n=len(ts))


def repeat_check(fn, repeats: int) -> dict:
    """Call ``fn`` (-> output, lut) ``repeats`` more times and compare each result with the first, bit for bit."""
    out0, lut0 = fn()
    differ, lut_differ, max_diff = 0, 0, 0.0
    for _ in range(repeats):
        out, lut = fn()
        if not torch.equal(out, out0):
            differ += 1
            max_diff = max(max_diff, (out.float() - out0.float()).abs().max().item())
        lut_differ += int(not torch.equal(lut, lut0))
    return dict(repeats=repeats, outputs_differ=differ, luts_differ=lut_differ, max_abs_diff=max_diff,
                finite=bool(torch.isfinite(out0).all()))


def run_shape(name, shape, keeps, variants, args, launch, prepass, spec, emit):
    b, length, h, d = shape
    q, k, v, w, bias = make_inputs(b, length, h, d)
    nk = spec.num_blocks(length, BLOCK_K)
    for keep in keeps:
        kb = spec.keep_count(nk, keep)
        ops = {vn: (lambda c=cfg: launch.sla_forward_impl(q, k, v, kb, w, bias, "softmax", BLOCK_Q, BLOCK_K,
                                                          prepass_config=c)) for vn, cfg in variants.items()}
        pres = {vn + " pre-pass": (lambda c=cfg: prepass.prepass(q, k, v, BLOCK_Q, BLOCK_K, "softmax",
                                                                  torch.bfloat16, c)) for vn, cfg in variants.items()}
        times = time_rounds({**ops, **pres}, args.samples)
        for vn, cfg in variants.items():
            ws = prepass.workspace_bytes(b, h, length, d, prepass.num_sms(q.device), BLOCK_K, cfg)
            row = dict(kind="time", shape=name, B=b, L=length, H=h, D=d, keep=keep, keep_blocks=kb, variant=vn,
                       prepass_config=cfg, workspace_bytes=ws, op=summary(times[vn]),
                       prepass=summary(times[vn + " pre-pass"]))
            emit(row)
            print(f"{name} keep {keep:.2f} {vn:14s} op {row['op']['median_ms']:.4f} ms  pre-pass "
                  f"{row['prepass']['median_ms']:.4f} ms  workspace {ws / 2**20:.1f} MiB", file=sys.stderr, flush=True)
        for vn, cfg in variants.items():
            fn = lambda c=cfg: launch.sla_forward_impl(q, k, v, kb, w, bias, "softmax", BLOCK_Q, BLOCK_K,  # noqa
                                                       return_lut=True, prepass_config=c)
            row = dict(kind="repeat", shape=name, L=length, H=h, keep=keep, variant=vn,
                       **repeat_check(fn, args.repeats))
            emit(row)
            print(f"{name} keep {keep:.2f} {vn:14s} {args.repeats} repeats: {row['outputs_differ']} outputs and "
                  f"{row['luts_differ']} LUTs differ from the first (max abs diff {row['max_abs_diff']:.3g}), "
                  f"finite {row['finite']}", file=sys.stderr, flush=True)
    del q, k, v
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="-", help="JSON lines file (default stdout)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--samples", type=int, default=30, help="timed calls per variant (>= 20)")
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--keeps", type=float, nargs="*", default=list(KEEPS))
    ap.add_argument("--key-progs", type=int, nargs="*", default=[], help="extra deterministic variants")
    ap.add_argument("--no-baseline", action="store_true", help="skip the atomic baseline")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    if args.samples < 20:
        print(f"note: --samples {args.samples} < 20: medians of few calls are noisy", file=sys.stderr)
    launch, prepass, spec = load_pack()
    out = sys.stdout if args.out == "-" else open(args.out, "a")

    def emit(row):
        out.write(json.dumps(row) + "\n")
        out.flush()

    env = env_row()
    emit(env)
    print(f"torch {env['torch']} triton {env['triton']} CUDA {env['cuda']} on {env['gpu']} ({env['sms']} SMs)",
          file=sys.stderr)
    variants = {"deterministic": None}
    variants.update({f"key_progs={n}": dict(key_progs_per_sm=n) for n in args.key_progs})
    if not args.no_baseline:
        variants["atomic"] = dict(BASELINE)
    for name in args.shapes:
        run_shape(name, SHAPES[name], args.keeps, variants, args, launch, prepass, spec, emit)
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
