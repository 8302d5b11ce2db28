"""W8A8 linear benchmark at every Wan 1.3B / 14B Linear shape (needs a CUDA GPU; no ComfyUI needed).

    python bench/bench_w8a8.py [--quick] [--json out.json] [--batch 1]

Per layer shape (M tokens x N out x K in; M = 32760 at 480p, 75600 at 720p per batch item, 512 text tokens for the
cross-attention k/v), times:

* ``int8``: the pack's kernel at its default config, end to end (activation pre-pass + int8 GEMM + scales + bias);
* every alternative config of ``kernels.w8a8.ALTERNATIVES`` (the best one is named per shape);
* ``bf16``: cuBLAS ``F.linear`` with the dequantised bf16 weight;
* ``fp8``: ``torch._scaled_mm`` e4m3 with per-tensor scales, GEMM only and with the activation clamp + cast that
  ComfyUI's fp8 path runs before it (when the GPU has fp8: sm_89+);

and the relative error (||y - ref|| / ||ref|| over the first 4096 rows) of each against the float32 GEMM with the
dequantised weight (TF32 off). Synthetic data: weights N(0, 1/K) with 0.1% outliers x8, tile-quantised as
TurboDiffusion's -quant files; activations N(0, 1) with 1% of the channels x20 (Wan's activations have outlier
channels). Then per model: the GEMM time of one step summed over layers and blocks, and the weight memory.

Correctness assertions (the script exits non-zero if one fails): the kernel matches the PyTorch emulation of its
exact math (float64 integer dots) to 1e-3 (fp32 output), and its error against the float32 reference (every
config) stays under 5% (about 2% is expected on this data: the x20 channels coarsen their groups' int8 grid).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _load_pack import load_pack  # noqa: E402


# (model, dim, ffn, blocks); Linear layers per block: name -> (N, K, rows: "tok" | "text", count per block)
MODELS = [("Wan 1.3B", 1536, 8960, 30), ("Wan 14B", 5120, 13824, 40)]
RES = {"480p": 32760, "720p": 75600}
TEXT_TOKENS = 512


def layers(dim, ffn):
    return [("self q/k/v/o + cross q/o", dim, dim, "tok", 6), ("cross k/v (text)", dim, dim, "text", 2),
            ("ffn.0", ffn, dim, "tok", 1), ("ffn.2", dim, ffn, "tok", 1)]


def cases(quick: bool, batch: int, smoke: bool = False):
    if smoke:  # tiny shapes for a CPU run of the script itself (TRITON_INTERPRET=1)
        return [dict(model="Wan 1.3B", res="480p", layer=name, M=m, N=n, K=k, count=cnt, blocks=30)
                for name, m, n, k, cnt in (("self q/k/v/o + cross q/o", 96, 256, 256, 6),
                                           ("ffn.0", 96, 384, 256, 1))]
    out = []
    for model, dim, ffn, blocks in MODELS:
        for res in (("480p",) if model == "Wan 1.3B" or quick else ("480p", "720p")):
            for name, n, k, rows, count in layers(dim, ffn):
                m = TEXT_TOKENS * batch if rows == "text" else RES[res] * batch
                out.append(dict(model=model, res=res, layer=name, M=m, N=n, K=k, count=count, blocks=blocks))
    return out


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def make_data(Q, m, n, k, dev, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    w = torch.randn(n, k, device=dev, generator=g) / math.sqrt(k)
    w = torch.where(torch.rand(n, k, device=dev, generator=g) < 1e-3, w * 8, w)
    w_q, w_s = Q.quantize_tiles(w)
    del w
    bias = (torch.randn(n, device=dev, generator=g) * 0.1).to(torch.bfloat16)
    x = torch.randn(m, k, device=dev, generator=g)
    x[:, torch.rand(k, device=dev, generator=g) < 0.01] *= 20
    return x.to(torch.bfloat16), w_q, w_s, bias


def fp8_available(dev) -> bool:
    return dev.type == "cuda" and hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm") and \
        torch.cuda.get_device_capability(dev) >= (8, 9)


def bench_case(W8, Q, c, dev, alternatives, rows_err=4096):
    m, n, k = c["M"], c["N"], c["K"]
    x, w_q, w_s, bias = make_data(Q, m, n, k, dev)
    w_bf16 = Q.dequantize_tiles(w_q, w_s, torch.bfloat16)
    r = dict(c)
    xs = x[:rows_err]
    ref = xs.float() @ Q.dequantize_tiles(w_q, w_s, torch.float32).T + bias.float()

    y = W8.w8a8_linear(x, w_q, w_s, bias)
    r["err_int8"] = rel(y[:rows_err], ref)
    # fp32 output for this check: a bf16 output's own rounding (~2^-9) would hide what it checks
    emu = Q.w8a8_emulated(x[:512], w_q, w_s, bias)
    r["err_int8_vs_emulation"] = rel(W8.w8a8_linear(x[:512].float(), w_q, w_s, bias), emu)
    r["ms_int8"] = do_bench(lambda: W8.w8a8_linear(x, w_q, w_s, bias))
    r["ms_int8_prepass"] = do_bench(lambda: W8.quantize_activations(x))

    r["ms_bf16"] = do_bench(lambda: F.linear(x, w_bf16, bias))
    r["err_bf16"] = rel(F.linear(xs, w_bf16, bias), ref)

    if fp8_available(dev):
        # ComfyUI's fp8 path: weight stored e4m3 (here with a per-tensor scale), input clamped to +-448 and cast.
        w_scale8 = (w_bf16.float().abs().amax() / 448.0).clamp(min=1e-12)
        w8 = (w_bf16.float() / w_scale8).to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev)

        def fp8_gemm(a8):
            return torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=w_scale8, bias=bias, out_dtype=torch.bfloat16)

        def fp8_full(inp):
            return fp8_gemm(torch.clamp(inp, -448, 448).to(torch.float8_e4m3fn).contiguous())
        try:
            a8 = torch.clamp(x, -448, 448).to(torch.float8_e4m3fn)
            r["ms_fp8_gemm"] = do_bench(lambda: fp8_gemm(a8))
            r["ms_fp8_with_cast"] = do_bench(lambda: fp8_full(x))
            r["err_fp8"] = rel(fp8_full(xs), ref)
        except RuntimeError as e:  # a torch without this _scaled_mm signature / layout
            r["fp8_error"] = str(e).splitlines()[0][:120]

    r["alternatives"] = {}
    for name, ov in alternatives.items():
        try:
            ya = W8.w8a8_linear_impl(x[:rows_err], w_q, w_s, bias, config=ov)
            ea = rel(ya, ref)
            ms = do_bench(lambda: W8.w8a8_linear_impl(x, w_q, w_s, bias, config=ov))
            r["alternatives"][name] = {"ms": ms, "err": ea}
        except Exception as e:  # out of shared memory / registers on this GPU: record, go on
            r["alternatives"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"}
    ok = {k2: v for k2, v in r["alternatives"].items() if "ms" in v}
    r["best_alternative"] = min(ok, key=lambda k2: ok[k2]["ms"]) if ok else None
    del x, w_q, w_s, w_bf16, ref
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return r


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def weight_memory(dim, ffn, blocks, text_dim=4096, freq_dim=256, in_dim=16, out_dim=16):
    """(int8 model GB, bf16 model GB): block Linears int8 + one fp32 scale per 128x128 tile, the rest bf16/fp32."""
    blk_lin = 8 * dim * dim + 2 * dim * ffn  # self q/k/v/o, cross q/k/v/o, ffn.0, ffn.2 weights
    blk_scales = 8 * math.ceil(dim / 128) ** 2 + 2 * math.ceil(dim / 128) * math.ceil(ffn / 128)
    blk_other = 10 * dim + dim + ffn  # biases (8 dim + ffn + dim)
    blk_other += 4 * dim + 2 * dim + 6 * dim  # q/k norms x2, norm3 weight+bias, modulation
    outside = (dim * in_dim * 4 + dim) + (dim * text_dim + dim + dim * dim + dim) + (dim * freq_dim + dim + dim * dim
                                                                                     + dim) \
        + (6 * dim * dim + 6 * dim) + (out_dim * 4 * dim + out_dim * 4) + 2 * dim
    int8 = blocks * (blk_lin + blk_scales * 4 + blk_other * 2) + outside * 2
    bf16 = blocks * (blk_lin + blk_other) * 2 + outside * 2
    return int8 / 1e9, bf16 / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="480p only, default config and 3 alternatives")
    ap.add_argument("--batch", type=int, default=1, help="batch items per call (ComfyUI batches cond + uncond: 2)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1): checks the "
                    "script, times mean nothing")
    args = ap.parse_args()
    global do_bench
    if args.smoke:
        import time

        def do_bench(fn):  # noqa: F811  (wall clock once: the interpreter has no CUDA events)
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        dev = torch.device("cpu")
        name, cap, sms = "CPU (interpreter smoke run)", (0, 0), 0
    else:
        if not torch.cuda.is_available():
            sys.exit("needs a CUDA GPU")
        dev = torch.device("cuda")
        prop = torch.cuda.get_device_properties(dev)
        name, cap, sms = prop.name, torch.cuda.get_device_capability(dev), prop.multi_processor_count
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference must be float32
    load_pack()
    from comfyui_sla.kernels import w8a8 as W8
    from comfyui_sla.sla import quant as Q
    n_alt = 2 if args.smoke else 4 if args.quick else len(W8.ALTERNATIVES)
    alts = {k: W8.ALTERNATIVES[k] for k in list(W8.ALTERNATIVES)[:n_alt]}
    print(f"# W8A8 linear benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"# GPU {name} (sm_{cap[0]}{cap[1]}, {sms} SMs), torch {torch.__version__}, "
          f"triton {triton.__version__}, batch {args.batch}")
    print(f"# default config: {W8.default_config(dev)}")
    print("# times: median ms (triton.testing.do_bench); err: relative L2 error vs the float32 GEMM with the "
          "dequantised weight")
    results = []
    failures = []
    for c in cases(args.quick, args.batch, args.smoke):
        r = bench_case(W8, Q, c, dev, alts)
        results.append(r)
        if not r["err_int8_vs_emulation"] < 1e-3:
            failures.append(f"{c['model']} {c['layer']}: kernel vs emulation {r['err_int8_vs_emulation']:.2e}")
        if not r["err_int8"] < 5e-2:
            failures.append(f"{c['model']} {c['layer']}: kernel vs float32 reference {r['err_int8']:.2e}")
        for name, a in r["alternatives"].items():
            if "err" in a and not a["err"] < 5e-2:
                failures.append(f"{c['model']} {c['layer']} config {name}: error {a['err']:.2e}")
        print(f"  done {c['model']} {c['res']} {c['layer']} (M={c['M']}, N={c['N']}, K={c['K']})", flush=True)

    head = (f"{'model':9} {'res':5} {'layer':26} {'M':>6} {'N':>6} {'K':>6} | {'int8':>7} {'(pre)':>6} "
            f"{'bf16':>7} {'fp8mm':>7} {'fp8+cast':>8} | {'x bf16':>6} | {'err int8':>8} {'err bf16':>8} "
            f"{'err fp8':>8} | best config (ms)")
    print()
    print(head)
    print("-" * len(head))
    for r in results:
        best = r["best_alternative"]
        best_s = f"{best} ({r['alternatives'][best]['ms']:.3f})" if best else "-"
        print(f"{r['model']:9} {r['res']:5} {r['layer']:26} {r['M']:>6} {r['N']:>6} {r['K']:>6} | "
              f"{r['ms_int8']:7.3f} {r['ms_int8_prepass']:6.3f} {r['ms_bf16']:7.3f} "
              f"{fmt(r.get('ms_fp8_gemm')):>7} {fmt(r.get('ms_fp8_with_cast')):>8} | "
              f"{r['ms_bf16'] / r['ms_int8']:6.2f} | {r['err_int8']:8.2e} {r['err_bf16']:8.2e} "
              f"{fmt(r.get('err_fp8'), '8.2e'):>8} | {best_s}")
    print()
    print("# alternative configs, ms per shape (x = failed to compile/launch on this GPU):")
    names = list(alts)
    print(f"{'model':9} {'res':5} {'layer':26} " + " ".join(f"{n:>11}" for n in names))
    for r in results:
        cells = []
        for n in names:
            a = r["alternatives"].get(n, {})
            cells.append(f"{a['ms']:11.3f}" if "ms" in a else f"{'x':>11}")
        print(f"{r['model']:9} {r['res']:5} {r['layer']:26} " + " ".join(cells))
    print()
    print("# GEMM time of one model step (all block Linears of all blocks, one call each):")
    for model, dim, ffn, blocks in MODELS:
        for res in RES:
            rs = [r for r in results if r["model"] == model and r["res"] == res]
            if not rs:
                continue
            tot = {k: sum(r[k] * r["count"] * r["blocks"] for r in rs) for k in ("ms_int8", "ms_bf16")}
            best = sum(min([a["ms"] for a in r["alternatives"].values() if "ms" in a] + [r["ms_int8"]])
                       * r["count"] * r["blocks"] for r in rs)
            fp8 = (sum(r["ms_fp8_with_cast"] * r["count"] * r["blocks"] for r in rs)
                   if all("ms_fp8_with_cast" in r for r in rs) else None)
            print(f"  {model} {res}: int8 {tot['ms_int8']:.1f} ms (best configs {best:.1f}), bf16 "
                  f"{tot['ms_bf16']:.1f} ms, fp8+cast {fmt(fp8, '.1f')} ms -> int8 saves "
                  f"{tot['ms_bf16'] - tot['ms_int8']:.1f} ms per step ({tot['ms_bf16'] / tot['ms_int8']:.2f}x)")
    print()
    print("# weight memory (block Linears int8 + fp32 tile scales, the rest bf16):")
    for model, dim, ffn, blocks in MODELS:
        i8, bf = weight_memory(dim, ffn, blocks)
        print(f"  {model}: int8 {i8:.2f} GB, bf16 {bf:.2f} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": name, "capability": cap, "torch": torch.__version__, "triton": triton.__version__,
                       "default_config": W8.default_config(dev), "results": results}, f, indent=1)
        print(f"# wrote {args.json}")
    if failures:
        print("\nCORRECTNESS FAILURES:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("\nall correctness checks passed")


if __name__ == "__main__":
    main()
