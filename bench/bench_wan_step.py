"""One sampling step's model call: ComfyUI's WanModel forward through the pack's real patch, eager and compiled.

    COMFYUI_PATH=/path/to/ComfyUI python3 bench/bench_wan_step.py [--big] [--json out.json]

In one process, bf16, random weights, B=1, 480p 81 frames (L = 32 760), at the 1.3B configuration:
  * eager: ComfyUI's default attention (dense), self-attention removed (the ceiling no attention kernel can pass),
    the pack at keep 0.05 / 0.10 / 0.15 (make_attention_override + proj_l on every block, the block index from
    ComfyUI's own block loop);
  * torch.compile of the diffusion model as ComfyUI's TorchCompileModel applies it (inductor, its guard filter
    where ComfyUI has one): dense, and the pack with the three keeps on one compiled module; compile time of the
    first forward, frames compiled (graphs, graph breaks and recompiles all add one) after each configuration;
  * fp8_e4m3fn_fast weights (ComfyUI's fp8 matmul ops) with the pack at keep 0.10, and its output difference
    against bf16 weights.
``--big`` adds the 14B configuration at 480p, eager: dense, pack keep 0.10, and fp8_e4m3fn_fast.
``--int8`` adds the W8A8 path (every Wan block Linear as int8 tiles + per-tile scales, the pack's ``custom_operations``
as the loader's ``int8 (W8A8, -quant files)`` choice builds it) with the pack at keep 0.10: eager and compiled at
1.3B, eager at 14B with ``--big``, the output difference against bf16 weights, and the GPU memory of the weights.
Times are medians of CUDA-event timings of whole forwards.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _load_pack import load_pack  # noqa: E402

CONFIGS = {"1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
           "14B": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)}
KEEPS = (0.05, 0.10, 0.15)


def comfy_modules():
    cpath = os.environ.get("COMFYUI_PATH")
    if not cpath:
        sys.exit("COMFYUI_PATH is not set")
    sys.path.insert(0, cpath)
    import comfy.model_management  # noqa: F401
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    try:
        from comfy_extras.nodes_torch_compile import skip_torch_compile_dict
    except ImportError:
        skip_torch_compile_dict = None
    return comfy.ops, WanModel, skip_torch_compile_dict


def build(WanModel, ops, cfg, weight_dtype=torch.bfloat16, fp8_fast=False, state=None):
    """The model at ``cfg`` with random weights (or ``state``), built the way ComfyUI builds it."""
    operations = (ops.pick_operations(weight_dtype, torch.bfloat16, load_device=torch.device("cuda"),
                                      fp8_optimizations=fp8_fast) if weight_dtype != torch.bfloat16
                  else ops.disable_weight_init)
    with torch.device("cuda"):
        model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, freq_dim=256,
                         text_dim=4096, out_dim=16, device="cuda", dtype=weight_dtype, operations=operations, **cfg)
    if state is None:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
    else:
        model.load_state_dict(state)
    return model.eval()


def int8_model(WanModel, cfg, state, device="cuda"):
    """``state`` (bf16) with every Wan block Linear as int8 tiles, in a model built with the pack's W8A8 ops."""
    from comfyui_sla.nodes.w8a8_comfy import int8_layers, make_ops
    from comfyui_sla.sla import quant as Q
    q_state = {}
    for key, v in state.items():
        name = key[: -len(".weight")]
        if key.endswith(".weight") and v.dim() == 2 and Q.is_w8a8_block_linear(name):
            q_state[key], q_state[name + ".int8_scale"] = Q.quantize_tiles(v.float())
        else:
            q_state[key] = v
    with torch.device(device):
        model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, freq_dim=256,
                         text_dim=4096, out_dim=16, device=device, dtype=torch.bfloat16, operations=make_ops(),
                         **cfg)
    missing, unexpected = model.load_state_dict(q_state, strict=False)  # as ComfyUI loads (scales are buffers
    assert not unexpected and all(k.endswith(".int8_scale") for k in missing), (missing, unexpected)  # made on load)
    assert int8_layers(model), "no layer took the int8 tiles"
    return model.eval(), len(int8_layers(model))


def weight_gb(model):
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 1e9


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", action="store_true", help="also the 14B configuration (eager)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--int8", action="store_true", help="also the W8A8 int8 linear path (keep 0.10)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import triton
    from torch._dynamo.testing import CompileCounterWithBackend
    ops, WanModel, guard_filter = comfy_modules()
    pack = load_pack()
    from comfyui_sla.sla.runtime import patch as P
    from comfyui_sla.sla.families import WAN
    from comfyui_sla.sla.runtime.settings import SLASettings
    from comfyui_sla.sla.runtime.sla_patch import SLAPatch
    from comfyui_sla.sla.runtime.weights import ProjLWeights

    try:
        import comfy_kitchen  # noqa: F401
        kitchen = True
    except ImportError:
        kitchen = False
    import comfyui_version
    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                comfyui=comfyui_version.__version__, comfy_kitchen=kitchen, date=datetime.date.today().isoformat())
    print("# " + json.dumps(meta), flush=True)
    res = dict(meta=meta, pack=pack.__name__)

    x = torch.randn(1, 16, 21, 60, 104, device="cuda", dtype=torch.bfloat16)
    t = torch.tensor([0.7], device="cuda")
    ctx = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)

    def patched(cfg, keep):
        g = torch.Generator().manual_seed(1)
        d = cfg["dim"] // cfg["num_heads"]
        proj = {i: (torch.randn(d, d, generator=g) * 0.02, torch.randn(d, generator=g) * 0.02)
                for i in range(cfg["num_layers"])}
        patch = SLAPatch(WAN, SLASettings(keep_ratio=keep), ProjLWeights(proj, f"bench-{cfg['dim']}"))
        return {"optimized_attention_override": P.make_attention_override(patch), "sigmas": t}

    def no_self_attention(func, *a, **kw):
        q, k = a[0], a[1]
        return q if q.shape == k.shape and kw.get("mask") is None else func(*a, **kw)

    def run(model, opts):
        with torch.no_grad():
            return model(x, t, ctx, transformer_options=dict(opts))

    def row(name, ms, base=None):
        res[name] = round(ms, 2)
        print(f"{name}: {ms:.1f} ms" + (f"  ({base / ms:.2f}x dense)" if base else ""), flush=True)

    options = {"guard_filter_fn": guard_filter} if guard_filter else None

    def compile_fresh(m):
        """``m`` compiled as TorchCompileModel does, with a frame counter, in a reset dynamo."""
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("inductor")
        return torch.compile(m, backend=counter, options=options), counter

    def first_forward(m, o):
        """Seconds of one synchronised forward (the compile, for a freshly compiled module)."""
        t0 = time.perf_counter()
        run(m, o)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def rel_diff(name, m, o, ref):
        out = run(m, o).float()
        res[name] = ((out - ref).norm() / ref.norm()).item()
        return res[name]

    cfg = CONFIGS["1.3B"]
    model = build(WanModel, ops, cfg)
    dense = timed(lambda: run(model, {}), args.reps)
    row("1.3B eager dense", dense)
    row("1.3B eager no self-attention (ceiling)",
        timed(lambda: run(model, {"optimized_attention_override": no_self_attention}), args.reps), dense)
    opts = {keep: patched(cfg, keep) for keep in KEEPS}
    for keep in KEEPS:
        row(f"1.3B eager pack keep {keep:.2f}", timed(lambda: run(model, opts[keep]), args.reps), dense)
    ref = run(model, opts[0.10]).float()

    if not args.no_compile:
        for name, configs in (("dense", [("dense", {})]),
                              ("pack", [(f"keep {k:.2f}", opts[k]) for k in KEEPS])):
            compiled, counter = compile_fresh(model)
            frames = []
            for label, o in configs:
                first = first_forward(compiled, o)
                ms = timed(lambda: run(compiled, o), args.reps)
                frames.append(counter.frame_count)
                row(f"1.3B compiled {label}", ms, dense)
                res[f"1.3B compiled {label} first forward s"] = round(first, 1)
                print(f"  first forward (compile) {first:.1f} s, frames compiled so far {counter.frame_count}",
                      flush=True)
            res[f"1.3B compiled {name} frames after each config"] = frames
        rel_diff("1.3B compiled vs eager rel diff", compiled, opts[0.10], ref)
        torch._dynamo.reset()

    state = {k: v for k, v in model.state_dict().items()}
    del model
    torch.cuda.empty_cache()
    fp8 = build(WanModel, ops, cfg, torch.float8_e4m3fn, fp8_fast=True, state=state)
    row("1.3B eager fp8_e4m3fn_fast pack keep 0.10", timed(lambda: run(fp8, opts[0.10]), args.reps), dense)
    print(f"  fp8_e4m3fn_fast output vs bf16 weights: rel L2 "
          f"{rel_diff('1.3B fp8_fast vs bf16 rel diff', fp8, opts[0.10], ref):.4f}")
    del fp8
    torch.cuda.empty_cache()

    if args.int8:
        m8, n8 = int8_model(WanModel, cfg, state)
        res["1.3B int8 layers"], res["1.3B int8 weights GB"] = n8, round(weight_gb(m8), 3)
        row("1.3B eager int8 W8A8 pack keep 0.10", timed(lambda: run(m8, opts[0.10]), args.reps), dense)
        print(f"  int8 W8A8 output vs bf16 weights: rel L2 "
              f"{rel_diff('1.3B int8 vs bf16 rel diff', m8, opts[0.10], ref):.4f}", flush=True)
        if not args.no_compile:
            compiled, counter = compile_fresh(m8)
            res["1.3B compiled int8 first forward s"] = round(first_forward(compiled, opts[0.10]), 1)
            row("1.3B compiled int8 W8A8 pack keep 0.10", timed(lambda: run(compiled, opts[0.10]), args.reps),
                dense)
            res["1.3B compiled int8 frames"] = counter.frame_count
            torch._dynamo.reset()
            del compiled
        del m8
        torch.cuda.empty_cache()
    del state

    if args.big:
        cfg = CONFIGS["14B"]
        model = build(WanModel, ops, cfg)
        dense = timed(lambda: run(model, {}), 3)
        row("14B eager dense", dense)
        o14 = patched(cfg, 0.10)
        row("14B eager pack keep 0.10", timed(lambda: run(model, o14), 3), dense)
        ref = run(model, o14).float()
        state = {k: v for k, v in model.state_dict().items()}
        del model
        torch.cuda.empty_cache()
        fp8 = build(WanModel, ops, cfg, torch.float8_e4m3fn, fp8_fast=True, state=state)
        row("14B eager fp8_e4m3fn_fast pack keep 0.10", timed(lambda: run(fp8, o14), 3), dense)
        print(f"  fp8_e4m3fn_fast output vs bf16 weights: rel L2 "
              f"{rel_diff('14B fp8_fast vs bf16 rel diff', fp8, o14, ref):.4f}")
        del fp8
        torch.cuda.empty_cache()
        if args.int8:
            m8, _ = int8_model(WanModel, cfg, state)
            del state
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            res["14B int8 weights GB"] = round(weight_gb(m8), 3)
            res["14B int8 allocated GB (model, inputs, reference output)"] = round(torch.cuda.memory_allocated() / 1e9,
                                                                                   3)
            row("14B eager int8 W8A8 pack keep 0.10", timed(lambda: run(m8, o14), 3), dense)
            res["14B int8 forward peak GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
            print(f"  int8: weights {res['14B int8 weights GB']} GB, rel L2 vs bf16 "
                  f"{rel_diff('14B int8 vs bf16 rel diff', m8, o14, ref):.4f}", flush=True)

    text = json.dumps(res, indent=1)
    if args.json:
        pathlib.Path(args.json).write_text(text)
    print("JSON " + json.dumps(res))


if __name__ == "__main__":
    main()
