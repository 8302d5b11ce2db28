"""One MiniMax H3 self-attention call at the real 768p shapes: ComfyUI's dense attention against SLA through the
H3 family (the kernel reading H3's strided [1, S, H, D] views), SLA on contiguous copies, and the pre-pass alone.

    python3 bench/bench_h3_attention.py [--keep 0.15] [--seconds 5 15] [--block-q 128 64] [--configs '[{}]']
                                        [--thirdparty .thirdparty]

``--configs``: a JSON list of main-kernel launch overrides (``kernels.launch.main_config`` keys) timed per block size
beside the default (tuning). comfy_kitchen's ``sol_attn`` is timed in the mode ComfyUI core's Model Sparse Attention
node uses for its ``sla`` method on H3 (``topk_ratio`` = keep, 256 extra routed tokens, the packed prefix as exact
sink blocks, pooled tail on) and as plain top-k (``topk_ratio`` only).

``--thirdparty``: the folder scripts/fetch_peers.py builds (default ``.thirdparty`` in the repo root): the peers of
``bench/peers_h3.py`` (PlagueKind's H3 SLA Attention kernel, thu-ml/SLA with and without its linear branch) are timed
on the same H3 views at the same keep, each with its own block sizes; columns ``peer_<name>_ms``, ``x_vs_<name>``
(peer / ours) and ``peer_commits``. A peer that does not load is skipped with a line on stderr.

H3 768p FL2V: 56 heads x 128, S = text 256 + two keyframes' cond rows (2 x 1008) + audio rows (2 per 40 Hz latent
frame) + video (1008 per latent frame; latent_t = ((F - 5) // 17) * 5 + 2). bf16, random inputs (the time depends
on the keep ratio, not on the values). Medians of CUDA-event timings (triton.testing.do_bench); one JSON line each.
"""
from __future__ import annotations

import argparse
import functools
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


def time_peers(peers: dict, qkv, keep: float, reps: dict) -> dict:
    """{name: median ms} of each peer (bench/peers_h3.py) on the H3 views ``qkv`` at ``keep``; an error as its text."""
    times = {}
    for name, peer in peers.items():
        try:
            times[name] = do_bench(functools.partial(peer.fn, *qkv, keep), **reps)
        except Exception as e:  # noqa: BLE001
            times[name] = f"{type(e).__name__}: {str(e)[:160]}"
        torch.cuda.empty_cache()   # a peer's copies must not crowd the next one
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=float, nargs="+", default=[0.15, 0.10])
    ap.add_argument("--seconds", type=int, nargs="+", default=[5, 15], choices=sorted(FRAMES))
    ap.add_argument("--block-q", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--configs", default="[]", help="JSON list of main-kernel overrides to time as well")
    ap.add_argument("--views-only", action="store_true", help="skip the contiguous-copy and 0.33 clone variants")
    ap.add_argument("--thirdparty", type=pathlib.Path, default=ROOT / ".thirdparty",
                    help="peer kernels to time as well (scripts/fetch_peers.py builds it)")
    args = ap.parse_args()
    configs = json.loads(args.configs)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from peers_h3 import load_peers
    peers = load_peers(args.thirdparty)
    from _load_pack import load_pack
    load_pack()
    from comfyui_sla.kernels.prepass import prepass
    from comfyui_sla.sla.families import MINIMAX_H3
    from comfyui_sla.sla.families.base import AttentionCall
    from comfyui_sla.kernels import sla_forward_impl
    from comfyui_sla.sla.spec import keep_count, num_blocks

    kitchen = kitchen_sol_attn()
    reps = dict(warmup=100, rep=500)   # milliseconds
    for seconds in args.seconds:
        s = packed_length(seconds)
        prefix = s - (((FRAMES[seconds] - 5) // 17) * 5 + 2) * TOKENS_PER_FRAME   # rows before the target video
        for keep in args.keep:
            for clone_v in ((False,) if args.views_only else (True, False)):   # 0.33 clones v, 0.35+ a view
                q, k, v = h3_views(s, clone_v)
                call = AttentionCall(q, k, v, HEADS, 0)
                q4, k4, v4 = MINIMAX_H3.to_heads(call)
                qc, kc, vc = (t.contiguous() for t in (q4, k4, v4))
                q_bytes = q.numel() * q.element_size()
                n_keep = keep_count(num_blocks(s, 64), keep)

                def dense():   # ComfyUI's attention_pytorch for skip_reshape calls
                    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, s, HEADS * HEAD_D)

                base = dict(seconds=seconds, tokens=s, heads=HEADS, keep=keep, v="clone" if clone_v else "view",
                            device=torch.cuda.get_device_name())
                dense_ms = do_bench(dense, **reps)
                kitchen_ms = {}
                if kitchen is not None:   # ComfyUI core's kernel, on (B, L, H, D) copies as core hands it
                    sink = [0, -(-prefix // 64)]
                    modes = {"core_sla": lambda: kitchen(qc, kc, vc, topk_ratio=keep, token_aug=256, sink_blocks=sink),
                             "topk": lambda: kitchen(qc, kc, vc, topk_ratio=keep)}
                    for name, fn in modes.items():
                        try:
                            kitchen_ms[name] = do_bench(fn, **reps)
                        except Exception as e:  # noqa: BLE001
                            kitchen_ms[name] = f"{type(e).__name__}: {str(e)[:160]}"
                peer_ms = time_peers(peers, (q, k, v), keep, reps)
                for block_q in args.block_q:
                    for cfg in [None] + configs:
                        def ours():
                            out = sla_forward_impl(q4, k4, v4, n_keep, block_q=block_q, block_k=64, config=cfg)
                            return MINIMAX_H3.from_heads(out, call)

                        row = dict(base, block_q=block_q, config=cfg, dense_ms=dense_ms)
                        try:
                            row["sla_views_ms"] = do_bench(ours, **reps)
                        except Exception as e:  # noqa: BLE001
                            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                            print(json.dumps(row), flush=True)
                            continue
                        row["speedup"] = dense_ms / row["sla_views_ms"]
                        if cfg is None:
                            if not args.views_only:
                                row["sla_contiguous_ms"] = do_bench(
                                    lambda: sla_forward_impl(qc, kc, vc, n_keep, block_q=block_q, block_k=64), **reps)
                            row["prepass_ms"] = do_bench(
                                lambda: prepass(q4, k4, v4, block_q, 64, "softmax", torch.bfloat16), **reps)
                            torch.cuda.synchronize()
                            before = torch.cuda.memory_allocated()
                            torch.cuda.reset_peak_memory_stats()
                            out = ours()
                            out_bytes = out.numel() * out.element_size()
                            # beyond q, k, v and the output ComfyUI asks for: the call's own workspace
                            row["workspace_over_q"] = (torch.cuda.max_memory_allocated() - before - out_bytes) / q_bytes
                            del out
                        for name, ms in kitchen_ms.items():
                            row[f"kitchen_{name}_ms"] = ms
                            if isinstance(ms, float):
                                row[f"x_vs_kitchen_{name}"] = ms / row["sla_views_ms"]
                        for name, ms in peer_ms.items():
                            row[f"peer_{name}_ms"] = ms
                            if isinstance(ms, float):
                                row[f"x_vs_{name}"] = ms / row["sla_views_ms"]
                        if peers:
                            row["peer_commits"] = {name: peer.commit for name, peer in peers.items()}
                        print(json.dumps({k: round(x, 3) if isinstance(x, float) else x for k, x in row.items()}),
                              flush=True)
                q = k = v = q4 = k4 = v4 = qc = kc = vc = call = None   # free before the next shape
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
