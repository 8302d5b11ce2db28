"""Peak resident memory of loading and converting a synthetic TurboDiffusion ``-quant.pth`` at the 14B width.

Run from the repo root::

    python3 bench/bench_checkpoint_memory.py [--blocks 4] [--workdir /tmp/sla_mem] [--keep]

Writes a synthetic int8 file with the exact key layout and shapes of TurboWan 14B (dim 5120, ffn 13824, 40 heads;
only ``--blocks`` of its 40 blocks, random int8 tiles and scales, bf16 embeddings/head, fp32 norms, proj_l per
block), then measures, each in a fresh subprocess, the peak resident set (VmHWM from /proc, i.e. ru_maxrss) of

- ``load_checkpoint(path, weight_dtype=bf16)`` (what the ComfyUI loader node does), and
- ``convert(path, out.safetensors, bf16)`` (``python3 -m sla.convert``),
- ``load_checkpoint`` of that converted ``.safetensors``,

and, for comparison, a naive ``torch.load`` (no mmap) + dequantisation. The peak above the interpreter's own
baseline (torch imported, nothing loaded) is reported per GB of output (bf16 model + fp32 proj_l).
Linux only (reads /proc/self/status).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

DIM, FFN, HEADS, TEXT_DIM, FREQ_DIM, IN_DIM, OUT_DIM = 5120, 13824, 40, 4096, 256, 16, 16


def make_quant_file(path: str, blocks: int, seed: int = 0) -> int:
    """Write the synthetic -quant.pth; returns the output (bf16 + fp32 proj_l) size in bytes."""
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}
    out_bytes = 0

    def bf(*shape):
        nonlocal out_bytes
        t = (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
        out_bytes += t.numel() * 2
        return t

    def f32(*shape, base=0.0):
        nonlocal out_bytes
        t = torch.randn(*shape, generator=g) * 0.1 + base
        out_bytes += t.numel() * 2  # loaded as bf16 (weight_dtype)
        return t

    def int8_linear(name, o, i):
        nonlocal out_bytes
        sd[name + ".int8_weight"] = torch.randint(-128, 128, (o, i), dtype=torch.int8, generator=g)
        sd[name + ".scale"] = torch.rand(math.ceil(o / 128), math.ceil(i / 128), generator=g) * 1e-3 + 1e-4
        sd[name + ".bias"] = bf(o)
        out_bytes += o * i * 2

    sd["patch_embedding.weight"] = bf(DIM, IN_DIM * 4)
    sd["patch_embedding.bias"] = bf(DIM)
    for n, (o, i) in {"text_embedding.0": (DIM, TEXT_DIM), "text_embedding.2": (DIM, DIM),
                      "time_embedding.0": (DIM, FREQ_DIM), "time_embedding.2": (DIM, DIM),
                      "time_projection.1": (DIM * 6, DIM), "head.head": (OUT_DIM * 4, DIM)}.items():
        sd[n + ".weight"] = bf(o, i)
        sd[n + ".bias"] = bf(o)
    sd["head.modulation"] = bf(1, 2, DIM)
    for b in range(blocks):
        p = f"blocks.{b}."
        for n in ("q", "k", "v", "o"):
            int8_linear(p + "self_attn." + n, DIM, DIM)
            int8_linear(p + "cross_attn." + n, DIM, DIM)
        for a in ("self_attn", "cross_attn"):
            sd[p + a + ".norm_q.weight"] = f32(DIM, base=1.0)
            sd[p + a + ".norm_k.weight"] = f32(DIM, base=1.0)
        sd[p + "norm3.weight"] = f32(DIM, base=1.0)
        sd[p + "norm3.bias"] = f32(DIM)
        int8_linear(p + "ffn.0", FFN, DIM)
        int8_linear(p + "ffn.2", DIM, FFN)
        sd[p + "modulation"] = bf(1, 6, DIM)
        hd = DIM // HEADS
        sd[p + "self_attn.attn_op.local_attn.proj_l.weight"] = torch.randn(hd, hd, generator=g) * 0.05
        sd[p + "self_attn.attn_op.local_attn.proj_l.bias"] = torch.randn(hd, generator=g) * 0.05
        out_bytes += (hd * hd + hd) * 4
    torch.save({"net." + k: v for k, v in sd.items()}, path)
    return out_bytes


_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import torch
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
base = rss()
mode, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.time()
if mode == 'load':
    from sla.checkpoint import load_checkpoint
    L = load_checkpoint(src, weight_dtype=torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in L.state_dict.values())
elif mode == 'load_st':
    from sla.checkpoint import load_checkpoint
    L = load_checkpoint(dst, weight_dtype=torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in L.state_dict.values())
elif mode in ('comfy', 'comfy_plain', 'comfy_st'):
    sys.path.insert(0, os.environ['SLA_BENCH_COMFYUI']); sys.path.insert(0, {root!r} + '/tests/integration')
    from comfy_env import install_placeholders
    install_placeholders()
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.sd, comfy.utils
    base = rss()
    opts = {{"dtype": torch.bfloat16}}
    if mode == 'comfy':
        from sla.checkpoint import consume_on_copy, load_checkpoint, plain_tensors
        L = load_checkpoint(src, weight_dtype=torch.bfloat16)
        with consume_on_copy(L.state_dict) as sd:
            m = comfy.sd.load_diffusion_model_state_dict(sd, model_options=opts)
        plain_tensors(m.model.diffusion_model)
    elif mode == 'comfy_plain':
        from sla.checkpoint import load_checkpoint
        sd = load_checkpoint(src, weight_dtype=torch.bfloat16).state_dict
        m = comfy.sd.load_diffusion_model_state_dict(sd, model_options=opts)
    else:
        sd = comfy.utils.load_torch_file(dst)
        m = comfy.sd.load_diffusion_model_state_dict(sd, model_options=opts)
    held = sum(t.numel() * t.element_size() for t in m.model.diffusion_model.state_dict().values())
elif mode == 'convert':
    from sla.checkpoint.convert import convert
    convert(src, dst, torch.bfloat16, overwrite=True)
    held = 0
elif mode == 'naive':
    sd = torch.load(src, map_location='cpu', weights_only=True)
    from sla.checkpoint import dequantize_int8_tiles
    out = {{}}
    for k in list(sd):
        if k.endswith('.int8_weight'):
            b = k[:-len('.int8_weight')]
            out[b + '.weight'] = dequantize_int8_tiles(sd[k], sd[b + '.scale'], torch.bfloat16)
        elif not k.endswith('.scale'):
            out[k] = sd[k].to(torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in out.values())
dt = time.time() - t0
print(json.dumps({{"mode": mode, "baseline": base, "hwm": hwm(),
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "held": held, "secs": dt}}))
"""


def measure(mode: str, src: str, dst: str) -> dict:
    code = _CHILD.format(root=str(ROOT))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code, mode, src, dst], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--workdir", default="/tmp/sla_mem")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic files")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--comfyui", default="", help="a ComfyUI checkout: also measure the whole loader-node path "
                    "(load_checkpoint + comfy.sd.load_diffusion_model_state_dict) and the stock UNETLoader path "
                    "on the converted file")
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    src = os.path.join(args.workdir, f"synthetic-14B-{args.blocks}blocks-quant.pth")
    dst = os.path.join(args.workdir, "converted.safetensors")
    t0 = time.time()
    out_bytes = make_quant_file(src, args.blocks)
    print(f"synthetic -quant file: {os.path.getsize(src) / 1e9:.2f} GB ({args.blocks} blocks at dim {DIM}, "
          f"ffn {FFN}); bf16 output {out_bytes / 1e9:.2f} GB; written in {time.time() - t0:.0f}s")
    rows = []
    modes = ["load", "convert", "load_st"] + ([] if args.skip_naive else ["naive"])
    if args.comfyui:
        os.environ["SLA_BENCH_COMFYUI"] = args.comfyui
        modes += ["comfy", "comfy_plain", "comfy_st"]
    for mode in modes:
        m = measure(mode, src, dst)
        peak = m["hwm"] - m["baseline"]
        rows.append((mode, m, peak))
        print(f"{mode:8s}: peak RSS {m['hwm'] / 1e9:.2f} GB (baseline {m['baseline'] / 1e9:.2f} GB, above baseline "
              f"{peak / 1e9:.2f} GB = {peak / out_bytes:.3f} x output), {m['secs']:.1f}s")
    if os.path.exists(dst):
        print(f"converted file: {os.path.getsize(dst) / 1e9:.2f} GB")
    print(f"\nmachine: {os.cpu_count()} CPUs, torch {__import__('torch').__version__}, {args.blocks} blocks")
    print("\n| operation | output GB | peak RSS above baseline GB | per GB of output | time s |")
    print("|---|---|---|---|---|")
    for mode, m, peak in rows:
        name = {"load": "`load_checkpoint(-quant.pth, bf16)`", "convert": "`sla.convert -> .safetensors (bf16)`",
                "load_st": "`load_checkpoint(converted .safetensors)`",
                "comfy": "node path: `load_checkpoint` + `consume_on_copy` + ComfyUI model build (bf16)",
                "comfy_plain": "node path without `consume_on_copy` (plain state dict to ComfyUI)",
                "comfy_st": "stock UNETLoader path on the converted .safetensors (ComfyUI's own loader, bf16)",
                "naive": "naive `torch.load` + dequantise (reference)"}[mode]
        print(f"| {name} | {out_bytes / 1e9:.2f} | {peak / 1e9:.2f} | {peak / out_bytes:.3f} | {m['secs']:.1f} |")
    if not args.keep:
        for p in (src, dst):
            if os.path.exists(p):
                os.remove(p)


if __name__ == "__main__":
    main()
