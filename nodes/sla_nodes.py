"""ComfyUI node classes of the pack (V1 API). Thin: everything they do is in ``comfy_bridge`` and ``sla``.

Node ids, input names and input order are a contract with saved workflows (widget values are stored by
position): keep them, and only ever append new inputs at the end.
"""
from __future__ import annotations

from ..sla.runtime.settings import SLASettings, parse_dense_blocks
from ..sla.spec import (BACKENDS, BLOCK_K_CHOICES, BLOCK_Q_CHOICES, DEFAULT_KEEP_RATIO, DEFAULT_MIN_TOKENS,
                        FEATURE_MAPS)
from . import comfy_bridge as bridge

CATEGORY = "advanced/attention/SLA"

KEEP_TOOLTIP = ("Share of key blocks each query block attends exactly (sparsity = 1 - keep). The rest is covered "
                "by the linear branch when the model has SLA (proj_l) weights. 0.10 is TurboWan's trained value, "
                "0.15 its quality recommendation; without SLA weights (training-free) stay around 0.3 or higher.")
DENSE_CALL = ("Outside this window self-attention runs dense: exact full softmax attention without the linear "
              "branch (proj_l). On an SLA fine-tuned checkpoint that is the original Wan attention it was "
              "fine-tuned from: full cost, and close to but not the same as what it was trained with.")


INFO_TOOLTIP = ("What was detected in the file: model family, how many blocks carry SLA weights, source layout, "
                "quantized or not (the same line is logged).")


def _tip(text):
    return {"tooltip": text}


class SLADiffusionModelLoader:
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

    # Outputs, like inputs, are only ever appended (saved links address them by position).
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("MODEL", "info")
    OUTPUT_TOOLTIPS = ("Native Wan MODEL with SLA applied; connect to KSampler, LoRA loaders, ApplySLA...",
                       INFO_TOOLTIP)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name, weight_dtype):
        return bridge.load_sla_model(ckpt_name, weight_dtype)


class ApplySLA:
    """Add or re-configure SLA on a Wan MODEL (MODEL -> MODEL, the input model is untouched)."""

    DESCRIPTION = ("Runs Wan self-attention as Sparse-Linear Attention: each query block attends exactly to its "
                   "top key blocks, the rest through a linear branch. Re-configures a model that already has SLA "
                   "(keeping its weights); on a model without SLA weights it runs training-free block-sparse "
                   "attention.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("Wan model (from Load SLA Diffusion Model, Load Diffusion Model, a LoRA "
                                    "loader...).")),
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
                        _tip("Query block size in tokens. 128 is what TurboWan serves with; 64 gives a finer mask "
                             "at some speed cost.")),
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
        }}

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with SLA configured (a patched clone).",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, dense_blocks=None):
        if dense_blocks is None:  # linked input: checked when the node runs
            return True
        try:
            parse_dense_blocks(dense_blocks)
        except ValueError as e:
            return str(e)
        return True

    def apply(self, model, keep_ratio, start_percent, end_percent, dense_blocks, block_q, block_k, feature_map,
              min_tokens, backend, enabled):
        old = bridge.current_settings(model)
        settings = SLASettings(keep_ratio=keep_ratio, start_percent=start_percent, end_percent=end_percent,
                               dense_blocks=parse_dense_blocks(dense_blocks), block_q=int(block_q),
                               block_k=int(block_k), feature_map=feature_map, min_tokens=min_tokens,
                               backend=backend, enabled=enabled,
                               weights_id=old.weights_id if old is not None else None)
        return (bridge.apply_sla(model, settings),)


class SLAWeightsLoader:
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

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("MODEL", "info")
    OUTPUT_TOOLTIPS = ("The model with SLA weights attached and SLA applied.", INFO_TOOLTIP)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model, weights_name):
        return bridge.load_sla_weights(model, weights_name)


NODE_CLASS_MAPPINGS = {
    "SLADiffusionModelLoader": SLADiffusionModelLoader,
    "ApplySLA": ApplySLA,
    "SLAWeightsLoader": SLAWeightsLoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SLADiffusionModelLoader": "Load SLA Diffusion Model",
    "ApplySLA": "Apply Sparse-Linear Attention",
    "SLAWeightsLoader": "Load SLA Weights",
}
