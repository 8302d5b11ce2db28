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

DEV = "cuda"
# (M, N, K): Wan 1.3B self-attention / FFN in and out, 14B self-attention / FFN in and out, cross-attn k/v (text);
# M cut to 8192 tokens (the kernel's tiles see the same N and K as at 32760).
SHAPES = [(8192, 1536, 1536), (8192, 8960, 1536), (8192, 1536, 8960), (8192, 5120, 5120), (8192, 13824, 5120),
          (8192, 5120, 13824), (512, 5120, 5120), (1000, 1536, 1536)]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


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
    rows = slice(0, 256)
    emu = Q.w8a8_emulated(x[rows], w_q, w_s, b)
    assert rel(W8.w8a8_linear(x[rows].float(), w_q, w_s, b), emu) < 1e-4
    ref = x[:2048].float() @ Q.dequantize_tiles(w_q, w_s).T + b
    err = rel(y[:2048], ref)
    assert err < 1.5e-2, err  # Gaussian activations: ~0.5-1% from 8-bit activation rounding


@pytest.mark.parametrize("name", sorted(W8.ALTERNATIVES))
def test_every_benchmarked_config_is_correct(name, monkeypatch):
    x, w_q, w_s, b = data(3000, 1536, 1536, seed=1)
    monkeypatch.setattr(W8, "CONFIG_OVERRIDE", dict(W8.ALTERNATIVES[name]))
    group = W8.ALTERNATIVES[name].get("BLOCK_K", 128) if W8.ALTERNATIVES[name].get("mode") == "fused" else 128
    y = W8.w8a8_linear(x[:512].float(), w_q, w_s, b)
    assert rel(y, Q.w8a8_emulated(x[:512], w_q, w_s, b, group=group)) < 1e-4


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
    calls = []
    real = W8.w8a8_linear
    monkeypatch.setattr(W8, "w8a8_linear", lambda *a: calls.append(1) or real(*a))
    Q.w8a8_linear(x, w_q, w_s, b)
    assert calls == [1]
