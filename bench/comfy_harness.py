"""Shared pieces of the whole-model benchmarks (bench_h3_step.py, bench_generation.py): ComfyUI import, models of
the real configuration with random weights built through ComfyUI's own model classes, a timing sampler that runs
inside ComfyUI's real sampling path, JSON-line output.

ComfyUI is imported from the tree named by COMFYUI_PATH. On a machine without CUDA it runs on the CPU
(``--cpu``); on a GPU with ``--highvram``, so a model that already sits on the GPU is never partially offloaded.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _load_pack import load_pack  # noqa: E402,F401 - the scripts import the pack through here

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
PLACEHOLDERS: list = []


def import_comfy():
    """ComfyUI from COMFYUI_PATH, configured before comfy.model_management is imported (it reads the args once)."""
    cpath = os.environ.get("COMFYUI_PATH")
    if not cpath:
        sys.exit("COMFYUI_PATH is not set: point it at an extracted ComfyUI tree (0.33.0 for MiniMax H3)")
    if not (pathlib.Path(cpath) / "comfy" / "model_management.py").is_file():
        sys.exit(f"COMFYUI_PATH={cpath} is not a ComfyUI tree (no comfy/model_management.py)")
    sys.path.insert(0, cpath)
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from comfy_env import install_placeholders
    PLACEHOLDERS[:] = install_placeholders()   # torchvision / torchaudio where absent: imported, never used here
    import comfy.cli_args
    comfy.cli_args.args.cpu = not CUDA
    # keep models where they were built: these benchmarks time compute, not ComfyUI's offloading
    comfy.cli_args.args.highvram = CUDA
    import comfy.model_management  # noqa: F401
    import comfy.samplers  # noqa: F401
    return comfy


def meta(extra=None):
    """Machine and version facts, one dict (the first JSON line of every output)."""
    import comfy.ldm.modules.attention as attention
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        import comfy_kitchen
        kitchen = getattr(comfy_kitchen, "__version__", "installed")
    except ImportError:
        kitchen = None
    try:
        import comfyui_version
        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = None
    m = dict(kind="meta", gpu=torch.cuda.get_device_name(0) if CUDA else "cpu", torch=torch.__version__,
             triton=triton_version, comfyui=comfy_version, comfy_kitchen=kitchen,
             comfy_attention=attention.optimized_attention.__name__, date=datetime.date.today().isoformat(),
             placeholder_modules=PLACEHOLDERS or None,
             weights="random (no checkpoint: model load time from disk is not measured)")
    m.update(extra or {})
    return m


class Output:
    """Prints each result as one JSON line and appends it to ``path`` (None: print only)."""

    def __init__(self, path):
        self.path = path
        if path:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, **row):
        line = json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def sync():
    if CUDA:
        torch.cuda.synchronize()


class Timer:
    """Milliseconds between start and stop: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self):
        sync()
        if CUDA:
            self.s, self.e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.s.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if CUDA:
            self.e.record()
            torch.cuda.synchronize()
            return self.s.elapsed_time(self.e)
        return (time.perf_counter() - self.t0) * 1e3


def reset_peak():
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gb():
    return torch.cuda.max_memory_allocated() / 1e9 if CUDA else None


def allocated_gb():
    return torch.cuda.memory_allocated() / 1e9 if CUDA else None


def free_memory():
    """What ComfyUI does between stages: unload every model, collect, return cached blocks to the driver."""
    import gc
    import comfy.model_management as mm
    mm.unload_all_models()
    mm.cleanup_models_gc()
    gc.collect()
    mm.soft_empty_cache()
    if CUDA:
        torch.cuda.empty_cache()


@torch.no_grad()
def randomize(module, std=0.02, seed=0):
    """Random weights in place, on whatever device the module lives: norms' scales 1, biases 0, the rest N(0, std)."""
    gens = {}   # one generator per device: a text encoder may keep some parameters (embeddings) elsewhere
    for name, p in module.named_parameters():
        gen = gens.get(p.device)
        if gen is None:
            gen = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        leaf = name.rsplit(".", 1)[-1]
        if p.dtype in (torch.int8, torch.uint8, torch.bool):
            continue
        if "norm" in name and p.dim() == 1 and leaf == "weight":
            p.fill_(1.0)
        elif leaf == "bias":
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32).mul_(std).to(p.dtype)
                    if p.numel() < (1 << 26) else _chunked_randn(p, gen, std))
    return module


def _chunked_randn(p, gen, std):
    """normal_ without a float32 copy of a whole (large) tensor."""
    flat = p.view(-1)
    step = 1 << 26
    for i in range(0, flat.numel(), step):
        n = min(step, flat.numel() - i)
        flat[i:i + n] = torch.randn(n, generator=gen, device=p.device, dtype=torch.float32).mul_(std).to(p.dtype)
    return p


def param_count(module):
    return sum(p.numel() for p in module.parameters())


def weight_gb(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())) / 1e9


def patcher(base_model):
    """A ModelPatcher of ComfyUI's BaseModel, loaded where its weights already are."""
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(base_model, load_device=DEVICE,
                                            offload_device=DEVICE if CUDA else torch.device("cpu"))


def build_base_model(model_config_cls, unet_config, dtype, seed=0, std=0.02):
    """ComfyUI's BaseModel for ``model_config_cls`` (a supported_models class) at ``unet_config``, built directly
    on the device with random weights (as comfy.sd.load_diffusion_model_state_dict builds it, minus the file)."""
    cfg = model_config_cls(dict(unet_config))
    cfg.set_inference_dtype(dtype, None)
    base = cfg.get_model({}, "", device=DEVICE)
    randomize(base.diffusion_model, std=std, seed=seed)
    return base


def timing_sampler(on_call, mode="euler", repeat=(0, 1)):
    """A ComfyUI KSAMPLER whose sampler function times every model call (CUDA events) and reports it to
    ``on_call(index, ms, peak_gb)``.

    mode 'euler': one call per step of ``sigmas`` (an Euler flow step between calls: the steps a user waits for).
    mode 'repeat': ``repeat = (warmup, reps)`` calls at sigmas[0], x unchanged (one step's model call, repeated).
    The model is ComfyUI's CFG-wrapped model function: cond/uncond batching, the APPLY_MODEL and DIFFUSION_MODEL
    wrappers, the attention override and a compile wrapper are all inside what is timed.
    """
    import comfy.samplers

    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        if mode == "repeat":
            warmup, reps = repeat
            for i in range(warmup + reps):
                reset_peak()
                t = Timer()
                model(x, sigmas[0] * s_in, **extra_args)
                ms = t.stop()
                if i >= warmup:
                    on_call(i - warmup, ms, peak_gb())
            return x
        for i in range(len(sigmas) - 1):
            reset_peak()
            t = Timer()
            denoised = model(x, sigmas[i] * s_in, **extra_args)
            ms = t.stop()
            on_call(i, ms, peak_gb())
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        return x

    return comfy.samplers.KSAMPLER(sampler)


def sample(model_patcher, positive, noise, latent, sampler, sigmas, cfg=1.0):
    """ComfyUI's sampling entry (comfy.samplers.CFGGuider, as KSampler and SamplerCustom use it) at ``cfg``:
    conds processed by the model's extra_conds, latents through process_latent_in/out, the OUTER_SAMPLE wrappers
    (the pack's run bracket) around it."""
    import comfy.samplers
    guider = comfy.samplers.CFGGuider(model_patcher)
    guider.set_conds(positive, positive)
    guider.set_cfg(cfg)
    with torch.no_grad():
        return guider.sample(noise, latent, sampler, sigmas, seed=0, disable_pbar=True)


def sdpa_backend_kernels(heads, seq, dim, dtype=torch.bfloat16):
    """Names of the GPU kernels ComfyUI's attention_pytorch runs for one self-attention call of this shape (which
    SDPA backend a default install uses), from the profiler; None on the CPU."""
    if not CUDA:
        return None
    import comfy.ldm.modules.attention as attention
    q = torch.randn(1, heads, seq, dim, device="cuda", dtype=dtype)
    attention.optimized_attention(q, q, q, heads, skip_reshape=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        attention.optimized_attention(q, q, q, heads, skip_reshape=True)
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
    del q
    torch.cuda.empty_cache()
    return [n[:120] for n in names if "memcpy" not in n.lower()][:8]


def compile_wrapper(model_patcher):
    """A clone with ComfyUI's TorchCompileModel applied (inductor, ComfyUI's guard filter where it has one)."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    try:
        from comfy_extras.nodes_torch_compile import skip_torch_compile_dict
        options = {"guard_filter_fn": skip_torch_compile_dict}
    except ImportError:
        options = None
    try:
        m = model_patcher.clone(disable_dynamic=True)
    except TypeError:
        m = model_patcher.clone()
    set_torch_compile_wrapper(model=m, backend="inductor", options=options)
    return m


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def snap_frames(frames: int) -> int:
    """Pixel frames on the 17k + 5 grid H3 samples on (rounded up, as ComfyUI's H3 nodes snap a length)."""
    return 5 + max(0, math.ceil((frames - 5) / 17)) * 17
