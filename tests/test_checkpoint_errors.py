"""Every bad input gets a CheckpointError that names the key or problem and what was expected."""
import os

import pytest
import torch

from comfyui_sla.sla.checkpoint import CheckpointError, load_checkpoint, load_proj_l
from wan_factory import (FASTVIDEO_PROJ_L, TD_PROJ_L, make_wan_state_dict, native_to_diffusers_key, save_pth,
                         save_safetensors, to_turbodiffusion_quant)

DIMS = dict(dim=256, num_heads=2, num_layers=2, ffn_dim=320, text_dim=128)


@pytest.fixture(scope="module")
def sd():
    return make_wan_state_dict(**DIMS)


def _err(path, fn=load_checkpoint):
    with pytest.raises(CheckpointError) as ei:
        fn(path)
    assert isinstance(ei.value, ValueError)
    return str(ei.value)


@pytest.mark.parametrize("ext", ["safetensors", "pth"])
def test_truncated(sd, tmp_path, ext):
    p = str(tmp_path / f"full.{ext}")
    (save_safetensors if ext == "safetensors" else save_pth)(sd, p)
    data = open(p, "rb").read()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    msg = _err(str(cut))
    assert "truncated" in msg and "cut." in msg


def test_corrupt_safetensors_header(sd, tmp_path):
    p = str(tmp_path / "c.safetensors")
    save_safetensors(sd, p)
    data = bytearray(open(p, "rb").read())
    data[10:20] = b"\xff" * 10
    (tmp_path / "c2.safetensors").write_bytes(bytes(data))
    msg = _err(str(tmp_path / "c2.safetensors"))
    assert "corrupt" in msg and "header" in msg


def test_safetensors_metadata_not_an_object(tmp_path):
    import json
    import struct
    header = json.dumps({"__metadata__": ["not", "a", "dict"],
                         "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    msg = _err(str(p))
    assert "corrupt" in msg and "__metadata__" in msg and "list" in msg


def test_garbage_and_empty(tmp_path):
    (tmp_path / "g.pth").write_bytes(b"hello world, not a model" * 10)
    assert "not a checkpoint" in _err(str(tmp_path / "g.pth"))
    (tmp_path / "e.safetensors").write_bytes(b"")
    assert "empty" in _err(str(tmp_path / "e.safetensors"))
    assert "does not exist" in _err(str(tmp_path / "missing.safetensors"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    msg = _err(str(tmp_path / "m.gguf"), load_proj_l)
    assert "GGUF" in msg and "Load SLA Weights" in msg


def test_not_wan(tmp_path):
    flux = {f"double_blocks.{i}.img_attn.qkv.weight": torch.zeros(24, 8) for i in range(3)}
    flux["img_in.weight"] = torch.zeros(8, 4)
    msg = _err(save_safetensors(flux, tmp_path / "flux.safetensors"))
    assert "not a Wan diffusion model" in msg and "head.modulation" in msg and "Flux" in msg
    t5 = {"shared.weight": torch.zeros(10, 4), "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)}
    msg = _err(save_pth(t5, tmp_path / "t5.pth"))
    assert "not a Wan diffusion model" in msg and "T5" in msg


def test_lora(tmp_path):
    lora = {}
    for i in range(2):
        for n in ("q", "k"):
            lora[f"diffusion_model.blocks.{i}.self_attn.{n}.lora_A.weight"] = torch.zeros(8, 256)
            lora[f"diffusion_model.blocks.{i}.self_attn.{n}.lora_B.weight"] = torch.zeros(256, 8)
    msg = _err(save_safetensors(lora, tmp_path / "my_lora.safetensors"))
    assert "LoRA" in msg and "lora_A" in msg and "LoraLoaderModelOnly" in msg
    msg = _err(save_safetensors(lora, tmp_path / "my_lora2.safetensors"), load_proj_l)
    assert "LoRA" in msg


def test_int8_without_scale(sd, tmp_path):
    q = to_turbodiffusion_quant(sd)
    del q["blocks.1.ffn.2.scale"]
    msg = _err(save_pth(q, tmp_path / "noscale.pth"))
    assert "blocks.1.ffn.2.int8_weight" in msg and "blocks.1.ffn.2.scale" in msg and "128x128" in msg


def test_int8_scale_wrong_shape(sd, tmp_path):
    q = to_turbodiffusion_quant(sd)
    q["blocks.0.ffn.0.scale"] = torch.ones(2, 2)
    msg = _err(save_pth(q, tmp_path / "badscale.pth"))
    assert "blocks.0.ffn.0.scale" in msg and "[2, 2]" in msg and "[3, 2]" in msg


def test_scale_without_int8(sd, tmp_path):
    d = dict(sd)
    d["blocks.0.self_attn.q.scale"] = torch.ones(2, 2)
    msg = _err(save_safetensors(d, tmp_path / "lonely.safetensors"))
    assert "blocks.0.self_attn.q.scale" in msg and "int8_weight" in msg


@pytest.mark.parametrize("fn", [load_checkpoint, load_proj_l])
def test_proj_l_wrong_shape(sd, tmp_path, fn):
    d = dict(sd)
    key = TD_PROJ_L.format(i=1, p="weight")
    d[key] = torch.zeros(64, 64)
    msg = _err(save_safetensors(d, tmp_path / "badproj.safetensors"), fn)
    assert key in msg and "[64, 64]" in msg and "[128, 128]" in msg


def test_proj_l_bias_missing_or_out_of_range(sd, tmp_path):
    d = dict(sd)
    del d[TD_PROJ_L.format(i=0, p="bias")]
    msg = _err(save_safetensors(d, tmp_path / "nobias.safetensors"))
    assert TD_PROJ_L.format(i=0, p="weight") in msg and "bias" in msg
    d = dict(sd)
    d[TD_PROJ_L.format(i=7, p="weight")] = torch.zeros(128, 128)
    d[TD_PROJ_L.format(i=7, p="bias")] = torch.zeros(128)
    msg = _err(save_safetensors(d, tmp_path / "extra.safetensors"))
    assert "block 7" in msg and "2 blocks" in msg


def test_unknown_proj_l_key(sd, tmp_path):
    d = dict(sd)
    d["blocks.0.self_attn.proj_l.weight"] = torch.zeros(128, 128)
    msg = _err(save_safetensors(d, tmp_path / "odd.safetensors"))
    assert "blocks.0.self_attn.proj_l.weight" in msg and "attn1.attn_impl.proj_l" in msg


def test_two_proj_l_layouts_mixed(sd, tmp_path):
    d = dict(sd)
    d[FASTVIDEO_PROJ_L.format(i=1, p="weight")] = d.pop(TD_PROJ_L.format(i=1, p="weight"))
    d[FASTVIDEO_PROJ_L.format(i=1, p="bias")] = d.pop(TD_PROJ_L.format(i=1, p="bias"))
    msg = _err(save_safetensors(d, tmp_path / "mixed.safetensors"))
    assert "mixes two proj_l layouts" in msg and "turbodiffusion" in msg and "fastvideo" in msg


def test_two_base_namings_mixed(sd, tmp_path):
    d = dict(sd)
    for k in [k for k in d if k.startswith("blocks.1.") and ".proj_l." not in k]:
        d[native_to_diffusers_key(k)] = d.pop(k)
    msg = _err(save_safetensors(d, tmp_path / "mixed2.safetensors"))
    assert "mixes two layouts" in msg and "diffusers" in msg


def test_prefixed_and_plain_copy_mixed(sd, tmp_path):
    d = dict(sd)
    d["net.blocks.0.ffn.0.weight"] = d["blocks.0.ffn.0.weight"].clone()
    msg = _err(save_safetensors(d, tmp_path / "dup.safetensors"))
    assert "net.blocks.0.ffn.0.weight" in msg and "'blocks.0.ffn.0.weight'" in msg


class _Evil:
    """Unpickling this would run code (writes a marker file); weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pth_needing_more_than_tensors_is_refused(sd, tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": sd, "extra": _Evil(str(marker))}, p)
    msg = _err(str(p))
    assert "refused" in msg and "more than tensors" in msg
    assert not marker.exists()
    msg = _err(str(p), load_proj_l)
    assert "refused" in msg and not marker.exists()


def test_pth_not_a_dict(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], p)
    assert "expected a dict of tensors" in _err(str(p))


def test_proj_l_only_file_in_model_loader(sd, tmp_path):
    only = {k: v for k, v in sd.items() if ".proj_l." in k}
    msg = _err(save_safetensors(only, tmp_path / "only.safetensors"))
    assert "only SLA proj_l weights" in msg and "Load SLA Weights" in msg


def test_missing_block(sd, tmp_path):
    d = make_wan_state_dict(**{**DIMS, "num_layers": 3}, proj_l=False)
    for k in [k for k in d if k.startswith("blocks.1.")]:
        del d[k]
    msg = _err(save_safetensors(d, tmp_path / "hole.safetensors"))
    assert "blocks [1] are missing" in msg


def test_errors_leave_input_untouched(sd, tmp_path):
    q = to_turbodiffusion_quant(sd)
    del q["blocks.0.ffn.0.scale"]
    p = save_pth(q, tmp_path / "x.pth")
    before = (open(p, "rb").read(), os.stat(p).st_mtime_ns)
    _err(p)
    assert (open(p, "rb").read(), os.stat(p).st_mtime_ns) == before
