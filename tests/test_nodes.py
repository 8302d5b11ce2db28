"""The five nodes: ids, display names, input order, tooltips, validation, and running them on the ComfyUI
stand-in (tests/stubs) with real checkpoint files from tests/wan_factory.py."""
import logging
import os

import pytest
import torch

import stubs
import wan_factory as wf
import comfyui_sla
from comfyui_sla.nodes import sla_nodes as N
from comfyui_sla.sla.runtime import patch as P
from comfyui_sla.sla.runtime import stats as R

EXPECTED = {
    "SLADiffusionModelLoader": ("Load SLA Diffusion Model", ["ckpt_name", "weight_dtype"]),
    "ApplySLA": ("Apply Sparse-Linear Attention",
                 ["model", "keep_ratio", "start_percent", "end_percent", "dense_blocks", "block_q", "block_k",
                  "feature_map", "min_tokens", "backend", "enabled"]),
    "SLAWeightsLoader": ("Load SLA Weights", ["model", "weights_name"]),
    "SLAAttentionMap": ("SLA Attention Map", ["model", "samples", "block", "head", "step"]),
    "SLARunReport": ("SLA Run Report", ["model", "samples"]),
}
# Node id as a hidden input (ComfyUI adds UNIQUE_ID to the cache key): only nodes that must not share a result.
WITH_ID = {"SLAAttentionMap", "SLARunReport"}
OUTPUT_TYPE = {"SLAAttentionMap": "IMAGE", "SLARunReport": "STRING"}
# Appended after the required ones (saved workflows keep their positions); hidden inputs make no widget.
OPTIONAL = {"ApplySLA": ["keep_schedule", "exact_prefix"]}


# --------------------------------------------------------------------------------------------- schemas

def test_mappings_ids_names_and_input_order():
    assert comfyui_sla.NODE_CLASS_MAPPINGS is N.NODE_CLASS_MAPPINGS
    assert set(N.NODE_CLASS_MAPPINGS) == set(EXPECTED)
    for node_id, (name, inputs) in EXPECTED.items():
        cls = N.NODE_CLASS_MAPPINGS[node_id]
        assert comfyui_sla.NODE_DISPLAY_NAME_MAPPINGS[node_id] == name
        spec = cls.INPUT_TYPES()
        # UNIQUE_ID only on the map node: ComfyUI adds it to the cache key (identical ApplySLA nodes share output)
        hidden = ["hidden"] if node_id in WITH_ID else []
        assert list(spec) == ["required"] + (["optional"] if node_id in OPTIONAL else []) + hidden
        assert list(spec["required"]) == inputs   # widget values are saved by position
        assert list(spec.get("optional", {})) == OPTIONAL.get(node_id, [])
        expected_out = OUTPUT_TYPE.get(node_id, "MODEL")
        assert cls.RETURN_TYPES[0] == expected_out and callable(getattr(cls, cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY.endswith("SLA") and cls.DESCRIPTION


def test_every_input_has_a_tooltip():
    for cls in N.NODE_CLASS_MAPPINGS.values():
        types = cls.INPUT_TYPES()
        for name, spec in {**types["required"], **types.get("optional", {})}.items():
            assert len(spec) == 2 and spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"


def test_apply_sla_widgets():
    req = N.ApplySLA.INPUT_TYPES()["required"]
    keep = req["keep_ratio"][1]
    assert req["keep_ratio"][0] == "FLOAT" and keep["display"] == "slider"
    assert (keep["min"], keep["max"], keep["step"], keep["default"]) == (0.01, 1.0, 0.01, 0.10)
    assert "0.15" in keep["tooltip"] and "0.10" in keep["tooltip"] and "1 - keep" in keep["tooltip"]
    assert req["start_percent"][1]["default"] == 0.0 and req["end_percent"][1]["default"] == 1.0
    assert "dense" in req["start_percent"][1]["tooltip"] and "proj_l" in req["end_percent"][1]["tooltip"]
    assert req["block_q"][0] == ["128", "64"] and req["block_k"][0] == ["64"]
    assert req["feature_map"][0] == ["softmax", "elu", "relu"]
    assert req["backend"][0] == ["auto", "triton", "torch"]
    assert req["enabled"][0] == "BOOLEAN" and req["enabled"][1]["default"] is True
    assert req["min_tokens"][0] == "INT" and req["dense_blocks"][0] == "STRING"
    assert N.SLADiffusionModelLoader.INPUT_TYPES()["required"]["weight_dtype"][0] == [
        "default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast",
        "int8 (W8A8, -quant files)"]  # new choices: appended


def test_dense_blocks_validation_names_the_token():
    assert N.ApplySLA.VALIDATE_INPUTS(dense_blocks="0, 1, 28-29") is True
    assert N.ApplySLA.VALIDATE_INPUTS(dense_blocks="") is True
    assert N.ApplySLA.VALIDATE_INPUTS() is True   # linked input: no value at queue time
    msg = N.ApplySLA.VALIDATE_INPUTS(dense_blocks="0, one, 3")
    assert isinstance(msg, str) and "'one'" in msg


# --------------------------------------------------------------------------------------------- running

@pytest.fixture
def comfy(tmp_path):
    with stubs.activated():
        import folder_paths
        import comfy.model_base
        import comfy.model_patcher
        import comfy.samplers
        import comfy.sd
        from comfy.ldm.wan import model as wan
        folder_paths.add_model_folder_path("diffusion_models", str(tmp_path))
        yield type("C", (), dict(mp=comfy.model_patcher, base=comfy.model_base, samplers=comfy.samplers,
                                 wan=wan, sd=comfy.sd, dir=tmp_path, folder_paths=folder_paths))


def sample(c, model, tokens=300, steps=2):
    g = torch.Generator().manual_seed(0)
    guider = c.samplers.CFGGuider(model)
    guider.set_conds(torch.randn(2, 20, 256, generator=g))
    noise = torch.randn(2, tokens, 256, generator=g)
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), None, torch.linspace(1.0, 0.0, steps + 1))


def apply_node(model, keep=0.3, start=0.0, end=1.0, dense="", bq="128", bk="64", fm="softmax", min_tokens=0,
               backend="torch", enabled=True):
    return N.ApplySLA().apply(model, keep, start, end, dense, bq, bk, fm, min_tokens, backend, enabled)[0]


def runtime(model):
    return model.model_options["transformer_options"]["optimized_attention_override"].sla_patch


def write_turbo(c, name="turbo.pth", proj_l_blocks=None, fmt="pth", **kw):
    native = wf.make_wan_state_dict(proj_l_blocks=proj_l_blocks, **kw)
    td = wf.to_turbodiffusion(native)
    path = c.dir / name
    (wf.save_pth if fmt == "pth" else wf.save_safetensors)(td, path)
    return name, native


def test_loader_builds_native_model_with_sla_at_defaults(comfy, caplog):
    name, native = write_turbo(comfy)
    assert name in N.SLADiffusionModelLoader.INPUT_TYPES()["required"]["ckpt_name"][0]
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        model, info = N.SLADiffusionModelLoader().load(name, "default")
    assert "Wan T2V" in info and "SLA weights on 3/3 blocks" in info and "turbodiffusion" in info
    assert any(info in r.message for r in caplog.records)   # the same line is logged
    dm = model.model.diffusion_model
    assert not any("proj_l" in k for k in dm.unexpected_keys)   # proj_l popped before ComfyUI's loader
    s = runtime(model).settings
    assert (s.keep_ratio, s.block_q, s.block_k, s.feature_map) == (0.10, 128, 64, "softmax")
    weights = runtime(model).weights
    assert weights.blocks == (0, 1, 2)
    w, b = weights.get(1, "cpu")
    torch.testing.assert_close(w, native["blocks.1.self_attn.attn_op.local_attn.proj_l.weight"].float())
    applied = [r.message for r in caplog.records if "SLA applied to WanModel" in r.message]
    assert len(applied) == 1 and "keep 0.10" in applied[0]
    # a newcomer must not read the loader's keep 0.10 as the ApplySLA slider being ignored
    assert "checkpoint defaults" in applied[0] and "Apply Sparse-Linear Attention node after" in applied[0]
    # loader -> ApplySLA keeps the weights, changes the settings
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        m2 = apply_node(model, keep=0.5)
    applied = [r.message for r in caplog.records if "SLA applied to WanModel" in r.message]
    assert len(applied) == 1 and "keep 0.50" in applied[0] and "checkpoint defaults" not in applied[0]
    assert runtime(m2).weights is weights and runtime(m2).settings.keep_ratio == 0.5
    assert runtime(model).settings.keep_ratio == 0.10
    out = sample(comfy, m2)
    assert torch.isfinite(out).all() and runtime(m2).stats.linear_blocks == {0, 1, 2}


@pytest.mark.parametrize("choice,options", [
    ("default", {}), ("bf16", {"dtype": torch.bfloat16}), ("fp16", {"dtype": torch.float16}),
    ("fp8_e4m3fn", {"dtype": torch.float8_e4m3fn}), ("fp8_e5m2", {"dtype": torch.float8_e5m2}),
    ("fp8_e4m3fn_fast", {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True})])
def test_loader_weight_dtype_reaches_comfy_loader(comfy, choice, options):
    # the same model_options the stock UNETLoader passes for each choice
    name, _ = write_turbo(comfy, name="t.safetensors", fmt="safetensors")
    N.SLADiffusionModelLoader().load(name, choice)
    assert comfy.sd.last_model_options == options


@pytest.mark.parametrize("choice,dtype", [("fp8_e4m3fn", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2),
                                          ("fp16", torch.float16)])
@pytest.mark.parametrize("quant", [False, True])
def test_loader_casts_weights_while_reading(comfy, monkeypatch, choice, dtype, quant):
    # The state dict handed to ComfyUI already holds the chosen dtype (int8 tiles dequantised straight into it):
    # a bf16 copy of a whole 14B model never exists when fp8 was asked for.
    native = wf.make_wan_state_dict()
    td = wf.to_turbodiffusion_quant(native) if quant else wf.to_turbodiffusion(native)
    wf.save_pth(td, comfy.dir / "c.pth")
    seen = {}
    real = comfy.sd.load_diffusion_model_state_dict

    def spy(sd, model_options={}, metadata=None):
        seen.update({k: v.dtype for k, v in sd.items()})
        return real(sd, model_options, metadata)
    monkeypatch.setattr(comfy.sd, "load_diffusion_model_state_dict", spy)
    N.SLADiffusionModelLoader().load("c.pth", choice)
    assert seen["blocks.0.self_attn.q.weight"] == dtype and seen["blocks.1.ffn.0.weight"] == dtype
    assert seen["blocks.0.norm3.weight"].itemsize >= 2   # fp8 only for Linear weight matrices


def test_loader_error_on_non_wan_file(comfy):
    import comfyui_sla.sla.checkpoint as ck
    torch.save({"foo.weight": torch.zeros(2, 2)}, comfy.dir / "other.pth")
    with pytest.raises(ck.CheckpointError):
        N.SLADiffusionModelLoader().load("other.pth", "default")


def test_weights_loader_on_stock_model(comfy, caplog):
    name, native = write_turbo(comfy, proj_l_blocks=[0, 2])
    sd = {k: v for k, v in native.items() if "proj_l" not in k}
    stock = comfy.sd.load_diffusion_model_state_dict(sd)   # what UNETLoader returns
    with caplog.at_level(logging.WARNING):
        m = N.SLAWeightsLoader().load(stock, name)[0]
    assert "optimized_attention_override" not in stock.model_options["transformer_options"]
    s = runtime(m).settings
    weights = runtime(m).weights
    assert weights.blocks == (0, 2) and s.keep_ratio == 0.10
    assert any("blocks 1" in r.message or "blocks 1 " in r.message or "1 have none" in r.message
               for r in caplog.records if r.levelno == logging.WARNING)
    configured = apply_node(stock, keep=0.2)          # ApplySLA first, weights after: settings kept
    m2 = N.SLAWeightsLoader().load(configured, name)[0]
    assert runtime(m2).settings.keep_ratio == 0.2 and runtime(m2).weights.blocks == weights.blocks
    sample(comfy, m2)
    assert runtime(m2).stats.linear_blocks == {0, 2} and runtime(m2).stats.sparse_only_blocks == {1}


def test_weights_loader_rejects_head_size_mismatch(comfy):
    name, _ = write_turbo(comfy, name="w.safetensors", fmt="safetensors")
    native = wf.make_wan_state_dict(proj_l=False)
    stock = comfy.sd.load_diffusion_model_state_dict(native)
    stock.model.diffusion_model.blocks[0].self_attn.head_dim = 64   # a model whose heads are 64 wide
    with pytest.raises(ValueError, match=r"blocks\.0\.self_attn\.attn_op\.local_attn\.proj_l\.weight.*64"):
        N.SLAWeightsLoader().load(stock, name)


def test_apply_sla_node_on_stock_model_is_training_free(comfy, caplog):
    stock = comfy.sd.load_diffusion_model_state_dict(wf.make_wan_state_dict(proj_l=False))
    m = apply_node(stock, keep=0.4, dense="1", start=0.0, end=1.0)
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m)
    st = runtime(m).stats
    assert st.sparse == 2 * 2 and st.dense[R.R_DENSE_BLOCK] == 2 and not st.linear_blocks
    assert any("not fine-tuned for SLA" in r.message for r in caplog.records)
    off = apply_node(m, enabled=False)
    torch.testing.assert_close(sample(comfy, off), sample(comfy, stock))
    with pytest.raises(ValueError, match="'x'"):
        apply_node(stock, dense="x")


def test_comfyui_without_attention_override_is_refused(comfy, monkeypatch):
    """ComfyUI < 0.3.60 has no per-model attention override: the nodes refuse with the minimum version instead of
    silently running dense."""
    import comfy.ldm.modules.attention as attention
    name, _ = write_turbo(comfy)
    stock = comfy.sd.load_diffusion_model_state_dict(wf.make_wan_state_dict(proj_l=False))
    monkeypatch.delattr(attention, "wrap_attn")
    for run in (lambda: N.SLADiffusionModelLoader().load(name, "default"), lambda: apply_node(stock),
                lambda: N.SLAWeightsLoader().load(stock, name)):
        with pytest.raises(RuntimeError, match=r"needs ComfyUI 0\.3\.60 or newer"):
            run()


def test_example_inputs_are_copied_once_and_never_overwritten(tmp_path):
    from comfyui_sla.nodes import comfy_bridge
    names = sorted(os.listdir(comfy_bridge.EXAMPLE_INPUTS))
    assert "sla_example_surfing_cat.png" in names
    target = tmp_path / "input"
    assert comfy_bridge.install_example_inputs(target=str(target)) == names
    assert sorted(os.listdir(target)) == names
    (target / names[0]).write_bytes(b"the user's own file")
    assert comfy_bridge.install_example_inputs(target=str(target)) == []   # present: left alone
    assert (target / names[0]).read_bytes() == b"the user's own file"
    (tmp_path / "file.txt").write_text("a file where the folder would be")
    assert comfy_bridge.install_example_inputs(target=str(tmp_path / "file.txt" / "x")) == []  # never raises
