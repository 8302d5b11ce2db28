"""MiniMax H3 inside a real ComfyUI (0.33+: ``comfy/ldm/minimax``): the tiny model, its LoRA, test-only nodes and
the scenarios ``comfy_runner.py`` runs when the tree has H3 (``test_comfy_integration.py`` asserts on them).

The tiny model is written key by key in the layout of a native ComfyUI H3 diffusion-model file (the keys
``comfy/model_detection.py`` reads for ``minimax_h3`` and the state dict of ``MiniMaxH3Model``, time-embedder
form): hidden 256, 3 DiT blocks and 2 refiner blocks of 2 heads x 128, SwiGLU FFN 512, text_dim 64, the real
patch / latent sizes (video 24 channels, patch 1x2x2; audio 32 channels) and a 16-frequency RoPE. ComfyUI's own
``UNETLoader`` detects it; a load that misses or leaves over a key logs ``unet missing`` / ``unet unexpected``,
which the tests refuse.

Packed sequence: 24 text tokens (the conditioning), EmptyMiniMaxH3LatentAV 640x256, 5 frames -> 2 latent frames of
8x20 patches = 320 video rows, and 8 stereo audio frames = 16 audio rows: S = 360, i.e. 3 query blocks of 128 and
6 key blocks of 64 (the last ones partial); keep 0.15 keeps 1 key block per query block, keep 0.5 keeps 3.
"""
from __future__ import annotations

import math
import os

import torch

import comfy_env

H3 = dict(hidden=256, heads=2, head_dim=128, layers=3, refiner_layers=2, ffn=512, text_dim=64, t_in=32,
          t_hidden=64, t_dim=64, rope=16)
WIDTH, HEIGHT, LENGTH, TEXT = 640, 256, 5, 24
TOKENS = 360
STEPS, CFG, SEED = 4, 1.0, 42   # the Turbo LoRA's 4 steps, no CFG (H3 runs batch 1 only)
MIN_TOKENS = 256                # below ApplySLA's 2048 default: the tiny sequence has 360 tokens
CKPT = "tiny_minimax_h3.safetensors"
LORA = "tiny_minimax_h3_lora.safetensors"
VIDEO_CH, AUDIO_CH, PATCH = 24, 32, 4   # latent channels; patch 1x2x2 = 4 latent pixels per video row


def available(comfy_path: str) -> bool:
    """Whether the ComfyUI tree has MiniMax H3 (core 0.33+)."""
    return os.path.isfile(os.path.join(comfy_path, "comfy", "ldm", "minimax", "model.py"))


# ---------------------------------------------------------------------------------------------- files

def state_dict(seed: int = 0) -> dict:
    """A random tiny H3 in the native layout (no prefix), fp32; scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    hid, inner, ffn, t_dim = H3["hidden"], H3["heads"] * H3["head_dim"], H3["ffn"], H3["t_dim"]
    sd = {}

    def linear(name, out_f, in_f, bias=True, scale=1.0):
        sd[f"{name}.weight"] = torch.randn(out_f, in_f, generator=g) * (scale / math.sqrt(in_f))
        if bias:
            sd[f"{name}.bias"] = torch.randn(out_f, generator=g) * 0.02

    def norm(name, n):
        sd[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(n, generator=g)

    def attention_mlp(prefix):
        norm(f"{prefix}.norm1", hid)
        norm(f"{prefix}.norm2", hid)
        linear(f"{prefix}.attn.qkv_proj", 3 * inner, hid, bias=False)
        norm(f"{prefix}.attn.q_norm", H3["head_dim"])
        norm(f"{prefix}.attn.k_norm", H3["head_dim"])
        linear(f"{prefix}.attn.out_proj", hid, inner, bias=False)
        linear(f"{prefix}.mlp.fc1", 2 * ffn, hid, bias=False)
        linear(f"{prefix}.mlp.fc2", hid, ffn, bias=False)

    linear("video_patch_proj", hid, VIDEO_CH * PATCH)
    linear("audio_patch_proj", hid, AUDIO_CH)
    linear("condition_proj", hid, H3["text_dim"])
    linear("time_embedder.proj_in", H3["t_hidden"], H3["t_in"])
    linear("time_embedder.proj_out", t_dim, H3["t_hidden"])
    sd["rope.inv_freq"] = 1.0 / (256.0 ** (torch.arange(H3["rope"], dtype=torch.float32) / H3["rope"]))
    for i in range(H3["refiner_layers"]):
        attention_mlp(f"token_refiner.blocks.{i}")
    norm("token_refiner.final_norm", hid)
    for i in range(H3["layers"]):
        attention_mlp(f"blocks.{i}")
        linear(f"blocks.{i}.adaln_proj.linear", 6 * hid * 3, t_dim, scale=0.5)  # 6 vectors x 3 modalities
    norm("final_layer.norm", hid)
    linear("final_layer.adaln_proj.linear", 2 * hid, t_dim, scale=0.5)
    linear("final_layer.video_out", VIDEO_CH * PATCH, hid)
    linear("final_layer.audio_out", AUDIO_CH, hid)
    return {k: v.contiguous() for k, v in sd.items()}


def lora_state_dict(seed: int = 7, rank: int = 4) -> dict:
    """A rank-4 LoRA on every DiT block's fused QKV and SwiGLU FFN, in the PEFT naming under ``diffusion_model.``
    (what LoraLoaderModelOnly maps through ComfyUI's generic ``diffusion_model.<module>`` keys)."""
    g = torch.Generator().manual_seed(seed)
    hid, inner, ffn = H3["hidden"], H3["heads"] * H3["head_dim"], H3["ffn"]
    out = {}
    for i in range(H3["layers"]):
        for name, (out_f, in_f) in {"attn.qkv_proj": (3 * inner, hid), "mlp.fc1": (2 * ffn, hid),
                                    "mlp.fc2": (hid, ffn)}.items():
            key = f"diffusion_model.blocks.{i}.{name}"
            out[f"{key}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) / math.sqrt(in_f)
            out[f"{key}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.3
            out[f"{key}.alpha"] = torch.tensor(float(rank))
    return out


def lora_targets() -> list:
    """The model keys the LoRA patches (as ComfyUI names them in its patch table)."""
    return sorted(f"diffusion_model.blocks.{i}.{n}.weight" for i in range(H3["layers"])
                  for n in ("attn.qkv_proj", "mlp.fc1", "mlp.fc2"))


def write_models(models_dir: str) -> dict:
    from safetensors.torch import save_file
    sd = state_dict()
    save_file(sd, os.path.join(models_dir, "diffusion_models", CKPT))
    save_file(lora_state_dict(), os.path.join(models_dir, "loras", LORA))
    return {"keys": sorted(sd)}


# ---------------------------------------------------------------------------------------------- test-only nodes

class SLATestH3Conditioning:
    """The CONDITIONING ComfyUI's H3 text encode (MiniMaxH3TEModel, encode_from_tokens_scheduled) makes for a plain
    prompt, from random states instead of Qwen3-VL-32B: [[states (1, tokens, text_dim), {"pooled_output": None,
    "minimax_token_tags": (tokens,) long, 1 = text}]]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1}),
                             "tokens": ("INT", {"default": TEXT, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        states = torch.randn(1, tokens, H3["text_dim"], generator=g)
        return ([[states, {"pooled_output": None, "minimax_token_tags": torch.ones(tokens, dtype=torch.long)}]],)


PROBED = {}     # label -> [[block_index, step, q shape] per self-attention call the probe passed on]
OUT_DIR = None  # where the probe writes the q/k/v and output of the call it captures


def _step(opts) -> int:
    return int(torch.isclose(opts["sample_sigmas"], opts["sigmas"][0]).nonzero()[0])


def _h3_call(args, kwargs) -> bool:
    q, k = args[0], args[1]
    return q.dim() == 4 and q.shape == k.shape and bool(kwargs.get("skip_reshape"))


class SLATestH3Probe:
    """Wraps the model's attention override (after ApplySLA): passes every call on unchanged, records block and
    step of each H3 self-attention call, and saves q, k, v and the returned output of the call at (block, step)
    to ``<out>/<label>_call.pt``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "probe"}),
                             "block": ("INT", {"default": 1}), "step": ("INT", {"default": 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, label, block, step):
        seen = PROBED.setdefault(label, [])
        m = model.clone()
        PROBED[f"{label}:patched"] = sorted(m.patches)   # the weights a LoRA before the probe patches
        to = m.model_options.setdefault("transformer_options", {})
        inner = to["optimized_attention_override"]

        def probe(func, *args, **kwargs):
            if not _h3_call(args, kwargs):
                return inner(func, *args, **kwargs)
            opts = kwargs["transformer_options"]
            here = [opts.get("block_index"), _step(opts), list(args[0].shape)]
            seen.append(here)
            qkv = [t.detach().clone() for t in args[:3]]
            out = inner(func, *args, **kwargs)
            if here[:2] == [block, step]:
                torch.save({"q": qkv[0], "k": qkv[1], "v": qkv[2], "out": out.detach().clone()},
                           os.path.join(OUT_DIR, f"{label}_call.pt"))
            return out

        to["optimized_attention_override"] = probe
        return (m,)


class SLATestH3RecordingOverride:
    """Another pack's override on an H3 model, installed like one (chaining to an override already there):
    records, per H3 self-attention call it receives, [block_index (None where nobody wrote one), step, kwargs'
    names, positional count, q shape]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "recorded"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, label):
        seen = PROBED.setdefault(label, [])

        def record(args, kwargs):
            if _h3_call(args, kwargs):
                opts = kwargs["transformer_options"]
                seen.append([opts.get("block_index"), _step(opts), sorted(kwargs), len(args), list(args[0].shape)])

        return (comfy_env.with_recording_override(model, record),)


TEST_NODES = {"SLATestH3Conditioning": SLATestH3Conditioning, "SLATestH3Probe": SLATestH3Probe,
              "SLATestH3RecordingOverride": SLATestH3RecordingOverride}


# ---------------------------------------------------------------------------------------------- prompts

def unet(g):
    return g.add("UNETLoader", unet_name=CKPT, weight_dtype="default")


def lora(g, model, strength=1.0):
    return g.add("LoraLoaderModelOnly", model=model, lora_name=LORA, strength_model=strength)


def h3_sla(apply_sla):
    """The runner's ``apply_sla`` (one ApplySLA widget list for both families) at the H3 defaults: keep 0.15,
    128x64 blocks, min_tokens 256, the torch backend."""
    def apply(g, model, keep=0.15, **kw):
        kw.setdefault("block_q", "128")
        kw.setdefault("block_k", "64")
        kw.setdefault("min_tokens", MIN_TOKENS)
        return apply_sla(g, model, keep=keep, **kw)
    return apply


def sample(g, model, name, seed=SEED):
    pos = g.add("SLATestH3Conditioning", seed=1, tokens=TEXT)
    neg = g.add("SLATestH3Conditioning", seed=2, tokens=TEXT)   # unused at cfg 1, as in a real graph
    latent = g.add("EmptyMiniMaxH3LatentAV", width=WIDTH, height=HEIGHT, length=LENGTH)
    out = g.add("KSampler", model=model, seed=seed, steps=STEPS, cfg=CFG, sampler_name="euler",
                scheduler="simple", positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    g.add("SLATestSaveLatent", samples=out, name=name)
    return out


def scenarios(Graph, runner_apply_sla) -> dict:
    """name -> Graph of the H3 scenarios (names start with ``h3_``)."""
    out = {}
    apply_sla = h3_sla(runner_apply_sla)

    def scen(fn):
        g = Graph()
        fn(g)
        out[fn.__name__] = g
        return fn

    @scen
    def h3_unpatched(g):  # stock loader + LoRA, stock attention
        sample(g, lora(g, unet(g)), "h3_unpatched")

    @scen
    def h3_keep1(g):  # every key block kept: dense attention by another summation order
        sample(g, apply_sla(g, lora(g, unet(g)), keep=1.0), "h3_keep1")

    @scen
    def h3_lora_before(g):  # the graph of the Turbo-SLA LoRA: UNETLoader -> LoRA -> ApplySLA -> KSampler
        sample(g, apply_sla(g, lora(g, unet(g))), "h3_lora_before")

    @scen
    def h3_lora0_before(g):
        sample(g, apply_sla(g, lora(g, unet(g), 0.0)), "h3_lora0_before")

    @scen
    def h3_lora_after(g):  # UNETLoader -> ApplySLA -> LoRA
        sample(g, lora(g, apply_sla(g, unet(g))), "h3_lora_after")

    @scen
    def h3_lora0_after(g):
        sample(g, lora(g, apply_sla(g, unet(g)), 0.0), "h3_lora0_after")

    @scen
    def h3_probe(g):  # the main graph with a transparent probe after ApplySLA: q/k/v and output of one call
        m = g.add("SLATestH3Probe", model=apply_sla(g, lora(g, unet(g))), label="h3_probe", block=1, step=1)
        sample(g, m, "h3_probe")

    @scen
    def h3_schedule_map(g):  # keep_schedule 0.5 then 0.15, and the SLA Attention Map of block 1, head 1, step 1
        m = apply_sla(g, lora(g, unet(g)), keep_schedule="0.5, 0.15")
        out = sample(g, m, "h3_schedule_map")
        amap = g.add("SLAAttentionMap", model=m, samples=out, block=1, head=1, step=1)
        g.add("SLATestSaveImage", images=amap, name="h3_attention_map_image")

    @scen
    def h3_compiled(g):  # ComfyUI's TorchCompileModel wrapper (aot_eager), two runs of other seeds
        c = g.add("SLATestCompile", model=apply_sla(g, lora(g, unet(g))), backend="aot_eager", label="h3_compiled")
        sample(g, c, "h3_compiled_run1")
        sample(g, c, "h3_compiled_run2", seed=SEED + 1)

    @scen
    def h3_compiled_dense(g):  # the same compile without SLA: which model calls compile is ComfyUI's H3's own
        c = g.add("SLATestCompile", model=lora(g, unet(g)), backend="aot_eager", label="h3_compiled_dense")
        sample(g, c, "h3_compiled_dense")

    @scen
    def h3_eager_seed1(g):  # the eager twin of the compiled second run
        sample(g, apply_sla(g, lora(g, unet(g))), "h3_eager_seed1", seed=SEED + 1)

    @scen
    def h3_chained_alone(g):  # another pack's override without SLA: every self-attention call reaches it
        sample(g, g.add("SLATestH3RecordingOverride", model=lora(g, unet(g)), label="h3_alone"), "h3_chained_alone")

    @scen
    def h3_chained_before_sla(g):  # the same override under ApplySLA with block 1 dense: block 1's calls only
        other = g.add("SLATestH3RecordingOverride", model=lora(g, unet(g)), label="h3_before_sla")
        sample(g, apply_sla(g, other, dense_blocks="1"), "h3_chained_before_sla")

    return out
