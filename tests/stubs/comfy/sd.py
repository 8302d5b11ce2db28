"""Stand-in of comfy/sd.py: ``load_diffusion_model_state_dict`` detecting Wan by ``head.modulation`` and
building the stand-in WanModel from the state dict's shapes (ComfyUI drops unknown keys such as proj_l with a
warning; this stand-in records them in ``unexpected_keys`` instead)."""
import logging
import re

import torch

import comfy.model_base
import comfy.model_patcher
from comfy.ldm.wan.model import WanModel

last_model_options = None


def load_diffusion_model_state_dict(sd, model_options={}, metadata=None):
    global last_model_options
    last_model_options = dict(model_options)
    if "head.modulation" not in sd:
        return None
    dim = sd["blocks.0.self_attn.q.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m)
    ffn = sd["blocks.0.ffn.0.weight"].shape[0]
    dm = WanModel(dim=dim, ffn_dim=ffn, num_heads=max(1, dim // 128), num_layers=layers)
    dtype = model_options.get("dtype")
    # The stand-in WanModel has no patch embedding / norms and a dim->dim head: load what fits, report the rest.
    own = dm.state_dict()
    fits = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    dm.load_state_dict(fits, strict=False)
    unexpected = [k for k in sd if k not in own]
    dm.unexpected_keys = unexpected
    if unexpected:
        logging.warning("unet unexpected: %s", unexpected)
    if dtype is not None and dtype in (torch.float16, torch.bfloat16, torch.float32):
        dm.to(dtype)
    dm.weight_dtype = dtype
    model = comfy.model_base.WAN21(dm)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
