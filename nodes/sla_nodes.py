"""ComfyUI node classes of the pack (V1 API). Thin: everything they do is in ``comfy_bridge`` and ``sla``.

Node ids, input names and input order are a contract with saved workflows (widget values are stored by
position): keep them, and only ever append new inputs at the end.
"""
from __future__ import annotations

from ..sla.runtime.schedule import parse_keep_schedule
from ..sla.runtime.settings import SLASettings, parse_dense_blocks
from ..sla.spec import (BACKENDS, BLOCK_K_CHOICES, BLOCK_Q_CHOICES, DEFAULT_KEEP_RATIO, DEFAULT_MIN_TOKENS,
                        FEATURE_MAPS)
from . import comfy_bridge as bridge

CATEGORY = "advanced/attention/SLA"

KEEP_TOOLTIP = ("Share of key blocks each query block attends exactly (sparsity = 1 - keep). The rest is covered "
                "by the linear branch when the model has SLA (proj_l) weights. 0.10 is TurboWan's trained value, "
                "0.15 its quality recommendation; MiniMax H3's Turbo-SLA LoRA was trained at 0.15; without SLA "
                "weights or a sparse-trained LoRA (training-free) stay around 0.3 or higher.")
DENSE_CALL = ("Outside this window self-attention runs dense: exact full softmax attention without the linear "
              "branch (proj_l). On an SLA fine-tuned checkpoint that is the original Wan attention it was "
              "fine-tuned from: full cost, and close to but not the same as what it was trained with.")


SCHEDULE_TOOLTIP = ("Keep ratio per sampling step, overriding keep_ratio: '0.3, 0.15, 0.1' (one value per step, "
                    "the last holds for later steps; a second KSamplerAdvanced that continues the first's sigmas "
                    "continues its step count) or '0.3 -> 0.1' (linear over sampling progress, by sigma like "
                    "start/end_percent). Empty: keep_ratio on every step. The run report on the node shows the "
                    "realised keep per step.")
# Hidden node id of the map node (arms its capture); not on ApplySLA / the loaders: ComfyUI puts UNIQUE_ID into the
# cache key, which would stop identical nodes sharing one output (they find their id through the bridge instead).
HIDDEN_ID = {"unique_id": "UNIQUE_ID"}
EXACT_PREFIX_TOOLTIP = ("MiniMax H3 only: every query also attends the whole prefix of the packed sequence exactly "
                        "(text, conditioning frames, references and audio: the rows before the video), on top of its "
                        "keep_ratio share of the other blocks. Costs a few blocks per query; may help prompt and "
                        "speech fidelity. Off: exactly what the Turbo-SLA LoRA was trained with. Ignored on Wan "
                        "(its text enters through cross-attention).")

INFO_TOOLTIP = ("What was detected in the file: model family, how many blocks carry SLA weights, source layout, "
                "quantized or not (the same line is logged).")


def _tip(text):
    return {"tooltip": text}


class _ModelAndInfo:
    """Outputs of the two loaders: (MODEL, info). Like inputs, outputs are only ever appended (saved links address
    them by position)."""

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("MODEL", "info")
    FUNCTION = "load"
    CATEGORY = CATEGORY


class SLADiffusionModelLoader(_ModelAndInfo):
    """Load an SLA checkpoint (TurboWan etc.) as a native MODEL with SLA applied at the checkpoint defaults."""

    DESCRIPTION = ("Loads a Wan checkpoint fine-tuned for Sparse-Linear Attention (e.g. TurboWan .pth or "
                   ".safetensors), builds the native ComfyUI model and returns it with SLA already applied at the "
                   "checkpoint's defaults (keep 0.10, 128x64 blocks, softmax feature map).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (bridge.diffusion_model_names(),
                          _tip("SLA checkpoint in models/diffusion_models (.safetensors, or .pth read as plain "
                               "tensors only).")),
            "weight_dtype": (list(bridge.WEIGHT_DTYPES),
                             _tip("Weight dtype of the loaded model. default: ComfyUI picks (like Load Diffusion "
                                  "Model); fp8 halves memory at some quality cost.")),
        }}

    OUTPUT_TOOLTIPS = ("Native Wan MODEL with SLA applied; connect to KSampler, LoRA loaders, ApplySLA...",
                       INFO_TOOLTIP)

    def load(self, ckpt_name, weight_dtype):
        return bridge.load_sla_model(ckpt_name, weight_dtype, bridge.executing_node_id())


class ApplySLA:
    """Add or re-configure SLA on a Wan or MiniMax H3 MODEL (MODEL -> MODEL, the input model is untouched)."""

    DESCRIPTION = ("Runs Wan / MiniMax H3 self-attention as Sparse-Linear Attention: each query block attends "
                   "exactly to its top key blocks, the rest through a linear branch where the model has SLA "
                   "(proj_l) weights. Re-configures a model that already has SLA (keeping its weights); on a model "
                   "without SLA weights it runs block-sparse attention (MiniMax H3 with its Turbo-SLA LoRA: the "
                   "router it was trained with; keep 0.15).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("Wan or MiniMax H3 model (from Load SLA Diffusion Model, Load Diffusion Model, "
                                    "a LoRA loader...).")),
            "keep_ratio": ("FLOAT", {"default": DEFAULT_KEEP_RATIO, "min": 0.01, "max": 1.0, "step": 0.01,
                                     "round": 0.01, "display": "slider", "tooltip": KEEP_TOOLTIP}),
            "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Sampling progress at which SLA starts (by sigma, so the two "
                                                   "halves of a split Wan2.2 sampler agree). " + DENSE_CALL}),
            "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Sampling progress at which SLA stops (by sigma). " + DENSE_CALL}),
            "dense_blocks": ("STRING", {"default": "", "multiline": False,
                                        "tooltip": "Blocks that always run dense attention, e.g. '0, 1, 28-29' "
                                                   "(indices from 0, inclusive ranges). Empty: none."}),
            "block_q": ([str(b) for b in BLOCK_Q_CHOICES],
                        _tip("Query block size in tokens. 128 is what TurboWan serves with (and the H3 default); "
                             "64 gives a finer mask at some speed cost.")),
            "block_k": ([str(b) for b in BLOCK_K_CHOICES],
                        _tip("Key block size in tokens (64, as TurboWan was trained).")),
            "feature_map": (list(FEATURE_MAPS),
                            _tip("Feature map of the linear branch; must match the checkpoint's training "
                                 "(TurboWan: softmax). Unused without SLA weights.")),
            "min_tokens": ("INT", {"default": DEFAULT_MIN_TOKENS, "min": 0, "max": 1 << 20, "step": 64,
                                   "tooltip": "Self-attention calls with fewer tokens run dense (sparse does not pay "
                                              "on short sequences)."}),
            "backend": (list(BACKENDS),
                        _tip("auto: Triton kernel on CUDA when available, exact PyTorch path otherwise; triton / "
                             "torch force one (triton falls back to torch off CUDA).")),
            "enabled": ("BOOLEAN", {"default": True,
                                    "tooltip": "Off: every attention call runs dense (for A/B comparisons)."}),
        }, "optional": {
            "keep_schedule": ("STRING", {"default": "", "multiline": False, "tooltip": SCHEDULE_TOOLTIP}),
            "exact_prefix": ("BOOLEAN", {"default": False, "tooltip": EXACT_PREFIX_TOOLTIP}),
        }}

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with SLA configured (a patched clone).",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, dense_blocks=None, keep_schedule=None):
        # None: a linked input, checked when the node runs
        try:
            if dense_blocks is not None:
                parse_dense_blocks(dense_blocks)
            if keep_schedule is not None:
                parse_keep_schedule(keep_schedule)
        except ValueError as e:
            return str(e)
        return True

    def apply(self, model, keep_ratio, start_percent, end_percent, dense_blocks, block_q, block_k, feature_map,
              min_tokens, backend, enabled, keep_schedule="", exact_prefix=False):
        settings = SLASettings(keep_ratio=keep_ratio, start_percent=start_percent, end_percent=end_percent,
                               dense_blocks=parse_dense_blocks(dense_blocks), block_q=int(block_q),
                               block_k=int(block_k), feature_map=feature_map, min_tokens=min_tokens,
                               backend=backend, enabled=enabled,
                               keep_schedule=keep_schedule or "", exact_prefix=bool(exact_prefix))
        return (bridge.apply_sla(model, settings, bridge.executing_node_id()),)


class SLAWeightsLoader(_ModelAndInfo):
    """Attach only the proj_l weights of an SLA checkpoint to any Wan MODEL."""

    DESCRIPTION = ("Reads only the proj_l tensors of an SLA checkpoint and attaches them, so a model loaded by "
                   "Load Diffusion Model, an fp8 or a GGUF loader runs the checkpoint's linear branch. Applies SLA "
                   "at the defaults if the model has none; an SLA model keeps its settings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("Wan model whose base weights match the SLA checkpoint.")),
            "weights_name": (bridge.diffusion_model_names(),
                             _tip("SLA checkpoint (or proj_l-only file) in models/diffusion_models; only its "
                                  "proj_l tensors are read.")),
        }}

    OUTPUT_TOOLTIPS = ("The model with SLA weights attached and SLA applied.", INFO_TOOLTIP)

    def load(self, model, weights_name):
        return bridge.load_sla_weights(model, weights_name, bridge.executing_node_id())


class SLAAttentionMap:
    """Capture one self-attention call of the next sampling run and draw the block mask SLA used for it."""

    DESCRIPTION = ("Shows where SLA looks: for the chosen block, head and sampling step of the sampler run that "
                   "produced 'samples', the query-block x key-block mask SLA used (kept blocks lit amber) over the "
                   "dense attention's share per block (blue-green), and the realised sparsity of every block over "
                   "the steps (bright: sparse, black: dense). Queue again after changing block/head/step: the "
                   "sampler must run again to capture (change its seed if its result is cached).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("The SLA model the sampler used (the same connection as the sampler's model).")),
            "samples": ("LATENT", _tip("The sampler's output: makes this node run after the sampling run it "
                                       "captures.")),
            "block": ("INT", {"default": 0, "min": 0, "max": 255,
                              "tooltip": "Transformer block (0 = first; Wan 1.3B has 30, 14B 40, MiniMax H3 50)."}),
            "head": ("INT", {"default": 0, "min": 0, "max": 255,
                             "tooltip": "Attention head in that block (Wan 1.3B has 12, 14B 40, MiniMax H3 56)."}),
            "step": ("INT", {"default": 0, "min": 0, "max": 10000,
                             "tooltip": "Sampling step (0 = first; counted over the whole schedule, so the second "
                                        "half of a split sampler continues the first's count)."}),
        }, "hidden": HIDDEN_ID}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("attention_map", "sparsity")
    OUTPUT_TOOLTIPS = ("Query blocks (rows) x key blocks (columns): kept blocks amber, dropped ones show the dense "
                       "attention's share in blue-green.",
                       "Blocks (rows) x steps (columns): brightness = realised sparsity, black = ran dense.")
    FUNCTION = "draw"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, block=None, head=None, step=None, unique_id=None):
        # Validation runs before anything executes: the one moment to arm the capture for the coming run.
        values = {"block": block, "head": head, "step": step}
        for name, v in values.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                return f"{name} must be an integer >= 0, got {v!r}"
        if unique_id is not None and None not in values.values():
            bridge.arm_attention_map(unique_id, block, head, step)
        return True

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # draw again on every queue: each run captures anew

    def draw(self, model, samples, block, head, step, unique_id=None):
        return bridge.attention_map(model, unique_id, block, head, step)


class SLARunReport:
    """The run report of the sampling run that produced ``samples``, as text: for App mode and for saving."""

    DESCRIPTION = ("The SLA run report of the sampler run that produced 'samples' (the same lines Apply "
                   "Sparse-Linear Attention shows: sparse / dense self-attention calls, realised keep, attention "
                   "and step speed-up), as text: shown on this node, as a text result in App mode and in the "
                   "queue, and as a STRING output.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("The SLA model the sampler used (the same connection as the sampler's model).")),
            "samples": ("LATENT", _tip("The sampler's output: makes this node run after the sampling run it "
                                       "reports.")),
        }, "hidden": HIDDEN_ID}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("The run report text (one line per fact).",)
    OUTPUT_NODE = True
    FUNCTION = "report"
    CATEGORY = CATEGORY

    def report(self, model, samples, unique_id=None):
        return bridge.run_report(model, unique_id)


NODE_CLASS_MAPPINGS = {
    "SLADiffusionModelLoader": SLADiffusionModelLoader,
    "ApplySLA": ApplySLA,
    "SLAWeightsLoader": SLAWeightsLoader,
    "SLAAttentionMap": SLAAttentionMap,
    "SLARunReport": SLARunReport,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SLADiffusionModelLoader": "Load SLA Diffusion Model",
    "ApplySLA": "Apply Sparse-Linear Attention",
    "SLAWeightsLoader": "Load SLA Weights",
    "SLAAttentionMap": "SLA Attention Map",
    "SLARunReport": "SLA Run Report",
}
