"""The patch installed on a ModelPatcher, run through the ComfyUI stand-in (tests/stubs): both block-loop
generations (with and without transformer_options["block_index"]), clone isolation, chaining, run logging."""
import logging

import pytest
import torch

import stubs
from comfyui_sla.sla.runtime import stats as R
from comfyui_sla.sla.runtime.weights import ProjLWeights
from comfyui_sla.sla.runtime.settings import SLASettings

TOKENS, CTX, DIM = 300, 20, 256


@pytest.fixture
def comfy():
    with stubs.activated():
        import comfy.model_base
        import comfy.model_patcher
        import comfy.samplers
        from comfy.ldm.wan import model as wan
        from comfyui_sla.nodes import comfy_bridge
        yield type("C", (), dict(mp=comfy.model_patcher, base=comfy.model_base, samplers=comfy.samplers, wan=wan,
                                 bridge=comfy_bridge))


def make_model(c, legacy=False, seed=0, layers=3):
    torch.manual_seed(seed)
    cls = c.wan.WanModelLegacy if legacy else c.wan.WanModel
    dm = cls(dim=DIM, num_heads=2, num_layers=layers).eval()
    return c.mp.ModelPatcher(c.base.WAN21(dm), torch.device("cpu"), torch.device("cpu"))


def sample(c, model, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    guider = c.samplers.CFGGuider(model)
    guider.set_conds(torch.randn(2, CTX, DIM, generator=g))
    noise = torch.randn(2, TOKENS, DIM, generator=g)
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), None, torch.linspace(1.0, 0.0, steps + 1))


def runtime(model):
    return model.model_options["transformer_options"]["optimized_attention_override"].sla_patch


def weights(blocks=(0, 1, 2), scale=0.05, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {i: (torch.randn(128, 128, generator=g) * scale, torch.randn(128, generator=g) * scale) for i in blocks}


@pytest.mark.parametrize("legacy", [False, True])
def test_input_model_untouched_and_block_patch_only_where_needed(comfy, legacy):
    base = make_model(comfy, legacy)
    before = sample(comfy, base)
    m = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=0.3))
    assert base.model_options == {"transformer_options": {}} and base.wrappers == {}
    to = m.model_options["transformer_options"]
    assert ("patches_replace" in to) == legacy
    assert m.model_options["sla"]["keep_ratio"] == 0.3 and "sla" not in to
    after = sample(comfy, m)
    assert not torch.allclose(before, after, atol=1e-4)
    torch.testing.assert_close(sample(comfy, base), before)  # still unpatched


@pytest.mark.parametrize("legacy", [False, True])
def test_keep_one_without_proj_l_equals_unpatched_model(comfy, legacy):
    base = make_model(comfy, legacy)
    m = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=1.0))
    torch.testing.assert_close(sample(comfy, m), sample(comfy, base), rtol=1e-4, atol=1e-4)
    assert runtime(m).stats.sparse == 4 * 3   # steps x blocks, every self-attention call went through SLA


@pytest.mark.parametrize("legacy", [False, True])
def test_block_index_drives_proj_l_and_dense_blocks(comfy, legacy, caplog):
    base = make_model(comfy, legacy)
    m = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=0.4, dense_blocks="1"),
                               weights=ProjLWeights(weights()))
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m)
    st = runtime(m).stats
    assert st.linear_blocks == {0, 2} and st.sparse == 4 * 2
    assert st.dense[R.R_DENSE_BLOCK] == 4 and st.dense[R.R_CROSS] == 4 * 3 and R.R_NO_INDEX not in st.dense
    line = [r.message for r in caplog.records if r.message.startswith("SLA run:")]
    assert len(line) == 1 and "linear branch (proj_l) on blocks 0, 2" in line[0] and "dense_blocks 4" in line[0]


def test_proj_l_changes_the_result(comfy):
    base = make_model(comfy)
    zero = ProjLWeights({i: (torch.zeros(128, 128), torch.zeros(128)) for i in range(3)})
    nonzero = ProjLWeights(weights(scale=0.5))
    a = sample(comfy, comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=1.0), weights=zero))
    b = sample(comfy, comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=1.0), weights=nonzero))
    torch.testing.assert_close(a, sample(comfy, base), rtol=1e-4, atol=1e-4)
    assert (a - b).abs().max() > 1e-3


def test_two_clones_keep_their_own_settings(comfy):
    base = make_model(comfy)
    high = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=0.25))
    low = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=1.0, enabled=True))
    lora_after = high.clone()   # e.g. a LoRA loader after ApplySLA: same patch, same settings
    sample(comfy, high)
    sample(comfy, low)
    assert runtime(high).stats.realised_keep == pytest.approx(0.2)  # floor(0.25 * 5 key blocks) / 5
    assert runtime(low).stats.realised_keep == pytest.approx(1.0)
    assert runtime(lora_after) is runtime(high)
    assert runtime(high).settings.keep_ratio == 0.25 and runtime(low).settings.keep_ratio == 1.0
    assert high.model_options["sla"]["keep_ratio"] == 0.25


def test_existing_override_is_chained_not_stacked(comfy):
    seen = []

    def other_pack(func, *args, **kwargs):
        seen.append(args[1].shape[1])
        return func(*args, **kwargs)

    base = make_model(comfy)
    base.model_options["transformer_options"]["optimized_attention_override"] = other_pack
    m1 = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0))
    m2 = comfy.bridge.apply_sla(m1, SLASettings(min_tokens=0, keep_ratio=0.5))  # re-configure
    ov = m2.model_options["transformer_options"]["optimized_attention_override"]
    assert ov.sla_patch.previous is other_pack
    sample(comfy, m2, steps=1)
    assert seen == [CTX] * 3   # cross-attention of each block, self-attention taken by SLA
    assert len(m2.get_wrappers("outer_sample", comfy.bridge.WRAPPER_KEY)) == 1


def test_existing_double_block_patch_still_runs_on_legacy(comfy):
    calls = []

    def cache_patch(args, extra):
        calls.append(args["transformer_options"].get("block_index"))
        return extra["original_block"](args)

    base = make_model(comfy, legacy=True)
    base.set_model_patch_replace(cache_patch, "dit", "double_block", 1)
    m = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0))
    m = comfy.bridge.apply_sla(m, SLASettings(min_tokens=0, keep_ratio=0.2))  # patches not stacked twice
    sample(comfy, m, steps=2)
    assert calls == [1, 1]


def test_warning_when_patch_never_invoked(comfy, caplog):
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0))
    m.model_options["transformer_options"]["optimized_attention_override"] = lambda func, *a, **k: func(*a, **k)
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m, steps=1)
    # the replacing override is named in the run report instead of a silent dense run
    assert any(r.levelno == logging.WARNING and "SLA did not run" in r.message and "replaced its attention" in
               r.message and "<lambda>" in r.message for r in caplog.records)


def test_warning_when_everything_ran_dense(comfy, caplog):
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=4096))
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m, steps=1)
    msg = [r for r in caplog.records if r.message.startswith("SLA run:")]
    assert msg[0].levelno == logging.WARNING and "below min_tokens 3" in msg[0].message


def test_half_outside_the_window_is_info_not_warning(comfy, caplog):
    # A Wan2.2 high-noise half that lies wholly before start_percent is dense by design.
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, start_percent=0.99))
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m, steps=2)
    msg = [r for r in caplog.records if r.message.startswith("SLA run:")]
    assert "outside start/end" in msg[0].message and "0 sparse" in msg[0].message
    assert msg[0].levelno == logging.INFO


def test_window_follows_model_sampling_patched_after_apply(comfy):
    from comfy.model_sampling import ModelSamplingDiscreteFlow
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, start_percent=0.0, end_percent=0.5))
    assert runtime(m).window == pytest.approx((999999999.9, 0.5))
    shifted = m.clone()   # ModelSamplingSD3(shift=5) after ApplySLA
    ms = ModelSamplingDiscreteFlow(shift=5.0)
    shifted.add_object_patch("model_sampling", ms)
    sample(comfy, shifted, steps=4)
    lo = ms.percent_to_sigma(0.5)
    assert runtime(shifted).run.window[1] == pytest.approx(lo)
    # sigmas 1.0, 0.75, 0.5, 0.25 against 0.833: one step in the window, three dense (x 3 blocks)
    assert runtime(shifted).stats.sparse == 3 and runtime(shifted).stats.dense[R.R_WINDOW] == 9


def test_non_wan_model_is_rejected(comfy):
    mp = comfy.mp.ModelPatcher(comfy.base.BaseModel(torch.nn.Linear(2, 2)), "cpu", "cpu")
    with pytest.raises(ValueError, match="Wan video models.*Linear"):
        comfy.bridge.apply_sla(mp, SLASettings())


def test_block_index_detection_on_real_comfyui_sources():
    """Reads the real ComfyUI checkouts when present (they are git-ignored: skipped on CI)."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / ".comfy"
    found = {}
    for version in ("comfy-0.3.64", "comfy-0.8.0"):
        f = root / version / "comfy" / "ldm" / "wan" / "model.py"
        if not f.exists():
            continue
        tree = ast.parse(f.read_text())
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WanModel")
        fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward_orig")
        src = ast.get_source_segment(f.read_text(), fn)
        found[version] = '"block_index"' in src
    if not found:
        pytest.skip("no ComfyUI checkout in .comfy/")
    assert found.get("comfy-0.3.64", False) is False and found.get("comfy-0.8.0", True) is True
