"""Run the pack inside a real ComfyUI checkout, headless on the CPU, and record what happened.

    python3 tests/integration/comfy_runner.py --comfy /path/to/ComfyUI --work /tmp/dir [--only NAME ...]

Writes into ``--work``:

* ``models/diffusion_models``: a tiny random Wan (dim 256, 2 heads of 128, 3 layers, ffn 512, in_dim 16,
  text_dim 4096) as TurboDiffusion ``.pth`` files with non-zero and with zero proj_l, and the same base weights in
  ComfyUI-native naming without proj_l (``.safetensors``, for the stock ``UNETLoader``);
* ``models/loras``: a random rank-4 LoRA in the generic ``diffusion_model.<module>.lora_up/lora_down`` format;
* ``latents/<scenario>.pt``: the sampled latent of every scenario;
* ``results.json``: registered nodes, node schemas (for the workflow checks), per-scenario status/time, the pack's
  log lines.

Every scenario is an API-format prompt run through ``execution.validate_prompt`` and a fresh
``execution.PromptExecutor`` (no cache shared between prompts). Conditioning comes from a test-only node that
emits random text embeddings (no text encoder weights exist here). The test module
``test_comfy_integration.py`` runs this script once per checkout and asserts on its output.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, TESTS)  # wan_factory

import torch  # noqa: E402

import comfy_env  # noqa: E402
import h3_scenarios  # noqa: E402

# Latent: EmptyHunyuanLatentVideo 240x128, 9 frames -> (1, 16, 3, 16, 30) -> 3 * 8 * 15 = 360 tokens: 6 query and
# key blocks of 64 (the last one partial), so keep 0.3 keeps 1 block and keep 0.6 keeps 3.
WIDTH, HEIGHT, LENGTH = 240, 128, 9
TOKENS = 360
STEPS, CFG, SEED = 3, 2.0, 42  # cfg != 1 batches cond + uncond (B = 2), as a real run does
WAN = dict(dim=256, num_heads=2, num_layers=3, ffn_dim=512, in_dim=16, out_dim=16, text_dim=4096)

CKPT_PROJL = "tiny_turbowan_projl.pth"
CKPT_ZERO = "tiny_turbowan_zero_projl.pth"
CKPT_NATIVE = "tiny_wan_native.safetensors"
CKPT_QUANT = "tiny_turbowan_projl-quant.pth"
LORA = "tiny_wan_lora.safetensors"
INT8 = "int8 (W8A8, -quant files)"  # the loader's weight_dtype choice that keeps int8 tiles

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


# ---------------------------------------------------------------------------------------------- files

def write_models(models_dir: str) -> dict:
    """Write the tiny checkpoints and LoRA; returns facts about them for the report."""
    import wan_factory as wf
    from safetensors.torch import save_file

    dm = os.path.join(models_dir, "diffusion_models")
    projl = wf.make_wan_state_dict(**WAN, seed=0, proj_l=True, proj_scale=0.05)
    zero = wf.make_wan_state_dict(**WAN, seed=0, proj_l=True, proj_scale=0.0)
    td_projl = wf.to_turbodiffusion(projl)
    td_zero = wf.to_turbodiffusion(zero)
    wf.save_pth(td_projl, os.path.join(dm, CKPT_PROJL))
    wf.save_pth(td_zero, os.path.join(dm, CKPT_ZERO))
    # The -quant layout (int8 tiles + scales in every block Linear), wrapped in a trainer's prefixes.
    wf.save_pth(wf.to_turbodiffusion_quant(projl, prefix="net.", wrapped=True), os.path.join(dm, CKPT_QUANT))

    # Native file: exactly the values the TurboDiffusion file holds (bf16 / fp32 norms), Conv3d patch embedding,
    # no proj_l, so "UNETLoader -> KSampler" is the unpatched twin of the SLA checkpoints.
    native = {}
    for k, v in td_zero.items():
        if ".proj_l." in k:
            continue
        if k == "patch_embedding.weight":
            v = v.reshape(WAN["dim"], WAN["in_dim"], 1, 2, 2)
        native[k] = v.contiguous()
    save_file(native, os.path.join(dm, CKPT_NATIVE))

    # LoRA on every self-attention and FFN linear of every block: delta W = up @ down * (alpha / rank).
    g = torch.Generator().manual_seed(7)
    lora, rank = {}, 4
    for i in range(WAN["num_layers"]):
        for name, (out_f, in_f) in {"self_attn.q": (256, 256), "self_attn.k": (256, 256),
                                    "self_attn.v": (256, 256), "self_attn.o": (256, 256),
                                    "ffn.0": (512, 256), "ffn.2": (256, 512)}.items():
            key = f"diffusion_model.blocks.{i}.{name}"
            lora[f"{key}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.2
            lora[f"{key}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) / math.sqrt(in_f)
            lora[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(lora, os.path.join(models_dir, "loras", LORA))
    n_proj = sum(1 for k in td_projl if ".proj_l." in k)
    return {"proj_l_keys": n_proj, "proj_l_abs_mean": float(sum(v.abs().mean() for k, v in td_projl.items()
                                                                  if ".proj_l." in k) / max(1, n_proj))}


# ---------------------------------------------------------------------------------------------- test-only nodes

class SLATestConditioning:
    """Random text embeddings (1, tokens, 4096) in place of a umT5 encoder (no weights here)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1}),
                             "tokens": ("INT", {"default": 12, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, WAN["text_dim"], generator=g), {}]],)


LATENT_DIR = None


class SLATestSaveLatent:
    """Output node: saves LATENT["samples"] to ``<work>/latents/<name>.pt``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "name": ("STRING", {"default": "latent"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "testing"

    def save(self, samples, name):
        x = samples["samples"]
        # an audio-video latent (MiniMax H3) is a NestedTensor: saved as the list of its streams
        x = [t.detach().cpu().clone() for t in x.tensors] if getattr(x, "is_nested", False) else x.detach().cpu().clone()
        torch.save(x, os.path.join(LATENT_DIR, f"{name}.pt"))
        return {}


COMPILES = {}   # label -> frames compiled so far by SLATestCompile's counting backend, after each model call


class SLATestCompile:
    """ComfyUI's TorchCompileModel with a CPU backend ('eager' / 'aot_eager') that counts what dynamo compiles:
    the same ``set_torch_compile_wrapper`` call, with the installed ComfyUI's guard filter where it has one."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "backend": (["eager", "aot_eager"],),
                             "label": ("STRING", {"default": "compiled"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "compile"
    CATEGORY = "testing"

    def compile(self, model, backend, label):
        from torch._dynamo.testing import CompileCounterWithBackend
        from comfy_api.torch_helpers import set_torch_compile_wrapper
        try:
            from comfy_extras.nodes_torch_compile import skip_torch_compile_dict
            options = {"guard_filter_fn": skip_torch_compile_dict}
        except ImportError:   # 0.3.6x: no guard filter
            options = None
        import comfy.patcher_extension as pe
        counter = CompileCounterWithBackend(backend)
        after_call = COMPILES.setdefault(label, [])

        def count(executor, *args, **kwargs):
            out = executor(*args, **kwargs)
            after_call.append(counter.frame_count)
            return out

        m = model.clone()
        set_torch_compile_wrapper(model=m, backend=counter, options=options)
        m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "sla_test_compile_count", count)
        return (m,)


LOWVRAM = {}    # label -> {"patched": modules given per-call weight patches, "offloaded": modules ComfyUI offloaded}


class SLATestLowVram:
    """A clone that ComfyUI loads in low-VRAM mode, as on a GPU too small for the model (the CPU never is). A
    PREPARE_SAMPLING wrapper (model_options survive the sampler's clones) gives the patcher's ``partially_load``
    (what ``load_models_gpu`` calls) a 1-byte budget for that load, so ``ModelPatcher.load`` offloads every cast layer
    and hands LoRA over as per-call ``weight_function`` patches instead of patching the weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "lowvram"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "testing"

    def apply(self, model, label):
        import comfy.patcher_extension as pe

        def prepare(executor, patcher, *args, **kwargs):
            load = patcher.partially_load
            patcher.partially_load = lambda device_to, extra_memory=0, force_patch_weights=False: load(
                device_to, 1, force_patch_weights=force_patch_weights)
            try:
                out = executor(patcher, *args, **kwargs)
            finally:
                del patcher.partially_load
            mods = list(patcher.model.diffusion_model.named_modules())
            LOWVRAM[label] = {"patched": sorted(n for n, m in mods if getattr(m, "weight_function", None)),
                              "offloaded": sorted(n for n, m in mods if hasattr(m, "prev_comfy_cast_weights"))}
            return out

        m = model.clone()
        m.add_wrapper_with_key(pe.WrappersMP.PREPARE_SAMPLING, "sla_test_lowvram", prepare)
        return (m,)


class SLATestSaveImage:
    """Output node: saves an IMAGE to ``<work>/latents/<name>.pt``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "name": ("STRING", {"default": "image"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "testing"

    def save(self, images, name):
        torch.save(images.detach().cpu().clone(), os.path.join(LATENT_DIR, f"{name}.pt"))
        return {}


class SLATestDecode:
    """Stands in for VAEDecode without VAE weights: latent (1, 16, T, h, w) -> IMAGE (T, h, w, 3) in [0, 1]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "testing"

    def decode(self, samples):
        x = samples["samples"][0, :3].float()
        return (torch.sigmoid(x).permute(1, 2, 3, 0).contiguous(),)


RECORDED = {}   # label -> what an override installed before SLA saw of each self-attention call it received


class SLATestRecordingOverride:
    """Another pack's attention override, installed like one (chaining to any override already there). It reads
    what ComfyUI passes (KeyError when something is missing, as ComfyUI's Sage3 patch would raise) and records, per
    self-attention call it receives: block_index, total_blocks, the step from sigmas within sample_sigmas, whether
    cond_or_uncond is there, the kwargs' names and the positional count."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "recorded"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, label):
        seen = RECORDED.setdefault(label, [])

        def record(args, kwargs):
            opts = kwargs["transformer_options"]
            q, k = args[0], args[1]
            if q.shape == k.shape and not kwargs.get("skip_reshape"):
                sample_sigmas, sigmas = opts["sample_sigmas"], opts["sigmas"]
                step = int(torch.isclose(sample_sigmas, sigmas[0]).nonzero()[0])
                seen.append([opts["block_index"], opts["total_blocks"], step, "cond_or_uncond" in opts,
                             sorted(kwargs), len(args)])

        return (comfy_env.with_recording_override(model, record),)


TEST_NODES = {"SLATestRecordingOverride": SLATestRecordingOverride, "SLATestConditioning": SLATestConditioning, "SLATestSaveLatent": SLATestSaveLatent,
              "SLATestCompile": SLATestCompile, "SLATestLowVram": SLATestLowVram, "SLATestSaveImage": SLATestSaveImage,
              "SLATestDecode": SLATestDecode, **h3_scenarios.TEST_NODES}


# ---------------------------------------------------------------------------------------------- prompts

class Graph:
    """Builds an API-format prompt: ``add(class_type, **inputs)`` returns a link [id, 0] to the node's output."""

    def __init__(self):
        self.prompt = {}

    def add(self, class_type, **inputs):
        nid = str(len(self.prompt) + 1)
        self.prompt[nid] = {"class_type": class_type, "inputs": inputs}
        return [nid, 0]


def apply_sla(g, model, keep=0.3, start=0.0, end=1.0, dense_blocks="", block_q="64", block_k="64",
              feature_map="softmax", min_tokens=0, backend="torch", enabled=True, keep_schedule=None):
    extra = {} if keep_schedule is None else {"keep_schedule": keep_schedule}
    return g.add("ApplySLA", model=model, keep_ratio=keep, start_percent=start, end_percent=end,
                 dense_blocks=dense_blocks, block_q=block_q, block_k=block_k, feature_map=feature_map,
                 min_tokens=min_tokens, backend=backend, enabled=enabled, **extra)


def sample(g, model, name, seed=SEED):
    pos = g.add("SLATestConditioning", seed=1, tokens=12)
    neg = g.add("SLATestConditioning", seed=2, tokens=12)
    latent = g.add("EmptyHunyuanLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1)
    out = g.add("KSampler", model=model, seed=seed, steps=STEPS, cfg=CFG, sampler_name="euler",
                scheduler="simple", positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    g.add("SLATestSaveLatent", samples=out, name=name)
    return out


def sample_split(g, high, low, name, split=2, steps=4):
    """Wan2.2-style split: KSamplerAdvanced steps 0-split on ``high`` (returns leftover noise), then split-end on
    ``low`` without adding noise."""
    pos = g.add("SLATestConditioning", seed=1, tokens=12)
    neg = g.add("SLATestConditioning", seed=2, tokens=12)
    latent = g.add("EmptyHunyuanLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1)
    common = dict(noise_seed=SEED, steps=steps, cfg=CFG, sampler_name="euler", scheduler="simple", positive=pos,
                  negative=neg)
    first = g.add("KSamplerAdvanced", model=high, add_noise="enable", latent_image=latent, start_at_step=0,
                  end_at_step=split, return_with_leftover_noise="enable", **common)
    second = g.add("KSamplerAdvanced", model=low, add_noise="disable", latent_image=first, start_at_step=split,
                   end_at_step=10000, return_with_leftover_noise="disable", **common)
    g.add("SLATestSaveLatent", samples=second, name=name)


def sample_full(g, model, name, steps=4):
    """The same schedule in one KSamplerAdvanced (0-end), for comparison with :func:`sample_split`."""
    pos = g.add("SLATestConditioning", seed=1, tokens=12)
    neg = g.add("SLATestConditioning", seed=2, tokens=12)
    latent = g.add("EmptyHunyuanLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1)
    out = g.add("KSamplerAdvanced", model=model, add_noise="enable", noise_seed=SEED, steps=steps, cfg=CFG,
                sampler_name="euler", scheduler="simple", positive=pos, negative=neg, latent_image=latent,
                start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    g.add("SLATestSaveLatent", samples=out, name=name)


def sla_loader(g, ckpt=CKPT_PROJL, weight_dtype="default"):
    return g.add("SLADiffusionModelLoader", ckpt_name=ckpt, weight_dtype=weight_dtype)


def unet_loader(g):
    return g.add("UNETLoader", unet_name=CKPT_NATIVE, weight_dtype="default")


def lora(g, model):
    return g.add("LoraLoaderModelOnly", model=model, lora_name=LORA, strength_model=1.0)


def scenarios(h3: bool = False):
    """name -> Graph. Names are what the tests compare. ``h3``: with the MiniMax H3 scenarios (h3_scenarios.py)."""
    out = {}

    def scen(fn):
        g = Graph()
        fn(g)
        out[fn.__name__] = g
        return fn

    @scen
    def unpatched(g):  # stock loader, stock attention
        sample(g, unet_loader(g), "unpatched")

    @scen
    def loader_defaults(g):  # loader -> KSampler: SLA at the checkpoint defaults (min_tokens may make it dense)
        sample(g, sla_loader(g), "loader_defaults")

    @scen
    def keep1_zero(g):  # all blocks kept, proj_l == 0: must equal the unpatched model
        sample(g, apply_sla(g, sla_loader(g, CKPT_ZERO), keep=1.0), "keep1_zero")

    @scen
    def chained_alone(g):  # another pack's override without SLA: every self-attention call reaches it
        sample(g, g.add("SLATestRecordingOverride", model=unet_loader(g), label="alone"), "chained_alone")

    @scen
    def chained_before_sla(g):  # the same override under ApplySLA: it gets exactly the calls SLA leaves dense
        other = g.add("SLATestRecordingOverride", model=unet_loader(g), label="before_sla")
        sample(g, apply_sla(g, other, keep=0.3, dense_blocks="1"), "chained_before_sla")

    @scen
    def chained_before_sla_compiled(g):  # ... and under torch.compile
        other = g.add("SLATestRecordingOverride", model=unet_loader(g), label="before_sla_compiled")
        patched = apply_sla(g, other, keep=0.3, dense_blocks="1")
        sample(g, g.add("SLATestCompile", model=patched, backend="aot_eager", label="chained"),
               "chained_before_sla_compiled")

    @scen
    def backend_node_after_sla(g):  # ComfyUI's Model Attention Backend after ApplySLA replaces our override
        sample(g, g.add("ModelAttentionBackend", model=apply_sla(g, unet_loader(g), keep=0.3),
                        attention="pytorch attention"), "backend_node_after_sla")

    @scen
    def keep03_zero(g):
        sample(g, apply_sla(g, sla_loader(g, CKPT_ZERO), keep=0.3), "keep03_zero")

    @scen
    def keep1_projl(g):  # full mask but a non-zero linear branch
        sample(g, apply_sla(g, sla_loader(g), keep=1.0), "keep1_projl")

    @scen
    def keep03_projl(g):  # the main path: TurboDiffusion file -> loader -> ApplySLA -> KSampler
        sample(g, apply_sla(g, sla_loader(g), keep=0.3), "keep03_projl")

    @scen
    def keep06_projl(g):
        sample(g, apply_sla(g, sla_loader(g), keep=0.6), "keep06_projl")

    @scen
    def disabled_projl(g):  # enabled=False: dense everywhere, i.e. the unpatched model
        sample(g, apply_sla(g, sla_loader(g), keep=0.3, enabled=False), "disabled_projl")

    @scen
    def lora_before(g):  # loader -> LoRA -> ApplySLA
        sample(g, apply_sla(g, lora(g, sla_loader(g)), keep=0.3), "lora_before")

    @scen
    def lora_after(g):  # loader -> ApplySLA -> LoRA
        sample(g, lora(g, apply_sla(g, sla_loader(g), keep=0.3)), "lora_after")

    @scen
    def two_clones(g):  # one loader, two ApplySLA with different keep, two samplers in one prompt
        m = sla_loader(g)
        sample(g, apply_sla(g, m, keep=0.3), "pair_keep03")
        sample(g, apply_sla(g, m, keep=0.6), "pair_keep06")
        sample(g, m, "pair_loader")  # the loader's own output must keep its own (default) settings

    @scen
    def training_free(g):  # stock loader -> ApplySLA: proj_l absent == zero proj_l
        sample(g, apply_sla(g, unet_loader(g), keep=0.3), "training_free")

    @scen
    def weights_loader(g):  # stock loader -> SLAWeightsLoader -> ApplySLA == the SLA loader path
        m = g.add("SLAWeightsLoader", model=unet_loader(g), weights_name=CKPT_PROJL)
        sample(g, apply_sla(g, m, keep=0.3), "weights_loader")

    @scen
    def dense_window(g):  # SLA only for the last third of sampling, block 0 always dense
        sample(g, apply_sla(g, sla_loader(g), keep=0.3, start=0.5, end=1.0, dense_blocks="0"), "dense_window")

    @scen
    def bf16_model(g):  # bf16 weights and activations on the CPU
        sample(g, apply_sla(g, sla_loader(g, weight_dtype="bf16"), keep=0.3), "bf16_model")

    @scen
    def fp8_model(g):  # fp8 storage, cast per layer
        sample(g, apply_sla(g, sla_loader(g, weight_dtype="fp8_e4m3fn"), keep=0.3), "fp8_model")

    @scen
    def fp8_fast_model(g):  # fp8 storage and ComfyUI's fp8 matmul where the device has one (none on the CPU)
        sample(g, apply_sla(g, sla_loader(g, weight_dtype="fp8_e4m3fn_fast"), keep=0.3), "fp8_fast_model")

    @scen
    def quant_checkpoint(g):  # TurboDiffusion -quant.pth with net./_checkpoint_wrapped_module. prefixes
        sample(g, apply_sla(g, sla_loader(g, CKPT_QUANT), keep=0.3), "quant_checkpoint")

    @scen
    def quant_int8(g):  # the same file with its int8 tiles kept (W8A8 layers; dequantised matmul on the CPU)
        sample(g, apply_sla(g, sla_loader(g, CKPT_QUANT, weight_dtype=INT8), keep=0.3), "quant_int8")

    @scen
    def quant_lora(g):  # LoRA on the dequantised -quant model
        sample(g, apply_sla(g, lora(g, sla_loader(g, CKPT_QUANT)), keep=0.3), "quant_lora")

    @scen
    def quant_int8_lora(g):  # LoRA on the int8 model: dequantise, add, requantise at patch time
        sample(g, apply_sla(g, lora(g, sla_loader(g, CKPT_QUANT, weight_dtype=INT8)), keep=0.3), "quant_int8_lora")

    @scen
    def quant_int8_lora_lowvram(g):  # the same, loaded in low-VRAM mode: LoRA applied per call to dequantised tiles
        m = g.add("SLATestLowVram", model=lora(g, sla_loader(g, CKPT_QUANT, weight_dtype=INT8)), label="int8_lora")
        sample(g, apply_sla(g, m, keep=0.3), "quant_int8_lora_lowvram")

    @scen
    def quant_lora_lowvram(g):  # the dequantised twin in low-VRAM mode (ComfyUI's own cast layers)
        m = g.add("SLATestLowVram", model=lora(g, sla_loader(g, CKPT_QUANT)), label="lora")
        sample(g, apply_sla(g, m, keep=0.3), "quant_lora_lowvram")

    @scen
    def quant_int8_lowvram(g):  # low-VRAM mode without LoRA: the int8 layers still run from their offloaded tiles
        m = g.add("SLATestLowVram", model=sla_loader(g, CKPT_QUANT, weight_dtype=INT8), label="int8")
        sample(g, apply_sla(g, m, keep=0.3), "quant_int8_lowvram")

    # Wan2.2-style split sampling. Wan's flow schedule (shift 8), 4 'simple' steps: sigmas 1.0, 0.96, 0.889, 0.727;
    # start_percent 0.4 is sigma 0.923, so SLA runs in steps 3-4 only, i.e. exactly in the second half.
    @scen
    def split_window(g):  # one model on both halves: the window must follow sigma, not the half's step index
        m = apply_sla(g, sla_loader(g), keep=0.3, start=0.4)
        sample_split(g, m, m, "split_window")

    @scen
    def full_window(g):  # the same model and schedule in one sampler
        sample_full(g, apply_sla(g, sla_loader(g), keep=0.3, start=0.4), "full_window")

    @scen
    def split_experts(g):  # two experts (different weights), each its own ApplySLA
        high = apply_sla(g, sla_loader(g, CKPT_PROJL), keep=0.3)
        low = apply_sla(g, sla_loader(g, CKPT_ZERO), keep=0.6, start=0.4)
        sample_split(g, high, low, "split_experts")

    # torch.compile of the diffusion model as ComfyUI's TorchCompileModel applies it: two runs (window and a dense
    # block, so routing changes between steps; seeds differ, or ComfyUI would reuse the first run's output), then
    # differently configured clones of one compiled model, alternating.
    def compile_graph(g, backend):
        tag = f"compiled_{backend}"
        m = apply_sla(g, sla_loader(g), keep=0.3, start=0.4, dense_blocks="1")
        c = g.add("SLATestCompile", model=m, backend=backend, label=tag)
        sample(g, c, f"{tag}_run1")
        sample(g, c, f"{tag}_run2", seed=SEED + 1)
        shared = g.add("SLATestCompile", model=sla_loader(g), backend=backend, label=f"{tag}_clones")
        sample(g, apply_sla(g, shared, keep=0.3), f"{tag}_keep03")
        sample(g, apply_sla(g, shared, keep=0.6), f"{tag}_keep06")
        sample(g, apply_sla(g, shared, keep=0.3), f"{tag}_keep03_again", seed=SEED + 1)

    @scen
    def eager_window(g):  # the eager twins of the compiled runs
        m = apply_sla(g, sla_loader(g), keep=0.3, start=0.4, dense_blocks="1")
        sample(g, m, "eager_window")
        sample(g, m, "eager_window_seed1", seed=SEED + 1)
        sample(g, apply_sla(g, sla_loader(g), keep=0.3), "eager_keep03_seed1", seed=SEED + 1)

    @scen
    def compiled_eager(g):
        compile_graph(g, "eager")

    @scen
    def compiled_aot_eager(g):
        compile_graph(g, "aot_eager")

    # The run report on the node, keep_schedule, the attention map.
    @scen
    def report_schedule(g):  # 6 key blocks: 0.6 keeps 3 (0.5), 0.3 keeps 1 (0.167), the last value holds
        sample(g, apply_sla(g, sla_loader(g), keep=0.3, keep_schedule="0.6, 0.3"), "report_schedule")

    @scen
    def report_loader(g):  # the loader's own SLA reports to the loader node
        sample(g, sla_loader(g), "report_loader")

    @scen
    def invalid_schedule(g):  # must be rejected by validate_prompt, naming the bad token
        sample(g, apply_sla(g, sla_loader(g), keep_schedule="0.3, 0.1x"), "invalid_schedule")

    @scen
    def attention_map(g):
        m = apply_sla(g, sla_loader(g), keep=0.3, keep_schedule="0.6, 0.3")
        out = sample(g, m, "attention_map")
        amap = g.add("SLAAttentionMap", model=m, samples=out, block=1, head=1, step=1)
        g.add("SLATestSaveImage", images=amap, name="attention_map_image")
        g.add("SLATestSaveImage", images=[amap[0], 1], name="attention_map_sparsity")

    if h3:  # last: their torch.compile runs must not touch the compile counts of the Wan scenarios
        out.update(h3_scenarios.scenarios(Graph, apply_sla))
    return out


# ---------------------------------------------------------------------------------------------- schemas

def _jsonable(x):
    try:
        json.dumps(x)
        return x
    except TypeError:
        return repr(x)


DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # V3 input (0.33 has them): a combo whose options bring their own inputs


def input_entries(spec: dict, prefix: str = "") -> list:
    """[{name, section, type, widget, control_after_generate, image_upload, options, dynamic}] of a V1
    INPUT_TYPES dict. A dynamic combo is a COMBO widget whose ``dynamic`` maps each option to the entries of its
    own inputs (named ``<combo>.<input>``, as ComfyUI's executor and the frontend name them); hidden ones are no
    widgets."""
    inputs = []
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            typ = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            dynamic = None
            if typ == DYNAMIC_COMBO:
                dynamic = {o["key"]: input_entries(o.get("inputs") or {}, f"{prefix}{name}.")
                           for o in opts.get("options") or []}
            is_combo = isinstance(typ, (list, tuple)) or typ in ("COMBO", DYNAMIC_COMBO)
            widget = (is_combo or typ in WIDGET_TYPES) and not opts.get("forceInput", False) and \
                not opts.get("hidden", False)
            options = list(typ) if isinstance(typ, (list, tuple)) else list(dynamic) if dynamic is not None \
                else opts.get("options")
            inputs.append({"name": prefix + name, "section": section, "type": "COMBO" if is_combo else str(typ),
                           "widget": bool(widget),
                           "control_after_generate": bool(opts.get("control_after_generate", False)),
                           "image_upload": bool(opts.get("image_upload", False)),
                           "options": _jsonable(list(options)) if options is not None else None,
                           "default": _jsonable(opts.get("default", options[0] if options else None)),
                           "dynamic": dynamic})
    return inputs


def widget_schema(cls) -> dict:
    """{"inputs": input_entries(INPUT_TYPES), "outputs": [types], "output_node": bool} of a node class (V1, or V3
    through its V1 view)."""
    inputs = input_entries(cls.INPUT_TYPES())
    outputs = [t if isinstance(t, str) else "COMBO" for t in getattr(cls, "RETURN_TYPES", ()) or ()]
    return {"inputs": inputs, "outputs": outputs, "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


def widget_entries(inputs: list, values=None) -> list:
    """The widget entries in widgets_values order: a dynamic combo is followed by the widgets of the option that
    ``values`` select there (its first option when ``values`` is None or too short)."""
    out, pos = [], 0
    for i in inputs:
        if not i["widget"]:
            continue
        out.append(i)
        at = pos
        pos += 1 + i["control_after_generate"] + i["image_upload"]
        if i.get("dynamic"):
            key = values[at] if values is not None and at < len(values) else next(iter(i["dynamic"]), None)
            nested = widget_entries(i["dynamic"].get(key, []), None if values is None else values[pos:])
            out += nested
            pos += sum(1 + e["control_after_generate"] + e["image_upload"] for e in nested)
    return out


def node_schemas(nodes_mod) -> dict:
    out = {}
    for name, cls in nodes_mod.NODE_CLASS_MAPPINGS.items():
        try:
            out[name] = widget_schema(cls)
        except Exception as e:  # a node whose INPUT_TYPES needs a running server: record, don't fail
            out[name] = {"error": repr(e), "inputs": [], "outputs": []}
    return out


# ---------------------------------------------------------------------------------------------- UI workflows

# Which folder a model-file widget lists (by node type and widget name).
MODEL_FOLDERS = {"ckpt_name": "diffusion_models", "unet_name": "diffusion_models", "weights_name": "diffusion_models",
                 "vae_name": "vae", "lora_name": "loras"}
NODE_MODEL_FOLDERS = {("CLIPLoader", "clip_name"): "text_encoders", ("CLIPVisionLoader", "clip_name"): "clip_vision"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}


def ui_widget_names(schema: dict, values=None) -> list:
    """widgets_values slot names as the frontend lays them out (hidden control/upload values as None)."""
    names = []
    for i in widget_entries(schema["inputs"], values):
        names.append(i["name"])
        if i["control_after_generate"]:
            names.append(None)
        if i["image_upload"]:
            names.append(None)
    return names


def placeholder_files(workflow_paths, work: str) -> None:
    """Empty files named as the workflows' model/image widgets, so ComfyUI's combo validation can find them."""
    for path in workflow_paths:
        with open(path) as f:
            wf = json.load(f)
        for n in wf["nodes"]:
            values = n.get("widgets_values") or []
            if n["type"] == "LoadImage" and values:
                from PIL import Image
                Image.new("RGB", (64, 64)).save(os.path.join(work, "input", values[0]))
            names = {"SLADiffusionModelLoader": ["ckpt_name"], "SLAWeightsLoader": ["weights_name"],
                     "UNETLoader": ["unet_name"], "VAELoader": ["vae_name"], "CLIPLoader": ["clip_name"],
                     "CLIPVisionLoader": ["clip_name"], "LoraLoaderModelOnly": ["lora_name"]}.get(n["type"], [])
            for i, name in enumerate(names):
                folder = NODE_MODEL_FOLDERS.get((n["type"], name)) or MODEL_FOLDERS[name]
                target = os.path.join(work, "models", folder, values[i])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "ab").close()


def ui_to_api(wf: dict, schemas: dict) -> dict:
    """Convert a UI-format workflow to an API prompt the way the frontend's graphToPrompt does."""
    links = {link[0]: link for link in wf["links"]}
    prompt = {}
    for n in wf["nodes"]:
        if n["type"] in FRONTEND_ONLY or n.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        inputs = {}
        values = n.get("widgets_values") or []
        for name, value in zip(ui_widget_names(schemas[n["type"]], values), values):
            if name is not None:
                inputs[name] = value
        for i in widget_entries(schemas[n["type"]]["inputs"], values):  # widgets newer than the file: defaults
            inputs.setdefault(i["name"], i["default"])
        for i in n["inputs"]:
            if i.get("link") is not None:
                link = links[i["link"]]
                inputs[i["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


def validate_workflows(env, workflow_paths, schemas) -> dict:
    """{file: {"valid": bool, "error": ..., "node_errors": ...}} from ComfyUI's own validate_prompt."""
    import asyncio
    out = {}
    for path in workflow_paths:
        with open(path) as f:
            wf = json.load(f)
        prompt = ui_to_api(wf, schemas)
        valid = asyncio.run(env.execution.validate_prompt("workflow-check", prompt, None))
        out[os.path.basename(path)] = {"valid": bool(valid[0]), "error": _jsonable(valid[1]),
                                       "node_errors": _jsonable(valid[3]), "outputs": _jsonable(valid[2])}
    return out


# ---------------------------------------------------------------------------------------------- the client's view

class TextRecorder(comfy_env.ServerStub):
    """``server.PromptServer.instance`` for the headless run: the real ``send_progress_text`` (it packs the node id
    and the text into the binary websocket frame) into a ``send_sync`` that records the frames."""

    def __init__(self, server_module):
        super().__init__()
        self._send_progress_text = server_module.PromptServer.send_progress_text
        self.text_event = server_module.BinaryEventTypes.TEXT

    def send_progress_text(self, text, node_id, sid=None):
        return self._send_progress_text(self, text, node_id, sid)

    def node_texts(self, start=0):
        """[(node id, text)] decoded from the recorded TEXT frames, as the frontend decodes them."""
        import struct
        out = []
        for event, data in self.messages[start:]:
            if event == self.text_event:
                (n,) = struct.unpack(">I", data[:4])
                out.append((data[4:4 + n].decode(), data[4 + n:].decode()))
        return out


def install_text_recorder():
    import server
    rec = TextRecorder(server)
    server.PromptServer.instance = rec
    return rec


# ---------------------------------------------------------------------------------------------- workflows, headless

def headless_workflow_prompt(path, schemas) -> dict:
    """A UI workflow as the API prompt the frontend would queue, made runnable without text encoder / VAE weights
    and at test size: the SLA loader reads the tiny checkpoint, CLIPTextEncode -> SLATestConditioning, VAEDecode
    -> SLATestDecode, the latent 240x128x9, min_tokens 0 (the tiny latent has 360 tokens). Everything else (ApplySLA
    widgets, samplers, ImageStitch, CreateVideo, SaveVideo) is the workflow's own."""
    with open(path) as f:
        prompt = ui_to_api(json.load(f), schemas)
    for nid, node in list(prompt.items()):
        t, inputs = node["class_type"], node["inputs"]
        if t == "SLADiffusionModelLoader":
            inputs["ckpt_name"] = CKPT_PROJL
        elif t == "CLIPTextEncode":
            prompt[nid] = {"class_type": "SLATestConditioning", "inputs": {"seed": int(nid), "tokens": 12}}
        elif t == "VAEDecode":
            prompt[nid] = {"class_type": "SLATestDecode", "inputs": {"samples": inputs["samples"]}}
        elif t in ("CLIPLoader", "VAELoader"):
            del prompt[nid]
        elif t == "EmptyHunyuanLatentVideo":
            inputs.update(width=WIDTH, height=HEIGHT, length=LENGTH)
        elif t == "ApplySLA":
            inputs["min_tokens"] = 0
    return prompt


# ---------------------------------------------------------------------------------------------- main

def comfy_version() -> str:
    try:
        import comfyui_version
        return comfyui_version.__version__
    except Exception:
        return "unknown"


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records = []

    def emit(self, record):
        try:
            self.records.append({"logger": record.name, "level": record.levelname, "msg": record.getMessage()})
        except Exception:
            pass


_DRAWN = []  # captures the SLA Attention Map node took from a patch (it frees them: the test redraws this copy)


def record_drawn_captures():
    """Keep a reference to every capture a map node draws (``SLAPatch.take_capture``), for :func:`save_capture`."""
    from comfyui_sla.sla.runtime.sla_patch import SLAPatch
    take = SLAPatch.take_capture

    def recording(self, map_node):
        cap = take(self, map_node)
        if cap is not None:
            _DRAWN.append(cap)
        return cap
    SLAPatch.take_capture = recording


def save_capture(path):
    """The q/k of the last capture the pack drew for the SLA Attention Map node, for the test to redraw."""
    req = _DRAWN[-1]
    torch.save({"q": req.q.cpu(), "k": req.k.cpu(), "keep": req.keep, "block_q": req.block_q,
                "block_k": req.block_k, "sparse": req.sparse, "step": req.step, "block": req.block,
                "head": req.head}, path)


def main(argv=None):
    global LATENT_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", required=True, help="ComfyUI checkout")
    ap.add_argument("--work", required=True, help="empty scratch folder")
    ap.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    ap.add_argument("--no-schemas", action="store_true", help="skip the node schema dump")
    ap.add_argument("--schemas-only", action="store_true", help="boot, dump node schemas, run nothing")
    ap.add_argument("--validate-workflows", nargs="*", default=[],
                    help="UI workflow files to convert to API prompts and run through validate_prompt")
    ap.add_argument("--run-workflows", nargs="*", default=[],
                    help="UI workflow files to run headless with the tiny model (headless_workflow_prompt)")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    capture = _Capture()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(capture)
    logging.getLogger().setLevel(logging.INFO)

    work = os.path.abspath(args.work)
    LATENT_DIR = os.path.join(work, "latents")
    os.makedirs(LATENT_DIR, exist_ok=True)
    results = {"comfy": os.path.abspath(args.comfy), "scenarios": {}, "errors": []}
    t0 = time.perf_counter()
    os.makedirs(os.path.join(work, "models", "diffusion_models"), exist_ok=True)
    os.makedirs(os.path.join(work, "models", "loras"), exist_ok=True)
    results["models"] = write_models(os.path.join(work, "models"))
    results["h3"] = h3_scenarios.available(args.comfy)
    if results["h3"]:
        results["h3_models"] = h3_scenarios.write_models(os.path.join(work, "models"))
        h3_scenarios.OUT_DIR = LATENT_DIR
    os.makedirs(os.path.join(work, "input"), exist_ok=True)
    placeholder_files(args.validate_workflows + args.run_workflows, work)

    env = comfy_env.ComfyEnv(args.comfy, work, extra_nodes=TEST_NODES)
    results["boot_s"] = time.perf_counter() - t0
    results["placeholders"] = env.placeholders
    results["comfy_version"] = comfy_version()
    pack = env.pack_module()
    results["pack_module_loaded"] = pack is not None
    results["pack_nodes"] = sorted(getattr(pack, "NODE_CLASS_MAPPINGS", {}) or {}) if pack else []
    results["registered"] = {n: env.node_module(n) for n in ("SLADiffusionModelLoader", "ApplySLA",
                                                               "SLAWeightsLoader", "SLAAttentionMap",
                                                               "SLARunReport")
                             if n in env.nodes.NODE_CLASS_MAPPINGS}
    results["display_names"] = {n: env.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(n) for n in results["registered"]}
    recorder = install_text_recorder()
    if not args.no_schemas or args.validate_workflows or args.run_workflows:
        results["schemas"] = node_schemas(env.nodes)
    if args.validate_workflows:
        results["workflow_validation"] = validate_workflows(env, args.validate_workflows, results["schemas"])

    record_drawn_captures()
    runs = [(name, graph.prompt) for name, graph in scenarios(results["h3"]).items()]
    runs += [(f"workflow:{os.path.basename(p)}", headless_workflow_prompt(p, results["schemas"]))
             for p in args.run_workflows]
    for name, prompt in runs:
        if args.schemas_only:
            break
        if args.only and name not in args.only and not name.startswith("workflow:"):
            continue
        start, sent = len(capture.records), len(recorder.messages)
        t = time.perf_counter()
        try:
            env.run_prompt(prompt)
            status, err = "ok", None
        except Exception as e:
            status, err = "error", f"{e}\n{traceback.format_exc()}"
        results["scenarios"][name] = {
            "status": status, "error": err, "seconds": round(time.perf_counter() - t, 3), "prompt": prompt,
            "node_texts": recorder.node_texts(sent),
            "logs": [r for r in capture.records[start:] if "comfyui-sla" in r["logger"] or "sla" in r["msg"].lower()
                     or r["level"] in ("WARNING", "ERROR")]}
        if name in ("attention_map", "h3_schedule_map"):
            save_capture(os.path.join(LATENT_DIR, f"{name}_capture.pt"))
        print(f"[runner] {name}: {status} ({results['scenarios'][name]['seconds']} s)", flush=True)

    results["compiles"] = COMPILES
    results["recorded"] = RECORDED
    results["probed"] = h3_scenarios.PROBED
    results["lowvram"] = LOWVRAM
    results["total_s"] = time.perf_counter() - t0
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
