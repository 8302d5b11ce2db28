"""The exact PyTorch path against the float64 dense reference."""
import pytest
import torch

from comfyui_sla.sla import block_lut, keep_count, sla_reference, sla_torch


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("length", [1, 37, 200, 333])
@pytest.mark.parametrize("keep", [0.01, 0.3, 1.0])
@pytest.mark.parametrize("fmap", ["softmax", "elu", "relu"])
def test_torch_path_matches_float64_reference(length, keep, fmap):
    gen = torch.Generator().manual_seed(length * 7 + int(keep * 100))
    b, h, d = 2, 3, 64
    q, k, v = (torch.randn(b, length, h, d, generator=gen) for _ in range(3))
    w, bias = torch.randn(d, d, generator=gen) * 0.1, torch.randn(d, generator=gen) * 0.1
    ref = sla_reference(q, k, v, keep, w, bias, fmap, 64, 32, compute_dtype=torch.float32)
    out = sla_torch(q, k, v, keep, w, bias, fmap, 64, 32, max_chunk_elems=1 << 14)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-5


def test_keep_all_without_proj_is_dense_attention():
    q, k, v = (torch.randn(1, 100, 2, 64) for _ in range(3))
    out = sla_torch(q, k, v, 1.0)
    dense = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    torch.testing.assert_close(out, dense.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_keep_count_clamps_and_floors():
    assert keep_count(10, 0.001) == 1
    assert keep_count(10, 0.3) == 3
    assert keep_count(10, 0.15) == 1
    assert keep_count(10, 1.0) == 10
    for bad in (0.0, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="keep_ratio"):
            keep_count(10, bad)


def test_lut_picks_top_scoring_blocks():
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(16, generator=gen)
    q = u + 0.1 * torch.randn(1, 256, 1, 16, generator=gen)   # every query block points along u
    k = 0.1 * torch.randn(1, 256, 1, 16, generator=gen)
    k[:, 64:128] += u                                             # key block 1 aligns with u, after smooth-k too
    lut = block_lut(q, k, keep_ratio=0.25, block_q=64, block_k=64)
    assert lut.shape == (1, 1, 4, 1)
    assert (lut == 1).all()
