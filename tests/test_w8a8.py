"""W8A8 linear: the Triton kernel (CPU interpreter without a GPU; int8 tl.dot works there) against the float32
reference, the PyTorch pieces (tile (de)quantisation, requantisation, emulation) and the dispatch."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from comfyui_sla.kernels import w8a8 as W8
from comfyui_sla.sla import quant as Q
from w8a8_checks import assert_matches_emulation, rel_err

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
DEV = "cuda" if torch.cuda.is_available() and not INTERP else "cpu"
needs_kernel = pytest.mark.skipif(DEV == "cpu" and not INTERP, reason="no GPU and TRITON_INTERPRET is not 1")


def make_layer(n, k, seed=0, outliers=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) / k ** 0.5
    if outliers:  # a few large weights, so tile scales differ
        w[torch.rand(n, k, generator=g) < 0.001] *= 8
    q, s = Q.quantize_tiles(w)
    b = torch.randn(n, generator=g) * 0.1
    return q, s, b


def reference(x, q, s, b):
    """The dequantised-weight GEMM in float32 (what the -quant file means)."""
    return x.float() @ Q.dequantize_tiles(q, s, torch.float32).T + b.float()


# --------------------------------------------------------------------------------------------- kernel

@needs_kernel
@pytest.mark.parametrize("m,n,k", [(64, 256, 256), (77, 200, 300), (1, 128, 128), (130, 384, 512)])
@pytest.mark.parametrize("mode", ["prequant", "fused"])
def test_kernel_matches_emulation_and_reference(m, n, k, mode):
    q, s, b = make_layer(n, k)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    x[:, 3] *= 20  # an outlier channel, as Wan activations have
    cfg = dict(mode=mode, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64 if mode == "fused" else 128)
    out = W8.w8a8_linear_impl(x.to(DEV), q.to(DEV), s.to(DEV), b.to(DEV), config=cfg).cpu()
    assert out.shape == (m, n) and out.dtype == torch.float32
    emu = Q.w8a8_emulated(x, q, s, b, group=64 if mode == "fused" else 128)
    assert_matches_emulation(out, emu, 1e-4)
    err = rel_err(out, reference(x, q, s, b))
    # Activation rounding is visible but small; the x20 channel coarsens its groups' grid (~2% here).
    assert 1e-4 < err < 5e-2, err


@needs_kernel
def test_kernel_fp16_batched_input_and_no_bias():
    q, s, _ = make_layer(256, 384, seed=3)
    x = torch.randn(2, 40, 384, generator=torch.Generator().manual_seed(2)).half()
    out = W8.w8a8_linear_impl(x.to(DEV), q.to(DEV), s.to(DEV), None,
                              config=dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=64)).cpu()
    assert out.shape == (2, 40, 256) and out.dtype == torch.float16
    emu = Q.w8a8_emulated(x, q, s)
    assert_matches_emulation(out.float(), emu, 2e-3)  # fp16 output rounding


@needs_kernel
def test_activation_prepass_matches_torch():
    x = torch.randn(50, 300, generator=torch.Generator().manual_seed(4))
    x[7] = 0.0  # an all-zero token: scale 0, codes 0
    q, s = W8.quantize_activations(x.to(DEV))
    q_ref, s_ref = Q.quantize_activations(x)
    diff = (q.cpu().int() - q_ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3  # see assert_matches_emulation
    torch.testing.assert_close(s.cpu(), s_ref, rtol=1e-6, atol=0)
    assert (s[7] == 0).all() and (q[7] == 0).all()


def test_check_inputs_names_the_problem():
    q, s, b = make_layer(256, 256)
    with pytest.raises(ValueError, match=r"w_scale must be \[2, 2\]"):
        W8.check_inputs(torch.randn(4, 256), q, s[:1], b)
    with pytest.raises(ValueError, match="in_features 256"):
        W8.check_inputs(torch.randn(4, 128), q, s, b)
    with pytest.raises(ValueError, match="int8"):
        W8.check_inputs(torch.randn(4, 256), q.float(), s, b)


def test_custom_op_fake_impl_gives_the_output_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode
    q, s, b = make_layer(256, 128)
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 5, 128, dtype=torch.bfloat16))
        out = torch.ops.comfyui_sla.w8a8_linear(x, mode.from_tensor(q), mode.from_tensor(s), mode.from_tensor(b))
    assert out.shape == (2, 5, 256) and out.dtype == torch.bfloat16


def test_default_config_is_the_conservative_one():
    cfg = W8.default_config(torch.device("cpu"))
    assert (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["num_warps"], cfg["mode"]) == (128, 128, 128, 8,
                                                                                              "prequant")
    assert "default" in W8.ALTERNATIVES and W8.ALTERNATIVES["default"] == {}


# --------------------------------------------------------------------------------------------- PyTorch pieces

def test_quantize_tiles_round_trip_and_partial_tiles():
    w = torch.randn(200, 300, generator=torch.Generator().manual_seed(5))
    q, s = Q.quantize_tiles(w)
    assert q.dtype == torch.int8 and s.shape == (2, 3) and q.abs().max() == 127
    err = (Q.dequantize_tiles(q, s) - w).abs()
    bound = Q._expanded_scale(s, 200, 300, "cpu") * 0.5
    assert (err <= bound * (1 + 1e-5)).all()


def test_dequantize_matches_the_checkpoint_loader():
    from comfyui_sla.sla.checkpoint import dequantize_int8_tiles
    q, s, _ = make_layer(256, 384)
    assert torch.equal(Q.dequantize_tiles(q, s, torch.float32), dequantize_int8_tiles(q, s, torch.float32))


def test_requantize_on_grid_is_exact_for_unchanged_weights_and_counts_saturation():
    q, s, _ = make_layer(256, 256)
    w = Q.dequantize_tiles(q, s)
    q2, clipped = Q.requantize_on_grid(w, s)
    assert torch.equal(q2, q) and clipped == 0
    w[0, 0] = 1000.0  # far beyond tile (0, 0)'s range
    q3, clipped = Q.requantize_on_grid(w, s)
    assert clipped == 1 and q3[0, 0] == 127


def test_emulation_equals_reference_up_to_activation_rounding():
    q, s, b = make_layer(128, 256)
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(6))
    # Activations already on the int8 grid of each group: the emulation is then the reference.
    xq, xs = Q.quantize_activations(x)
    xg = (xq.float().view(16, 2, 128) * xs[:, :, None]).view(16, 256)
    torch.testing.assert_close(Q.w8a8_emulated(xg, q, s, b), reference(xg, q, s, b), rtol=1e-5, atol=1e-5)


def test_is_w8a8_block_linear():
    assert Q.is_w8a8_block_linear("blocks.3.self_attn.q")
    assert Q.is_w8a8_block_linear("blocks.0.ffn.2") and Q.is_w8a8_block_linear("blocks.1.cross_attn.k_img")
    assert not Q.is_w8a8_block_linear("blocks.0.self_attn.attn_op.local_attn.proj_l")
    assert not Q.is_w8a8_block_linear("head.head") and not Q.is_w8a8_block_linear("text_embedding.0")


def test_dispatch_falls_back_on_cpu_and_logs_once(monkeypatch, caplog):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(Q.BACKEND_ENV, raising=False)
    monkeypatch.setattr(Q, "_logged", set())
    q, s, b = make_layer(256, 256)
    x = torch.randn(3, 256, dtype=torch.float64).float()
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        y1 = Q.w8a8_linear(x, q, s, b)
        Q.w8a8_linear(x, q, s, b)
    torch.testing.assert_close(y1, reference(x, q, s, b), rtol=1e-5, atol=1e-5)  # the dequantised path
    assert sum("dequantised weights" in r.message for r in caplog.records) == 1


@needs_kernel
def test_dispatch_env_kernel_runs_the_kernel(monkeypatch):
    monkeypatch.setenv(Q.BACKEND_ENV, "kernel")
    q, s, b = make_layer(128, 128)
    x = torch.randn(8, 128).to(DEV)
    y = Q.w8a8_linear(x, q.to(DEV), s.to(DEV), b.to(DEV)).cpu()
    assert_matches_emulation(y, Q.w8a8_emulated(x.cpu(), q, s, b), 1e-4)


def test_benchmark_script_smoke_run(tmp_path):
    """bench/bench_w8a8.py end to end at tiny shapes (interpreter): table, JSON and its own correctness checks."""
    import json
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path / "w8.json"
    r = subprocess.run([sys.executable, str(root / "bench" / "bench_w8a8.py"), "--smoke", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, TRITON_INTERPRET="1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "all correctness checks passed" in r.stdout and "err int8" in r.stdout
    res = json.loads(out.read_text())["results"]
    assert len(res) == 2 and all(x["err_int8_vs_emulation"] < 1e-3 for x in res)


# --------------------------------------------------------------------------------------------- loading

def test_load_checkpoint_int8_keeps_block_tiles(tmp_path):
    import wan_factory as wf
    from comfyui_sla.sla.checkpoint import load_checkpoint
    from comfyui_sla.sla.quant_load import SCALE_SUFFIX, load_checkpoint_int8, summary_int8
    native = wf.make_wan_state_dict(num_layers=2, seed=3)
    td = wf.to_turbodiffusion_quant(native, prefix="net.", wrapped=True)
    p = wf.save_pth(td, tmp_path / "m-quant.pth")
    L = load_checkpoint_int8(p)
    sd = L.state_dict
    w = sd["blocks.1.ffn.0.weight"]
    assert w.dtype == torch.int8 and sd["blocks.1.ffn.0" + SCALE_SUFFIX].dtype == torch.float32
    assert torch.equal(w, td["net.blocks.1._checkpoint_wrapped_module.ffn.0.int8_weight"])
    assert sum(k.endswith(SCALE_SUFFIX) for k in sd) == 2 * 10
    assert sd["head.head.weight"].dtype != torch.int8 and sd["text_embedding.0.weight"].dtype != torch.int8
    assert sd["blocks.0.norm3.weight"].dtype == torch.float32  # norms as TurboDiffusion keeps them
    assert len(L.proj_l) == 2
    # Dequantising what was kept gives exactly the default loader's fp32 weights.
    ref = load_checkpoint(p, weight_dtype=torch.float32).state_dict
    assert torch.equal(Q.dequantize_tiles(w, sd["blocks.1.ffn.0" + SCALE_SUFFIX]), ref["blocks.1.ffn.0.weight"])
    assert "int8 tiles kept (W8A8)" in summary_int8(L.info)


def test_load_checkpoint_int8_refuses_files_without_tiles(tmp_path):
    import wan_factory as wf
    from comfyui_sla.sla.checkpoint import CheckpointError
    from comfyui_sla.sla.quant_load import load_checkpoint_int8
    p = wf.save_pth(wf.to_turbodiffusion(wf.make_wan_state_dict(num_layers=1)), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="has no int8 tiles.*-quant"):
        load_checkpoint_int8(p)
