"""The layout table decides ``CheckpointInfo.layout`` from a file's facts: row order, labels, and adding a row."""
import dataclasses

import pytest

from comfyui_sla.sla.checkpoint.layouts import LAYOUTS, Facts, Layout, detect_layout

BASE = Facts(naming="wan", proj_style="turbodiffusion", has_base=True, quantized=False, linear_patch=False,
             prefixes=(), source_layout="")


@pytest.mark.parametrize("change, layout", [
    ({}, "comfyui"),
    ({"linear_patch": True}, "turbodiffusion"),
    ({"prefixes": ("net.",)}, "turbodiffusion"),
    ({"prefixes": ("_checkpoint_wrapped_module.",)}, "turbodiffusion"),
    ({"prefixes": ("module.",)}, "comfyui"),
    ({"quantized": True, "linear_patch": True}, "turbodiffusion-int8"),
    ({"source_layout": "turbodiffusion-int8"}, "comfyui-sla"),
    ({"has_base": False}, "turbodiffusion"),  # proj_l-only file
    ({"has_base": False, "proj_style": None}, "turbodiffusion"),
    ({"naming": "diffusers"}, "diffusers names"),
    ({"naming": "fastvideo", "quantized": True}, "fastvideo names"),  # naming rows come before the int8 row
    ({"naming": "diffusers", "proj_style": "diffusers"}, "diffusers"),
    ({"naming": "diffusers", "proj_style": "fastvideo"}, "fastvideo (diffusers names)"),
    ({"naming": "wan", "proj_style": "sglang"}, "sglang (wan names)"),
    ({"naming": "wan", "proj_style": "sglang", "has_base": False}, "sglang"),
])
def test_first_matching_row_names_the_layout(change, layout):
    assert detect_layout(dataclasses.replace(BASE, **change)) == layout


def test_last_row_accepts_any_file():
    odd = Facts(naming="wan", proj_style=None, has_base=False, quantized=False, linear_patch=False, prefixes=(),
                source_layout="")
    assert LAYOUTS[-1].detect(odd) and LAYOUTS[-1].describe(odd) == "turbodiffusion"


def test_a_new_row_takes_precedence_where_placed():
    mine = Layout("mytrainer", lambda f: "mytrainer." in f.prefixes)
    table = (mine,) + LAYOUTS
    assert detect_layout(dataclasses.replace(BASE, prefixes=("mytrainer.",)), table) == "mytrainer"
    assert detect_layout(BASE, table) == "comfyui"
    # placed last (behind the catch-all) it is never reached
    assert detect_layout(dataclasses.replace(BASE, prefixes=("mytrainer.",)), LAYOUTS + (mine,)) == "comfyui"
