"""The mask phase in groups of heads against all heads at once: time of the whole SLA op and its workspace.

    python3 bench/bench_mask_groups.py [--keep 0.10] [--out results.jsonl]

One JSON line per shape: ``grouped_ms`` / ``one_group_ms`` (medians of triton.testing.do_bench of
``sla_forward_impl``) and the workspace beyond q, k, v and the output as a share of q's bytes, with the pack's
grouping (``kernels.router.MASK_SHARE_OF_Q``) and with every head in one group. Shapes: Wan 2.1 1.3B (480p) and
14B (720p) with proj_l, contiguous (B, L, H, D); MiniMax H3 768p at 5 s and 15 s without it, as H3's strided views.
bf16, random inputs; block_q 128 and 64 for H3.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch
from triton.testing import do_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
# name, L, H, proj_l, H3 views, block_q
SHAPES = [("wan1.3B", 32_760, 12, True, False, 128), ("wan14B", 75_600, 40, True, False, 128),
          ("h3-5s", 39_982, 56, False, True, 128), ("h3-5s", 39_982, 56, False, True, 64),
          ("h3-15s", 111_334, 56, False, True, 128), ("h3-15s", 111_334, 56, False, True, 64)]


def inputs(length: int, heads: int, h3_views: bool):
    """q, k, v (1, L, H, 128) bf16: H3's transposes of one fused qkv buffer, or three contiguous tensors."""
    if h3_views:
        qkv = torch.randn(length, 3, heads, 128, device="cuda", dtype=torch.bfloat16)
        return tuple(qkv[:, i].unsqueeze(0) for i in range(3))
    return tuple(torch.randn(1, length, heads, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))


def workspace_over_q(fn, q) -> float:
    """Peak bytes ``fn`` allocates beyond its output, over q's bytes."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    extra = torch.cuda.max_memory_allocated() - before - out.numel() * out.element_size()
    return extra / (q.numel() * q.element_size())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=float, nargs="+", default=[0.10])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack
    load_pack()
    from comfyui_sla.kernels import router, sla_forward_impl
    from comfyui_sla.sla.spec import keep_count, num_blocks

    share = router.MASK_SHARE_OF_Q
    sink = open(args.out, "a") if args.out else None
    for name, length, heads, proj, h3, block_q in SHAPES:
        q, k, v = inputs(length, heads, h3)
        w = torch.randn(128, 128, device="cuda", dtype=torch.bfloat16) * 0.05 if proj else None
        for keep in args.keep:
            n_keep = keep_count(num_blocks(length, 64), keep)

            def op():
                return sla_forward_impl(q, k, v, n_keep, w, block_q=block_q)

            row = dict(shape=name, L=length, H=heads, keep=keep, block_q=block_q, device=torch.cuda.get_device_name())
            for label, s in (("grouped", share), ("one_group", 1e9)):
                router.MASK_SHARE_OF_Q = s
                row[f"{label}_ms"] = round(do_bench(op, warmup=100, rep=500), 3)
                row[f"{label}_workspace_over_q"] = round(workspace_over_q(op, q), 4)
            router.MASK_SHARE_OF_Q = share
            line = json.dumps(row)
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")
        q = k = v = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
