"""One MiniMax H3 sampling step's model call at real size, through ComfyUI's own model and sampling path.

    COMFYUI_PATH=/path/to/ComfyUI-0.33.0 python3 bench/bench_h3_step.py --frames 124 [--variants ...] --out h3.jsonl

What runs: ComfyUI's ``MiniMaxH3Model`` (comfy/ldm/minimax/model.py) at its default configuration (hidden 5376,
50 blocks, 56 heads x 128, SwiGLU 14336, ~19B parameters) inside ``model_base.MiniMaxH3`` and a ``ModelPatcher``,
random bf16 weights built directly on the GPU (no checkpoint: load time is not measured). Each variant is sampled
through ``comfy.samplers.CFGGuider`` at cfg 1 (one model call per step, as the Turbo 4-step workflow runs) with a
sampler that calls the model at one sigma ``warmup + reps`` times; each call is timed with CUDA events (median
reported) and its peak allocated memory recorded. So everything a step's model call does in ComfyUI is timed:
the APPLY_MODEL and DIFFUSION_MODEL wrappers, the pack's model-call wrapper and attention override, ComfyUI's
compile wrapper; what ``extra_conds`` does once per sampling run (the 2-layer token refiner on the text, the
packed layout) is not timed, as ComfyUI 0.33 does not repeat it per step.

Inputs: the video latent [1, 24, latent_t, H/16, W/16] and the audio latent [1, 32, 2, audio_t] as the
MiniMaxH3AV nested latent (latent_t = ((F - 5) // 17) * 5 + 2, audio_t = 40 Hz x F / 24 as ComfyUI's H3 nodes
make them), the text context as H3's text encoder yields it ([1, L, 5120], Qwen3-VL layer-50 states, with its
token tags; the model refines it to 5376 in extra_conds), and for ``--mode fl2v`` two keyframes (first and last
frame latents: 2 x 1008 cond rows, and their 2 x 1008 vision tokens inside the text, as the Turbo FL2V LoRA runs).

Variants (``--variants``, each eager and ``-compiled``: ComfyUI's TorchCompileModel path, inductor):
  dense       ComfyUI's default attention (the row ``comfy_attention`` of the meta line; the SDPA kernels it runs
              at this shape are listed in ``sdpa_kernels``)
  sla0.15     the pack (comfy_bridge.apply_sla, ApplySLA's settings) at keep 0.15, block 128 x 64
  sla0.10     the pack at keep 0.10, block 128 x 64
  sla0.15q64  the pack at keep 0.15, block_q 64
  ceiling     every attention call answered by a view of q reshaped to [1, S, H*D] (no copy, no kernel: H3's q is
              a strided view of the fused qkv buffer whose head and channel axes are contiguous), so the rest of
              the step costs what it costs: no attention kernel can beat this row

``--tiny`` runs a small configuration (2 blocks, hidden 256) on the CPU with the pack's PyTorch backend: a test of
the script, not a measurement. Not measured: text encoding, VAE decode (bench_generation.py), load from disk.
"""
from __future__ import annotations

import argparse
import sys

import torch

import comfy_harness as H

REAL = dict(image_model="minimax_h3")   # MiniMaxH3Model's defaults are the real configuration
TINY = dict(image_model="minimax_h3", hidden_size=256, num_layers=2, token_refiner_num_layers=2,
            num_attention_heads=2, attention_head_dim=128, ffn_hidden_size=512, text_dim=320,
            time_embed_hidden_size=256, time_embed_dim=128)
VARIANTS = ("dense", "sla0.15", "sla0.10", "sla0.15q64", "ceiling")
PACK_SETTINGS = {"sla0.15": dict(keep_ratio=0.15), "sla0.10": dict(keep_ratio=0.10),
                 "sla0.15q64": dict(keep_ratio=0.15, block_q=64)}
QWEN_VISION_TOKENS = 1008   # one 1344x768 keyframe in Qwen3-VL (patch 16, merge 2): 84 x 48 / 4
KEYFRAME_LABEL_TOKENS = 7   # "<Picture i>: " plus vision start / end


def h3_shapes(frames, width, height):
    """(frame_count, latent_t, audio_t) as ComfyUI's H3 nodes make them (their own function where importable)."""
    try:
        from comfy_extras.nodes_minimax_h3 import temporal_shape
        return temporal_shape(frames)
    except Exception:  # noqa: BLE001 - fall back to the same arithmetic
        f = H.snap_frames(frames)
        return f, ((f - 5) // 17) * 5 + 2, round(f / 24 * 40)


def h3_inputs(frames, width, height, text_dim, prompt_tokens, mode, dtype):
    """(positive conditioning, noise, empty latent, frame_count, text_len) of one H3 sampling run."""
    import comfy.nested_tensor
    frame_count, latent_t, audio_t = h3_shapes(frames, width, height)
    lat_h, lat_w = height // 16, width // 16
    g = torch.Generator().manual_seed(0)
    extra = {}
    vision = 0
    if mode == "fl2v":
        vision = 2 * (QWEN_VISION_TOKENS * (lat_h // 2) * (lat_w // 2) // 1008 + KEYFRAME_LABEL_TOKENS)
        extra["minimax_keyframes"] = [
            {"resolved_frame_index": idx, "latent": torch.randn(1, 24, 1, lat_h, lat_w, generator=g)}
            for idx in (0, frame_count - 1)]
    text_len = prompt_tokens + vision
    tags = torch.ones(text_len, dtype=torch.long)
    if vision:
        tags[:vision] = 0   # vision-pad positions carry the video modality tag
    extra["minimax_token_tags"] = tags
    ctx = torch.randn(1, text_len, text_dim, generator=g).to(dtype)
    positive = [[ctx, extra]]
    video = torch.zeros(1, 24, latent_t, lat_h, lat_w)
    audio = torch.zeros(1, 32, 2, audio_t)
    latent = comfy.nested_tensor.NestedTensor((video, audio))
    noise = comfy.nested_tensor.NestedTensor((torch.randn(video.shape, generator=g),
                                              torch.randn(audio.shape, generator=g)))
    return positive, noise, latent, frame_count, text_len, (latent_t, lat_h, lat_w, audio_t), extra


def packed_layout(text_len, latent_t, lat_h, lat_w, audio_t, keyframes):
    from comfy.ldm.minimax.model import PackedLayout
    layout = PackedLayout(text_len, latent_t, lat_h, lat_w, audio_t, keyframes=keyframes)
    segs = {}
    for a, b, kind in layout.segments:
        segs[kind] = segs.get(kind, 0) + (b - a)
    return layout.seq_len, segs


def ceiling_override(func, *args, **kwargs):
    """Attention answered at ~zero cost in the shape the caller expects: [B, S, H*D] from q."""
    q = args[0]
    if kwargs.get("skip_reshape", False):
        b, h, s, d = q.shape
        return q.transpose(1, 2).reshape(b, s, h * d)   # a view for H3's q (heads and channels contiguous)
    return q


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[124],
                    help="pixel frames at 24 fps (124 = 5 s, 362 = 15 s); snapped to 17k + 5")
    ap.add_argument("--width", type=int, default=1344)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--mode", choices=("t2v", "fl2v"), default="t2v",
                    help="t2v: text + audio + video; fl2v: plus two keyframes (cond rows and vision tokens)")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="prompt tokens in the text segment")
    ap.add_argument("--variants", nargs="+", default=None,
                    help=f"subset of {', '.join(VARIANTS)} and their '-compiled' forms (default: all, eager first)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="small configuration on the CPU: tests the script")
    ap.add_argument("--out", default=None, help="append the JSON lines here")
    args = ap.parse_args()

    comfy = H.import_comfy()
    import comfy.supported_models
    H.load_pack()
    from comfyui_sla.nodes.comfy_bridge import apply_sla
    from comfyui_sla.sla.runtime.settings import SLASettings

    names = args.variants or list(VARIANTS) + [v + "-compiled" for v in VARIANTS]
    bad = [n for n in names if n.removesuffix("-compiled") not in VARIANTS]
    if bad:
        sys.exit(f"unknown variant(s) {bad}: choose from {VARIANTS} and their '-compiled' forms")
    if args.tiny:
        cfg, dtype = TINY, torch.bfloat16
        args.width, args.height = min(args.width, 256), min(args.height, 128)
        args.frames = [min(f, 22) for f in args.frames]
        args.prompt_tokens = min(args.prompt_tokens, 32)
    else:
        cfg, dtype = REAL, torch.bfloat16
        if not H.CUDA:
            sys.exit("no CUDA device: the real-size model needs a GPU (use --tiny to test the script on the CPU)")
    out = H.Output(args.out)

    base = H.build_base_model(comfy.supported_models.MiniMaxH3, cfg, dtype)
    dm = base.diffusion_model
    with torch.no_grad():   # the rope table as a checkpoint carries it (the model leaves the buffer uninitialised)
        n = dm.rope.inv_freq.numel()
        dm.rope.inv_freq.copy_(1.0 / (10000.0 ** (torch.arange(n, dtype=torch.float32) / n)))
    model = H.patcher(base)
    hidden = dm.hidden_size
    heads = dm.blocks[0].attn.heads
    out(**H.meta(dict(script="bench_h3_step", config="tiny" if args.tiny else "real", hidden=hidden,
                      blocks=len(dm.blocks), heads=heads, params_b=H.param_count(dm) / 1e9,
                      weights_gb=H.weight_gb(dm), mode=args.mode,
                      sdpa_kernels=None if args.tiny else H.sdpa_backend_kernels(heads, 40000, 128))))

    text_dim = dm.condition_proj.weight.shape[1]
    backend = "torch" if not H.CUDA else "auto"
    min_tokens = 0 if args.tiny else None

    def variant_model(name):
        kind = name.removesuffix("-compiled")
        if kind == "dense":
            m = model.clone()
        elif kind == "ceiling":
            m = model.clone()
            m.model_options["transformer_options"]["optimized_attention_override"] = ceiling_override
        else:
            kw = dict(PACK_SETTINGS[kind], backend=backend)
            if min_tokens is not None:
                kw["min_tokens"] = min_tokens
            m = apply_sla(model, SLASettings(**kw))
        return H.compile_wrapper(m) if name.endswith("-compiled") else m

    for frames in args.frames:
        positive, noise, latent, frame_count, text_len, (lt, lh, lw, at), extra = h3_inputs(
            frames, args.width, args.height, text_dim, args.prompt_tokens, args.mode, dtype)
        seq_len, segments = packed_layout(text_len, lt, lh, lw, at, extra.get("minimax_keyframes"))
        sigmas = torch.tensor([0.9, 0.0])
        for name in names:
            times, peaks = [], []

            def on_call(i, ms, peak):
                times.append(ms)
                peaks.append(peak)

            m = variant_model(name)
            sampler = H.timing_sampler(on_call, mode="repeat", repeat=(0, args.warmup + args.reps))
            try:
                H.sample(m, positive, noise, latent, sampler, sigmas)
            except torch.OutOfMemoryError as e:
                out(kind="step", variant=name, frames=frame_count, seq_len=seq_len, error=f"OOM: {str(e)[:200]}")
                m = None
                H.free_memory()
                continue
            first, timed = times[:args.warmup], times[args.warmup:]
            row = dict(kind="step", variant=name, frames=frame_count, seconds=round(frame_count / 24, 2),
                       width=args.width, height=args.height, seq_len=seq_len, segments=segments,
                       latent=[1, 24, lt, lh, lw], audio_latent=[1, 32, 2, at], text_len=text_len,
                       ms=H.median(timed), ms_all=[round(t, 2) for t in timed],
                       first_call_ms=[round(t, 1) for t in first],
                       peak_gb=max(p for p in peaks if p is not None) if H.CUDA else None)
            override = m.model_options["transformer_options"].get("optimized_attention_override")
            patch = getattr(override, "sla_patch", None)
            if patch is not None:   # proof the pack ran: attention calls it saw and how many it ran sparse
                st = patch.stats
                row.update(pack_calls=st.calls, pack_sparse=st.sparse, pack_dense=dict(st.dense),
                           realised_keep=st.realised_keep, backends=dict(st.backends))
            if name.endswith("-compiled"):
                from torch._dynamo.utils import counters
                row["dynamo_unique_graphs"] = counters["stats"]["unique_graphs"]
            out(**row)
            del m
            if H.CUDA:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
