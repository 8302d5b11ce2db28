"""The int8 W8A8 model when ComfyUI picks fp16 for it, as on an H100, under dynamic VRAM, on the CPU (needs a
COMFYUI_PATH checkout with dynamic VRAM, i.e. comfy_aimdo and ``comfy.ops.cast_modules_with_vbar``).

On a recent NVIDIA GPU ComfyUI runs Wan in fp16 (``supported_inference_dtypes`` lists fp16 first and
``should_use_fp16`` holds), whatever the file's float dtype (bf16 here) or the int8 tiles. In a subprocess per
checkout, ComfyUI's dtype choice is made to act as on such a GPU (``should_use_fp16`` / ``should_use_bf16`` true for
every device), dynamic VRAM is on (``aimdo_enabled``, ``ModelPatcherDynamic`` as the core patcher) with only
comfy_aimdo's VRAM slots stood in for (as in tests/test_w8a8_comfyui.py), and the model runs in
``get_dtype_inference()``, as tests/test_w8a8_dynamic_gpu.py does on a GPU. Checked: the model runs in fp16 with the
file's bf16 float layers cast per call; the int8 tiles stay int8 and their VRAM slots hold int8 codes (one byte per
weight, not fp16); LoRA under dynamic VRAM matches the statically patched model; the output is the float model's
run in the same dtype; the int8 kernel (Triton interpreter) takes fp16 activations.
"""
from __future__ import annotations


import pytest

from w8a8_checks import run_in_checkouts

_SCRIPT = r"""
import ctypes, importlib.util, json, os, sys
comfy_path, root, ckpt = sys.argv[1:4]
sys.path.insert(0, comfy_path); sys.path.insert(0, root + "/tests/integration")
from comfy_env import install_placeholders
install_placeholders()
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.ops
if not hasattr(comfy.ops, "cast_modules_with_vbar"):
    print(json.dumps({"skip": "this ComfyUI has no dynamic VRAM"})); sys.exit(0)
import comfy.memory_management, comfy.model_management as mm, comfy.model_patcher as mp, comfy.sd
import comfy_aimdo.host_buffer, comfy_aimdo.model_vbar, comfy_aimdo.torch
import torch

# ComfyUI's dtype choice as on an H100: fp16 and bf16 both usable, so Wan gets fp16 and no manual cast.
mm.should_use_fp16 = lambda *a, **k: True
mm.should_use_bf16 = lambda *a, **k: True

# comfy_aimdo's VRAM slots stood in for by CPU tensors (always resident once filled): the rest is ComfyUI's.
class Slots:
    def __init__(self):
        self.mem, self.gen = {}, 1
    def alloc(self, n):
        self.mem[len(self.mem)] = torch.zeros(n, dtype=torch.uint8)
        return (self, len(self.mem) - 1, n)
    def prioritize(self, *a):
        pass
slots = Slots()
class NoHostBuffer:
    def __init__(self, *a, **k):
        self.size = 0
comfy_aimdo.model_vbar.vbar_fault = lambda alloc: (ctypes.c_uint32 * 1)(alloc[0].gen)
comfy_aimdo.model_vbar.vbar_unpin = lambda alloc: None
comfy_aimdo.torch.aimdo_to_tensor = lambda alloc, device: alloc[0].mem[alloc[1]]
comfy_aimdo.host_buffer.HostBuffer = NoHostBuffer
comfy.cli_args.args.disable_pinned_memory = True
mp.ModelPatcherDynamic._vbar_get = lambda self, create=False: slots
class CpuDynamic(mp.ModelPatcherDynamic):
    def __new__(cls, *a, **k):  # ModelPatcherDynamic hands CPU models to the plain ModelPatcher
        return object.__new__(cls)
comfy.memory_management.aimdo_enabled = True   # as main.py on a GPU
mp.CoreModelPatcher = CpuDynamic

spec = importlib.util.spec_from_file_location("comfyui_sla", root + "/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec); sys.modules["comfyui_sla"] = pack; spec.loader.exec_module(pack)
from comfyui_sla.nodes import w8a8_comfy as W
from comfyui_sla.sla import quant as Q
from comfyui_sla.sla.checkpoint import load_checkpoint

cpu = torch.device("cpu")
g = torch.Generator().manual_seed(0)
x = torch.randn(1, 16, 2, 8, 8, generator=g)
t = torch.tensor([500.0])
ctx = torch.randn(1, 12, 4096, generator=g)
lora = {}
for i in range(2):
    for n, (o, k) in {"self_attn.q": (256, 256), "self_attn.o": (256, 256), "ffn.0": (384, 256)}.items():
        lora[f"diffusion_model.blocks.{i}.{n}.lora_up.weight"] = torch.randn(o, 4, generator=g) * 0.2
        lora[f"diffusion_model.blocks.{i}.{n}.lora_down.weight"] = torch.randn(4, k, generator=g) / 16

def run(patcher, dynamic):
    # The 'GPU' is cpu:0 (unequal to the weights' device "cpu", as a GPU is) while a dynamic model runs.
    dt = patcher.model.get_dtype_inference()
    is_cpu, cast = mm.is_device_cpu, comfy.ops.cast_bias_weight
    if dynamic:
        mm.is_device_cpu = lambda d: False
        comfy.ops.cast_bias_weight = lambda *a, **k: cast(*a, **dict(k, device=torch.device("cpu", 0)))
    try:
        with torch.no_grad():
            return patcher.model.diffusion_model(x.to(dt), t, ctx.to(dt))
    finally:
        mm.is_device_cpu, comfy.ops.cast_bias_weight = is_cpu, cast
def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()

res = {}
q8, _, _ = W.load_int8_checkpoint(ckpt)
dm = q8.model.diffusion_model
layers = W.int8_layers(dm)
codes = {n: dm.get_submodule(n).weight.detach().clone() for n in layers}
res.update(dynamic=q8.is_dynamic(), inference=str(q8.model.get_dtype_inference()),
           manual_cast=str(q8.model.manual_cast_dtype),
           float_dtypes=sorted({str(p.dtype) for n, m in dm.named_modules() if type(m).__name__ == "Linear"
                                and not getattr(m, "sla_int8", False) for p in m.parameters(recurse=False)}))
q8.partially_load(cpu)  # what load_models_gpu calls for a dynamic model
lin = dm.get_submodule(layers[0])
res["slot_bytes"] = [lin._v[2], lin.weight.numel()]
res["slots"] = sum(1 for n in layers if hasattr(dm.get_submodule(n), "_v"))
y = run(q8, True)
res.update(out_dtype=str(y.dtype), finite=bool(torch.isfinite(y).all()))
res["resident_same"] = torch.equal(run(q8, True), y)
res["codes_untouched"] = all(torch.equal(dm.get_submodule(n).weight, codes[n]) for n in layers)

# LoRA: dynamic VRAM (patched per slot fill) against the same model patched at load time.
m8 = comfy.sd.load_lora_for_models(q8, None, lora, 1.0, 0)[0]
m8.partially_load(cpu)
y_lora = run(m8, True)
static = mp.ModelPatcher(q8.model, cpu, cpu, q8.size)
s8 = comfy.sd.load_lora_for_models(static, None, lora, 1.0, 0)[0]
s8.patch_model()
y_static = run(s8, False)
s8.unpatch_model()
res.update(lora_vs_static=rel(y_lora, y_static), lora_effect=rel(y_lora, y))

# The int8 kernel (Triton interpreter) on fp16 activations, against the dequantised weights.
xf = torch.randn(2, 40, 256, generator=g).to(torch.float16)
s = lin.sla_scale()
os.environ["COMFYUI_SLA_W8A8"] = "kernel"
yk = Q.w8a8_linear(xf, lin.weight, s, lin.bias)
os.environ["COMFYUI_SLA_W8A8"] = "auto"
res["kernel_fp16"] = [str(yk.dtype), rel(yk, Q.w8a8_dequant_linear(xf.float(), lin.weight, s, lin.bias.float()))]

# ComfyUI's own Linear loaded without dynamic VRAM keeps the dtype it is handed: give it the one ComfyUI chose.
dt = q8.model.get_dtype_inference()
ref = comfy.sd.load_diffusion_model_state_dict(load_checkpoint(ckpt, dt).state_dict, model_options={"dtype": dt},
                                               disable_dynamic=True)
ref.load(cpu, full_load=True)
res["vs_ref"] = rel(y, run(ref, False))
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    got = run_in_checkouts(_SCRIPT, tmp_path_factory.mktemp("w8a8fp16"), {"TRITON_INTERPRET": "1"})
    out = {path: r for path, r in got.items() if "skip" not in r}
    if not out:
        pytest.skip("no checkout in COMFYUI_PATH has dynamic VRAM")
    return out


def test_int8_model_runs_in_the_fp16_comfyui_chose(results):
    for path, r in results.items():
        assert r["dynamic"] and r["inference"] == "torch.float16" and r["manual_cast"] == "None", (path, r)
        assert r["float_dtypes"] == ["torch.bfloat16"], (path, r)  # the file's float layers, cast per call
        assert r["out_dtype"] == "torch.float16" and r["finite"] and r["resident_same"], (path, r)
        # on the CPU the int8 layers run on their dequantised weights: the float model's fp16 output
        assert r["vs_ref"] < 1e-3, (path, r)


def test_int8_slots_hold_int8_codes(results):
    for path, r in results.items():
        assert r["slots"] == 20 and r["codes_untouched"], (path, r)
        slot, n = r["slot_bytes"]
        assert n <= slot < 2 * n, (path, r)  # codes plus bias and alignment, not fp16 codes (2 bytes each)


def test_lora_and_kernel_in_fp16(results):
    for path, r in results.items():
        assert r["lora_effect"] > 1e-2 and r["lora_vs_static"] < 1e-3, (path, r)
        dtype, err = r["kernel_fp16"]
        assert dtype == "torch.float16" and err < 2e-2, (path, r)
