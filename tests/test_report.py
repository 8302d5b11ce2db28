"""The run report on the ComfyUI stand-in: keep_schedule parsing and per-step keep, the run report sent to the node,
and the attention-map capture (its mask pixels equal sla.mask's mask for the captured q/k)."""
import re
import sys
import types

import pytest
import torch

import stubs
from comfyui_sla.sla.attention_map import block_mask
from comfyui_sla.sla.runtime import schedule as S
from comfyui_sla.sla.runtime.settings import SLASettings

TOKENS, CTX, DIM, LAYERS = 300, 20, 256, 2   # 300 tokens: 5 key blocks of 64


# ---------------------------------------------------------------------------------------------- parsing

def test_parse_forms():
    assert S.parse_keep_schedule("") is None and S.parse_keep_schedule("  ") is None
    s = S.parse_keep_schedule("0.3, 0.15 0.1")
    assert s.values == (0.3, 0.15, 0.1) and not s.linear
    assert [s.keep_at(i, 0) for i in range(5)] == [0.3, 0.15, 0.1, 0.1, 0.1]  # the last value holds
    lin = S.parse_keep_schedule("0.3->0.1")
    assert lin.linear and lin.keep_at(0, 0.0) == 0.3 and lin.keep_at(9, 1.0) == pytest.approx(0.1)
    assert lin.keep_at(0, 0.5) == pytest.approx(0.2)
    assert SLASettings(keep_schedule=" 0.3 ,0.15").keep_schedule == "0.3, 0.15"


@pytest.mark.parametrize("text,token", [("0.3, x", "'x'"), ("0.3, 0", "'0'"), ("1.5", "'1.5'"),
                                        ("0.3 -> 0.2 -> 0.1", "'0.1'"), ("0.3 -> abc", "'abc'")])
def test_bad_schedule_names_the_token(text, token):
    with pytest.raises(ValueError, match=token):
        S.parse_keep_schedule(text)
    from comfyui_sla.nodes.sla_nodes import ApplySLA
    msg = ApplySLA.VALIDATE_INPUTS(dense_blocks="", keep_schedule=text)
    assert isinstance(msg, str) and token in msg and "keep_schedule" in msg
    assert ApplySLA.VALIDATE_INPUTS(dense_blocks="", keep_schedule="0.3 -> 0.1") is True


def test_step_counter_continues_a_split_schedule():
    c = S.StepCounter([1.0, 0.9, 0.8, 0.5, 0.0])
    assert [c.step(x) for x in (1.0, 0.9, 0.85, 0.5)] == [0, 1, 1, 3]  # an intermediate sigma stays on its step
    c = S.StepCounter([1.0, 0.9, 0.8])      # a first half: steps 0-1 ...
    c = S.StepCounter([0.8, 0.5, 0.0])      # ... and the second half starting where it ended: steps 2-3
    assert [c.step(x) for x in (0.8, 0.5)] == [2, 3]
    c = S.StepCounter([1.0, 0.5, 0.0])      # a fresh run starts at 0 again
    assert c.step(1.0) == 0


def test_sigma_to_percent_inverts_percent_to_sigma():
    with stubs.activated():
        from comfy.model_sampling import ModelSamplingDiscreteFlow
        ms = ModelSamplingDiscreteFlow(shift=5.0)
        for p in (0.1, 0.4, 0.77):
            assert S.sigma_to_percent(ms.percent_to_sigma(p), ms.percent_to_sigma) == pytest.approx(p, abs=1e-4)


# ---------------------------------------------------------------------------------------------- sampling

@pytest.fixture
def comfy(monkeypatch):
    sent = []
    server = types.ModuleType("server")   # stands in for ComfyUI's server module: records send_progress_text

    class PromptServer:
        instance = None

        def send_progress_text(self, text, node_id, sid=None):
            sent.append((node_id, text))

    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer
    monkeypatch.setitem(sys.modules, "server", server)
    with stubs.activated():
        import comfy.model_base
        import comfy.model_patcher
        import comfy.samplers
        from comfy.ldm.wan import model as wan
        from comfyui_sla.nodes import comfy_bridge
        yield type("C", (), dict(mp=comfy.model_patcher, base=comfy.model_base, samplers=comfy.samplers, wan=wan,
                                 bridge=comfy_bridge, sent=sent))


def make_model(c):
    torch.manual_seed(0)
    dm = c.wan.WanModel(dim=DIM, num_heads=2, num_layers=LAYERS).eval()
    return c.mp.ModelPatcher(c.base.WAN21(dm), torch.device("cpu"), torch.device("cpu"))


def sample(c, model, sigmas=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    guider = c.samplers.CFGGuider(model)
    guider.set_conds(torch.randn(2, CTX, DIM, generator=g))
    noise = torch.randn(2, TOKENS, DIM, generator=g)
    sigmas = torch.linspace(1.0, 0.0, 5) if sigmas is None else sigmas
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), None, sigmas)


def runtime(model):
    return model.model_options["transformer_options"]["optimized_attention_override"].sla_patch


def test_per_step_schedule_and_report_reach_the_node(comfy):
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, keep_schedule="0.5, 0.25"),
                               node_id="7")
    sample(comfy, m)
    rt = runtime(m)
    # 5 key blocks: keep 0.5 -> 2 blocks (0.4), keep 0.25 -> 1 block (0.2); the last value holds
    assert [round(k, 6) for _s, k in rt.stats.step_keeps()] == [0.4, 0.2, 0.2, 0.2]
    assert rt.stats.sparse == 4 * LAYERS
    assert len(comfy.sent) == 1 and comfy.sent[0][0] == "7"
    text = comfy.sent[0][1]
    assert "8 sparse / 0 dense" in text and "per step 0.40 0.20 0.20 0.20" in text
    assert re.search(r"attention \d+\.\dx (faster|slower) \(.* vs ~.* dense\), step ~\d+\.\dx \(est\.\) "
                     r"\(CPU timing\)$", text, re.M), text
    assert re.search(r"\nsampling run [\d.]+ m?s \(4 model calls, [\d.]+ m?s each\)$", text), text


def test_report_arithmetic():
    from comfyui_sla.sla.runtime.stats import RunStats, report_text
    st = RunStats()
    st.sparse, st.keep_sum = 96, 9.6
    st.dense["outside start/end"] = 24
    st.dense["cross-attention"] = 120   # not self-attention: not in the counts
    text = report_text(st, SLASettings(), {"attn_ms": 400.0, "dense_ms": 2440.0, "model_ms": 4000.0,
                                           "cpu": False})
    # other = 4000 - 400 = 3600 ms; step = (3600 + 2440) / (3600 + 400) = 1.51
    assert text.split("\n") == ["96 sparse / 24 dense self-attention calls (dense: outside start/end 24)",
                                 "realised keep 0.100 (sparsity 90%)",
                                 "attention 6.1x faster (400 ms vs ~2.4 s dense), step ~1.5x (est.)"]
    assert report_text(st, SLASettings(), None).count("\n") == 1   # no timing: no timing line
    # the whole sampling run as measured, beside attention's share
    text = report_text(st, SLASettings(), None, {"seconds": 9.6, "model_calls": 8})
    assert text.split("\n")[-1] == "sampling run 9.6 s (8 model calls, 1.2 s each)"


def test_linear_schedule_follows_sigma_across_a_split(comfy):
    settings = SLASettings(min_tokens=0, keep_schedule="1.0 -> 0.2")
    whole = comfy.bridge.apply_sla(make_model(comfy), settings)
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0])
    sample(comfy, whole, sigmas)
    full = [k for _s, k in runtime(whole).stats.step_keeps()]
    assert full == sorted(full, reverse=True) and full[0] == 1.0 and full[-1] < full[1]
    split = comfy.bridge.apply_sla(make_model(comfy), settings)
    sample(comfy, split, sigmas[:3])
    first = runtime(split).stats.step_keeps()
    sample(comfy, split, sigmas[2:])
    second = runtime(split).stats.step_keeps()
    assert [s for s, _k in first + second] == [0, 1, 2, 3]   # the second half continues the step count
    assert [k for _s, k in first + second] == full            # and both halves agree with the unsplit run


def test_no_report_outside_comfyui_server(comfy, monkeypatch):
    monkeypatch.setattr(sys.modules["server"].PromptServer, "instance", None)
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0), node_id="3")
    sample(comfy, m)   # no server instance: silent, the run still completes
    assert comfy.sent == []


def test_attention_map_mask_pixels_equal_the_sla_mask(comfy):
    from comfyui_sla.nodes.sla_nodes import SLAAttentionMap
    from comfyui_sla.sla.runtime import capture
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, keep_schedule="0.6, 0.4"),
                               node_id="2")
    untouched = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0))
    sample(comfy, untouched)
    assert runtime(untouched).run.captures is None and not runtime(untouched).captures  # nothing armed
    assert SLAAttentionMap.VALIDATE_INPUTS(block=1, head=1, step=2, unique_id="9") is True   # arms
    sample(comfy, m)
    cap = runtime(m).captures["9"]
    assert cap.q.device.type == "cpu"  # kept on the CPU until drawn
    image, grid = SLAAttentionMap().draw(m, {"samples": None}, 1, 1, 2, unique_id="9")
    assert "9" not in runtime(m).captures and capture.armed_count() == 0  # drawn: freed and disarmed
    assert cap.sparse and cap.keep == 0.4 and tuple(cap.q.shape) == (1, TOKENS, 1, DIM // 2)
    mask = block_mask(cap.q, cap.k, cap.keep, 128, 64)[0, 0]
    assert mask.shape == (3, 5) and mask.sum(-1).tolist() == [2, 2, 2]
    cell = image.shape[1] // 3
    assert image.shape == (1, 3 * cell, 5 * cell, 3) and image.dtype == torch.float32
    want = mask.float().repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    assert torch.equal(image[0, ..., 0], want)         # red channel: exactly the mask
    assert 0 <= image.min() and image.max() <= 1
    # sparsity image: 2 blocks x 4 steps, step 0 at keep 0.6 (3 of 5 blocks: sparsity 0.4), then 0.4 (0.6)
    gc = grid.shape[1] // 2
    assert grid.shape == (1, 2 * gc, 4 * gc, 3)
    assert grid[0, 0, 0, 0].item() == pytest.approx(0.4) and grid[0, 0, -1, 0].item() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="did not run again"):   # disarmed: the next draw has nothing new
        SLAAttentionMap().draw(m, {"samples": None}, 0, 0, 0, unique_id="9")


def test_run_report_node_returns_the_last_runs_report(comfy, monkeypatch, tmp_path):
    import folder_paths
    from comfyui_sla.nodes.sla_nodes import SLARunReport
    monkeypatch.setattr(folder_paths, "get_temp_directory", lambda: str(tmp_path), raising=False)
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0), node_id="3")
    assert runtime(m).last_report is None
    sampler_model = m.clone()   # the sampler's model is a clone (ModelSamplingSD3 ...): it shares the patch
    sample(comfy, sampler_model)
    (on_apply,) = [t for n, t in comfy.sent if n == "3"]
    out = SLARunReport().report(sampler_model, {"samples": None}, unique_id="12")
    assert out["result"] == (on_apply,) and out["ui"]["text"] == [on_apply]
    assert "sparse / 0 dense self-attention calls" in on_apply
    (saved,) = out["ui"]["files"]   # App mode shows a text result from a .txt file, as for core Save Text
    assert saved["type"] == "temp" and saved["subfolder"] == "" and saved["filename"].endswith(".txt")
    assert saved["display_name"] == "SLA run report"   # the frontend's label for the result
    assert (tmp_path / saved["filename"]).read_text() == on_apply + "\n"
    assert comfy.sent[-1] == ("12", on_apply)   # and on the report node itself
    # a model without SLA, and a patch whose sampler has not run: the text says so
    no_sla = SLARunReport().report(make_model(comfy), None, unique_id="12")["result"][0]
    assert "has no SLA" in no_sla
    fresh = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0))
    assert "did not run this model through SLA" in SLARunReport().report(fresh, None)["result"][0]


def test_run_report_node_without_a_temp_folder(comfy, monkeypatch):
    import folder_paths
    from comfyui_sla.nodes.sla_nodes import SLARunReport

    def no_folder():
        raise OSError("read-only")
    monkeypatch.setattr(folder_paths, "get_temp_directory", no_folder, raising=False)
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0))
    sample(comfy, m)
    out = SLARunReport().report(m, None)
    assert "files" not in out["ui"] and out["result"][0] == runtime(m).last_report
