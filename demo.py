"""SLA on a small Wan-like attention workload: no downloads, no ComfyUI, well under a minute on a CPU.

    python3 demo.py                      # CPU (exact PyTorch path) or CUDA (Triton kernel) when available
    python3 demo.py --frames 21 --device cuda --dtype bf16    # a 480p 81-frame clip's shape (L = 32 760)

What it does: builds q, k, v for Wan self-attention over a (frames x 30 x 52) token grid -- 480p's spatial grid
after patchify, frame-major order as Wan flattens it -- with attention concentrated on nearby tokens, as in real
video models (random Fourier features of each token's 3D position plus noise; plain random q/k would spread
attention evenly and no sparse method could work). Then, for a sweep of keep ratios, it runs
``sparse_linear_attention`` and prints how many key blocks each query block kept, the error against dense
attention and the time against dense (PyTorch SDPA): the median of a few runs after a warm-up run. On the CPU the
times are not a speed measurement (the exact PyTorch path is a reference, not a fast path); the demo says so.

The error column is SLA without proj_l (block-sparse only), what ``ApplySLA`` runs on a model that was not
fine-tuned for SLA; a fine-tuned checkpoint (TurboWan) adapts its weights and proj_l to the sparsity, which random
inputs cannot show. The last column times the same call with a (random) proj_l, i.e. with the linear branch on.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
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


def timed(fn, repeats, warmup=1):
    """(result, median seconds) of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls (first-call costs:
    kernel compilation, autotuning, allocator growth)."""
    for _ in range(warmup):
        fn()
    out, times = None, []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if out.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr and exit status 2 (argparse's own status), not a traceback or the
    whole usage text."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default is None:  # the help text says what None means
            return action.help
        return super()._get_help_string(action)


def _int_at_least(lowest):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


_positive_int = _int_at_least(1)


def _keep_ratio(text):
    from comfyui_sla.sla.spec import check_keep_ratio
    try:
        return check_keep_ratio(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    load_pack()
    from comfyui_sla.sla.spec import (BLOCK_K_CHOICES, BLOCK_Q_CHOICES, DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q,
                                      DEFAULT_FEATURE_MAP, FEATURE_MAPS)
    cuda = torch.cuda.is_available()
    ap = _Parser(description="Sparse-Linear Attention on a Wan-like workload (no downloads, no ComfyUI).",
                 formatter_class=_Help)
    ap.add_argument("--frames", type=_positive_int, default=2, help="latent frames (an 81-frame video has 21)")
    ap.add_argument("--height", type=_positive_int, default=30, help="token rows (480p: 30, 720p: 45)")
    ap.add_argument("--width", type=_positive_int, default=52, help="token columns (480p: 52, 720p: 80)")
    ap.add_argument("--heads", type=_positive_int, default=2, help="attention heads (Wan 1.3B: 12, 14B: 40)")
    ap.add_argument("--keep", type=_keep_ratio, nargs="+", default=[0.05, 0.10, 0.15, 0.30, 1.0],
                    help="keep ratios to sweep, each in (0, 1]: the share of key blocks each query block attends")
    ap.add_argument("--block-q", type=int, default=DEFAULT_BLOCK_Q, choices=BLOCK_Q_CHOICES,
                    help="queries per block")
    ap.add_argument("--block-k", type=int, default=DEFAULT_BLOCK_K, choices=BLOCK_K_CHOICES, help="keys per block")
    ap.add_argument("--feature-map", default=DEFAULT_FEATURE_MAP, choices=FEATURE_MAPS,
                    help="feature map phi of the linear branch (the +proj_l column)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu", choices=("cpu", "cuda"),
                    help="where to run (cuda: the Triton kernel, cpu: the exact PyTorch path)")
    ap.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                    help="data type (default: fp32 on the CPU, bf16 on CUDA)")
    ap.add_argument("--repeats", type=_positive_int, default=None,
                    help="timed runs per point, the median is shown (default: 10 on CUDA, 3 on the CPU)")
    ap.add_argument("--warmup", type=_int_at_least(0), default=1, help="untimed runs before timing each point")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random q, k, v and proj_l")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not cuda:
        ap.error(f"--device cuda: no CUDA GPU is visible to this PyTorch ({torch.__version__}"
                 f"{', a CPU-only build' if torch.version.cuda is None else ''}); use --device cpu")
    return args


def main(argv=None):
    args = parse_args(argv)
    sla = load_pack()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    gpu = device.type == "cuda"
    repeats = args.repeats or (10 if gpu else 3)
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

    ref, t_dense = timed(lambda: dense(q, k, v), repeats, args.warmup)
    print(f"dense attention (PyTorch SDPA): {t_dense * 1e3:.1f} ms")
    print(f"times: median of {repeats} runs after {args.warmup} warm-up run(s) per point"
          f"{'' if gpu else ' -- on the CPU they are NOT a speed measurement (see the note below)'}\n")

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
        run = dict(keep_ratio=keep, block_q=args.block_q, block_k=args.block_k, feature_map=args.feature_map)
        out, t_sla = timed(lambda: sla.sparse_linear_attention(q, k, v, **run), repeats, args.warmup)
        _, t_proj = timed(lambda: sla.sparse_linear_attention(q, k, v, proj_weight=proj_w, proj_bias=proj_b, **run),
                          repeats, args.warmup)
        print(f"{keep:5.2f} {kept:>4d}/{nk:<4d} {1 - kept / nk:8.1%} | {rel_err(out, ref):10.4f} | "
              f"{t_sla * 1e3:8.1f} {t_dense / t_sla:7.2f}x | {t_proj * 1e3:10.1f}")

    print("\nrel. error = ||O_SLA - O_dense|| / ||O_dense|| without proj_l (training-free block-sparse); keep 1.0 "
          "is dense attention computed blockwise.")
    if device.type != "cuda":
        print("CPU timings are not meaningful: the exact PyTorch path gathers the kept blocks and is a correctness "
              "reference, not a fast path, and CPU times vary from run to run; the speed-up comes from the Triton "
              "kernel on a GPU (python3 demo.py --device cuda --frames 21 --heads 12).")


if __name__ == "__main__":
    main()
