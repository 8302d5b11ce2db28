"""Benchmark of the SLA Triton op against every SDPA backend (and thu-ml SLA / comfy_kitchen when importable).

    python3 bench/bench_attention.py                       # kernel table + JSON
    python3 bench/bench_attention.py --wan-model           # + one ComfyUI WanModel 1.3B forward (COMFYUI_PATH)
    python3 bench/bench_attention.py --sweep               # + main-kernel config sweep (warps/stages)

Everything runs in one process, bf16, B=1, D=128, random inputs in ComfyUI's [B, L, H*D] layout. Times are medians
of CUDA-event timings (triton.testing.do_bench). "floor" = FLOP of the op (sparse QK^T + PV over the kept keys,
plus the linear pre-pass, phi(q)@KV and proj_l) at the dense cuDNN SDPA rate measured in the same run.

thu-ml SLA is compared when its package is importable, e.g. from a git-ignored copy (never commit it):
    mkdir -p .thirdparty && git -C /path/to/thu-ml/SLA archive HEAD sparse_linear_attention | tar -x -C .thirdparty
ComfyUI core's kernel, comfy_kitchen.sol_attn in top-k mode, is timed when comfy_kitchen is importable (it is not
on the device image; carry a wheel, e.g. PyPI's cp312 one without backends/hip/_C.abi3.so, which fits the 64 MiB
a device call carries, and `pip install --no-deps --target` it first); otherwise the reason is printed.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import pathlib
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACK = "comfyui_sla"


def load_pack():
    """The pack's ``kernels`` package and its ``launch`` module (the repository imported as ``comfyui_sla``)."""
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack as _load
    _load()
    return importlib.import_module(PACK + ".kernels"), importlib.import_module(PACK + ".kernels.launch")


def keep_blocks(length, keep):
    """Key blocks kept per row for a keep ratio (the caller's rule, sla.spec.keep_count)."""
    spec = importlib.import_module(PACK + ".sla.spec")
    return spec.keep_count(spec.num_blocks(length, BLOCK_K), keep)


SHAPES = [(1, 32760, 12, 128), (1, 75600, 40, 128)]
KEEPS = [0.05, 0.10, 0.20, 0.50]
BLOCK_Q, BLOCK_K = 128, 64


def bench_ms(fn, rep=100):
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def op_flops(b, length, h, d, keep_blocks):
    keys = min(length, keep_blocks * BLOCK_K)
    sparse = 4.0 * b * h * length * keys * d
    linear = 3 * 2.0 * b * h * length * d * d      # phi(K)^T V, phi(q) @ KV, proj_l
    return sparse + linear


def make_inputs(b, length, h, d, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(b, length, 3 * h * d, device="cuda", dtype=torch.bfloat16, generator=gen)
    return tuple(qkv[..., i * h * d:(i + 1) * h * d].view(b, length, h, d) for i in range(3))


def sdpa_times(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D) views
    res = {}
    for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([be]):
                res[name] = bench_ms(lambda: F.scaled_dot_product_attention(qt, kt, vt), rep=60)
        except Exception as e:  # noqa: BLE001  (backend unavailable for this shape/GPU)
            res[name] = None
            print(f"# sdpa {name}: unavailable ({type(e).__name__}: {str(e)[:80]})")
    return res


def thu_sla_factory():
    """thu-ml SLA (a git-ignored copy in .thirdparty/, benchmark only), or None with the reason."""
    path = ROOT / ".thirdparty"
    if path.is_dir():
        sys.path.insert(0, str(path))
    try:
        from sparse_linear_attention import SparseLinearAttention
    except Exception as e:  # noqa: BLE001
        return None, f"not importable ({type(e).__name__}: {e})"
    return SparseLinearAttention, "thu-ml/SLA main (copy in .thirdparty)"


def kitchen_factory():
    """ComfyUI core's sparse kernel, ``comfy_kitchen.sol_attn`` in top-k mode, or None with the reason.

    comfy_kitchen is not on the device image and PyPI's cp312 wheel is just over what a device call can carry; a copy
    without its HIP library fits (see BENCHMARKS.md): carry it in .whl/ and pip-install it with --target first."""
    try:
        import comfy_kitchen
    except Exception as e:  # noqa: BLE001
        return None, f"comfy_kitchen not importable ({type(e).__name__}: {e})"
    version = getattr(comfy_kitchen, "__version__", "?")
    try:
        ok = comfy_kitchen.sol_attn_is_available(torch.device("cuda"))
    except Exception as e:  # noqa: BLE001
        return None, f"comfy_kitchen {version}: sol_attn_is_available failed ({type(e).__name__}: {e})"
    if not ok:
        return None, f"comfy_kitchen {version}: sol_attn not available on this GPU/build"
    # (B, T, H, 128) bf16, keep = topk_ratio of the key blocks per query block (its 64-token blocks).
    return (lambda q, k, v, keep: comfy_kitchen.sol_attn(q, k, v, topk_ratio=keep)), \
        f"comfy_kitchen {version} sol_attn (top-k mode)"


def peak_extra_mb(fn, q):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base - out.numel() * out.element_size()
    del out
    return peak / 2**20, peak / (q.numel() * q.element_size())


def kernel_table(kernels, launch, shapes, keeps, with_thu=True):
    rows = []
    thu_cls, thu_note = thu_sla_factory() if with_thu else (None, "skipped")
    kitchen, kitchen_note = kitchen_factory()
    print(f"# thu-ml SLA: {thu_note}")
    print(f"# ComfyUI core kernel: {kitchen_note}")
    for (b, length, h, d) in shapes:
        q, k, v = make_inputs(b, length, h, d)
        sd = sdpa_times(q, k, v)
        best_name = min((n for n in sd if sd[n] is not None), key=lambda n: sd[n])
        best = sd[best_name]
        dense_flops = 4.0 * b * h * length * length * d
        rate = dense_flops / (sd["cudnn"] or best) / 1e9   # TFLOP/s * 1e3 ... in FLOP/ms
        print(f"# shape B={b} L={length} H={h} D={d}: " + ", ".join(
            f"{n} {t:.2f} ms" if t else f"{n} n/a" for n, t in sd.items()) +
              f"; dense rate {dense_flops / (sd['cudnn'] or best) / 1e9:.0f} TFLOP/s")
        w = torch.randn(d, d, device="cuda") * 0.05
        bias = torch.randn(d, device="cuda") * 0.05
        nk = triton.cdiv(length, BLOCK_K)
        for keep in keeps:
            kb = keep_blocks(length, keep)
            fn = lambda: kernels.sla_forward(q, k, v, kb, w, bias, "softmax", BLOCK_Q, BLOCK_K)  # noqa: E731
            ms = bench_ms(fn)
            # components: pre-pass, mask (torch), main kernel (given LUT)
            cdt = torch.bfloat16
            pre = bench_ms(lambda: prepass(q, k, v, BLOCK_Q, BLOCK_K, "softmax", cdt), rep=50)
            qm, km, _, _, kt = prepass(q, k, v, BLOCK_Q, BLOCK_K, "softmax", cdt)
            mask_ms = bench_ms(lambda: lut_from_means(qm, km, kt, length, kb), rep=50)
            _, lut = launch.sla_forward_impl(q, k, v, kb, w, bias, return_lut=True)
            main_ms = bench_ms(lambda: launch.sla_forward_impl(q, k, v, kb, w, bias, lut=lut), rep=50) - pre
            mem_mb, mem_ratio = peak_extra_mb(fn, q)
            flops = op_flops(b, length, h, d, kb)
            floor_ms = flops / (rate * 1e9) if rate else float("nan")
            row = dict(B=b, L=length, H=h, D=d, keep=keep, keep_blocks=kb, ms=ms, prepass_ms=pre, mask_ms=mask_ms,
                       main_ms=main_ms, tflops=flops / ms / 1e9, best_sdpa=best_name, best_sdpa_ms=best,
                       ratio_vs_best_sdpa=best / ms, floor_ms=floor_ms, share_of_floor=floor_ms / ms,
                       extra_mem_mb=mem_mb, extra_mem_over_q=mem_ratio, sdpa=sd)
            if thu_cls is not None:
                try:
                    mod = thu_cls(head_dim=d, topk=keep, feature_map="softmax", BLKQ=BLOCK_Q, BLKK=BLOCK_K).cuda()
                    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
                    with torch.no_grad():
                        row["thu_sla_ms"] = bench_ms(lambda: mod(qt, kt, vt), rep=50)
                    del qt, kt, vt
                except Exception as e:  # noqa: BLE001
                    row["thu_sla_ms"] = None
                    print(f"# thu-ml SLA failed: {type(e).__name__}: {str(e)[:120]}")
            if kitchen is not None and keep < 1.0:   # its top-k mode takes ratios in (0, 1)
                try:
                    qc, kc, vc = (t.contiguous() for t in (q, k, v))   # (B, L, H, D), copied outside the timing
                    with torch.no_grad():
                        row["kitchen_ms"] = bench_ms(lambda: kitchen(qc, kc, vc, keep), rep=50)
                    del qc, kc, vc
                except Exception as e:  # noqa: BLE001
                    row["kitchen_ms"] = None
                    print(f"# comfy_kitchen sol_attn failed: {type(e).__name__}: {str(e)[:120]}")
            rows.append(row)
            print(f"  keep {keep:.2f} ({kb} blk): {ms:7.3f} ms  (pre {pre:.3f}, mask {mask_ms:.3f}, main {main_ms:.3f})"
                  f"  {row['tflops']:.0f} TFLOP/s  x{row['ratio_vs_best_sdpa']:.2f} vs {best_name}"
                  f"  floor {floor_ms:.3f} ms ({100 * row['share_of_floor']:.0f}%)"
                  f"  extra mem {mem_mb:.1f} MiB ({100 * mem_ratio:.1f}% of q)"
                  + (f"  thu-SLA {row['thu_sla_ms']:.3f} ms" if row.get("thu_sla_ms") else "")
                  + (f"  kitchen {row['kitchen_ms']:.3f} ms" if row.get("kitchen_ms") else ""), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def sweep(kernels, launch, shape=(1, 32760, 12, 128), keep=0.10):
    """Main-kernel (num_warps, num_stages) sweep at one shape, LUT fixed."""
    b, length, h, d = shape
    q, k, v = make_inputs(b, length, h, d)
    w = torch.randn(d, d, device="cuda") * 0.05
    pre = bench_ms(lambda: prepass(q, k, v, BLOCK_Q, BLOCK_K, "softmax", torch.bfloat16), rep=50)
    res = []
    # (block_q, pair, warps, stages, key blocks through TMA, query tile + summary through TMA)
    configs = [(128, True, 8, 3, False, False), (128, True, 8, 2, True, False), (128, True, 8, 2, True, True)]
    luts = {}
    kb = keep_blocks(length, keep)
    for bq, pair, nw, ns, tma, qkv in configs:
        if bq not in luts:
            luts[bq] = launch.sla_forward_impl(q, k, v, kb, w, None, block_q=bq, return_lut=True)[1]
        cfg = dict(num_warps=nw, num_stages=ns, PAIR=pair, USE_TMA=tma, Q_TMA=qkv, KV_EARLY=qkv)
        tag = f"bq={bq} pair={pair} warps={nw} stages={ns} tma={tma} q/kv tma={qkv}"
        try:
            t = bench_ms(lambda: launch.sla_forward_impl(q, k, v, kb, w, None, block_q=bq, lut=luts[bq], config=cfg),
                         rep=50) - pre
        except Exception as e:  # noqa: BLE001
            t = None
            print(f"# sweep {tag}: {type(e).__name__}: {str(e)[:100]}")
        res.append(dict(block_q=bq, pair=pair, num_warps=nw, num_stages=ns, tma=tma, q_kv_tma=qkv, main_ms=t))
        if t:
            print(f"  sweep {tag}: main {t:.3f} ms", flush=True)
    for pps, nw, ns in ((8, 4, 3),):
        pcfg = dict(progs_per_sm=pps, num_warps=nw, num_stages=ns)
        tp = bench_ms(lambda: prepass(q, k, v, BLOCK_Q, BLOCK_K, "softmax", torch.bfloat16, config=pcfg), rep=50)
        print(f"  prepass progs/SM={pps} warps={nw} stages={ns}: {tp:.3f} ms", flush=True)
        res.append(dict(prepass_progs_per_sm=pps, prepass_warps=nw, prepass_stages=ns, prepass_ms=tp))
    t = bench_ms(lambda: launch.sla_forward_impl(q, k, v, kb, None, None, lut=luts[128]), rep=50) - pre
    print(f"  default config without proj_l (no linear branch): main {t:.3f} ms", flush=True)
    res.append(dict(block_q=128, no_proj=True, main_ms=t))
    return res


def wan_model_bench(kernels, keep=0.10, steps=3):
    """One forward of ComfyUI's WanModel (1.3B config, random bf16 weights, L = 32 760): SDPA vs our op."""
    cpath = os.environ.get("COMFYUI_PATH")
    if not cpath:
        return {"skipped": "COMFYUI_PATH unset"}
    sys.path.insert(0, cpath)
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=1536, ffn_dim=8960,
                         freq_dim=256, text_dim=4096, out_dim=16, num_heads=12, num_layers=30, device="cuda",
                         dtype=torch.bfloat16, operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.eval()
    x = torch.randn(1, 16, 21, 60, 104, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([500.0], device="cuda")
    ctx = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    calls = {"sla": 0, "dense": 0}

    def override(func, *args, **kwargs):
        # Minimal benchmark override: self-attention (same q/k length, no mask) goes to SLA, the rest to func.
        q, k, v = args[:3]
        heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
        if (q.shape[1] != k.shape[1] or kwargs.get("mask") is not None or kwargs.get("skip_reshape")
                or q.dim() != 3):
            calls["dense"] += 1
            return func(*args, **kwargs)
        calls["sla"] += 1
        b, length, hd = q.shape
        shp = (b, length, heads, hd // heads)
        o = kernels.sla_forward(q.view(shp), k.view(shp), v.view(shp), keep_blocks(length, keep), None, None,
                                "softmax", 128, 64)
        return o.view(b, length, hd)

    def fwd(opts):
        with torch.no_grad():
            return model(x, t, ctx, transformer_options=opts)

    res = {}
    for name, opts in (("sdpa", {}), ("sla", {"optimized_attention_override": override})):
        fwd(dict(opts))
        torch.cuda.synchronize()
        times = []
        for _ in range(steps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fwd(dict(opts))
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        res[name + "_ms"] = sorted(times)[len(times) // 2]
    res["speedup"] = res["sdpa_ms"] / res["sla_ms"]
    res["calls_per_forward"] = {k_: v_ / (steps + 1) for k_, v_ in calls.items()}
    print(f"# WanModel 1.3B forward, L=32760: default {res['sdpa_ms']:.1f} ms, SLA keep {keep} "
          f"{res['sla_ms']:.1f} ms, x{res['speedup']:.2f}  (override calls/forward {res['calls_per_forward']})")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wan-model", action="store_true", help="also time ComfyUI's WanModel (needs COMFYUI_PATH)")
    ap.add_argument("--sweep", action="store_true", help="also sweep main-kernel num_warps/num_stages")
    ap.add_argument("--quick", action="store_true", help="only the 1.3B shape")
    ap.add_argument("--no-table", action="store_true")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    args = ap.parse_args()
    kernels, launch = load_pack()
    global prepass, lut_from_means
    from comfyui_sla.kernels.prepass import prepass
    from comfyui_sla.kernels.topk import lut_from_means
    props = torch.cuda.get_device_properties(0)
    meta = dict(gpu=torch.cuda.get_device_name(0), sms=props.multi_processor_count, torch=torch.__version__,
                triton=triton.__version__, date=datetime.date.today().isoformat())
    print("# " + json.dumps(meta))
    result = dict(meta=meta)
    if not args.no_table:
        shapes = SHAPES[:1] if args.quick else SHAPES
        result["table"] = kernel_table(kernels, launch, shapes, KEEPS)
    if args.sweep:
        result["sweep"] = sweep(kernels, launch)
    if args.wan_model:
        result["wan_model"] = wan_model_bench(kernels)
    if "table" in result:
        print("\n| shape | keep | ms | x best SDPA | share of floor | TFLOP/s | thu-ml SLA ms | comfy_kitchen ms |")
        print("|---|---|---|---|---|---|---|---|")
        for r in result["table"]:
            thu, kit = r.get("thu_sla_ms"), r.get("kitchen_ms")
            print(f"| H={r['H']} L={r['L']} | {r['keep']:.2f} | {r['ms']:.3f} | {r['ratio_vs_best_sdpa']:.2f} "
                  f"({r['best_sdpa']} {r['best_sdpa_ms']:.2f}) | {100 * r['share_of_floor']:.0f}% | "
                  f"{r['tflops']:.0f} | {thu if thu is None else f'{thu:.3f}'} | "
                  f"{kit if kit is None else f'{kit:.3f}'} |")
    text = json.dumps(result, indent=1, default=str)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    print("JSON " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
