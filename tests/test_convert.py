"""The converter round-trips every layout into ComfyUI-native safetensors, safely."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from comfyui_sla.sla.checkpoint import convert as CV
from comfyui_sla.sla.checkpoint import CheckpointError, load_checkpoint, load_proj_l
from wan_factory import (TD_PROJ_L, make_wan_state_dict, native_reference, save_pth, save_safetensors,
                         simpletuner_payload, to_diffusers, to_turbodiffusion, to_turbodiffusion_quant)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DIMS = dict(dim=256, num_heads=2, num_layers=3, ffn_dim=320, text_dim=128)


@pytest.fixture(autouse=True)
def written_files_validate(tmp_path):
    """Every .safetensors file a test leaves (the converter's outputs) is read back by the safetensors library:
    header, offsets tiling the data, dtype/length agreement, every tensor readable."""
    yield
    for p in tmp_path.rglob("*.safetensors"):
        if p.is_file():
            with safe_open(str(p), framework="pt") as f:
                for k in f.keys():
                    assert tuple(f.get_tensor(k).shape) == tuple(f.get_slice(k).get_shape()), (p, k)


@pytest.fixture(scope="module")
def native():
    return make_wan_state_dict(**DIMS, seed=3)


@pytest.mark.parametrize("layout", ["quant_pth", "td_pth", "td_safetensors", "fastvideo", "native"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, getattr(torch, "float8_e4m3fn", None)])
def test_roundtrip(native, tmp_path, layout, dtype):
    if dtype is None:
        pytest.skip("no fp8 in this torch")
    src = {
        "quant_pth": lambda: save_pth(to_turbodiffusion_quant(native, prefix="net."), tmp_path / "in.pth"),
        "td_pth": lambda: save_pth(to_turbodiffusion(native, wrapped=True), tmp_path / "in.pth"),
        "td_safetensors": lambda: save_safetensors(to_turbodiffusion(native), tmp_path / "in.safetensors"),
        "fastvideo": lambda: save_safetensors(to_diffusers(native), tmp_path / "in.safetensors"),
        "native": lambda: save_safetensors(native, tmp_path / "in.safetensors"),
    }[layout]()
    out = tmp_path / "out.safetensors"
    info = CV.convert(src, out, dtype)
    direct = load_checkpoint(src, weight_dtype=dtype)
    conv = load_checkpoint(out)
    assert set(conv.state_dict) == set(direct.state_dict)
    for k, v in direct.state_dict.items():
        assert conv.state_dict[k].dtype == v.dtype, k
        assert torch.equal(conv.state_dict[k].float(), v.float()), k
    _, proj = native_reference(native)
    for i, (w, b) in proj.items():
        assert torch.equal(conv.proj_l[i][0], w) and torch.equal(conv.proj_l[i][1], b)
    assert conv.info.layout == "comfyui-sla" and conv.info.source_layout == info.layout
    assert conv.info.sla_settings == {"keep_ratio": 0.1, "block_q": 128, "block_k": 64, "feature_map": "softmax"}
    # plain safetensors readers see native keys, TurboDiffusion-named proj_l (fp32) and the metadata
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor(TD_PROJ_L.format(i=2, p="weight")).dtype == torch.float32
        assert f.get_tensor("patch_embedding.weight").shape == (256, 16, 1, 2, 2)
        assert "head.modulation" in f.keys()
    assert meta["sla.source_layout"] == info.layout and meta["sla.keep_ratio"] == "0.1"
    assert meta["sla.block_q"] == "128" and meta["sla.block_k"] == "64" and meta["sla.feature_map"] == "softmax"
    # converting the converted file again keeps the original source layout
    out2 = tmp_path / "out2.safetensors"
    CV.convert(out, out2, None)
    assert load_checkpoint(out2).info.source_layout == info.layout
    assert load_proj_l(out2)[1].sla_blocks == [0, 1, 2]


def test_refuses_input_and_existing_output(native, tmp_path):
    src = save_safetensors(native, tmp_path / "m.safetensors")
    before = open(src, "rb").read()
    with pytest.raises(CheckpointError, match="refusing to overwrite the input"):
        CV.convert(src, src, torch.bfloat16, overwrite=True)
    link = tmp_path / "link.safetensors"
    os.symlink(src, link)
    with pytest.raises(CheckpointError, match="refusing to overwrite the input"):
        CV.convert(src, link, torch.bfloat16, overwrite=True)
    assert open(src, "rb").read() == before
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match="exists; pass --force"):
        CV.convert(src, out, torch.bfloat16)
    assert out.read_bytes() == b"keep me"
    CV.convert(src, out, torch.bfloat16, overwrite=True)
    assert load_checkpoint(out).info.num_blocks == 3
    with pytest.raises(CheckpointError, match="must end in .safetensors"):
        CV.convert(src, tmp_path / "o.pth", torch.bfloat16)


def test_atomic_on_failure(native, tmp_path, monkeypatch):
    src = save_pth(to_turbodiffusion_quant(native), tmp_path / "q.pth")
    out = tmp_path / "out.safetensors"
    calls = {"n": 0}
    orig = CV.SafetensorsWriter.write_parts

    def failing(self, key, parts):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full (simulated)")
        return orig(self, key, parts)

    monkeypatch.setattr(CV.SafetensorsWriter, "write_parts", failing)
    with pytest.raises(CheckpointError, match="disk full"):  # OSError while writing: one error type out
        CV.convert(src, out, torch.bfloat16)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["q.pth"]  # no partial file left behind


def test_bad_input_errors(tmp_path):
    st = tmp_path / "sla_attention.pt"
    torch.save(simpletuner_payload(torch.zeros(128, 128), torch.zeros(128)), st)
    with pytest.raises(CheckpointError, match="SimpleTuner"):
        CV.convert(st, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def _run_cli(*args):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "sla.convert", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli(native, tmp_path, caplog):
    src = save_pth(to_turbodiffusion_quant(native, prefix="net."), tmp_path / "TurboWan-quant.pth")
    out = tmp_path / "converted.safetensors"
    r = _run_cli(src, out, "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "turbodiffusion-int8" in r.stderr
    L = load_checkpoint(out)
    assert L.state_dict["blocks.0.ffn.0.weight"].dtype == torch.float16 and sorted(L.proj_l) == [0, 1, 2]

    # error paths in-process (same main(), no interpreter start-up per case)
    def main(*args):
        return CV.main([str(a) for a in args])

    with caplog.at_level("ERROR"):
        assert main(src, out) == 2
        assert main(out, out, "--force") == 2
        bad = tmp_path / "lora.safetensors"
        save_safetensors({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 4)}, bad)
        assert main(bad, tmp_path / "x.safetensors") == 2
    text = caplog.text
    assert "exists; pass --force" in text and "refusing to overwrite the input" in text and "LoRA" in text
    assert not (tmp_path / "x.safetensors").exists()


_COMFY_CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[2] + "/tests/integration")
from comfy_env import install_placeholders  # inert torchvision/torchaudio when missing, as the integration tests
install_placeholders()
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.sd, comfy.utils
from sla.checkpoint import load_checkpoint
L = load_checkpoint(sys.argv[3])
m = comfy.sd.load_diffusion_model_state_dict(dict(L.state_dict))
sd = comfy.utils.load_torch_file(sys.argv[3])   # the stock UNETLoader path: proj_l keys are simply ignored
m2 = comfy.sd.load_diffusion_model_state_dict(sd)
dm, dm2 = m.model.diffusion_model, m2.model.diffusion_model
same = all(torch_eq for torch_eq in [
    bool((dm.state_dict()[k].float() == v.float()).all()) for k, v in L.state_dict.items()])
print(json.dumps({"cls": type(dm).__name__, "blocks": len(dm.blocks), "blocks2": len(dm2.blocks),
                  "same": same, "heads": dm.num_heads}))
"""


def test_comfyui_loads_converted(tmp_path):
    """Real ComfyUI builds the Wan model from load_checkpoint's dict and from the converted file through its stock
    loader, with identical weights (needs COMFYUI_PATH; runs in a subprocess: real ComfyUI and the tests/stubs
    stand-in cannot share one interpreter)."""
    paths = [p for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p]
    if not paths:
        pytest.skip("COMFYUI_PATH not set")
    native = make_wan_state_dict(**{**DIMS, "text_dim": 4096}, seed=4)  # ComfyUI fixes text_dim 4096
    src = save_pth(to_turbodiffusion_quant(native, prefix="net."), tmp_path / "q.pth")
    out = tmp_path / "c.safetensors"
    CV.convert(src, out, torch.bfloat16)
    import json
    for comfy_path in paths:
        r = subprocess.run([sys.executable, "-c", _COMFY_CHECK, comfy_path, str(ROOT), str(out)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res == {"cls": "WanModel", "blocks": 3, "blocks2": 3, "same": True, "heads": 2}, (comfy_path, res)


def test_sla_weights_from_simpletuner(tmp_path):
    base_sd = make_wan_state_dict(**DIMS, proj_l=False, seed=6)
    src = save_safetensors(base_sd, tmp_path / "base.safetensors")
    w, b = torch.randn(128, 128), torch.randn(128)
    st = tmp_path / "sla_attention.pt"
    torch.save(simpletuner_payload(w, b, settings={"topk": 0.2, "feature_map": "softmax", "blkq": 64, "blkk": 64}),
               st)
    out = tmp_path / "merged.safetensors"
    info = CV.convert(src, out, torch.bfloat16, sla_weights=st)
    assert "simpletuner" in info.layout
    L = load_checkpoint(out)
    assert sorted(L.proj_l) == [0, 1, 2] and all(torch.equal(L.proj_l[i][0], w) for i in range(3))
    assert L.info.sla_settings["keep_ratio"] == 0.2 and L.info.sla_settings["block_q"] == 64
    # a base that already has proj_l would mix two sets
    with_proj = save_safetensors(make_wan_state_dict(**DIMS, seed=6), tmp_path / "with.safetensors")
    with pytest.raises(CheckpointError, match="would mix two sets"):
        CV.convert(with_proj, tmp_path / "x.safetensors", sla_weights=st)
    assert not (tmp_path / "x.safetensors").exists()
