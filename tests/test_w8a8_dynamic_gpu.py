"""The int8 W8A8 layer under ComfyUI's dynamic VRAM with a LoRA, on a CUDA GPU (skipped without one, or without a
COMFYUI_PATH checkout that has dynamic VRAM, i.e. comfy_aimdo and ``comfy.ops.cast_modules_with_vbar``).

    COMFYUI_PATH=/path/to/ComfyUI-0.33 python -m pytest -q tests/test_w8a8_dynamic_gpu.py

In a subprocess per checkout, ComfyUI is set up as its main.py does on a GPU by default (comfy_aimdo initialised,
``ModelPatcherDynamic`` as the core patcher, ``aimdo_enabled``); a tiny ``-quant`` Wan is loaded with its int8 tiles
kept, a LoRA added (``comfy.sd.load_lora_for_models``, what LoraLoaderModelOnly calls) and the model loaded by
``comfy.model_management.load_models_gpu``. Checked: the int8 weights stay in CPU memory with a VRAM slot each; the
LoRA reaches the int8 layers (output far from the no-LoRA model, close to the float model with the same LoRA and the
same as the int8 model patched at load time without dynamic VRAM; the float model is built in the dtype ComfyUI
chose for the int8 one); it is applied once per slot fill (first call), not on a resident call, and a resident call
copies no int8 weight (every slot resident).
"""
from __future__ import annotations

import os

import pytest
import torch

from w8a8_checks import run_in_checkouts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a CUDA GPU (and no TRITON_INTERPRET)")

_SCRIPT = r"""
import importlib.util, json, logging, sys
comfy_path, root, ckpt = sys.argv[1:4]
sys.path.insert(0, comfy_path); sys.path.insert(0, root + "/tests/integration")
import comfy.cli_args
try:  # as main.py, before anything touches CUDA
    import comfy_aimdo.control
    try:
        comfy_aimdo.control.init(simple_vram_headroom=None)
    except TypeError:  # older comfy-aimdo
        comfy_aimdo.control.init()
except ImportError:
    print(json.dumps({"skip": "no comfy_aimdo"})); sys.exit(0)
from comfy_env import install_placeholders
install_placeholders()
import comfy.model_management, comfy.ops
if not hasattr(comfy.ops, "cast_modules_with_vbar"):
    print(json.dumps({"skip": "this ComfyUI has no dynamic VRAM"})); sys.exit(0)
import comfy.memory_management, comfy.model_patcher
devices = comfy.model_management.get_all_torch_devices()
try:  # as main.py: comfy_aimdo on every device, then the dynamic patcher as the core one
    headroom = int(comfy.cli_args.args.vram_headroom * 1024 ** 3)
    ok = comfy_aimdo.control.init_devices((d.index, headroom) for d in devices)
except TypeError:
    ok = comfy_aimdo.control.init_devices(d.index for d in devices)
if not ok:
    print(json.dumps({"skip": "comfy_aimdo did not initialise"})); sys.exit(0)
comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
comfy.memory_management.aimdo_enabled = True
import comfy.sd, comfy_aimdo.model_vbar, torch
spec = importlib.util.spec_from_file_location("comfyui_sla", root + "/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec); sys.modules["comfyui_sla"] = pack; spec.loader.exec_module(pack)
from comfyui_sla.nodes import w8a8_comfy as W
from comfyui_sla.sla.checkpoint import load_checkpoint

dev = comfy.model_management.get_torch_device()
g = torch.Generator().manual_seed(0)
lora = {}
for i in range(2):
    for n, (o, k) in {"self_attn.q": (256, 256), "self_attn.k": (256, 256), "self_attn.o": (256, 256),
                      "ffn.0": (384, 256), "ffn.2": (256, 384)}.items():
        lora[f"diffusion_model.blocks.{i}.{n}.lora_up.weight"] = torch.randn(o, 4, generator=g) * 0.2
        lora[f"diffusion_model.blocks.{i}.{n}.lora_down.weight"] = torch.randn(4, k, generator=g) / 16
x = torch.randn(1, 16, 2, 8, 8, generator=g).to(dev, torch.bfloat16)
t = torch.tensor([500.0], device=dev)
ctx = torch.randn(1, 12, 4096, generator=g).to(dev, torch.bfloat16)

def run(patcher):
    comfy.model_management.load_models_gpu([patcher])
    dt = patcher.model.get_dtype_inference()   # ComfyUI picks it per GPU (fp16 where it prefers it)
    with torch.no_grad():
        return patcher.model.diffusion_model(x.to(dt), t, ctx.to(dt)).float()
def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()

res = {}
q8, ck, _ = W.load_int8_checkpoint(ckpt)
res["dynamic"] = q8.is_dynamic()
m8, _ = comfy.sd.load_lora_for_models(q8, None, lora, 1.0, 0)
calls = []
Tile = W._tile_patch_type()
orig_call = Tile.__call__
Tile.__call__ = lambda self, codes: calls.append(self.key) or orig_call(self, codes)
faults = []
compare = comfy_aimdo.model_vbar.vbar_signature_compare
def counted(a, b):
    faults.append(compare(a, b))
    return faults[-1]
comfy_aimdo.model_vbar.vbar_signature_compare = counted
y_first = run(m8)
n_first, calls[:] = len(calls), []
faults.clear()
y_resident = run(m8)
dm = m8.model.diffusion_model
layers = W.int8_layers(dm)
res.update(
    patch_calls=[n_first, len(calls)], resident_faults=[sum(faults), len(faults)],
    weights_on_cpu=all(dm.get_submodule(n).weight.device.type == "cpu" for n in layers),
    slots=sum(1 for n in layers if hasattr(dm.get_submodule(n), "_v")),
    patched_types=sorted({type(dm.get_submodule(n).weight_lowvram_function).__name__ for n in layers
                          if getattr(dm.get_submodule(n), "weight_lowvram_function", None) is not None}),
    resident_same=rel(y_resident, y_first))
comfy.model_management.unload_all_models()
y_no_lora = run(q8)
comfy.model_management.unload_all_models()
# References without dynamic VRAM: the int8 model patched at load time, the float model with the same LoRA.
q8s, _, _ = W.load_int8_checkpoint(ckpt)
static = comfy.model_patcher.ModelPatcher(q8s.model, q8s.load_device, q8s.offload_device, q8s.size)
y_static = run(comfy.sd.load_lora_for_models(static, None, lora, 1.0, 0)[0])
comfy.model_management.unload_all_models()
# ComfyUI's own Linear loaded without dynamic VRAM keeps the dtype it is handed: the int8 model's (fp16 on an H100)
dt = q8.model.get_dtype_inference()
ref = comfy.sd.load_diffusion_model_state_dict(load_checkpoint(ckpt, dt).state_dict, model_options={"dtype": dt},
                                               disable_dynamic=True)
y_ref = run(comfy.sd.load_lora_for_models(ref, None, lora, 1.0, 0)[0])
res.update(vs_no_lora=rel(y_first, y_no_lora), vs_static=rel(y_first, y_static), vs_ref=rel(y_first, y_ref),
           lora_effect=rel(y_no_lora, y_ref))
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    got = run_in_checkouts(_SCRIPT, tmp_path_factory.mktemp("w8a8dyn"))
    out = {path: r for path, r in got.items() if "skip" not in r}
    if not out:
        pytest.skip("no checkout in COMFYUI_PATH runs dynamic VRAM here")
    return out


def test_int8_layers_keep_their_weights_in_cpu_memory_with_a_vram_slot(results):
    for path, r in results.items():
        assert r["dynamic"], path  # ModelPatcherDynamic: what ComfyUI uses on a GPU by default
        assert r["slots"] == 20 and r["weights_on_cpu"], (path, r)
        assert r["patched_types"] == ["TileLowVramPatch"], (path, r)


def test_lora_applies_once_per_slot_fill_and_resident_calls_copy_nothing(results):
    for path, r in results.items():
        assert r["patch_calls"] == [10, 0], (path, r)       # 10 LoRA'd int8 layers, patched on the first call only
        assert r["resident_faults"][0] == r["resident_faults"][1] > 0, (path, r)  # every slot resident
        assert r["resident_same"] < 1e-6, (path, r)


def test_lora_output_matches_the_float_model_and_the_statically_patched_int8_model(results):
    for path, r in results.items():
        # the same requantised codes as at load time without dynamic VRAM: the same kernel output
        assert r["vs_static"] < 1e-3, (path, r)
        # W8A8 (8-bit activations) against the bf16 float model with the LoRA: as the int8 model without LoRA
        # against the float one (tests/test_w8a8_comfyui.py: < 5%), while the LoRA itself moves the output more
        assert r["vs_ref"] < 5e-2 and r["vs_no_lora"] > 2 * r["vs_ref"], (path, r)
