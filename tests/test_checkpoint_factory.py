"""The test factory's native Wan dict has exactly the keys and shapes of ComfyUI's WanModel (needs COMFYUI_PATH)."""
import os
import sys

import pytest
import torch

from wan_factory import make_wan_state_dict, split_proj_l, to_turbodiffusion, TD_PROJ_L


def _comfy_wan():
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH not set")
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    return WanModel, comfy.ops.disable_weight_init


@pytest.mark.parametrize("kw", [dict(), dict(i2v=True, in_dim=36), dict(in_dim=36)])
def test_factory_matches_comfy_wanmodel(kw):
    WanModel, ops = _comfy_wan()
    args = dict(dim=256, num_heads=2, num_layers=3, ffn_dim=512, out_dim=16, text_dim=4096, freq_dim=256)
    args.update({k: v for k, v in kw.items() if k != "i2v"})
    model = WanModel(model_type="i2v" if kw.get("i2v") else "t2v", operations=ops, device="meta", **args)
    real = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ours, proj = split_proj_l(make_wan_state_dict(**args, i2v=kw.get("i2v", False)))
    assert {k: tuple(v.shape) for k, v in ours.items()} == real
    assert sorted(proj) == [0, 1, 2]


def test_factory_comfy_detection():
    _comfy_wan()
    try:
        import comfy.model_detection
    except ImportError as e:  # ComfyUI's requirements (e.g. torchvision) not installed here
        pytest.skip(f"comfy.model_detection not importable: {e}")
    sd, _ = split_proj_l(make_wan_state_dict())
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    assert cfg["image_model"] == "wan2.1" and cfg["num_layers"] == 3 and cfg["dim"] == 256
    assert cfg["num_heads"] == 2 and cfg["in_dim"] == 16 and cfg["model_type"] == "t2v"


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
