"""The only module of the pack that talks to ComfyUI (``comfy.*``, ``folder_paths``); imports them lazily so the
pack imports cleanly outside ComfyUI (tests, the demo).

Where things live on a patched model (a ``ModelPatcher`` clone):

* ``model_options["transformer_options"]["optimized_attention_override"]``: the SLA override (a closure holding
  its :class:`SLARuntime`: settings, the chained previous override, counters). Functions survive the deep copy
  of ``clone()`` unchanged, so clones share it; each ``apply_sla`` makes a new one.
* ``model_options["transformer_options"]["sla"]``: a plain dict of the settings (introspection only).
* ``wrappers[OUTER_SAMPLE]["comfyui_sla"]``: the run wrapper (one summary log line per sampling run).
* ComfyUI without ``transformer_options["block_index"]`` (0.3.6x): ``patches_replace["dit"][("double_block", i)]``
  patches that set it, chaining any patch that was there.
* proj_l tensors: :mod:`sla.runtime.weights`' registry, referenced by ``settings.weights_id``.
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Optional

import torch

from ..sla.checkpoint.keys import PROJ_L_KEY
from ..sla.runtime.patch import (SLARuntime, is_sla_override, make_attention_override, make_block_index_patch,
                                 make_run_wrapper)
from ..sla.runtime.settings import SLASettings, format_blocks
from ..sla.runtime.weights import register_proj_l, weights_blocks

log = logging.getLogger("comfyui_sla")

WRAPPER_KEY = "comfyui_sla"
OVERRIDE_KEY = "optimized_attention_override"

# Only ever append: saved workflows store the choice by value, and users expect the order they know.
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast")


# ---------------------------------------------------------------------------------------------------------------
# folder_paths

def diffusion_model_names() -> list:
    """Files of models/diffusion_models (and models/unet); empty outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return []
    return folder_paths.get_filename_list("diffusion_models")


def diffusion_model_path(name: str) -> str:
    import folder_paths
    return folder_paths.get_full_path_or_raise("diffusion_models", name)


def _source_id(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------------------
# model inspection

def wan_model(model):
    """The WanModel inside a ModelPatcher; raises ValueError naming what was found when it is not Wan."""
    try:
        dm = model.get_model_object("diffusion_model")
    except Exception:
        dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    blocks = getattr(dm, "blocks", None)
    name = type(dm).__name__
    is_wan = any(c.__name__ == "WanModel" for c in type(dm).__mro__)  # WanModel and its VACE/camera/... kin
    if dm is None or not is_wan or blocks is None or len(blocks) == 0:
        raise ValueError(f"SLA supports Wan video models (WanModel and its variants); this MODEL's diffusion "
                         f"model is {name}")
    return dm


def model_head_dim(dm) -> Optional[int]:
    attn = getattr(dm.blocks[0], "self_attn", None)
    if attn is not None and getattr(attn, "head_dim", None):
        return int(attn.head_dim)
    if getattr(dm, "dim", None) and getattr(dm, "num_heads", None):
        return int(dm.dim) // int(dm.num_heads)
    return None


_block_index_support: dict = {}


def comfy_sets_block_index(dm) -> bool:
    """Whether this ComfyUI's block loop of ``type(dm)`` writes ``transformer_options["block_index"]``
    (ComfyUI >= ~0.5 does; 0.3.6x does not). Read from the source of ``forward_orig`` once per class."""
    cls = type(dm)
    if cls not in _block_index_support:
        try:
            src = inspect.getsource(cls.forward_orig)
            _block_index_support[cls] = '"block_index"' in src or "'block_index'" in src
        except (AttributeError, OSError, TypeError):
            _block_index_support[cls] = False  # unknown: installing the patch is harmless
    return _block_index_support[cls]


def current_override(model):
    return model.model_options.get("transformer_options", {}).get(OVERRIDE_KEY)


def current_settings(model) -> Optional[SLASettings]:
    """The SLA settings installed on ``model`` (None when it has no SLA patch)."""
    fn = current_override(model)
    return fn.sla_runtime.settings if is_sla_override(fn) else None


def _sigma_window(model, settings: SLASettings):
    ms = model.get_model_object("model_sampling")
    return (float(ms.percent_to_sigma(settings.start_percent)), float(ms.percent_to_sigma(settings.end_percent)))


def _window_from_guider(settings: SLASettings):
    def resolve(executor):
        guider = getattr(executor, "class_obj", None)
        patcher = getattr(guider, "model_patcher", None)
        if patcher is None:
            return None
        return _sigma_window(patcher, settings)
    return resolve


# ---------------------------------------------------------------------------------------------------------------
# patching

def apply_sla(model, settings: SLASettings):
    """A clone of ``model`` with SLA installed (or re-configured) at ``settings``; ``model`` is not modified.

    An SLA override already on the model is replaced (its chained previous override is kept); any other override
    is chained: it receives every call SLA does not take. Block-index patches are added only where ComfyUI does
    not set ``block_index`` itself.
    """
    import comfy.patcher_extension as pe

    dm = wan_model(model)
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    existing = to.get(OVERRIDE_KEY)
    previous = existing.sla_previous if is_sla_override(existing) else existing

    runtime = SLARuntime(settings, previous)
    if not runtime.full_window():
        try:
            runtime.set_sigma_window(*_sigma_window(m, settings))
        except Exception as e:
            log.warning("SLA: could not convert start/end_percent to sigmas at apply time (%s); they will be "
                        "converted when sampling starts", e)

    if not comfy_sets_block_index(dm):
        for i in range(len(dm.blocks)):
            cur = to.get("patches_replace", {}).get("dit", {}).get(("double_block", i))
            if getattr(cur, "sla_block_index", None) == i:
                continue  # ours already (settings-independent)
            m.set_model_patch_replace(make_block_index_patch(i, cur), "dit", "double_block", i)
            to = m.model_options["transformer_options"]  # set_model_patch_replace swaps in a copy

    override = make_attention_override(settings, previous, runtime)
    to[OVERRIDE_KEY] = override
    to["sla"] = settings.to_dict()

    m.remove_wrappers_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                           make_run_wrapper(runtime, _window_from_guider(settings)))

    log.info("SLA applied to %s (%d blocks, %s): %s", type(dm).__name__, len(dm.blocks),
             _weights_text(settings.weights_id), settings.describe())
    _warn_foreign_dense_blocks(settings, len(dm.blocks))
    return m


def _warn_foreign_dense_blocks(settings: SLASettings, n_blocks: int) -> None:
    """dense_blocks naming blocks this model does not have: a warning naming the model's block count."""
    extra = sorted(i for i in (settings.dense_blocks or ()) if i >= n_blocks)
    if extra:
        log.warning("SLA: dense_blocks names block%s %s but this model has %d blocks (0..%d); %s ignored",
                    "s" if len(extra) > 1 else "", format_blocks(extra), n_blocks, n_blocks - 1,
                    "they are" if len(extra) > 1 else "it is")


def _weights_text(weights_id) -> str:
    blocks = weights_blocks(weights_id)
    if not blocks:
        return "no proj_l: training-free block-sparse"
    return f"proj_l on blocks {format_blocks(blocks)}"


def check_proj_l(dm, proj_l: dict, warn_missing: bool = True) -> None:
    """proj_l against the model: head size (error naming the key), block range (error), coverage (warning)."""
    head = model_head_dim(dm)
    n = len(dm.blocks)
    for i, (w, _b) in sorted(proj_l.items()):
        if i >= n or i < 0:
            raise ValueError(f"SLA weights have proj_l for block {i} ({PROJ_L_KEY.format(i=i, p='weight')}) but the model has "
                             f"only {n} blocks: the weights belong to another model")
        if head is not None and tuple(w.shape) != (head, head):
            raise ValueError(f"{PROJ_L_KEY.format(i=i, p='weight')} has shape {tuple(w.shape)}, expected ({head}, {head}) for "
                             f"this model's attention head size {head}")
    missing = sorted(set(range(n)) - set(proj_l))
    if missing and warn_missing:
        log.warning("SLA weights have no proj_l for blocks %s: those blocks run block-sparse only",
                    format_blocks(missing))


def _checkpoint_module():
    from ..sla import checkpoint
    return checkpoint


def _progress():
    """A ``progress(done, total)`` callback driving ComfyUI's progress bar (None when unavailable)."""
    try:
        import comfy.utils
    except ImportError:
        return None
    bar = {}

    def progress(done, total):
        if "bar" not in bar:
            bar["bar"] = comfy.utils.ProgressBar(total)
        bar["bar"].update_absolute(done, total)
    return progress


def weight_dtype_options(weight_dtype: str) -> dict:
    """``model_options`` for comfy.sd.load_diffusion_model_state_dict, as UNETLoader maps its weight_dtype
    (``fp8_e4m3fn_fast``: fp8 weights, and ComfyUI's fp8 matmul where the GPU has one)."""
    mapping = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16,
               "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
               "fp8_e4m3fn_fast": torch.float8_e4m3fn}
    if weight_dtype not in mapping:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
    dt = mapping[weight_dtype]
    options = {} if dt is None else {"dtype": dt}
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    return options


def settings_from_checkpoint(info, **overrides) -> SLASettings:
    """SLASettings at the checkpoint's own SLA settings (``info.sla_settings``: keep_ratio, block_q, block_k,
    feature_map from its metadata), else TurboDiffusion's serving defaults (keep 0.10, 128x64, softmax)."""
    recorded = dict(getattr(info, "sla_settings", None) or {})
    fields = {k: recorded[k] for k in ("keep_ratio", "block_q", "block_k", "feature_map") if k in recorded}
    try:
        return SLASettings(**fields, **overrides)
    except ValueError as e:
        log.warning("SLA: the checkpoint's recorded settings %s are not usable here (%s); using the defaults",
                    fields, e)
        return SLASettings(**overrides)


def load_sla_model(ckpt_name: str, weight_dtype: str = "default"):
    """Load an SLA checkpoint as a native ComfyUI MODEL with SLA applied at the checkpoint defaults.

    Returns (model, detection summary line)."""
    import comfy.sd

    ck_mod = _checkpoint_module()
    path = diffusion_model_path(ckpt_name)
    options = weight_dtype_options(weight_dtype)
    # Cast while reading (int8 tiles dequantised straight into it), so the weights never sit in memory at a wider
    # dtype than the model is built in: with fp8 only the Linear weight matrices become fp8 (checkpoint.target_dtype),
    # ComfyUI's loader casts the rest.
    read_dtype = options.get("dtype")
    ck = ck_mod.load_checkpoint(path, weight_dtype=read_dtype, progress=_progress())
    # Hand the weights over so that each tensor is freed as soon as ComfyUI has copied it into the model: the
    # build then peaks at ~1.1x the model size instead of 2x (BENCHMARKS.md, "Checkpoint loading memory").
    with ck_mod.consume_on_copy(ck.state_dict) as sd:
        model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options)
    if model is not None:
        ck_mod.plain_tensors(model.model.diffusion_model)
    if model is None:
        raise ck_mod.CheckpointError(f"ComfyUI could not detect a diffusion model in {ckpt_name} after conversion "
                                     f"to Wan-native keys")
    dm = wan_model(model)
    wid = None
    if ck.proj_l:
        proj_l = ck.proj_l
        # load_checkpoint already warned about partial coverage when it knew the block count
        check_proj_l(dm, proj_l, warn_missing=getattr(ck.info, "num_blocks", 0) != len(dm.blocks))
        wid = register_proj_l(proj_l, _source_id(path))
    else:
        log.warning("SLA: %s has no proj_l weights: it runs training-free block-sparse attention", ckpt_name)
    return apply_sla(model, settings_from_checkpoint(ck.info, weights_id=wid)), ck.info.summary()


def load_sla_weights(model, weights_name: str):
    """Attach the proj_l of ``weights_name`` (read alone, lazily for safetensors) to ``model``.

    Returns (model, detection summary line)."""
    ck_mod = _checkpoint_module()
    dm = wan_model(model)
    path = diffusion_model_path(weights_name)
    proj_l, info = ck_mod.load_proj_l(path, num_blocks=len(dm.blocks))
    if not proj_l:
        raise ck_mod.CheckpointError(f"{weights_name} has no proj_l tensors (expected keys like "
                                     f"{PROJ_L_KEY.format(i=0, p='weight')}): it is not an SLA checkpoint")
    check_proj_l(dm, proj_l, warn_missing=getattr(info, "num_blocks", 0) != len(dm.blocks))
    wid = register_proj_l(proj_l, _source_id(path))
    settings = current_settings(model)
    settings = settings.replace(weights_id=wid) if settings is not None else settings_from_checkpoint(
        info, weights_id=wid)
    return apply_sla(model, settings), info.summary()
