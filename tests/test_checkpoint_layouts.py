"""Every checkpoint layout, written from one tiny random Wan, loads to the same ComfyUI-native model."""
import hashlib
import logging
import os

import pytest
import torch

from comfyui_sla.sla import checkpoint as C
from comfyui_sla.sla.checkpoint import handover, info as ckpt_info, io as ckpt_io, keys as K, stream as ST
from wan_factory import (TD_PROJ_L, add_prefixes, dequantize_tiles, make_wan_state_dict, native_reference,
                         save_pth, save_safetensors, simpletuner_payload, to_diffusers, to_turbodiffusion,
                         to_turbodiffusion_quant)

# dim 256 and ffn 320: 2x2 tiles for the attention Linears, 3 row tiles (the last partial, 64 rows) for ffn.0 and
# 3 column tiles (the last partial) for ffn.2.
DIMS = dict(dim=256, num_heads=2, num_layers=3, ffn_dim=320, text_dim=192, freq_dim=256)


@pytest.fixture(scope="module")
def native():
    return make_wan_state_dict(**DIMS, seed=1, proj_scale=0.05)


@pytest.fixture(scope="module")
def native_i2v():
    return make_wan_state_dict(**{**DIMS, "num_layers": 2}, in_dim=36, i2v=True, seed=2)


def _write(d, tmp_path, name, ext):
    p = tmp_path / f"{name}.{ext}"
    return save_pth(d, p) if ext == "pth" else save_safetensors(d, p)


def _assert_same(loaded, expected_base, expected_proj, exact=True):
    assert set(loaded.state_dict) == set(expected_base), set(loaded.state_dict) ^ set(expected_base)
    for k, v in expected_base.items():
        got = loaded.state_dict[k]
        assert got.shape == v.shape, k
        if exact:
            assert got.dtype == v.dtype, (k, got.dtype, v.dtype)
            assert torch.equal(got, v), k
        else:
            torch.testing.assert_close(got.float(), v.float(), msg=k)
    assert sorted(loaded.proj_l) == sorted(expected_proj)
    for i, (w, b) in expected_proj.items():
        assert loaded.proj_l[i][0].dtype == torch.float32
        assert torch.equal(loaded.proj_l[i][0], w.float()) and torch.equal(loaded.proj_l[i][1], b.float())


def _td_expected(native_sd):
    """Native dict as the TurboDiffusion writer stores it (bf16 rest, fp32 norms), in native names/shapes."""
    td = to_turbodiffusion(native_sd)
    base, proj = native_reference(td)
    base["patch_embedding.weight"] = base["patch_embedding.weight"].reshape(native_sd["patch_embedding.weight"].shape)
    return base, proj


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
def test_native(native, tmp_path, ext):
    p = _write(native, tmp_path, "native", ext)
    L = C.load_checkpoint(p)
    base, proj = native_reference(native)
    _assert_same(L, base, proj)
    assert L.info.layout == "comfyui" and not L.info.quantized
    assert L.info.num_blocks == 3 and L.info.sla_blocks == [0, 1, 2] and L.info.head_dim == 128
    assert L.info.dim == 256 and L.info.in_dim == 16 and L.info.ffn_dim == 320


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
@pytest.mark.parametrize("prefix,wrapped", [("", False), ("net.", False), ("net.", True), ("", True)])
def test_turbodiffusion(native, tmp_path, ext, prefix, wrapped):
    td = to_turbodiffusion(native, prefix=prefix, wrapped=wrapped)
    assert td[prefix + "patch_embedding.weight"].shape == (256, 64)
    p = _write(td, tmp_path, "td", ext)
    L = C.load_checkpoint(p)
    base, proj = _td_expected(native)
    _assert_same(L, base, proj)
    assert L.state_dict["patch_embedding.weight"].shape == (256, 16, 1, 2, 2)
    assert L.state_dict["blocks.0.self_attn.norm_q.weight"].dtype == torch.float32
    assert L.info.layout == "turbodiffusion"
    if prefix:
        assert prefix in L.info.prefixes


def test_turbodiffusion_nested_state_dict(native, tmp_path):
    """The trainer's own files wrap the weights: {"state_dict": {"net.…": tensor}}."""
    p = save_pth({"state_dict": to_turbodiffusion(native, prefix="net.")}, tmp_path / "wrapped.pth")
    L = C.load_checkpoint(p)
    base, proj = _td_expected(native)
    _assert_same(L, base, proj)


def _quant_expected(native_sd, dtype=torch.bfloat16):
    q = to_turbodiffusion_quant(native_sd)
    base, proj = _td_expected(native_sd)
    for k in list(q):
        if k.endswith(".int8_weight"):
            b = k[: -len(".int8_weight")]
            base[b + ".weight"] = dequantize_tiles(q[k], q[b + ".scale"]).to(dtype)
    return q, base, proj


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
@pytest.mark.parametrize("prefix,wrapped", [("", False), ("net.", True)])
def test_turbodiffusion_int8(native, tmp_path, ext, prefix, wrapped):
    q, base, proj = _quant_expected(native)
    # real TurboDiffusion tiling: [ceil(out/128), ceil(in/128)] with partial tiles
    assert q["blocks.0.ffn.0.scale"].shape == (3, 2) and q["blocks.0.ffn.2.scale"].shape == (2, 3)
    assert "blocks.0.self_attn.attn_op.local_attn.proj_l.int8_weight" not in q
    p = _write(add_prefixes(q, prefix, wrapped), tmp_path, "quant", ext)
    L = C.load_checkpoint(p)
    _assert_same(L, base, proj)
    assert L.info.quantized and L.info.layout == "turbodiffusion-int8"
    # and it is the native model within int8 rounding: |W - q*s| <= s/2, except the tile maximum, which
    # TurboDiffusion's int8_max = 128 saturates to 127 (error s); plus bf16 rounding of source and result.
    for k in ("blocks.1.ffn.0.weight", "blocks.2.ffn.2.weight", "blocks.0.self_attn.q.weight"):
        w = native[k].to(torch.bfloat16).float()
        s = q[k.replace(".weight", ".scale")]
        bound = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: w.shape[0], : w.shape[1]]
        err = (L.state_dict[k].float() - w).abs()
        assert (err <= bound + w.abs() * 2 ** -7 + 1e-7).all(), k
        assert (err <= bound * 0.5 + w.abs() * 2 ** -7 + 1e-7).float().mean() > 0.99, k


@pytest.mark.parametrize("wd", [torch.float16, torch.bfloat16, torch.float32,
                                getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)])
def test_int8_weight_dtype(native, tmp_path, wd):
    if wd is None:
        pytest.skip("no fp8 dtype in this torch")
    q, base, proj = _quant_expected(native, torch.float32)
    p = save_pth(q, tmp_path / "q.pth")
    L = C.load_checkpoint(p, weight_dtype=wd)
    for k, v in base.items():
        got = L.state_dict[k]
        if k not in q:  # dequantised straight from fp32 into the requested dtype (no bf16 detour)
            assert got.dtype == wd
            assert torch.equal(got, v.to(wd)), k
        else:
            assert got.dtype == C.target_dtype(k, tuple(v.shape), q[k].dtype, wd), (k, got.dtype)
            assert torch.equal(got.float(), v.to(got.dtype).float()), k
    if wd.itemsize == 1:  # fp8: norms/biases/modulation stay 16/32-bit, as ComfyUI's fp8 files have them
        assert L.state_dict["blocks.0.self_attn.norm_q.weight"].dtype == torch.float32
        assert L.state_dict["blocks.0.ffn.0.bias"].dtype == torch.bfloat16
        assert L.state_dict["text_embedding.0.weight"].dtype == wd
    else:
        assert L.state_dict["blocks.0.self_attn.norm_q.weight"].dtype == wd
    assert L.info.summary().endswith(str(wd).replace("torch.", ""))


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
@pytest.mark.parametrize("style", ["fastvideo", "sglang", "diffusers"])
@pytest.mark.parametrize("naming", ["diffusers", "fastvideo"])
def test_diffusers_family(native_i2v, tmp_path, ext, style, naming):
    d = to_diffusers(native_i2v, style, naming=naming)
    p = _write(d, tmp_path, f"{style}_{naming}", ext)
    L = C.load_checkpoint(p)
    base, proj = native_reference(native_i2v, torch.bfloat16)
    _assert_same(L, base, proj)
    assert L.info.layout.startswith(style) and L.info.naming == naming
    assert L.info.model_type == "i2v" and L.info.in_dim == 36


def test_partial_proj_l_warns(tmp_path, caplog):
    sd = make_wan_state_dict(**{**DIMS, "num_layers": 5}, proj_l_blocks=[0, 1, 3])
    p = save_safetensors(sd, tmp_path / "partial.safetensors")
    with caplog.at_level(logging.WARNING):
        L = C.load_checkpoint(p)
    assert L.info.sla_blocks == [0, 1, 3] and L.info.missing_sla_blocks == [2, 4]
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("3 of 5 blocks" in m and "2, 4" in m for m in msgs), msgs
    assert "SLA weights on 3/5 blocks" in L.info.summary()


def test_no_proj_l_is_plain_wan(tmp_path):
    sd = make_wan_state_dict(**DIMS, proj_l=False)
    L = C.load_checkpoint(save_safetensors(sd, tmp_path / "plain.safetensors"))
    assert L.proj_l == {} and L.info.sla_blocks == [] and set(L.state_dict) == set(sd)


def test_progress_and_input_untouched(native, tmp_path):
    q, _, _ = _quant_expected(native)
    p = save_pth(q, tmp_path / "q.pth")
    before = (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns)
    calls = []
    C.load_checkpoint(p, weight_dtype=torch.float16, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns) == before


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
def test_load_proj_l_reads_only_proj_l(native, tmp_path, ext, monkeypatch):
    p = _write(to_turbodiffusion(native, prefix="net."), tmp_path, "td", ext)
    touched = []
    cls = ckpt_io.SafetensorsReader if ext == "safetensors" else ckpt_io.TorchReader
    orig = cls.get
    monkeypatch.setattr(cls, "get", lambda self, k: (touched.append(k), orig(self, k))[1])
    proj, info = C.load_proj_l(p)
    _, want = native_reference(native)
    assert sorted(proj) == [0, 1, 2]
    for i, (w, b) in want.items():
        assert torch.equal(proj[i][0], w) and torch.equal(proj[i][1], b)
    assert touched and all(".proj_l." in k for k in touched)
    assert info.num_blocks == 3 and info.family.startswith("Wan T2V")


def test_load_proj_l_only_file(native, tmp_path):
    only = {k: v for k, v in native.items() if ".proj_l." in k}
    proj, info = C.load_proj_l(save_safetensors(only, tmp_path / "sla_only.safetensors"))
    assert sorted(proj) == [0, 1, 2] and info.sla_blocks == [0, 1, 2]
    assert "SLA weights only" in info.summary()


def test_simpletuner(tmp_path):
    w, b = torch.randn(128, 128), torch.randn(128)
    payload = simpletuner_payload(w, b, settings={"topk": 0.15, "feature_map": "softmax", "blkq": 64, "blkk": 64,
                                                  "tie_feature_map_qk": True})
    p = tmp_path / "sla_attention.pt"
    torch.save(payload, p)
    proj, info = C.load_proj_l(p)
    assert list(proj) == [C.ALL_BLOCKS] and torch.equal(proj[C.ALL_BLOCKS][0], w)
    assert info.proj_l_shared and info.layout == "simpletuner"
    assert info.sla_settings["keep_ratio"] == 0.15 and info.sla_settings["block_q"] == 64
    proj30, info30 = C.load_proj_l(p, num_blocks=30)
    assert sorted(proj30) == list(range(30)) and torch.equal(proj30[29][1], b)
    with pytest.raises(C.CheckpointError, match="SimpleTuner.*Load SLA Weights"):
        C.load_checkpoint(p)


@pytest.mark.parametrize("args,family", [
    ((1536, 30, 16, 16, False), "Wan2.1 T2V 1.3B"),
    ((5120, 40, 16, 16, False), "Wan2.1 T2V 14B / Wan2.2 T2V A14B expert"),
    ((5120, 40, 36, 16, True), "Wan2.1 I2V 14B"),
    ((5120, 40, 36, 16, False), "Wan2.2 I2V A14B expert"),
    ((3072, 30, 48, 48, False), "Wan2.2 TI2V 5B"),
    ((256, 3, 16, 16, False), "Wan T2V (dim 256, 3 blocks)"),
])
def test_family_names(args, family):
    assert K.wan_family(*args) == family


def test_converted_metadata_roundtrip(native, tmp_path):
    meta = {"sla.source_layout": "turbodiffusion-int8", "sla.keep_ratio": "0.15", "sla.block_q": "128",
            "sla.block_k": "64", "sla.feature_map": "softmax"}
    p = save_safetensors(native, tmp_path / "conv.safetensors", metadata=meta)
    L = C.load_checkpoint(p)
    assert L.info.layout == "comfyui-sla" and L.info.source_layout == "turbodiffusion-int8"
    assert L.info.sla_settings["keep_ratio"] == 0.15
    assert "converted from turbodiffusion-int8" in L.info.summary()
    assert TD_PROJ_L.format(i=0, p="weight") not in L.state_dict


def test_recorded_settings_one_mapping(native, tmp_path, caplog):
    """SimpleTuner's names and the converter's metadata reach the same pack names; a bad value is dropped, named."""
    payload = simpletuner_payload(torch.zeros(128, 128), torch.zeros(128), settings={"topk": "high", "blkq": 64})
    torch.save(payload, tmp_path / "sla_attention.pt")
    with caplog.at_level(logging.WARNING):
        _, info = C.load_proj_l(tmp_path / "sla_attention.pt")
    assert "topk='high'" in caplog.text
    assert C.recorded_settings(info) == {"keep_ratio": 0.1, "block_q": 64, "block_k": 64, "feature_map": "softmax"}
    meta = ckpt_info.settings_metadata({"keep_ratio": 0.25, "block_q": 64})
    assert meta == {"sla.keep_ratio": "0.25", "sla.block_q": "64", "sla.block_k": "64", "sla.feature_map": "softmax"}
    L = C.load_checkpoint(save_safetensors(native, tmp_path / "c.safetensors",
                                           metadata={"sla.source_layout": "turbodiffusion", **meta}))
    assert C.recorded_settings(L.info) == {"keep_ratio": 0.25, "block_q": 64, "block_k": 64, "feature_map": "softmax"}
    assert C.recorded_settings(C.CheckpointInfo()) == {}  # nothing recorded: nothing claimed


@pytest.mark.parametrize("shape", [(320, 256), (256, 320), (100, 77), (129, 1), (1, 300), (384, 640)])
@pytest.mark.parametrize("chunk", [1, 1000, 1 << 23])
def test_dequantize_int8_tiles(shape, chunk):
    from wan_factory import quantize_tiles
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]))
    q, s = quantize_tiles(w)
    ref = dequantize_tiles(q, s)
    assert torch.equal(C.dequantize_int8_tiles(q, s, torch.float32, chunk_elems=chunk), ref)
    assert torch.equal(C.dequantize_int8_tiles(q, s, torch.bfloat16, chunk_elems=chunk), ref.to(torch.bfloat16))
    assert (ref - w).abs().max() <= s.max() * 1.0001


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
def test_small_bands_same_result(native, tmp_path, monkeypatch, ext):
    """Streaming in many small row bands (partial tiles, bands of 1 row) gives the same tensors."""
    q, base, proj = _quant_expected(native)
    p = _write(q, tmp_path, "q", ext)
    monkeypatch.setattr(ST, "BAND_ELEMS", 100)
    _assert_same(C.load_checkpoint(p), base, proj)
    from comfyui_sla.sla.checkpoint.convert import convert
    out = tmp_path / "o.safetensors"
    convert(p, out, None)  # keep the file's dtypes: int8 -> bf16 (its bias dtype), fp32 norms stay fp32
    monkeypatch.setattr(ST, "BAND_ELEMS", 1 << 23)
    _assert_same(C.load_checkpoint(out), base, proj)


def test_legacy_torch_serialization(native, tmp_path):
    """Old (pre-zip) torch.save files load too (no mmap possible there; still weights_only)."""
    p = tmp_path / "legacy.pth"
    torch.save(to_turbodiffusion(native, prefix="net."), p, _use_new_zipfile_serialization=False)
    assert open(p, "rb").read(1) == b"\x80"
    L = C.load_checkpoint(p)
    base, proj = _td_expected(native)
    _assert_same(L, base, proj)


def test_consume_on_copy_frees_and_matches():
    m = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 2))
    sd = {k: torch.randn_like(v) for k, v in m.state_dict().items()}
    ref = {k: v.clone() for k, v in sd.items()}
    held = sd["0.weight"]
    with C.consume_on_copy(sd) as w:
        assert sd == {}  # the caller's dict no longer reaches the tensors
        assert w["0.weight"].shape == (6, 8) and w["0.weight"].nelement() == 48  # metadata still readable
        assert torch.equal((w["2.bias"] * 2), ref["2.bias"] * 2) and type(w["2.bias"] * 2) is torch.Tensor
        m.load_state_dict(w)
        assert all(v.untyped_storage().nbytes() == 0 for v in w.values())
    assert held.untyped_storage().nbytes() == 0
    assert all(torch.equal(m.state_dict()[k], ref[k]) for k in ref)
    assert C.plain_tensors(m) == 0 and type(m[0].weight) is torch.nn.Parameter
    # outside the block nothing is freed any more: copies from a leftover wrapper are plain copies
    t = torch.randn(3)
    with C.consume_on_copy({"x": t.clone()}) as w:
        leftover = w["x"]
    dst = torch.empty(3)
    dst.copy_(leftover)
    assert leftover.untyped_storage().nbytes() == 12


def test_plain_tensors_unwraps_adopted():
    lin = torch.nn.Linear(2, 2)
    with C.consume_on_copy({"w": torch.randn(2, 2)}) as w:
        lin.weight = torch.nn.Parameter(w["w"], requires_grad=False)  # a loader that assigns instead of copying
    assert C.plain_tensors(lin) == 1 and not isinstance(lin.weight.data, handover._ConsumeOnCopy)
    assert lin(torch.randn(1, 2)).shape == (1, 2)


def test_adopted_tensor_is_never_freed():
    """A loader that adopts a tensor (Parameter(t)) and later copies from the same dict entry keeps its weights."""
    lin, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    w0 = torch.randn(2, 2)
    with C.consume_on_copy({"w": w0.clone()}) as w:
        lin.weight = torch.nn.Parameter(w["w"], requires_grad=False)
        other.weight.data.copy_(w["w"])
    C.plain_tensors(lin)
    assert torch.equal(lin.weight, w0) and torch.equal(other.weight, w0)


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no fp8 in this torch")
def test_comfy_scaled_fp8_passes_through(native, tmp_path):
    """ComfyUI's own scaled-fp8 files: weights with a scale_weight sibling are never re-cast (ComfyUI scales them)."""
    d = dict(native)
    d["blocks.0.ffn.0.weight"] = native["blocks.0.ffn.0.weight"].to(torch.float8_e4m3fn)
    d["blocks.0.ffn.0.scale_weight"] = torch.tensor(0.5)
    d["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    L = C.load_checkpoint(save_safetensors(d, tmp_path / "scaled.safetensors"), weight_dtype=torch.bfloat16)
    assert L.state_dict["blocks.0.ffn.0.weight"].dtype == torch.float8_e4m3fn
    assert torch.equal(L.state_dict["blocks.0.ffn.0.weight"].float(), d["blocks.0.ffn.0.weight"].float())
    assert L.state_dict["blocks.0.ffn.0.scale_weight"].dtype == torch.float32
    assert "scaled_fp8" in L.state_dict


class _ShapeReader:
    """Keys/shapes/dtypes of a (meta) state dict, as plan_checkpoint sees a file, without any data."""

    kind = "pth"
    metadata = {}

    def __init__(self, sd):
        self.path, self._sd = "<shapes>", sd

    def keys(self):
        return list(self._sd)

    def shape(self, k):
        return tuple(self._sd[k].shape)

    def dtype(self, k):
        return self._sd[k].dtype


def _quant_shapes(sd):
    """TurboDiffusion -quant key/shape layout of a meta dict (block Linears -> int8_weight + tile scales)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2 and ".proj_l." not in k:
            b = k[: -len(".weight")]
            out[b + ".int8_weight"] = torch.empty(v.shape, dtype=torch.int8, device="meta")
            out[b + ".scale"] = torch.empty(-(-v.shape[0] // 128), -(-v.shape[1] // 128), device="meta")
        elif k == "patch_embedding.weight":
            out[k] = torch.empty(v.shape[0], v[0].numel(), dtype=torch.bfloat16, device="meta")
        else:
            out[k] = v
    return {"net." + k: v for k, v in out.items()}


@pytest.mark.parametrize("cfg,family,layout", [
    (dict(dim=1536, num_heads=12, num_layers=30, ffn_dim=8960), "Wan2.1 T2V 1.3B", "turbodiffusion-int8"),
    (dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824), "Wan2.1 T2V 14B / Wan2.2 T2V A14B expert",
     "turbodiffusion-int8"),
    (dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=36), "Wan2.2 I2V A14B expert",
     "turbodiffusion-int8"),
    (dict(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=36, i2v=True), "Wan2.1 I2V 14B",
     "turbodiffusion-int8"),
    (dict(dim=3072, num_heads=24, num_layers=30, ffn_dim=14336, in_dim=48, out_dim=48), "Wan2.2 TI2V 5B",
     "turbodiffusion-int8"),
])
def test_real_size_detection(cfg, family, layout):
    """Every published model size is recognised from shapes alone (meta tensors: no memory needed)."""
    sd = make_wan_state_dict(**cfg, meta=True, dtype=torch.bfloat16)
    plan = C.plan_checkpoint(_ShapeReader(_quant_shapes(sd)))
    info = plan.info
    assert info.family == family and info.layout == layout and info.quantized
    assert info.num_blocks == cfg["num_layers"] and info.head_dim == 128 and info.num_heads == cfg["num_heads"]
    assert info.sla_blocks == list(range(cfg["num_layers"])) and info.in_dim == cfg.get("in_dim", 16)
    deq = [o for o in plan.outputs if o.kind == "dequant"]
    assert len(deq) == cfg["num_layers"] * (12 if cfg.get("i2v") else 10)
    assert {o.key for o in plan.outputs} == {k for k in sd if ".proj_l." not in k}


@pytest.mark.parametrize("legacy", [False, True])
def test_tensors_sharing_storage(tmp_path, legacy):
    """Two entries viewing one storage (tied weights) both load intact, whatever pages were released between."""
    sd = make_wan_state_dict(**{**DIMS, "num_layers": 1}, proj_l=False, seed=9)
    big = torch.randn(2 * 256 * 256)
    sd["blocks.0.self_attn.q.weight"] = big[: 256 * 256].view(256, 256)
    sd["blocks.0.self_attn.k.weight"] = big[256 * 256:].view(256, 256)
    sd["blocks.0.self_attn.v.weight"] = big[: 256 * 256].view(256, 256)  # same bytes as q
    p = tmp_path / "tied.pth"
    torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
    L = C.load_checkpoint(p)
    for k in ("q", "k", "v"):
        assert torch.equal(L.state_dict[f"blocks.0.self_attn.{k}.weight"], sd[f"blocks.0.self_attn.{k}.weight"]), k
