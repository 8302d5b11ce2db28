"""One MiniMax H3 self-attention call at the real 768p shapes: ComfyUI's dense attention against SLA through the
H3 family (the kernel reading H3's strided [1, S, H, D] views), SLA on contiguous copies, and the pre-pass alone.

    python3 bench/bench_h3_attention.py [--keep 0.15] [--seconds 5 15]

H3 768p FL2V: 56 heads x 128, S = text 256 + two keyframes' cond rows (2 x 1008) + audio rows (2 per 40 Hz latent
frame) + video (1008 per latent frame; latent_t = ((F - 5) // 17) * 5 + 2). bf16, random inputs (the time depends
on the keep ratio, not on the values). Medians of CUDA-event timings (triton.testing.do_bench); one JSON line each.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEADS, HEAD_D, TOKENS_PER_FRAME, TEXT = 56, 128, 1008, 256
FRAMES = {5: 124, 15: 362}   # pixel frames of a 5 s / 15 s clip at 24 fps, snapped to 17k + 5


def packed_length(seconds: int) -> int:
    frames = FRAMES[seconds]
    latent_t = ((frames - 5) // 17) * 5 + 2
    audio_rows = 2 * round(frames / 24 * 40)
    return TEXT + 2 * TOKENS_PER_FRAME + audio_rows + latent_t * TOKENS_PER_FRAME


def h3_views(s: int, clone_v: bool):
    """q, k, v as H3's Attention hands them to optimized_attention: [1, H, S, D] transposes of one qkv buffer."""
    qkv = torch.randn(s, 3 * HEADS * HEAD_D, device="cuda", dtype=torch.bfloat16)
    q, k, v = (t.view(s, HEADS, HEAD_D) for t in qkv.split(HEADS * HEAD_D, dim=-1))
    if clone_v:
        v = v.clone()
    return tuple(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))


def kitchen_sol_attn():
    """comfy_kitchen's ``sol_attn`` (ComfyUI core's sparse kernel) when importable on this GPU, else None."""
    try:
        import comfy_kitchen
        if comfy_kitchen.sol_attn_is_available(torch.device("cuda")):
            return comfy_kitchen.sol_attn
    except Exception as e:  # noqa: BLE001
        print(f"# comfy_kitchen sol_attn unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=float, nargs="+", default=[0.15, 0.10])
    ap.add_argument("--seconds", type=int, nargs="+", default=[5, 15], choices=sorted(FRAMES))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack
    load_pack()
    from comfyui_sla.kernels.prepass import prepass
    from comfyui_sla.sla.families import MINIMAX_H3
    from comfyui_sla.sla.families.base import AttentionCall
    from comfyui_sla.sla.functional import sparse_linear_attention

    for seconds in args.seconds:
        s = packed_length(seconds)
        for keep in args.keep:
            for clone_v in (True, False):   # 0.33 clones v, 0.35+ hands a view of the qkv buffer
                q, k, v = h3_views(s, clone_v)
                call = AttentionCall(q, k, v, HEADS, 0)
                q4, k4, v4 = MINIMAX_H3.to_heads(call)
                qc, kc, vc = (t.contiguous() for t in (q4, k4, v4))

                def dense():   # ComfyUI's attention_pytorch for skip_reshape calls
                    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, s, HEADS * HEAD_D)

                def sla_views():
                    return MINIMAX_H3.from_heads(sparse_linear_attention(q4, k4, v4, keep, backend="triton"), call)

                def sla_contiguous():
                    return sparse_linear_attention(qc, kc, vc, keep, backend="triton")

                reps = dict(warmup=100, rep=500)   # milliseconds
                row = dict(seconds=seconds, tokens=s, heads=HEADS, keep=keep, v="clone" if clone_v else "view",
                           device=torch.cuda.get_device_name())
                row["dense_ms"] = do_bench(dense, **reps)
                row["sla_views_ms"] = do_bench(sla_views, **reps)
                row["sla_contiguous_ms"] = do_bench(sla_contiguous, **reps)
                row["prepass_ms"] = do_bench(lambda: prepass(q4, k4, v4, 128, 64, "softmax", torch.bfloat16), **reps)
                row["speedup"] = row["dense_ms"] / row["sla_views_ms"]
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                out = sla_views()
                q_bytes = q.numel() * q.element_size()
                row["extra_peak_over_q"] = (torch.cuda.max_memory_allocated() - before) / q_bytes   # output included
                row["output_over_q"] = out.numel() * out.element_size() / q_bytes
                del out
                kitchen = kitchen_sol_attn()
                if kitchen is not None:   # ComfyUI core's kernel in its SLA (top-k) mode, on (B, L, H, D) copies
                    try:
                        row["kitchen_ms"] = do_bench(lambda: kitchen(qc, kc, vc, topk_ratio=keep), **reps)
                        row["x_vs_kitchen"] = row["kitchen_ms"] / row["sla_views_ms"]
                    except Exception as e:  # noqa: BLE001
                        row["kitchen_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                print(json.dumps({k: round(x, 3) if isinstance(x, float) else x for k, x in row.items()}), flush=True)
                del q, k, v, q4, k4, v4, qc, kc, vc
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
