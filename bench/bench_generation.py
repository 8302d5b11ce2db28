"""The whole generation a user waits for, per model family: text encoding, the 4 sampling steps, decode.

    COMFYUI_PATH=/path/to/ComfyUI-0.33.0 python3 bench/bench_generation.py --family wan1.3b --out gen.jsonl
    (--stage text|steps|decode|all|totals; 'all' runs each stage in its own subprocess, then the totals)

Families (bf16, random weights of the real shapes, built through ComfyUI's own classes; no checkpoint is read, so
the time to load models from disk is NOT measured and is not in any total):
  wan1.3b    TurboWan 1.3B: Wan2.1 T2V 1.3B, 832x480, 81 frames (latent 21 x 60 x 104, L = 32 760)
  wan14b     Wan2.2 A14B I2V: two 14B experts (in_dim 36, image latent concatenated), 1280x720, 81 frames
             (L = 75 600); high-noise expert on steps 1-2, low-noise expert on steps 3-4, one expert in memory at a
             time (built for its half and freed, as ComfyUI offloads the other)
  h3         MiniMax H3 (ComfyUI 0.33), 1344x768, 124 frames (5 s), t2v with a 256-token prompt

Stages (each frees the GPU at its end: ComfyUI unloads models between stages too):
  text    the family's text encoder through ComfyUI's text-encoder class at real size, one prompt encoded
          (encode_token_weights, the call CLIPTextEncode makes): umt5-xxl (comfy.text_encoders.wan, 512 tokens) for
          Wan; for H3 Qwen3-VL-32B truncated to 50 layers (comfy.text_encoders.minimax, ~25B parameters, ~51 GB
          bf16): it does not fit one 80 GB GPU together with H3's 19B DiT (~38 GB), so it is measured alone, as
          every stage is. Tokenizers are not run (their vocabularies come with checkpoints): token ids are random.
  steps   4 sampling steps at cfg 1 (one model call per step) through ComfyUI's sampler (CFGGuider, the model's
          extra_conds, the APPLY_MODEL/DIFFUSION_MODEL wrappers), dense (ComfyUI's default attention) and the
          pack (comfy_bridge.apply_sla; keep 0.10 for Wan with a random proj_l per block as TurboWan
          checkpoints carry, keep 0.15 for H3); each step timed with CUDA events. One untimed 1-step run per
          variant first (Triton and cuDNN warm-up, which a user pays once per process).
  decode  the latent decoded by the full VAE (comfy.sd.VAE on a state dict of the real shapes: Wan 2.1 VAE for
          both Wan families (Wan2.2 A14B uses the 2.1 VAE; only the 5B uses the 2.2 VAE); H3's video VAE and
          its audio VAE) and by the light decoder ComfyUI's VAELoader builds from models/vae_approx
          (lighttaew2_1 for Wan 2.1 latents, taeh3 for H3: comfy.taesd.taehv.TAEHV), with ComfyUI's own
          memory estimate deciding on tiling as it does for a user.
  totals  from the JSON lines already in --out: text + steps + decode, dense vs pack, full vs light decode.

Every stage records its peak allocated GPU memory. ``--tiny`` shrinks every model and size to run on the CPU (a test
of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import torch

import comfy_harness as H

FAMILIES = ("wan1.3b", "wan14b", "h3")
STEPS = 4
WAN_CFG = {"wan1.3b": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, model_type="t2v"),
           "wan14b": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, model_type="i2v")}
WAN_TINY = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2)
WAN_LATENT = {"wan1.3b": (21, 60, 104), "wan14b": (21, 90, 160)}
PACK_KEEP = {"wan1.3b": 0.10, "wan14b": 0.10, "h3": 0.15}


# -- text -----------------------------------------------------------------------------------------------------
def tiny_text_configs():
    """Shrink the text encoders' configurations in place (tiny runs only)."""
    import comfy.sd1_clip
    import comfy.text_encoders.qwen3vl as qv
    original = comfy.sd1_clip.SDClipModel.__init__

    def init(self, *a, textmodel_json_config=None, **kw):
        if isinstance(textmodel_json_config, str) and textmodel_json_config.endswith("umt5_config_xxl.json"):
            with open(textmodel_json_config) as f:
                textmodel_json_config = dict(json.load(f), d_model=64, d_ff=128, num_layers=2, num_heads=2,
                                             d_kv=32, vocab_size=1000)
        original(self, *a, textmodel_json_config=textmodel_json_config, **kw)
    comfy.sd1_clip.SDClipModel.__init__ = init
    big = qv.QWEN3VL_CONFIGS["qwen3vl_32b"]
    small = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=1000)
    qv.QWEN3VL_CONFIGS["qwen3vl_32b"] = lambda **kw: big(**{**kw, **small})
    qv.QWEN3VL_VISION["qwen3vl_32b"] = dict(hidden_size=64, intermediate_size=128, depth=2,
                                            deepstack_visual_indexes=[0])


def stage_text(family, args, out):
    import comfy.text_encoders.minimax as tm
    import comfy.text_encoders.wan as tw
    if args.tiny:
        tiny_text_configs()
    H.reset_peak()
    if family == "h3":
        te, key, n_tokens, vocab = tm.te()(device=H.DEVICE, dtype=torch.bfloat16), "qwen3vl_32b", 256, 151643
    else:
        te, key, n_tokens, vocab = tw.te()(device=H.DEVICE, dtype=torch.bfloat16), "umt5xxl", 512, 256000
    H.randomize(te, std=0.02)
    weights_gb, params = H.weight_gb(te), H.param_count(te)
    if args.tiny:
        vocab = 999
    g = torch.Generator().manual_seed(0)
    prompt = 120   # a prompt of ~120 tokens; umt5 pads to 512 (its tokenizer's min_length), Qwen does not pad
    ids = torch.randint(2, vocab, (prompt,), generator=g).tolist()
    if family == "h3":
        pairs = [(i, 1.0) for i in ids] + [(i, 1.0) for i in torch.randint(2, vocab, (n_tokens - prompt,),
                                                                             generator=g).tolist()]
    else:
        pairs = [(i, 1.0) for i in ids] + [(1, 1.0)] + [(0, 1.0)] * (n_tokens - prompt - 1)
    times = []
    for i in range(1 + args.reps):
        t = H.Timer()
        with torch.no_grad():
            cond = te.encode_token_weights({key: [pairs]})
        times.append(t.stop())
    out(kind="text", family=family, encoder=type(te).__name__, params_b=params / 1e9, weights_gb=weights_gb,
        tokens=len(pairs), output=list(cond[0].shape), ms=H.median(times[1:]), first_ms=times[0],
        peak_gb=H.peak_gb(), note="alone on the GPU" + (": too large to share one 80 GB GPU with the DiT"
                                                         if family == "h3" else ""))
    del te, cond
    H.free_memory()


# -- steps ----------------------------------------------------------------------------------------------------
def wan_base(family, args, seed):
    import comfy.supported_models as sm
    cfg = dict(WAN_CFG[family])
    if args.tiny:
        cfg.update(WAN_TINY)
    unet = dict(image_model="wan2.1", patch_size=(1, 2, 2), text_len=512, freq_dim=256, text_dim=4096,
                out_dim=16, **cfg)
    cls = sm.WAN21_T2V if cfg["model_type"] == "t2v" else sm.WAN21_I2V
    return H.build_base_model(cls, unet, torch.bfloat16, seed=seed), cfg


def wan_inputs(family, args):
    t, h, w = WAN_LATENT[family]
    if args.tiny:
        t, h, w = 3, 8, 12
    g = torch.Generator().manual_seed(0)
    extra = {}
    if family == "wan14b":   # WanImageToVideo: the start image's latent and its mask, concatenated to x
        extra["concat_latent_image"] = torch.randn(1, 16, t, h, w, generator=g)
        mask = torch.ones(1, 1, t, h, w)
        mask[:, :, 0] = 0.0
        extra["concat_mask"] = mask
    positive = [[torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16), extra]]
    latent = torch.zeros(1, 16, t, h, w)
    noise = torch.randn(latent.shape, generator=g)
    return positive, noise, latent


def wan_proj_l(cfg):
    from comfyui_sla.sla.runtime.weights import ProjLWeights
    g = torch.Generator().manual_seed(1)
    d = cfg["dim"] // cfg["num_heads"]
    return ProjLWeights({i: (torch.randn(d, d, generator=g) * 0.02, torch.randn(d, generator=g) * 0.02)
                         for i in range(cfg["num_layers"])}, f"bench-{cfg['dim']}")


def stage_steps(family, args, out):
    import comfy.samplers
    import comfy.supported_models as sm
    from comfyui_sla.nodes.comfy_bridge import apply_sla
    from comfyui_sla.sla.runtime.settings import SLASettings
    extra_settings = dict(min_tokens=0, backend="torch") if args.tiny else {}

    def variants(model, weights):
        dense = model.clone()
        pack = apply_sla(model, SLASettings(keep_ratio=PACK_KEEP[family], **extra_settings), weights=weights)
        return {"dense": dense, f"pack{PACK_KEEP[family]:.2f}": pack}

    def run(model, positive, noise, latent, sigmas, label, expert=None, first_step=0):
        rows = []

        def on_call(i, ms, peak):
            rows.append((i, ms, peak))
        H.sample(model, positive, noise, latent, H.timing_sampler(lambda *a: None), sigmas[:2])   # warm-up
        H.sample(model, positive, noise, latent, H.timing_sampler(on_call), sigmas)
        patch = getattr(model.model_options["transformer_options"].get("optimized_attention_override"),
                        "sla_patch", None)
        proof = {}
        if patch is not None:   # the pack ran: attention calls it saw in the timed run, how many sparse
            proof = dict(pack_calls=patch.stats.calls, pack_sparse=patch.stats.sparse)
        for i, ms, peak in rows:
            out(kind="step", family=family, variant=label, step=first_step + i + 1, expert=expert, ms=ms,
                peak_gb=peak, **proof)

    if family == "h3":
        import bench_h3_step as h3
        cfg = h3.TINY if args.tiny else h3.REAL
        base = H.build_base_model(sm.MiniMaxH3, cfg, torch.bfloat16)
        with torch.no_grad():
            n = base.diffusion_model.rope.inv_freq.numel()
            base.diffusion_model.rope.inv_freq.copy_(1.0 / (10000.0 ** (torch.arange(n, dtype=torch.float32) / n)))
        model = H.patcher(base)
        w, hgt, frames, prompt = (256, 128, 22, 32) if args.tiny else (1344, 768, 124, 256)
        text_dim = base.diffusion_model.condition_proj.weight.shape[1]
        positive, noise, latent, *_ = h3.h3_inputs(frames, w, hgt, text_dim, prompt, "t2v", torch.bfloat16)
        sigmas = comfy.samplers.calculate_sigmas(base.model_sampling, "simple", STEPS).cpu()
        out(kind="steps_meta", family=family, params_b=H.param_count(base.diffusion_model) / 1e9,
            weights_gb=H.weight_gb(base.diffusion_model), sigmas=[round(float(s), 4) for s in sigmas])
        for label, m in variants(model, None).items():
            run(m, positive, noise, latent, sigmas, label)
        del model, base
        H.free_memory()
        return

    positive, noise, latent = wan_inputs(family, args)
    experts = [("high", 0, 2), ("low", 2, 4)] if family == "wan14b" else [(None, 0, STEPS)]
    for expert, a, b in experts:
        base, cfg = wan_base(family, args, seed=a)
        model = H.patcher(base)
        sigmas = comfy.samplers.calculate_sigmas(base.model_sampling, "simple", STEPS).cpu()
        out(kind="steps_meta", family=family, expert=expert, params_b=H.param_count(base.diffusion_model) / 1e9,
            weights_gb=H.weight_gb(base.diffusion_model), sigmas=[round(float(s), 4) for s in sigmas[a:b + 1]])
        # the expert's half of the schedule, as KSamplerAdvanced's start/end steps slice it
        for label, m in variants(model, wan_proj_l(cfg)).items():
            run(m, positive, noise if a == 0 else noise * float(sigmas[a]), latent, sigmas[a:b + 1], label,
                expert, first_step=a)
        del model, base
        H.free_memory()


# -- decode ---------------------------------------------------------------------------------------------------
def vae_from_module(module, dtype=None):
    """comfy.sd.VAE detected from a state dict of ``module`` (random weights of the real shapes)."""
    import comfy.sd
    H.randomize(module, std=0.02)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
          for k, v in module.state_dict().items()}
    return comfy.sd.VAE(sd=sd)


def stage_decode(family, args, out):
    import comfy.taesd.taehv as taehv
    g = torch.Generator().manual_seed(0)
    decoders = []
    if family == "h3":
        import comfy.ldm.minimax.audio_vae as av
        import comfy.ldm.minimax.vae as vv
        import comfy.ops
        import bench_h3_step as h3
        frames = 22 if args.tiny else 124
        _, lt, at = h3.h3_shapes(frames, 0, 0)
        lh, lw = (8, 16) if args.tiny else (48, 84)
        video = torch.randn(1, 24, lt, lh, lw, generator=g)
        audio = torch.randn(1, 32, 2, at, generator=g)
        decoders = [("full", "video", lambda: vae_from_module(vv.MiniMaxH3VideoVAE(
                        operations=comfy.ops.disable_weight_init)), video),
                    ("full", "audio", lambda: vae_from_module(av.MiniMaxH3AudioVAE()), audio),
                    ("light", "video taeh3", lambda: vae_from_module(taehv.TAEHV(latent_channels=24,
                                                                                 latent_format=None)), video)]
    else:
        import comfy.ldm.wan.vae as wv
        t, h, w = (3, 8, 12) if args.tiny else WAN_LATENT[family]
        latent = torch.randn(1, 16, t, h, w, generator=g)
        wan21 = dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True], dropout=0.0)
        decoders = [("full", "video Wan2.1 VAE", lambda: vae_from_module(wv.WanVAE(**wan21)), latent),
                    ("light", "video lighttaew2_1", lambda: vae_from_module(taehv.TAEHV(
                        latent_channels=16, latent_format=None), dtype=torch.bfloat16), latent)]
    for kind, what, make, z in decoders:
        vae = make()
        if what.startswith("video taeh3") and not type(vae.first_stage_model).__name__ == "TAEHV":
            out(kind="decode", family=family, decoder=kind, what=what, error="not detected as TAEHV")
            continue
        H.reset_peak()
        t = H.Timer()
        with torch.no_grad():
            pixels = vae.decode(z)
        ms = t.stop()
        out(kind="decode", family=family, decoder=kind, what=what, model=type(vae.first_stage_model).__name__,
            params_b=H.param_count(vae.first_stage_model) / 1e9, latent=list(z.shape), output=list(pixels.shape),
            ms=ms, peak_gb=H.peak_gb())
        del vae, pixels
        H.free_memory()


# -- totals ---------------------------------------------------------------------------------------------------
def stage_totals(family, args, out):
    rows = [json.loads(x) for x in pathlib.Path(args.out).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("family") == family]
    text = [r["ms"] for r in rows if r.get("kind") == "text" and "ms" in r]
    steps = {}
    for r in rows:
        if r.get("kind") == "step":
            steps.setdefault(r["variant"], {})[r["step"]] = r["ms"]
    dec = {}
    for r in rows:
        if r.get("kind") == "decode" and "ms" in r:
            dec[r["decoder"]] = dec.get(r["decoder"], 0.0) + r["ms"]   # H3: video + audio for the full VAE
    if family == "h3" and "light" in dec:
        dec["light"] += sum(r["ms"] for r in rows if r.get("kind") == "decode" and r.get("what") == "audio")
    text_ms = text[-1] if text else None
    for variant, per_step in steps.items():
        step_ms = sum(per_step.values())
        for decoder, dec_ms in dec.items():
            parts = [x for x in (text_ms, step_ms, dec_ms) if x is not None]
            out(kind="total", family=family, variant=variant, decoder=decoder, text_ms=text_ms,
                steps_ms=step_ms, steps=len(per_step), decode_ms=dec_ms, total_ms=sum(parts),
                complete=text_ms is not None and len(per_step) == STEPS,
                note="model load from disk not measured (random weights)"
                     + ("; the light decoder's total includes the full audio VAE" if family == "h3" else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=FAMILIES, required=True)
    ap.add_argument("--stage", choices=("text", "steps", "decode", "all", "totals"), default="all")
    ap.add_argument("--reps", type=int, default=2, help="timed repeats of the text encoding")
    ap.add_argument("--tiny", action="store_true", help="small models and sizes on the CPU: tests the script")
    ap.add_argument("--out", required=True, help="append the JSON lines here (totals read them back)")
    args = ap.parse_args()
    if not args.tiny and not H.CUDA:
        sys.exit("no CUDA device: the real sizes need a GPU (use --tiny to test the script on the CPU)")
    if args.stage == "all":
        # one process per stage: nothing of one stage's memory (or allocator cache) survives into the next
        for stage in ("text", "steps", "decode", "totals"):
            cmd = [sys.executable, __file__, "--family", args.family, "--stage", stage, "--reps", str(args.reps),
                   "--out", args.out] + (["--tiny"] if args.tiny else [])
            rc = subprocess.run(cmd, env=os.environ.copy()).returncode
            if rc != 0:
                print(json.dumps(dict(kind="error", family=args.family, stage=stage, returncode=rc)), flush=True)
        return
    H.import_comfy()
    H.load_pack()
    out = H.Output(args.out)
    if args.stage != "totals":
        out(**H.meta(dict(script="bench_generation", family=args.family, stage=args.stage,
                          config="tiny" if args.tiny else "real")))
    dict(text=stage_text, steps=stage_steps, decode=stage_decode, totals=stage_totals)[args.stage](
        args.family, args, out)


if __name__ == "__main__":
    main()
