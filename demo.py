"""SLA on a small Wan-like attention workload: no downloads, no ComfyUI, a few seconds on a CPU.

    python3 demo.py                      # CPU (exact PyTorch path) or CUDA (Triton kernel) when available
    python3 demo.py --frames 21 --device cuda --dtype bf16    # a 480p 81-frame clip's shape (L = 32 760)

What it does: builds q, k, v for Wan self-attention over a (frames x 30 x 52) token grid -- 480p's spatial grid
after patchify, frame-major order as Wan flattens it -- with attention concentrated on nearby tokens, as in real
video models (random Fourier features of each token's 3D position plus noise; plain random q/k would spread
attention evenly and no sparse method could work). Then, for a sweep of keep ratios, it runs
``sparse_linear_attention`` and prints how many key blocks each query block kept, the error against dense
attention and the time against dense (PyTorch SDPA).

The error column is SLA without proj_l (block-sparse only), what ``ApplySLA`` runs on a model that was not
fine-tuned for SLA; a fine-tuned checkpoint (TurboWan) adapts its weights and proj_l to the sparsity, which random
inputs cannot show. The last column times the same call with a (random) proj_l, i.e. with the linear branch on.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def load_pack():
    """Import the repository as the package ``comfyui_sla`` (it uses relative imports, as ComfyUI loads it)."""
    from _load_pack import load_pack as _load   # demo.py's folder is on sys.path when it runs
    _load()
    import comfyui_sla.sla as sla
    return sla


def wan_like_qkv(frames, height, width, heads, head_dim=128, seed=0, device="cpu", dtype=torch.float32):
    """q, k, v (1, L, H, D) with local attention over a frames x height x width token grid (frame-major)."""
    g = torch.Generator().manual_seed(seed)
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack([t.flatten() * 2.0, y.flatten().float(), x.flatten().float()], dim=-1)  # (L, 3)
    length = pos.shape[0]
    qs, ks = [], []
    for _ in range(heads):
        freqs = torch.randn(3, head_dim, generator=g) * 0.6           # correlation length of a few tokens
        phase = torch.rand(head_dim, generator=g) * 2 * math.pi
        feat = torch.cos(pos @ freqs + phase) * math.sqrt(2.0)        # E[feat_i . feat_j] ~ D * kernel(p_i - p_j)
        scale = 2.0                                                   # logit scale: peaked, not one-hot
        qs.append(scale * feat + 0.6 * torch.randn(length, head_dim, generator=g))
        ks.append(scale * feat + 0.6 * torch.randn(length, head_dim, generator=g))
    q = torch.stack(qs, dim=1)[None]
    k = torch.stack(ks, dim=1)[None]
    v = torch.randn(1, length, heads, head_dim, generator=g)
    return (q.to(device=device, dtype=dtype), k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype))


def dense(q, k, v):
    """Reference: softmax attention over all keys, (B, L, H, D) in and out."""
    o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return o.transpose(1, 2)


def timed(fn, repeats, warmup=True):
    """(result, median seconds) of ``repeats`` calls of ``fn()`` (after one warm-up call if ``warmup``)."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if out.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)[len(times) // 2]


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sparse-Linear Attention on a Wan-like workload (no downloads).")
    ap.add_argument("--frames", type=int, default=2, help="latent frames (81 video frames = 21)")
    ap.add_argument("--height", type=int, default=30, help="token rows (480p: 30, 720p: 45)")
    ap.add_argument("--width", type=int, default=52, help="token columns (480p: 52, 720p: 80)")
    ap.add_argument("--heads", type=int, default=2, help="attention heads (Wan 1.3B: 12, 14B: 40)")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.05, 0.10, 0.15, 0.30, 1.0])
    ap.add_argument("--block-q", type=int, default=128, choices=(64, 128))
    ap.add_argument("--block-k", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                    help="default: fp32 on the CPU, bf16 on CUDA")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per point (median)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sla = load_pack()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    gpu = device.type == "cuda"
    repeats = args.repeats or (10 if gpu else 1)
    backend = "triton (fused kernel)" if device.type == "cuda" and sla.triton_available(device) else \
        "torch (exact blockwise PyTorch path)"

    q, k, v = wan_like_qkv(args.frames, args.height, args.width, args.heads, seed=args.seed, device=device,
                           dtype=dtype)
    length = q.shape[1]
    nq = -(-length // args.block_q)
    nk = -(-length // args.block_k)
    print(f"SLA demo: q/k/v (B=1, L={length}, H={args.heads}, D=128) = {args.frames} latent frames x "
          f"{args.height} x {args.width} tokens, {dtype}, device {device}")
    print(f"blocks: {args.block_q} queries x {args.block_k} keys -> {nq} query blocks x {nk} key blocks; "
          f"backend: {backend}")

    ref, t_dense = timed(lambda: dense(q, k, v), repeats, warmup=gpu)
    print(f"dense attention (PyTorch SDPA): {t_dense * 1e3:.1f} ms\n")

    hdr = (f"{'keep':>5} {'kept/row':>9} {'sparsity':>8} | {'rel. error':>10} | {'SLA ms':>8} {'vs dense':>8} | "
           f"{'+proj_l ms':>10}")
    print(hdr)
    print("-" * len(hdr))
    g = torch.Generator().manual_seed(args.seed + 1)
    d = q.shape[-1]
    proj_w = (torch.randn(d, d, generator=g) * 0.02).to(device)
    proj_b = (torch.randn(d, generator=g) * 0.02).to(device)
    for keep in args.keep:
        kept = sla.keep_count(nk, keep)
        run = dict(keep_ratio=keep, block_q=args.block_q, block_k=args.block_k)
        out, t_sla = timed(lambda: sla.sparse_linear_attention(q, k, v, **run), repeats, warmup=gpu)
        _, t_proj = timed(lambda: sla.sparse_linear_attention(q, k, v, proj_weight=proj_w, proj_bias=proj_b, **run),
                          repeats, warmup=gpu)
        print(f"{keep:5.2f} {kept:>4d}/{nk:<4d} {1 - kept / nk:8.1%} | {rel_err(out, ref):10.4f} | "
              f"{t_sla * 1e3:8.1f} {t_dense / t_sla:7.2f}x | {t_proj * 1e3:10.1f}")

    print("\nrel. error = ||O_SLA - O_dense|| / ||O_dense|| without proj_l (training-free block-sparse); keep 1.0 "
          "is dense attention computed blockwise.")
    if device.type != "cuda":
        print("On the CPU the exact PyTorch path gathers the kept blocks and is not meant to be fast; the speed-up "
              "comes from the Triton kernel on a GPU (python3 demo.py --device cuda --frames 21 --heads 12).")


if __name__ == "__main__":
    main()
