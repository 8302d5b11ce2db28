"""The container is recognised from the first bytes: a safetensors file whose header length starts with the byte
0x80 (one header length in 32) is still safetensors, not a legacy torch pickle."""
import struct

import torch
from safetensors.torch import save_file

from comfyui_sla.sla.checkpoint.io import SafetensorsReader, open_source, sniff


def _safetensors_with_header_low_byte(path, low_byte):
    for pad in range(512):
        save_file({"a": torch.arange(4, dtype=torch.float32)}, path, metadata={"sla.pad": "x" * pad})
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
        if n % 256 == low_byte:
            return pad
    raise AssertionError("no padding gave the wanted header length")


def test_safetensors_header_length_0x80_is_not_a_pickle(tmp_path):
    p = str(tmp_path / "w.safetensors")
    pad = _safetensors_with_header_low_byte(p, 0x80)
    with open(p, "rb") as f:
        assert f.read(1) == b"\x80"  # what a pickle starts with
    assert sniff(p) == "safetensors"
    r = open_source(p)
    try:
        assert isinstance(r, SafetensorsReader)
        assert r.metadata["sla.pad"] == "x" * pad  # metadata (e.g. the converter's SLA settings) is read
        assert torch.equal(r.get("a"), torch.arange(4, dtype=torch.float32))
    finally:
        r.close()


def test_legacy_torch_pickle_still_detected(tmp_path):
    p = str(tmp_path / "legacy.pth")
    torch.save({"a": torch.zeros(2)}, p, _use_new_zipfile_serialization=False)
    assert sniff(p) == "torch-legacy"


def test_torch_file_named_safetensors_is_read_as_torch(tmp_path):
    # Detected from the bytes, never the name (torch >= 2.13 would hand a .safetensors path to safetensors).
    from comfyui_sla.sla.checkpoint import load_proj_l
    w, b = torch.randn(128, 128), torch.randn(128)
    p = str(tmp_path / "misnamed.safetensors")
    torch.save({"blocks.0.self_attn.attn_op.local_attn.proj_l.weight": w,
                "blocks.0.self_attn.attn_op.local_attn.proj_l.bias": b}, p)
    assert sniff(p) == "torch-zip"
    proj, info = load_proj_l(p)
    assert torch.equal(proj[0][0], w) and torch.equal(proj[0][1], b) and info.container == "pth"
