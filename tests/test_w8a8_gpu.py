"""W8A8 kernel checks at real Wan shapes on a CUDA GPU (skipped without one; run without TRITON_INTERPRET).

    python -m pytest -q tests/test_w8a8_gpu.py
"""
from __future__ import annotations

import math
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a CUDA GPU (and no TRITON_INTERPRET)")

from comfyui_sla.kernels import w8a8 as W8  # noqa: E402
from comfyui_sla.sla import quant as Q  # noqa: E402
from w8a8_checks import assert_matches_emulation, rel_err as rel  # noqa: E402

DEV = "cuda"
# (M, N, K): Wan 1.3B self-attention / FFN in and out, 14B self-attention / FFN in and out, cross-attn k/v (text);
# M cut to 8192 tokens (the kernel's tiles see the same N and K as at 32760).
SHAPES = [(8192, 1536, 1536), (8192, 8960, 1536), (8192, 1536, 8960), (8192, 5120, 5120), (8192, 13824, 5120),
          (8192, 5120, 13824), (512, 5120, 5120), (1000, 1536, 1536)]


def data(m, n, k, seed=0, dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(seed)
    w = torch.randn(n, k, device=DEV, generator=g) / math.sqrt(k)
    w_q, w_s = Q.quantize_tiles(w)
    b = torch.randn(n, device=DEV, generator=g) * 0.1
    x = torch.randn(m, k, device=DEV, generator=g).to(dtype)
    return x, w_q, w_s, b


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_wan_shapes_against_emulation_and_reference(m, n, k):
    torch.backends.cuda.matmul.allow_tf32 = False
    x, w_q, w_s, b = data(m, n, k)
    y = W8.w8a8_linear(x, w_q, w_s, b)
    assert y.shape == (m, n) and y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    rows = x[:256]
    # The pre-pass: codes equal PyTorch's except, rarely, one step at a .5 tie (the GPU's fma rounds once).
    a_q, a_s = W8.quantize_activations(rows)
    q_ref, s_ref = Q.quantize_activations(rows)
    diff = (a_q.int() - q_ref.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4
    torch.testing.assert_close(a_s, s_ref, rtol=0, atol=0)
    # The GEMM on the kernel's own codes: exact integer dots, fp32 scales (summation order only).
    y32 = W8.w8a8_linear(rows.float(), w_q, w_s, b)
    assert rel(y32, Q.w8a8_gemm_emulated(a_q, a_s, w_q, w_s, b)) < 1e-5
    assert_matches_emulation(y32, Q.w8a8_emulated(rows, w_q, w_s, b), 1e-4)
    ref = x[:2048].float() @ Q.dequantize_tiles(w_q, w_s).T + b
    err = rel(y[:2048], ref)
    assert err < 1.5e-2, err  # Gaussian activations: ~0.5-1% from 8-bit activation rounding


@pytest.mark.parametrize("name", sorted(W8.ALTERNATIVES))
def test_every_benchmarked_config_is_correct(name):
    x, w_q, w_s, b = data(3000, 1536, 1536, seed=1)
    cfg = W8.ALTERNATIVES[name]
    group = cfg.get("BLOCK_K", 128) if cfg.get("mode") == "fused" else 128
    y = W8.w8a8_linear_impl(x[:512].float(), w_q, w_s, b, config=cfg)
    assert_matches_emulation(y, Q.w8a8_emulated(x[:512], w_q, w_s, b, group=group), 1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_input_dtypes_and_3d_input(dtype):
    x, w_q, w_s, b = data(2 * 777, 1536, 1536, seed=2, dtype=dtype)
    x3 = x.view(2, 777, 1536)
    y = W8.w8a8_linear(x3, w_q, w_s, b.to(dtype))
    assert y.shape == (2, 777, 1536) and y.dtype == dtype
    ref = Q.w8a8_emulated(x3, w_q, w_s, b)
    assert rel(y.float(), ref) < 5e-3  # 16-bit output rounding


def test_torch_compile_sees_one_opaque_op():
    x, w_q, w_s, b = data(1024, 1536, 1536, seed=3)

    def f(x):
        return torch.nn.functional.gelu(W8.w8a8_linear(x, w_q, w_s, b))
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x), rtol=1e-2, atol=1e-2)


def test_dispatch_uses_the_kernel_on_cuda(monkeypatch):
    monkeypatch.delenv(Q.BACKEND_ENV, raising=False)
    x, w_q, w_s, b = data(512, 1536, 1536, seed=4)
    y = Q.w8a8_linear(x, w_q, w_s, b)
    # The kernel's result bit for bit, not the dequantised path's (activations not quantised there).
    assert torch.equal(y, W8.w8a8_linear(x, w_q, w_s, b))
    assert not torch.equal(y, Q.w8a8_dequant_linear(x, w_q, w_s, b))
