"""The test factory's native Wan dict has exactly the keys and shapes of ComfyUI's WanModel (needs COMFYUI_PATH;
each checkout in its own subprocess, since real ComfyUI and the tests/stubs stand-in cannot share an interpreter)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from wan_factory import make_wan_state_dict, split_proj_l, to_turbodiffusion, TD_PROJ_L

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Prints the real WanModel's {key: shape} for each config, and ComfyUI's detection of the factory's dict.
_SCRIPT = r"""
import json, sys
comfy_path, root, configs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, comfy_path); sys.path.insert(0, root + "/tests"); sys.path.insert(0, root + "/tests/integration")
from comfy_env import install_placeholders  # inert torchvision/torchaudio when missing
install_placeholders()
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.model_detection, comfy.ops
from comfy.ldm.wan.model import WanModel
from wan_factory import make_wan_state_dict, split_proj_l
shapes = []
for cfg in configs:
    args = {k: v for k, v in cfg.items() if k != "i2v"}
    m = WanModel(model_type="i2v" if cfg.get("i2v") else "t2v", operations=comfy.ops.disable_weight_init,
                 device="meta", **args)
    shapes.append({k: list(v.shape) for k, v in m.state_dict().items()})
sd, _ = split_proj_l(make_wan_state_dict())
det = comfy.model_detection.detect_unet_config(sd, "")
print(json.dumps({"shapes": shapes, "detected": {k: det.get(k) for k in
      ("image_model", "num_layers", "dim", "num_heads", "in_dim", "model_type")}}))
"""

BASE = dict(dim=256, num_heads=2, num_layers=3, ffn_dim=512, out_dim=16, text_dim=4096, freq_dim=256)
CONFIGS = [dict(BASE), dict(BASE, i2v=True, in_dim=36), dict(BASE, in_dim=36)]


def _real_comfy_results():
    paths = [p for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p]
    if not paths:
        pytest.skip("COMFYUI_PATH not set")
    out = []
    for comfy_path in paths:
        r = subprocess.run([sys.executable, "-c", _SCRIPT, comfy_path, str(ROOT), json.dumps(CONFIGS)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (comfy_path, r.stderr[-3000:])
        out.append((comfy_path, json.loads(r.stdout.strip().splitlines()[-1])))
    return out


def test_factory_matches_comfy_wanmodel_and_detection():
    for comfy_path, res in _real_comfy_results():
        for cfg, real in zip(CONFIGS, res["shapes"]):
            ours, proj = split_proj_l(make_wan_state_dict(**cfg))
            assert {k: list(v.shape) for k, v in ours.items()} == real, (comfy_path, cfg)
            assert sorted(proj) == [0, 1, 2]
        assert res["detected"] == {"image_model": "wan2.1", "num_layers": 3, "dim": 256, "num_heads": 2,
                                   "in_dim": 16, "model_type": "t2v"}, comfy_path


def test_factory_shapes_without_comfy():
    sd = make_wan_state_dict(dim=256, num_heads=2, num_layers=2, proj_scale=0.05)
    assert sd["patch_embedding.weight"].shape == (256, 16, 1, 2, 2)
    w = sd[TD_PROJ_L.format(i=1, p="weight")]
    assert w.shape == (128, 128) and w.dtype == torch.float32 and w.abs().sum() > 0
    td = to_turbodiffusion(sd, prefix="net.", wrapped=True)
    assert td["net.patch_embedding.weight"].shape == (256, 64)
    assert td["net.blocks.0._checkpoint_wrapped_module.self_attn.norm_q.weight"].dtype == torch.float32
    assert td["net.blocks.0._checkpoint_wrapped_module.self_attn.q.weight"].dtype == torch.bfloat16
    zero = make_wan_state_dict(num_layers=1, proj_scale=0.0)
    assert zero[TD_PROJ_L.format(i=0, p="weight")].abs().sum() == 0
