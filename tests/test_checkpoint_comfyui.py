"""Hand-over to real ComfyUI: consume_on_copy builds the same Wan model as a plain state dict (needs COMFYUI_PATH;
each checkout in its own subprocess, since real ComfyUI and the tests/stubs stand-in cannot share an interpreter)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from wan_factory import make_wan_state_dict, save_pth, to_turbodiffusion_quant

ROOT = pathlib.Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, sys
comfy_path, root, ckpt = sys.argv[1:4]
sys.path.insert(0, comfy_path); sys.path.insert(0, root); sys.path.insert(0, root + "/tests/integration")
from comfy_env import install_placeholders  # inert torchvision/torchaudio when missing
install_placeholders()
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.sd
import torch
from sla.checkpoint import consume_on_copy, load_checkpoint, plain_tensors
opts = {"dtype": torch.bfloat16}
ref = comfy.sd.load_diffusion_model_state_dict(load_checkpoint(ckpt, torch.bfloat16).state_dict, model_options=opts)
L = load_checkpoint(ckpt, torch.bfloat16)
keep = L.state_dict["blocks.0.ffn.0.weight"]
with consume_on_copy(L.state_dict) as sd:
    m = comfy.sd.load_diffusion_model_state_dict(sd, model_options=opts)
    freed = sum(1 for v in sd.values() if v.untyped_storage().nbytes() == 0)
    total = len(sd)
converted = plain_tensors(m.model.diffusion_model)
a, b = ref.model.diffusion_model.state_dict(), m.model.diffusion_model.state_dict()
same = sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
subclass = [k for k, v in b.items() if type(v) not in (torch.Tensor, torch.nn.Parameter)]
print(json.dumps({"same": same, "freed": freed, "total": total, "converted": converted, "emptied": len(L.state_dict),
                  "keep_freed": keep.untyped_storage().nbytes() == 0, "subclass": subclass}))
"""


def test_consume_on_copy_with_real_comfyui(tmp_path):
    paths = [p for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p]
    if not paths:
        pytest.skip("COMFYUI_PATH not set")
    native = make_wan_state_dict(dim=256, num_heads=2, num_layers=2, ffn_dim=320, text_dim=4096, seed=5)
    ckpt = save_pth(to_turbodiffusion_quant(native, prefix="net."), tmp_path / "q.pth")
    for comfy_path in paths:
        r = subprocess.run([sys.executable, "-c", _SCRIPT, comfy_path, str(ROOT), ckpt], capture_output=True,
                           text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["same"] and res["converted"] == 0 and res["subclass"] == [], (comfy_path, res)
        # every tensor ComfyUI copied was freed on the spot (all of them for a plain Wan)
        assert res["freed"] == res["total"] and res["emptied"] == 0 and res["keep_freed"], (comfy_path, res)
