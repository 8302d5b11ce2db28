"""The pack inside a real ComfyUI checkout, headless on the CPU (skipped unless COMFYUI_PATH is set).

    COMFYUI_PATH=/path/to/ComfyUI python3 -m pytest -q tests/integration
    COMFYUI_PATH=/path/a:/path/b ...        # several checkouts, each tested on its own

For each checkout, ``comfy_runner.py`` runs once in a subprocess (ComfyUI owns the top-level ``comfy`` and
``nodes`` modules, so it cannot share this interpreter with the vendored stand-in or another checkout): it writes a
tiny random Wan in TurboDiffusion naming with non-zero proj_l, loads the pack through ComfyUI's custom-node loader
and runs API prompts SLADiffusionModelLoader -> ApplySLA -> KSampler (plus LoRA, stock-loader and two-clone
variants) through ``execution.PromptExecutor``. The tests below compare the sampled latents.
"""
from __future__ import annotations

import os
import re
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_env  # noqa: E402

CHECKOUTS = comfy_env.checkouts_from_env()
pytestmark = pytest.mark.skipif(not CHECKOUTS, reason="COMFYUI_PATH is not set (no ComfyUI checkout to test in)")

SLA_NODES = ("SLADiffusionModelLoader", "ApplySLA", "SLAWeightsLoader", "SLAAttentionMap", "SLARunReport")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPARISON = os.path.join(REPO, "workflows", "TurboWan2.1 T2V keep comparison.json")
LATENT_SHAPE = (1, 16, 3, 16, 30)  # 240x128, 9 frames -> 360 tokens


class Run:
    def __init__(self, results: dict, work: str):
        self.results, self.work = results, work

    def scenario(self, name: str) -> dict:
        s = self.results["scenarios"].get(name)
        assert s is not None, f"scenario {name} did not run"
        assert s["status"] == "ok", f"scenario {name} failed:\n{s['error']}"
        return s

    def latent(self, scenario: str, name: str | None = None) -> torch.Tensor:
        self.scenario(scenario)
        return torch.load(os.path.join(self.work, "latents", f"{name or scenario}.pt"))

    def run_lines(self, scenario: str) -> list:
        """The pack's per-sampling-run INFO lines ('SLA run: N sparse / M dense ...')."""
        return [r["msg"] for r in self.scenario(scenario)["logs"] if r["msg"].startswith("SLA run")]


@pytest.fixture(scope="module", params=CHECKOUTS, ids=lambda p: os.path.basename(p.rstrip("/")))
def run(request, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("comfy"))
    results = comfy_env.run_runner(request.param, work, "--no-schemas", "--run-workflows", COMPARISON)
    return Run(results, work)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def sparse_calls(lines) -> int:
    counts = [int(m.group(1)) for line in lines for m in [re.search(r"(\d+) sparse", line)] if m]
    return sum(counts)


def dense_calls(lines) -> int:
    counts = [int(m.group(1)) for line in lines for m in [re.search(r"(\d+) dense", line)] if m]
    return sum(counts)


# Same-math comparisons: fp32 on the CPU, 3 sampler steps; only summation order differs (sub-quadratic dense
# attention vs the blockwise SLA path). "Differs" thresholds are orders of magnitude above that noise.
SAME = 2e-4
DIFFERENT = 1e-2


def test_pack_loads_through_custom_node_loader(run):
    r = run.results
    assert r["pack_module_loaded"], "ComfyUI's custom-node loader did not import the pack"
    assert sorted(r["pack_nodes"]) == sorted(SLA_NODES)
    for node in SLA_NODES:
        assert node in r["registered"], f"{node} not in ComfyUI's NODE_CLASS_MAPPINGS"
        assert r["registered"][node].startswith("custom_nodes."), r["registered"][node]
    assert r["display_names"]["ApplySLA"] == "Apply Sparse-Linear Attention"
    assert r["display_names"]["SLADiffusionModelLoader"] == "Load SLA Diffusion Model"
    assert r["display_names"]["SLAWeightsLoader"] == "Load SLA Weights"
    assert r["display_names"]["SLAAttentionMap"] == "SLA Attention Map"


def test_turbodiffusion_checkpoint_samples_finite_latents(run):
    x = run.latent("keep03_projl")
    assert tuple(x.shape) == LATENT_SHAPE
    assert torch.isfinite(x).all()
    assert x.abs().max() > 0
    lines = run.run_lines("keep03_projl")
    assert lines, "no 'SLA run' log line: the patch never reported a sampling run"
    # 3 steps x 3 blocks, cond and uncond batched: every self-attention call went sparse.
    assert sparse_calls(lines) == 9, lines


def test_loader_alone_is_a_complete_graph(run):
    x = run.latent("loader_defaults")
    assert tuple(x.shape) == LATENT_SHAPE and torch.isfinite(x).all()
    # The loader's defaults (min_tokens 2048) keep this 360-token latent dense, and the run log says why.
    lines = run.run_lines("loader_defaults")
    assert sparse_calls(lines) == 0 and dense_calls(lines) == 9, lines
    assert "min_tokens" in lines[0], lines


def test_keep_one_with_zero_proj_l_equals_unpatched(run):
    base = run.latent("unpatched")
    x = run.latent("keep1_zero")
    assert sparse_calls(run.run_lines("keep1_zero")) > 0  # SLA really ran, with every block kept
    assert max_diff(x, base) < SAME, max_diff(x, base)


def test_keep_below_one_changes_the_output(run):
    base = run.latent("unpatched")
    assert max_diff(run.latent("keep03_zero"), base) > DIFFERENT


def test_nonzero_proj_l_changes_the_output(run):
    base = run.latent("unpatched")
    assert max_diff(run.latent("keep1_projl"), base) > DIFFERENT
    assert max_diff(run.latent("keep03_projl"), run.latent("keep03_zero")) > DIFFERENT


def test_disabled_is_dense(run):
    assert max_diff(run.latent("disabled_projl"), run.latent("unpatched")) < SAME
    assert sparse_calls(run.run_lines("disabled_projl")) == 0


def test_lora_applies_before_and_after_apply_sla(run):
    no_lora = run.latent("keep03_projl")
    before, after = run.latent("lora_before"), run.latent("lora_after")
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    assert max_diff(before, no_lora) > DIFFERENT, "LoRA before ApplySLA had no effect"
    assert max_diff(after, no_lora) > DIFFERENT, "LoRA after ApplySLA had no effect"
    # Weight patches and the attention override commute: the order of the two nodes does not matter.
    assert max_diff(before, after) < SAME, max_diff(before, after)
    assert sparse_calls(run.run_lines("lora_before")) > 0 and sparse_calls(run.run_lines("lora_after")) > 0


def test_two_clones_keep_their_own_settings(run):
    a, b = run.latent("two_clones", "pair_keep03"), run.latent("two_clones", "pair_keep06")
    assert max_diff(a, b) > DIFFERENT, "two ApplySLA with different keep gave the same output"
    assert max_diff(a, run.latent("keep03_projl")) < SAME, "keep 0.3 clone changed when sampled beside keep 0.6"
    assert max_diff(b, run.latent("keep06_projl")) < SAME, "keep 0.6 clone changed when sampled beside keep 0.3"
    loader = run.latent("two_clones", "pair_loader")
    assert max_diff(loader, run.latent("loader_defaults")) < SAME, "ApplySLA changed its input model"
    # Three sampling runs in one prompt: 9 + 9 sparse calls from the two clones, none from the loader's own model
    # (its min_tokens 2048 keeps it dense), so no clone's settings leaked into the input model.
    lines = run.run_lines("two_clones")
    assert sorted(sparse_calls([line]) for line in lines) == [0, 9, 9], lines


def test_training_free_on_stock_loader(run):
    # Stock UNETLoader -> ApplySLA: no proj_l, i.e. the same as a zero proj_l.
    x = run.latent("training_free")
    assert max_diff(x, run.latent("keep03_zero")) < SAME
    assert any("not fine-tuned" in r["msg"] or "training-free" in r["msg"]
               for r in run.scenario("training_free")["logs"])


def test_weights_loader_on_stock_loader_equals_sla_loader(run):
    assert max_diff(run.latent("weights_loader"), run.latent("keep03_projl")) < SAME


def test_sampling_window_and_dense_blocks(run):
    x = run.latent("dense_window")
    lines = run.run_lines("dense_window")
    assert dense_calls(lines) > 0 and sparse_calls(lines) > 0, lines
    assert max_diff(x, run.latent("keep03_projl")) > DIFFERENT
    assert max_diff(x, run.latent("unpatched")) > DIFFERENT


def test_split_sampling_window_follows_sigma(run):
    # Wan2.2-style KSamplerAdvanced halves on one model: start_percent 0.4 (sigma 0.923) puts SLA exactly in
    # steps 3-4, i.e. the second half, although that half's step indices restart at 0.
    lines = run.run_lines("split_window")
    assert [(sparse_calls([line]), dense_calls([line])) for line in lines] == [(0, 6), (6, 0)], lines
    assert [(sparse_calls([line]), dense_calls([line])) for line in run.run_lines("full_window")] == [(6, 6)]
    # Split and unsplit runs of one schedule agree.
    assert max_diff(run.latent("split_window"), run.latent("full_window")) < SAME


def test_split_experts_keep_their_own_settings(run):
    lines = run.run_lines("split_experts")
    assert len(lines) == 2 and sparse_calls(lines) == 12, lines
    assert "realised keep 0.167" in lines[0] and "realised keep 0.500" in lines[1], lines
    x = run.latent("split_experts")
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("scenario,tolerance", [("bf16_model", 0.02), ("fp8_model", 0.2), ("fp8_fast_model", 0.2),
                                                ("quant_checkpoint", 0.05)])
def test_low_precision_and_quantized_checkpoints(run, scenario, tolerance):
    # bf16 / fp8 weights (loader's weight_dtype) and the -quant.pth int8-tile layout (with net. and
    # _checkpoint_wrapped_module. prefixes) sample through SLA close to the fp32 result of the same weights.
    ref = run.latent("keep03_projl")
    x = run.latent(scenario)
    assert torch.isfinite(x).all()
    assert sparse_calls(run.run_lines(scenario)) == 9
    assert max_diff(x, ref) < tolerance * ref.abs().max().item(), max_diff(x, ref)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_model_compiles_nothing_after_its_first_call_and_matches_eager(run, backend):
    tag = f"compiled_{backend}"
    lines = run.run_lines(tag)
    # Frames compiled after each model call: everything in the first call (ComfyUI's own CPU code has graph
    # breaks of its own, hence several frames), nothing later -- not as the window and dense blocks switch
    # between steps, not in the second run. Clones with other settings: at most one more compile each.
    after_call = run.results["compiles"][tag]
    assert len(after_call) == 2 * 3 and after_call[0] > 0
    assert set(after_call) == {after_call[0]}, after_call
    # Clones of one compiled model with other settings: compiles only in the first call of each distinct
    # setting (the third run goes back to the first clone: nothing new), the second at most as much as the first.
    c = run.results["compiles"][f"{tag}_clones"]
    assert len(c) == 3 * 3 and c[1:3] == [c[0]] * 2 and c[4:9] == [c[3]] * 5 and c[3] - c[0] <= c[0], c
    for name, eager in (("run1", "eager_window"), ("run2", "eager_window_seed1")):
        assert max_diff(run.latent(tag, f"{tag}_{name}"), run.latent("eager_window", eager)) < SAME
    assert max_diff(run.latent(tag, f"{tag}_keep03"), run.latent("two_clones", "pair_keep03")) < SAME
    assert max_diff(run.latent(tag, f"{tag}_keep06"), run.latent("two_clones", "pair_keep06")) < SAME
    assert max_diff(run.latent(tag, f"{tag}_keep03_again"), run.latent("eager_window", "eager_keep03_seed1")) < SAME
    # run summaries of the compiled model equal the eager ones (counting happens at run time, in the op)
    windowed = [line for line in lines if "outside start/end" in line]
    assert len(windowed) == 2 and sparse_calls(windowed) > 0 and all("dense_blocks" in line for line in windowed)
    assert windowed == [line for line in run.run_lines("eager_window") if "outside start/end" in line]


def test_int8_w8a8_loader_close_to_dequantised_loader(run):
    # Same -quant file, int8 tiles kept vs dequantised at load. On the CPU the int8 layers multiply by the weight
    # dequantised in fp32 at each call; the default loader dequantises to bf16 (the file's bias dtype) and ComfyUI
    # casts that to fp32: the two differ by bf16 rounding of the weights (2^-9 relative) only, far below the 5%
    # allowed for the -quant file against the fp32 original, so 1% of the latent's range is a tight bound.
    ref = run.latent("quant_checkpoint")
    x = run.latent("quant_int8")
    assert torch.isfinite(x).all() and sparse_calls(run.run_lines("quant_int8")) == 9
    assert max_diff(x, ref) < 1e-2 * ref.abs().max().item(), max_diff(x, ref)
    logs = [r["msg"] for r in run.scenario("quant_int8")["logs"]]
    assert any("30 Linear layers run int8 (W8A8)" in m for m in logs), logs  # 3 blocks x 10 Linears


def test_lora_on_int8_model_matches_lora_on_dequantised_model(run):
    # Requantisation puts every patched weight within half a tile step of the float result (plus bf16 rounding on
    # the reference side): the same 1% bound; and the LoRA really changed the output.
    ref, x = run.latent("quant_lora"), run.latent("quant_int8_lora")
    assert torch.isfinite(x).all()
    assert max_diff(x, ref) < 1e-2 * ref.abs().max().item(), max_diff(x, ref)
    assert max_diff(x, run.latent("quant_int8")) > DIFFERENT, "LoRA had no effect on the int8 model"


# Low-VRAM loading (forced: SLATestLowVram gives ComfyUI a 1-byte budget). On the CPU that is ComfyUI's legacy
# low-VRAM path: every cast layer offloaded, LoRA handed to the layers as per-call weight_function patches
# (dynamic VRAM's weight_lowvram_function needs a GPU: tests/test_w8a8_comfyui.py emulates it, test_w8a8_gpu.py
# runs it). The int8 layers then run the patch on the exactly dequantised weight (no requantisation), as the
# dequantised model does; what separates the two is the reference's bf16 base weights, which 3 sampler steps at
# cfg 2 amplify to ~2% of the latent's range with this LoRA (1e-3 at the weights; tests/test_w8a8_comfyui.py
# checks the layers themselves tightly), hence 5% as for the -quant file itself.
def test_lora_on_int8_model_in_low_vram_mode(run):
    lv = run.results["lowvram"]
    lora_layers = sorted(f"blocks.{i}.{n}" for i in range(3)
                         for n in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "ffn.0", "ffn.2"))
    assert lv["int8_lora"]["patched"] == lora_layers and lv["lora"]["patched"] == lora_layers, lv
    assert set(lora_layers) <= set(lv["int8_lora"]["offloaded"]), "ComfyUI did not load the model in low-VRAM mode"
    ref, x = run.latent("quant_lora"), run.latent("quant_int8_lora_lowvram")
    assert torch.isfinite(x).all() and sparse_calls(run.run_lines("quant_int8_lora_lowvram")) == 9
    assert max_diff(x, ref) < 5e-2 * ref.abs().max().item(), max_diff(x, ref)
    # ComfyUI's own cast layers give the same in both modes; the LoRA really changed the int8 model's output
    assert max_diff(run.latent("quant_lora_lowvram"), ref) < SAME
    assert max_diff(x, run.latent("quant_int8")) > 0.05 * ref.abs().max().item(), "LoRA dropped in low-VRAM mode"
    # without LoRA, low-VRAM mode changes nothing for the int8 layers
    assert lv["int8"]["patched"] == [] and set(lora_layers) <= set(lv["int8"]["offloaded"])
    assert max_diff(run.latent("quant_int8_lowvram"), run.latent("quant_int8")) < SAME


# ---------------------------------------------------------------------------------- run report, schedule, map

def node_texts(run, scenario) -> dict:
    """node id -> texts sent to it (decoded from the binary TEXT frames of the real send_progress_text)."""
    out = {}
    for nid, text in run.scenario(scenario)["node_texts"]:
        out.setdefault(nid, []).append(text)
    return out


def node_id(run, scenario, class_type) -> str:
    (nid,) = [k for k, v in run.scenario(scenario)["prompt"].items() if v["class_type"] == class_type]
    return nid


def test_run_report_reaches_the_apply_sla_node(run):
    texts = node_texts(run, "report_schedule")
    (text,) = texts[node_id(run, "report_schedule", "ApplySLA")]
    assert len(texts) == 1   # only the node that applied SLA to the sampled model
    assert text.startswith("9 sparse / 0 dense self-attention calls")
    assert re.search(r"attention \d+\.\dx (faster|slower) \(.* vs ~.* dense\), step ~\d+\.\dx \(est\.\) "
                     r"\(CPU timing\)", text), text
    # the console still has its line, and the report's short form beside it
    assert sparse_calls(run.run_lines("report_schedule")) == 9


def test_loader_reports_when_it_applied_sla_itself(run):
    texts = node_texts(run, "report_loader")
    (text,) = texts[node_id(run, "report_loader", "SLADiffusionModelLoader")]
    assert "0 sparse / 9 dense" in text and "below min_tokens 9" in text and "(all dense)" in text


def test_keep_schedule_changes_the_keep_per_step(run):
    # 6 key blocks of 64: step 0 at 0.6 keeps 3 (0.5), then 0.3 keeps 1 (0.167), the last value holding
    (text,) = node_texts(run, "report_schedule")[node_id(run, "report_schedule", "ApplySLA")]
    assert "per step 0.50 0.17 0.17" in text, text
    assert max_diff(run.latent("report_schedule"), run.latent("keep03_projl")) > DIFFERENT


def test_invalid_keep_schedule_is_rejected_naming_the_token(run):
    s = run.results["scenarios"]["invalid_schedule"]
    assert s["status"] == "error" and "did not validate" in s["error"]
    assert "keep_schedule: bad token '0.1x'" in s["error"], s["error"][:2000]


def test_attention_map_mask_pixels_equal_the_sla_mask(run):
    from comfyui_sla.sla.mask import block_lut, lut_to_mask
    image = run.latent("attention_map", "attention_map_image")
    cap = torch.load(os.path.join(run.work, "latents", "attention_map_capture.pt"))
    assert (cap["block"], cap["head"], cap["step"]) == (1, 1, 1) and cap["sparse"] and cap["keep"] == 0.3
    assert tuple(cap["q"].shape) == (1, 360, 1, 128)
    mask = lut_to_mask(block_lut(cap["q"], cap["k"], cap["keep"], cap["block_q"], cap["block_k"]), 6)[0, 0]
    assert mask.shape == (6, 6) and mask.sum(-1).tolist() == [1] * 6
    cell = image.shape[1] // 6
    assert tuple(image.shape) == (1, 6 * cell, 6 * cell, 3)
    assert torch.equal(image[0, ..., 0], mask.float().repeat_interleave(cell, 0).repeat_interleave(cell, 1))
    sparsity = run.latent("attention_map", "attention_map_sparsity")
    c = sparsity.shape[1] // 3
    assert tuple(sparsity.shape) == (1, 3 * c, 3 * c, 3)       # 3 blocks x 3 steps
    assert sparsity[0, 0, 0, 0].item() == pytest.approx(0.5) and sparsity[0, 0, -1, 0].item() == pytest.approx(5 / 6)


def test_keep_comparison_workflow_runs_headless_and_reports_per_branch(run):
    name = "workflow:" + os.path.basename(COMPARISON)
    s = run.scenario(name)
    prompt = s["prompt"]
    texts = node_texts(run, name)
    branches = {nid: v["inputs"] for nid, v in prompt.items() if v["class_type"] == "ApplySLA"}
    assert len(branches) == 4 and set(texts) == set(branches), (texts, branches)
    for nid, inputs in branches.items():
        (text,) = texts[nid]
        if inputs["enabled"]:
            assert text.startswith("12 sparse / 0 dense"), text
            assert re.search(r"attention \d+\.\dx (faster|slower) .*\(CPU timing\)", text), text
        else:
            assert "0 sparse / 12 dense" in text and "disabled 12" in text and "(all dense)" in text, text


# ---------------------------------------------------------------------------------------------- chaining

def test_an_override_before_sla_gets_exactly_the_calls_sla_leaves_dense(run):
    # The recording override reads sigmas, sample_sigmas, block_index and total_blocks (a KeyError would fail the
    # run): with SLA after it, it receives the dense block's calls only, each as it receives it without SLA.
    alone = run.results["recorded"]["alone"]
    with_sla = run.results["recorded"]["before_sla"]
    assert len(alone) == 3 * 3 and {r[0] for r in alone} == {0, 1, 2}
    assert with_sla == [r for r in alone if r[0] == 1]   # block 1 (dense_blocks) at every step, same call
    assert all(r[1] == 3 and r[3] for r in with_sla)      # total_blocks, cond_or_uncond: ComfyUI's options
    assert run.scenario("chained_before_sla")


def test_chaining_under_torch_compile_is_the_same_and_compiles_once(run):
    eager = run.results["recorded"]["before_sla"]
    compiled = run.results["recorded"]["before_sla_compiled"]
    assert compiled == eager
    frames = run.results["compiles"]["chained"]
    assert frames and frames[-1] == frames[0], frames   # nothing compiled after the first model call
    torch.testing.assert_close(run.latent("chained_before_sla_compiled"), run.latent("chained_before_sla"),
                               atol=SAME, rtol=0)


def test_attention_backend_node_after_sla_is_reported(run):
    s = run.results["scenarios"]["backend_node_after_sla"]
    if s["status"] == "error" and "ModelAttentionBackend" in (s["error"] or ""):
        pytest.skip("this ComfyUI has no Model Attention Backend node")
    s = run.scenario("backend_node_after_sla")
    texts = " ".join(text for _node, text in s["node_texts"]) + " ".join(r["msg"] for r in s["logs"])
    assert "SLA did not run" in texts and "Model Attention Backend" in texts, texts


# ---------------------------------------------------------------------------------------------- MiniMax H3
# A tiny random H3 (tests/integration/h3_scenarios.py: 3 DiT blocks of 2 heads x 128, 360 packed tokens = 3 query
# blocks of 128 and 6 key blocks of 64) through ComfyUI's own UNETLoader, LoraLoaderModelOnly, ApplySLA (keep
# 0.15, 128x64, min_tokens 256, torch backend), KSampler (4 euler steps, cfg 1) on EmptyMiniMaxH3LatentAV.

H3_BLOCKS, H3_STEPS = 3, 4
H3_CALLS = H3_BLOCKS * H3_STEPS


@pytest.fixture
def h3(run):
    if not run.results.get("h3"):
        pytest.skip("this ComfyUI has no MiniMax H3 (comfy/ldm/minimax: core 0.33 and later)")
    return run


def h3_latent(run, scenario, name=None) -> torch.Tensor:
    """The sampled audio-video latent (video and audio streams) as one flat float64 vector."""
    streams = run.latent(scenario, name)
    assert [tuple(t.shape) for t in streams] == [(1, 24, 2, 16, 40), (1, 32, 2, 8)]
    assert all(torch.isfinite(t).all() for t in streams)
    return torch.cat([t.reshape(-1).double() for t in streams])


def test_h3_file_is_detected_and_loaded_by_the_stock_loader(h3):
    # UNETLoader detected MiniMax H3 (ComfyUI's FLOW_AV model, MiniMaxH3Model) and every key loaded: no key of the
    # file is missing from the model or left over
    for scenario in ("h3_unpatched", "h3_lora_before"):
        logs = [r["msg"] for r in h3.scenario(scenario)["logs"]]
        assert not [m for m in logs if "unet missing" in m or "unet unexpected" in m or "lora key not loaded" in m]
    logs = [r["msg"] for r in h3.scenario("h3_lora_before")["logs"]]
    assert any(m.startswith("SLA applied to MiniMaxH3Model (MiniMax H3, 3 blocks") for m in logs), logs
    from h3_scenarios import lora_targets
    assert h3.results["probed"]["h3_probe:patched"] == lora_targets()   # QKV and FFN of every DiT block


def test_h3_every_dit_call_is_sparse_and_the_report_reaches_the_node(h3):
    lines = h3.run_lines("h3_lora_before")
    assert len(lines) == 1 and sparse_calls(lines) == H3_CALLS and dense_calls(lines) == 0, lines
    # 6 key blocks: keep 0.15 keeps 1 (LightX2V's count), as the Turbo-SLA LoRA was trained
    assert "realised keep 0.167" in lines[0] and "block-sparse only (no proj_l) on blocks 0-2" in lines[0], lines
    texts = node_texts(h3, "h3_lora_before")
    (text,) = texts[node_id(h3, "h3_lora_before", "ApplySLA")]
    assert len(texts) == 1 and text.startswith(f"{H3_CALLS} sparse / 0 dense self-attention calls"), texts
    assert any("MiniMax H3: block-sparse attention without a linear branch" in r["msg"]
               for r in h3.scenario("h3_lora_before")["logs"])
    # the probe after ApplySLA saw each DiT block once per step, with the block index the pack's patch wrote
    # (0.33's block loop writes none), on the whole packed sequence
    probed = h3.results["probed"]["h3_probe"]
    assert probed == [[b, s, [1, 2, 360, 128]] for s in range(H3_STEPS) for b in range(H3_BLOCKS)]


def test_h3_keep_one_equals_the_unpatched_model(h3):
    # Not bit for bit: the dense model runs ComfyUI's attention (SDPA), keep 1.0 runs SLA's blockwise softmax over
    # every block (another summation order); fp32 on the CPU, 4 steps: ~1e-6
    assert sparse_calls(h3.run_lines("h3_keep1")) == H3_CALLS
    assert max_diff(h3_latent(h3, "h3_keep1"), h3_latent(h3, "h3_unpatched")) < SAME


def test_h3_keep_015_changes_the_output_and_is_the_training_router(h3):
    from test_minimax_h3 import router_reference
    assert max_diff(h3_latent(h3, "h3_lora_before"), h3_latent(h3, "h3_unpatched")) > DIFFERENT
    # the probe is transparent; the call it captured (block 1, step 1) is the router's on its own q, k, v
    assert torch.equal(h3_latent(h3, "h3_probe"), h3_latent(h3, "h3_lora_before"))
    call = torch.load(os.path.join(h3.work, "latents", "h3_probe_call.pt"))
    assert tuple(call["q"].shape) == (1, 2, 360, 128) and tuple(call["out"].shape) == (1, 360, 256)
    mask, ref = router_reference(call["q"], call["k"], call["v"], 0.15, 128, 64)
    assert mask.shape == (1, 2, 3, 6) and mask.sum(-1).eq(1).all()   # one key block of six per query block
    torch.testing.assert_close(call["out"].double(), ref, atol=1e-5, rtol=1e-5)
    _, dense = router_reference(call["q"], call["k"], call["v"], 1.0, 128, 64)
    assert (call["out"].double() - dense).abs().max() > 1e-2   # and not what dense attention gives


def test_h3_lora_applies_before_and_after_apply_sla(h3):
    before, after = h3_latent(h3, "h3_lora_before"), h3_latent(h3, "h3_lora_after")
    assert max_diff(before, h3_latent(h3, "h3_lora0_before")) > DIFFERENT, "LoRA before ApplySLA had no effect"
    assert max_diff(after, h3_latent(h3, "h3_lora0_after")) > DIFFERENT, "LoRA after ApplySLA had no effect"
    assert max_diff(before, after) < SAME
    assert max_diff(h3_latent(h3, "h3_lora0_before"), h3_latent(h3, "h3_lora0_after")) < SAME
    for scenario in ("h3_lora_after", "h3_lora0_before", "h3_lora0_after"):
        assert sparse_calls(h3.run_lines(scenario)) == H3_CALLS


def test_h3_keep_schedule_changes_the_keep_per_step(h3):
    # 6 key blocks: step 0 at 0.5 keeps 3, then 0.15 keeps 1
    (text,) = node_texts(h3, "h3_schedule_map")[node_id(h3, "h3_schedule_map", "ApplySLA")]
    assert text.startswith(f"{H3_CALLS} sparse / 0 dense") and "per step 0.50 0.17 0.17 0.17" in text, text
    assert max_diff(h3_latent(h3, "h3_schedule_map"), h3_latent(h3, "h3_lora_before")) > DIFFERENT


def test_h3_attention_map_draws_the_routers_mask(h3):
    from test_minimax_h3 import router_reference
    image = h3.latent("h3_schedule_map", "h3_attention_map_image")
    cap = torch.load(os.path.join(h3.work, "latents", "h3_schedule_map_capture.pt"))
    assert (cap["block"], cap["head"], cap["step"], cap["sparse"], cap["keep"]) == (1, 1, 1, True, 0.15)
    assert (cap["block_q"], cap["block_k"]) == (128, 64) and tuple(cap["q"].shape) == (1, 360, 1, 128)
    q, k = cap["q"].transpose(1, 2), cap["k"].transpose(1, 2)   # (1, 1, S, D): the head, as ComfyUI hands it over
    mask = router_reference(q, k, k, 0.15, 128, 64)[0][0, 0]
    assert mask.shape == (3, 6) and mask.sum(-1).tolist() == [1, 1, 1]
    cell = image.shape[1] // 3
    assert tuple(image.shape) == (1, 3 * cell, 6 * cell, 3)
    assert torch.equal(image[0, ..., 0], mask.float().repeat_interleave(cell, 0).repeat_interleave(cell, 1))


def test_h3_compiled_model_compiles_no_more_than_the_model_itself_and_matches_eager(h3):
    # Frames compiled after each model call. ComfyUI's H3 itself compiles again in the second call (at sigma 1 the
    # video and audio timesteps coincide: one time-embedding row, two afterwards), with or without SLA; nothing
    # compiles after that, neither in the rest of the run nor in a second run with another seed.
    sla, dense = h3.results["compiles"]["h3_compiled"], h3.results["compiles"]["h3_compiled_dense"]
    assert len(sla) == 2 * H3_STEPS and len(dense) == H3_STEPS and sla[0] > 0 and dense[0] > 0

    def grew(frames):
        return [i for i in range(len(frames)) if frames[i] > (frames[i - 1] if i else 0)]
    assert grew(dense) == [0, 1], dense
    assert grew(sla) == grew(dense), sla
    assert max_diff(h3_latent(h3, "h3_compiled", "h3_compiled_run1"), h3_latent(h3, "h3_lora_before")) < SAME
    assert max_diff(h3_latent(h3, "h3_compiled", "h3_compiled_run2"), h3_latent(h3, "h3_eager_seed1")) < SAME
    assert max_diff(h3_latent(h3, "h3_compiled_dense"), h3_latent(h3, "h3_unpatched")) < SAME
    lines = h3.run_lines("h3_compiled")
    assert [(sparse_calls([line]), dense_calls([line])) for line in lines] == [(H3_CALLS, 0)] * 2, lines


def test_h3_override_before_sla_gets_exactly_the_calls_sla_leaves_dense(h3):
    alone, with_sla = h3.results["probed"]["h3_alone"], h3.results["probed"]["h3_before_sla"]
    assert len(alone) == H3_CALLS and len(with_sla) == H3_STEPS
    # block 1 (dense_blocks) at every step, the call as the override gets it without SLA (same kwargs and shapes;
    # 0.33's block loop writes no block index: there only the pack's block-index patch does, and the override
    # under SLA sees it)
    assert [r[1:] for r in with_sla] == [r[1:] for i, r in enumerate(alone) if i % H3_BLOCKS == 1]
    assert {r[0] for r in with_sla} == {1}
    assert {r[0] for r in alone} in ({None}, set(range(H3_BLOCKS)))
    lines = h3.run_lines("h3_chained_before_sla")
    assert sparse_calls(lines) == H3_CALLS - H3_STEPS and "dense_blocks 4" in lines[0], lines
