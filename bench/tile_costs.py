"""Where the main kernel's time goes per query tile (KERNEL_NOTES.md): the main kernel alone, timed with fixed
LUTs of chosen lengths, with and without proj_l, with and without a partial tail block.

    python3 bench/tile_costs.py            (prints JSON lines)

The main kernel time is the op with a given LUT minus the pre-pass (both medians of do_bench in one process).
A fit of time against pairs of key blocks per tile gives the per-iteration and the fixed per-tile cost.
"""
from __future__ import annotations

import json
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import bench_attention as ba  # noqa: E402

kernels, launch = ba.load_pack()


def lut_of(b, h, nq, nk, keep, tail_last: bool):
    """Evenly spread ascending key blocks per row; with tail_last the partial last block is the row's last."""
    base = torch.linspace(0, nk - 2, keep).round().long()
    base = torch.unique(base)
    while base.numel() < keep:           # fill up with unused blocks
        extra = torch.tensor([i for i in range(nk - 1) if i not in set(base.tolist())][:keep - base.numel()])
        base = torch.sort(torch.cat([base, extra])).values
    if tail_last:
        base[-1] = nk - 1
    return base.to(torch.int32).view(1, 1, 1, keep).expand(b, h, nq, keep).contiguous().cuda()


def main():
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "triton": ba.triton.__version__}), flush=True)
    h, d = 12, 128
    for length in (32768, 32760):
        q, k, v = ba.make_inputs(1, length, h, d, seed=5)
        gen = torch.Generator(device="cuda").manual_seed(6)
        w = torch.randn(d, d, device="cuda", generator=gen) * 0.05
        bias = torch.randn(d, device="cuda", generator=gen) * 0.05
        nq, nk = (length + 127) // 128, (length + 63) // 64
        pre = ba.bench_ms(lambda: launch.prepass(q, k, v, 128, 64, "softmax", torch.bfloat16), rep=200)
        for proj in (True, False):
            for keep in (2, 3, 4, 8, 24, 25, 26, 50, 51):
                lut = lut_of(1, h, nq, nk, keep, tail_last=length % 64 != 0)
                ww, bb = (w, bias) if proj else (None, None)
                t = ba.bench_ms(lambda: launch.sla_forward_impl(q, k, v, 0.1, ww, bb, lut=lut), rep=200)
                print(json.dumps({"L": length, "proj": proj, "keep_blocks": keep, "op_ms": round(t, 4),
                                  "prepass_ms": round(pre, 4), "main_ms": round(t - pre, 4),
                                  "main_us_per_tile_wave": round((t - pre) * 1e3 / (nq * h / 132), 2)}),
                      flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
