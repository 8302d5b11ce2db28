"""A patched model under torch.compile (ComfyUI stand-in): one compile, then no recompiles across the steps of a
run, across runs and when differently configured clones alternate; outputs and run counters equal eager."""
import logging

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import stubs
from compiled_model import compiled
from comfyui_sla.sla.runtime.settings import SLASettings

TOKENS, CTX, DIM, LAYERS = 300, 20, 256, 2


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


def make_model(c, legacy=False):
    torch.manual_seed(0)
    cls = c.wan.WanModelLegacy if legacy else c.wan.WanModel
    dm = cls(dim=DIM, num_heads=2, num_layers=LAYERS).eval()
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


def summary(rt):
    st = rt.stats
    return st.calls, st.sparse, dict(st.dense), round(st.realised_keep or 0, 6), dict(st.backends)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("legacy", [False, True])
def test_one_compile_across_steps_and_runs_with_a_window(comfy, backend, legacy):
    settings = SLASettings(min_tokens=0, keep_ratio=0.4, start_percent=0.3, end_percent=0.8, dense_blocks="1")
    m = comfy.bridge.apply_sla(make_model(comfy, legacy), settings)
    eager_out = sample(comfy, m)
    eager_summary = summary(runtime(m))
    counter, restore = compiled(m, backend)
    try:
        outs = [sample(comfy, m) for _ in range(2)]
    finally:
        restore()
    assert counter.frame_count == 1, f"{counter.frame_count} compiles (graph breaks or recompiles)"
    for out in outs:
        torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    assert summary(runtime(m)) == eager_summary
    st = runtime(m).stats
    assert st.sparse > 0 and st.dense["outside start/end"] > 0 and st.dense["dense_blocks"] > 0
    assert st.dense["cross-attention"] == 4 * LAYERS   # counted inside the compiled model too


def test_alternating_clones_compile_once_each_and_keep_their_settings(comfy):
    base = make_model(comfy)
    a = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=0.2))
    b = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=1.0))
    ref_a, ref_b = sample(comfy, a), sample(comfy, b)
    counter, restore = compiled(a, "eager")   # a and b share the BaseModel: one compiled module for both
    try:
        for _ in range(2):
            torch.testing.assert_close(sample(comfy, a), ref_a, atol=1e-5, rtol=1e-5)
            assert runtime(a).stats.realised_keep == pytest.approx(0.2)
            torch.testing.assert_close(sample(comfy, b), ref_b, atol=1e-5, rtol=1e-5)
            assert runtime(b).stats.realised_keep == pytest.approx(1.0)
    finally:
        restore()
    assert counter.frame_count == 1  # one graph for both clones: nothing of the settings is guarded


def test_guards_dropped_on_transformer_options_still_route_per_clone(comfy):
    # ComfyUI 0.8's TorchCompileModel drops every guard whose source mentions transformer_options: a graph
    # traced for one clone is then reused for the other, and only run-time inputs may tell them apart.
    base = make_model(comfy)
    a = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, keep_ratio=0.2))
    b = comfy.bridge.apply_sla(base, SLASettings(min_tokens=0, enabled=False))
    ref_a, ref_b = sample(comfy, a), sample(comfy, b)
    counter = CompileCounterWithBackend("eager")
    eager = base.model.diffusion_model
    base.model.diffusion_model = torch.compile(
        eager, backend=counter,
        options={"guard_filter_fn": lambda entries: ["transformer_options" not in e.name for e in entries]})
    try:
        torch.testing.assert_close(sample(comfy, a), ref_a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sample(comfy, b), ref_b, atol=1e-5, rtol=1e-5)
        assert runtime(b).stats.sparse == 0 and runtime(b).stats.dense["disabled"] == 4 * LAYERS
    finally:
        base.model.diffusion_model = eager


def test_error_sends_the_rest_of_the_run_dense_and_the_next_run_retries(comfy, monkeypatch, caplog):
    from comfyui_sla.sla.runtime import sparse_call as SC
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, keep_ratio=0.4))
    real, calls = SC.sparse_linear_attention, []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise torch.cuda.OutOfMemoryError("transient")
        return real(*a, **kw)

    monkeypatch.setattr(SC, "sparse_linear_attention", flaky)
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        sample(comfy, m, steps=3)
        first = summary(runtime(m))
        sample(comfy, m, steps=3)
        second = summary(runtime(m))
    # run 1: 3 sparse calls, the 4th fails; that shape then runs dense for the rest of the run (6 calls in all)
    assert first[1] == 3 and first[2]["error"] == 3
    # run 2: fault-free, every self-attention call sparse again
    assert second[1] == 3 * LAYERS and "error" not in second[2]
    assert "the next run tries again" in caplog.text


@pytest.mark.parametrize("schedule", ["0.6, 0.4, 0.2", "1.0 -> 0.2"])
def test_keep_schedule_and_capture_under_compile_compile_once(comfy, schedule):
    # The keep changes every step and a capture is armed in the second run: both are read at run time (model-call
    # wrapper, inside the op), so the compiled model is traced once and its per-step keeps equal eager.
    from comfyui_sla.sla.runtime import capture
    settings = SLASettings(min_tokens=0, keep_schedule=schedule)
    m = comfy.bridge.apply_sla(make_model(comfy), settings, node_id="4")
    eager_out = sample(comfy, m)
    eager_keeps = runtime(m).stats.step_keeps()
    assert len({k for _s, k in eager_keeps}) >= 3
    counter, restore = compiled(m, "aot_eager")
    try:
        out1 = sample(comfy, m)
        capture.arm("map", 1, 0, 2)
        out2 = sample(comfy, m)
    finally:
        restore()
        capture.disarm("map")
    assert counter.frame_count == 1, f"{counter.frame_count} compiles (graph breaks or recompiles)"
    for out in (out1, out2):
        torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    assert runtime(m).stats.step_keeps() == eager_keeps
    cap = runtime(m).captures.get("map")
    assert cap is not None and cap.q is not None and cap.keep == pytest.approx(
        dict(eager_keeps)[2], abs=0.2)  # the keep asked at step 2 (realised keep is its floor on 5 blocks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor on a GPU")
def test_inductor_on_the_gpu_compiles_once_and_matches_eager(comfy):
    settings = SLASettings(min_tokens=0, keep_ratio=0.4, start_percent=0.3, end_percent=0.8, dense_blocks="1")
    m = comfy.bridge.apply_sla(make_model(comfy), settings)
    m.model.to("cuda", torch.bfloat16)
    m.load_device = torch.device("cuda")

    def run():
        g = torch.Generator().manual_seed(0)
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds(torch.randn(2, CTX, DIM, generator=g).to("cuda", torch.bfloat16))
        noise = torch.randn(2, 4096, DIM, generator=g).to("cuda", torch.bfloat16)
        with torch.no_grad():
            return guider.sample(noise, torch.zeros_like(noise), None,
                                 torch.linspace(1.0, 0.0, 5, device="cuda")).float()

    eager = run()
    eager_summary = summary(runtime(m))
    counter, restore = compiled(m, "inductor")
    try:
        outs = [run() for _ in range(2)]
    finally:
        restore()
    assert counter.frame_count == 1
    assert summary(runtime(m)) == eager_summary and runtime(m).stats.backends.get("triton", 0) > 0
    for out in outs:
        assert ((out - eager).norm() / eager.norm()).item() < 2e-2
