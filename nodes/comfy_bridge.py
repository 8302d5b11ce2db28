"""The only module of the pack that talks to ComfyUI (``comfy.*``, ``folder_paths``); imports them lazily so the
pack imports cleanly outside ComfyUI (tests, the demo).

Where things live on a patched model (a ``ModelPatcher`` clone):

* ``model_options["transformer_options"]["optimized_attention_override"]``: the SLA override, a closure holding
  its :class:`SLAPatch` (model family, settings, proj_l weights, the chained previous override, the current run).
  Functions survive the deep copy of ``clone()`` unchanged, so clones share it; each ``apply_sla`` makes a new one.
* ``model_options["sla"]``: a plain dict of the settings (introspection only; not in ``transformer_options``,
  which the model receives: a compiled model would guard on its values and recompile for every setting).
* ``wrappers[OUTER_SAMPLE]["comfyui_sla"]``: the run wrapper (a fresh run state per sampling run, one summary log
  line, the run report sent to the node that applied SLA: ``PromptServer.send_progress_text``, where ComfyUI has it).
* ``wrappers[APPLY_MODEL]["comfyui_sla"]``: the model-call wrapper (step of each model call for keep_schedule and
  the attention map capture; the call's transformer_options; model-call time for the report's step estimate).
* ComfyUI without ``transformer_options["block_index"]`` (0.3.6x): ``patches_replace["dit"][("double_block", i)]``
  patches that set it, chaining any patch that was there.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import Optional

import torch

from ..sla import attention_map as amap
from ..sla.checkpoint.keys import PROJ_L_KEY
from ..sla.families import family_of
from ..sla.runtime import capture
from ..sla.runtime.patch import (OVERRIDE_KEY, is_sla_override, make_attention_override, make_block_index_patch,
                                 make_model_call_wrapper, make_run_wrapper)
from ..sla.runtime.settings import SLASettings, format_blocks
from ..sla.runtime.sla_patch import SLAPatch
from ..sla.runtime.weights import ProjLWeights
from .w8a8_comfy import INT8_CHOICE

log = logging.getLogger("comfyui_sla")

WRAPPER_KEY = "comfyui_sla"

# Only ever append: saved workflows store the choice by value, and users expect the order they know.
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast",
                 INT8_CHOICE)

# The oldest ComfyUI release whose attention calls consult the per-model OVERRIDE_KEY (comfy.ldm.modules.attention
# .wrap_attn, ComfyUI commit d7f40442 "Enable Runtime Selection of Attention Functions", first released in 0.3.60).
MIN_COMFYUI = "0.3.60"


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


def diffusion_model(model):
    """The diffusion model (torch module) inside a ModelPatcher, or None."""
    try:
        return model.get_model_object("diffusion_model")
    except Exception:
        return getattr(getattr(model, "model", None), "diffusion_model", None)


def model_family(model):
    """(family, diffusion model) of a ModelPatcher; ValueError naming the supported families otherwise."""
    dm = diffusion_model(model)
    dm = getattr(dm, "_orig_mod", dm)  # a torch.compile'd module
    return family_of(dm), dm


def current_override(model):
    return model.model_options.get("transformer_options", {}).get(OVERRIDE_KEY)


def current_patch(model) -> Optional[SLAPatch]:
    """The SLA patch installed on ``model`` (None when it has none)."""
    fn = current_override(model)
    return fn.sla_patch if is_sla_override(fn) else None


def current_settings(model) -> Optional[SLASettings]:
    """The SLA settings installed on ``model`` (None when it has no SLA patch)."""
    patch = current_patch(model)
    return None if patch is None else patch.settings


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


def _sampling_from_guider(executor):
    guider = getattr(executor, "class_obj", None)
    patcher = getattr(guider, "model_patcher", None)
    if patcher is None:
        return None
    return patcher.get_model_object("model_sampling").percent_to_sigma


def _override_from_guider(executor):
    """The attention override of the model a guider samples: its own model_options (where a node applied after
    ApplySLA, e.g. Model Attention Backend, writes) over the patcher's."""
    guider = executor.class_obj
    for options in (getattr(guider, "model_options", None), guider.model_patcher.model_options):
        to = (options or {}).get("transformer_options", {})
        if OVERRIDE_KEY in to:
            return to[OVERRIDE_KEY]
    return None


def executing_node_id() -> Optional[str]:
    """Id of the node ComfyUI is executing now (comfy_execution.utils, 0.3.4x and later), or None."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    ctx = get_executing_context()
    return None if ctx is None else str(ctx.node_id)


def node_reporter(node_id):
    """``report(text)`` showing ``text`` on node ``node_id`` in the UI (PromptServer.send_progress_text, ComfyUI
    >= 0.3.4x); silent where the server or that call does not exist (headless, older ComfyUI, tests)."""
    if node_id is None:
        return None

    def report(text: str) -> None:
        try:
            import server
        except ImportError:
            return
        instance = getattr(getattr(server, "PromptServer", None), "instance", None)
        send = getattr(instance, "send_progress_text", None)
        if send is not None:
            send(text, str(node_id))
    return report


# ---------------------------------------------------------------------------------------------------------------
# patching

def require_attention_override():
    """Raise RuntimeError naming the minimum version when this ComfyUI has no per-model attention override: there
    the patch would be ignored and every call would silently run dense."""
    import comfy.ldm.modules.attention as attention
    if hasattr(attention, "wrap_attn"):
        return
    try:
        from comfyui_version import __version__ as found
    except ImportError:
        found = "unknown version"
    raise RuntimeError(f"ComfyUI-SLA needs ComfyUI {MIN_COMFYUI} or newer (found {found}): this ComfyUI has no "
                       f"per-model attention override (transformer_options['{OVERRIDE_KEY}']), so SLA cannot "
                       f"run. Update ComfyUI.")


def apply_sla(model, settings: SLASettings, node_id=None, from_loader: bool = False,
              weights: Optional[ProjLWeights] = None):
    """A clone of ``model`` with SLA installed (or re-configured) at ``settings``; ``model`` is not modified.

    ``weights``: proj_l to run with (None: those of an SLA patch already on the model, else training-free). An SLA
    override already on the model is replaced (its chained previous override is kept); any other override is
    chained: it receives every call SLA does not take. Block-index patches are added only where ComfyUI does not
    set ``block_index`` itself. ``node_id``: ComfyUI id of the node applying it: the run report goes to that node.
    ``from_loader``: the log line says these are the checkpoint defaults.
    """
    import comfy.patcher_extension as pe

    require_attention_override()
    family, dm = model_family(model)
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    existing = current_patch(model)
    previous = existing.previous if existing is not None else to.get(OVERRIDE_KEY)
    if weights is None and existing is not None:
        weights = existing.weights

    patch = SLAPatch(family, settings, weights, previous, None if node_id is None else str(node_id),
                     node_reporter(node_id))
    if not patch.settings.full_window:
        try:
            patch.window = _sigma_window(m, settings)
        except Exception as e:
            log.warning("SLA: could not convert start/end_percent to sigmas at apply time (%s); they will be "
                        "converted when sampling starts", e)

    if not family.sets_block_index(dm):
        for i in range(family.num_blocks(dm)):
            cur = to.get("patches_replace", {}).get("dit", {}).get(("double_block", i))
            if getattr(cur, "sla_block_index", None) == i:
                continue  # ours already (settings-independent)
            m.set_model_patch_replace(make_block_index_patch(i, cur), "dit", "double_block", i)
            to = m.model_options["transformer_options"]  # set_model_patch_replace swaps in a copy

    to[OVERRIDE_KEY] = make_attention_override(patch)
    m.model_options["sla"] = settings.to_dict()

    m.remove_wrappers_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                           make_run_wrapper(patch, _window_from_guider(settings), _sampling_from_guider,
                                            _override_from_guider))
    m.remove_wrappers_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, WRAPPER_KEY, make_model_call_wrapper(patch))

    n_blocks = family.num_blocks(dm)
    log.info("SLA applied to %s (%s, %d blocks, %s): %s%s", type(dm).__name__, family.name, n_blocks,
             weights.describe() if weights is not None else "no proj_l: training-free block-sparse",
             settings.describe(),
             " -- the checkpoint defaults; an Apply Sparse-Linear Attention node after the loader replaces them"
             if from_loader else "")
    _warn_foreign_dense_blocks(settings, n_blocks)
    return m


def _warn_foreign_dense_blocks(settings: SLASettings, n_blocks: int) -> None:
    """dense_blocks naming blocks this model does not have: a warning naming the model's block count."""
    extra = sorted(i for i in (settings.dense_blocks or ()) if i >= n_blocks)
    if extra:
        log.warning("SLA: dense_blocks names block%s %s but this model has %d blocks (0..%d); %s ignored",
                    "s" if len(extra) > 1 else "", format_blocks(extra), n_blocks, n_blocks - 1,
                    "they are" if len(extra) > 1 else "it is")


def check_proj_l(model, proj_l: dict, warn_missing: bool = True) -> None:
    """proj_l against the model: head size (error naming the key), block range (error), coverage (warning)."""
    family, dm = model_family(model)
    if proj_l and not family.linear_branch:
        raise ValueError(f"SLA weights have proj_l ({PROJ_L_KEY.format(i=min(proj_l), p='weight')}, ...) but "
                         f"{family.description} run SLA without a linear branch: the weights belong to another model")
    head = family.head_dim(dm)
    n = family.num_blocks(dm)
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
    if weight_dtype == INT8_CHOICE:  # what load_sla_model's int8 path builds the model with
        from .w8a8_comfy import make_ops
        return {"custom_operations": make_ops()}
    if weight_dtype not in mapping:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
    dt = mapping[weight_dtype]
    options = {} if dt is None else {"dtype": dt}
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    return options


def settings_from_checkpoint(info, family, **overrides) -> SLASettings:
    """SLASettings at the checkpoint's own SLA settings (``info.sla_settings``: keep_ratio, block_q, block_k,
    feature_map from its metadata) over the model family's defaults (Wan: TurboDiffusion's keep 0.10, 128x64,
    softmax)."""
    fields = _checkpoint_module().recorded_settings(info) if info is not None else {}
    try:
        return SLASettings(**{**family.defaults, **fields, **overrides})
    except ValueError as e:
        log.warning("SLA: the checkpoint's recorded settings %s are not usable here (%s); using the defaults",
                    fields, e)
        return SLASettings(**{**family.defaults, **overrides})


def load_sla_model(ckpt_name: str, weight_dtype: str = "default", node_id=None):
    """Load an SLA checkpoint as a native ComfyUI MODEL with SLA applied at the checkpoint defaults.

    Returns (model, detection summary line)."""
    import comfy.sd

    require_attention_override()  # before reading gigabytes
    ck_mod = _checkpoint_module()
    path = diffusion_model_path(ckpt_name)
    if weight_dtype == INT8_CHOICE:  # -quant files with their int8 tiles kept (nodes/w8a8_comfy.py)
        from . import w8a8_comfy
        model, ck, summary = w8a8_comfy.load_int8_checkpoint(path, _progress())
        return _finish_sla_model(model, ck, path, ckpt_name, node_id), summary
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
    return _finish_sla_model(model, ck, path, ckpt_name, node_id), ck.info.summary()


def _finish_sla_model(model, ck, path: str, ckpt_name: str, node_id=None):
    """The loaded ModelPatcher with the checkpoint's proj_l attached and SLA applied at its defaults."""
    if model is None:
        raise _checkpoint_module().CheckpointError(f"ComfyUI could not detect a diffusion model in {ckpt_name} "
                                                   "after conversion to Wan-native keys")
    family, dm = model_family(model)
    weights = None
    if ck.proj_l:
        # load_checkpoint already warned about partial coverage when it knew the block count
        check_proj_l(model, ck.proj_l, warn_missing=getattr(ck.info, "num_blocks", 0) != family.num_blocks(dm))
        weights = ProjLWeights(ck.proj_l, ckpt_name)
    else:
        log.warning("SLA: %s has no proj_l weights: it runs training-free block-sparse attention", ckpt_name)
    return apply_sla(model, settings_from_checkpoint(ck.info, family), node_id, from_loader=True, weights=weights)


def load_sla_weights(model, weights_name: str, node_id=None):
    """Attach the proj_l of ``weights_name`` (read alone, lazily for safetensors) to ``model``.

    Returns (model, detection summary line)."""
    ck_mod = _checkpoint_module()
    family, dm = model_family(model)
    path = diffusion_model_path(weights_name)
    proj_l, info = ck_mod.load_proj_l(path, num_blocks=family.num_blocks(dm))
    if not proj_l:
        raise ck_mod.CheckpointError(f"{weights_name} has no proj_l tensors (expected keys like "
                                     f"{PROJ_L_KEY.format(i=0, p='weight')}): it is not an SLA checkpoint")
    check_proj_l(model, proj_l, warn_missing=getattr(info, "num_blocks", 0) != family.num_blocks(dm))
    settings = current_settings(model) or settings_from_checkpoint(info, family)
    return apply_sla(model, settings, node_id, weights=ProjLWeights(proj_l, weights_name)), info.summary()


# ---------------------------------------------------------------------------------------------------------------
# attention map

def arm_attention_map(map_node, block: int, head: int, step: int) -> None:
    """Capture (block, head, step) in the sampling runs that begin until node ``map_node`` draws."""
    capture.arm(str(map_node), block, head, step)


def attention_map(model, map_node, block: int, head: int, step: int):
    """(attention_map, sparsity) IMAGEs ([1, H, W, 3] float32 in [0, 1]) from the capture of the last sampling run
    of ``model``'s SLA patch for node ``map_node`` (the capture is freed once drawn); ValueError saying what is
    missing otherwise."""
    patch = current_patch(model)
    if patch is None:
        capture.disarm(str(map_node))
        raise ValueError("SLA Attention Map: this MODEL has no SLA (connect the model the sampler used, after "
                         "Apply Sparse-Linear Attention or Load SLA Diffusion Model)")
    cap = patch.take_capture(str(map_node))
    if cap is None or (cap.block, cap.head, cap.step) != (block, head, step):
        raise ValueError("SLA Attention Map: nothing was captured for this model in this queue: its sampler did "
                         "not run again (ComfyUI reused its cached result). Change the sampler's seed or any input "
                         "before it and queue again.")
    if cap.q is None:
        seen_steps = sorted({s for s, _b in cap.grid})
        seen_blocks = sorted({b for _s, b in cap.grid})
        raise ValueError(f"SLA Attention Map: the last run had no self-attention call at block {block}, step "
                         f"{step} (steps seen {format_blocks(seen_steps) or 'none'}, blocks "
                         f"{format_blocks(seen_blocks) or 'none'})")
    q, k = cap.q, cap.k
    if cap.sparse:
        mask = amap.block_mask(q, k, cap.keep, cap.block_q, cap.block_k, cap.prefix)[0, 0]
    else:  # this call ran dense: every block was used
        nq, nk = -(-q.shape[1] // cap.block_q), -(-k.shape[1] // cap.block_k)
        mask = torch.ones(nq, nk, dtype=torch.bool)
    background = amap.attention_background(amap.dense_block_mass(q, k, cap.block_q, cap.block_k))
    log.info("SLA Attention Map: block %d, head %d, step %d: %s at keep %.3f, %dx%d blocks", block,
             min(head, cap.heads - 1), step, "sparse" if cap.sparse else "dense", cap.keep, mask.shape[0],
             mask.shape[1])
    image = amap.draw_block_map(mask, background, cap.segments, q.shape[1], cap.block_q, cap.block_k)
    return image, amap.draw_sparsity_grid(cap.grid)


# ---------------------------------------------------------------------------------------------------------------
# run report node

NO_SLA_REPORT = ("SLA Run Report: this MODEL has no SLA (connect the model the sampler used, after Apply "
                 "Sparse-Linear Attention or Load SLA Diffusion Model)")
NO_RUN_REPORT = "No SLA run report: the sampler that produced 'samples' did not run this model through SLA"


def run_report(model, node_id=None) -> dict:
    """The run report of the last sampling run of ``model``'s SLA patch, as a node result: the text (output and
    ``ui.text``), the same text in a .txt file of ComfyUI's temp folder (``ui.files``: what App mode shows as a
    text output, as for core Save Text) and on the node (progress text)."""
    patch = current_patch(model)
    text = NO_SLA_REPORT if patch is None else (patch.last_report or NO_RUN_REPORT)
    ui = {"text": [text]}
    saved = _save_report_file(text)
    if saved is not None:
        ui["files"] = [saved]
    reporter = node_reporter(node_id)
    if reporter is not None:
        try:
            reporter(text)
        except Exception as e:  # showing the text on the node is a nicety
            log.debug("SLA Run Report: could not show the text on the node (%s)", e)
    return {"ui": ui, "result": (text,)}


def _save_report_file(text: str) -> Optional[dict]:
    """``text`` written to a new .txt in ComfyUI's temp folder: {filename, subfolder, type}; None outside ComfyUI or
    when the folder cannot be written."""
    try:
        import folder_paths
        folder = folder_paths.get_temp_directory()
        os.makedirs(folder, exist_ok=True)
        name = f"sla_run_report_{uuid.uuid4().hex[:12]}.txt"
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return {"filename": name, "subfolder": "", "type": "temp", "display_name": "SLA run report"}
    except Exception as e:
        log.debug("SLA Run Report: no report file (%s)", e)
        return None


# ---------------------------------------------------------------------------------------------------------------
# example inputs

EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows", "input")


def install_example_inputs(source: str = EXAMPLE_INPUTS, target: Optional[str] = None) -> list:
    """Copy the example workflows' input images (``workflows/input/*``) into ComfyUI's input folder, each only where
    no file of that name is there yet (LoadImage lists that folder and nothing else); returns the names copied.
    Never raises: a read-only or missing input folder only means the user picks their own image."""
    import shutil
    try:
        if target is None:
            import folder_paths
            target = folder_paths.get_input_directory()
        copied = []
        for name in sorted(os.listdir(source)):
            src, dst = os.path.join(source, name), os.path.join(target, name)
            if os.path.isfile(src) and not os.path.exists(dst):
                os.makedirs(target, exist_ok=True)
                shutil.copyfile(src, dst)
                copied.append(name)
        if copied:
            log.info("ComfyUI-SLA: example input %s copied to %s", ", ".join(copied), target)
        return copied
    except Exception as e:
        log.debug("ComfyUI-SLA: example inputs not copied (%s)", e)
        return []
