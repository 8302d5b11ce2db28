"""Exact chaining (ComfyUI stand-in): every attention call SLA does not run sparse reaches the override installed
before it (or ComfyUI's function) with ComfyUI's own arguments, transformer_options included, in eager and under
torch.compile with zero recompiles; SLA placed before and after another override."""
import pytest
import torch

import stubs
from compiled_model import compiled
from comfyui_sla.sla.runtime.settings import SLASettings

TOKENS, CTX, DIM, LAYERS = 300, 20, 256, 2
def CUSTOM():  # another pack's entry in transformer_options (not a scalar; a function survives clone's deepcopy)
    return None


@pytest.fixture
def comfy():
    with stubs.activated():
        import comfy.model_base
        import comfy.model_patcher
        import comfy.samplers
        from comfy.ldm.wan import model as wan
        from comfyui_sla.nodes import comfy_bridge
        torch._dynamo.reset()
        yield type("C", (), dict(mp=comfy.model_patcher, base=comfy.model_base, samplers=comfy.samplers, wan=wan,
                                 bridge=comfy_bridge))
        torch._dynamo.reset()


def make_model(c):
    torch.manual_seed(0)
    dm = c.wan.WanModel(dim=DIM, num_heads=2, num_layers=LAYERS).eval()
    m = c.mp.ModelPatcher(c.base.WAN21(dm), torch.device("cpu"), torch.device("cpu"))
    m.model_options.setdefault("transformer_options", {})["other_pack"] = CUSTOM
    return m


def sample(c, model, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    guider = c.samplers.CFGGuider(model)
    guider.set_conds(torch.randn(2, CTX, DIM, generator=g))
    noise = torch.randn(2, TOKENS, DIM, generator=g)
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), None, torch.linspace(1.0, 0.0, steps + 1))


def recording_override(log):
    """An override of another pack that reads what ComfyUI passes (KeyError when something is missing)."""
    def other(func, *args, **kwargs):
        to = kwargs["transformer_options"]
        q, k = args[0], args[1]
        if k.shape == q.shape:  # self-attention: record what we were given
            log.append((to["block_index"], to["total_blocks"], round(float(to["sigmas"][0]), 4),
                        len(to["sample_sigmas"]), to["other_pack"] is CUSTOM, tuple(sorted(kwargs)),
                        len(args)))
        return func(*args, **kwargs)
    return other


def sage3_style(func, *args, **kwargs):
    """ComfyUI's Sage3 pattern: dense on the first and last step, found from sigmas / sample_sigmas, else a fast
    path (here: the same attention, halved, so the test can see which branch ran)."""
    to = kwargs["transformer_options"]
    sample_sigmas, sigmas = to["sample_sigmas"], to["sigmas"]
    step = int(torch.isclose(sample_sigmas, sigmas[0]).nonzero()[0])
    out = func(*args, **kwargs)
    return out if step in (0, len(sample_sigmas) - 2) else out * 0.5


def with_override(model, fn):
    m = model.clone()
    m.model_options["transformer_options"]["optimized_attention_override"] = fn
    return m


SETTINGS = SLASettings(min_tokens=0, keep_ratio=0.4, start_percent=0.3, dense_blocks="1")


def test_previous_override_gets_comfyuis_call_for_every_dense_call(comfy):
    # Reference: the other pack alone. It sees every self-attention call; SLA must leave it exactly the calls it
    # does not run sparse (block 1 always, block 0 outside the window), each with what ComfyUI passed.
    alone = []
    sample(comfy, with_override(make_model(comfy), recording_override(alone)))
    seen = []
    m = comfy.bridge.apply_sla(with_override(make_model(comfy), recording_override(seen)), SETTINGS)
    sample(comfy, m)
    st = m.model_options["transformer_options"]["optimized_attention_override"].sla_patch.stats
    assert st.sparse > 0 and len(seen) == st.dense["dense_blocks"] + st.dense["outside start/end"]
    assert set(seen) <= set(alone) and seen   # every record is one the other pack also sees without SLA
    assert all(r[1] == LAYERS and r[4] for r in seen)


def test_chaining_is_the_same_under_compile_with_zero_recompiles(comfy):
    seen = []
    m = comfy.bridge.apply_sla(with_override(make_model(comfy), recording_override(seen)), SETTINGS)
    eager_out = sample(comfy, m)
    eager_seen = list(seen)
    seen.clear()
    counter, restore = compiled(m)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            outs = [sample(comfy, m), sample(comfy, m, seed=1)]
            m2 = comfy.bridge.apply_sla(m, SETTINGS.replace(keep_ratio=0.7))  # other settings, same graph
            sample(comfy, m2)
    finally:
        restore()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[0], eager_out, atol=1e-5, rtol=1e-5)
    assert seen[:len(eager_seen)] == eager_seen   # the compiled run hands over the same calls, the same options
    assert len(seen) == 3 * len(eager_seen)


@pytest.mark.parametrize("compile_model", [False, True])
def test_sage3_style_override_before_sla(comfy, compile_model):
    m = comfy.bridge.apply_sla(with_override(make_model(comfy), sage3_style), SETTINGS)
    alone = sample(comfy, with_override(make_model(comfy), sage3_style))
    restore = lambda: None  # noqa: E731
    if compile_model:
        _counter, restore = compiled(m)
    try:
        out = sample(comfy, m)
    finally:
        restore()
    assert torch.isfinite(out).all() and not torch.allclose(out, alone)  # SLA ran on some calls, no KeyError


def test_sla_before_another_override_that_wraps_it(comfy):
    # A node applied after ApplySLA that chains to what was there (ours): SLA still runs, and the run is not
    # reported as replaced.
    m = comfy.bridge.apply_sla(make_model(comfy), SETTINGS)
    ours = m.model_options["transformer_options"]["optimized_attention_override"]
    calls = []

    def later(func, *args, **kwargs):
        calls.append(1)
        return ours(func, *args, **kwargs)

    wrapped = with_override(m, later)
    ref = sample(comfy, m)
    out = sample(comfy, wrapped)
    torch.testing.assert_close(out, ref)
    assert calls and ours.sla_patch.stats.sparse > 0 and ours.sla_patch.run.replaced_by is not None


def test_a_replacing_override_is_reported(comfy, caplog):
    import logging
    m = comfy.bridge.apply_sla(make_model(comfy), SETTINGS, node_id="7")
    reports = []
    ours = m.model_options["transformer_options"]["optimized_attention_override"]
    ours.sla_patch.report = reports.append

    def backend_node(func, *args, **kwargs):  # e.g. Model Attention Backend: overwrites, never calls ours
        return func(*args, **kwargs)

    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        sample(comfy, with_override(m, backend_node))
    assert reports and "SLA did not run" in reports[0] and "backend_node" in reports[0]
