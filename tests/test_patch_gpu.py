"""The attention override on CUDA: Triton kernel through the override equals the exact PyTorch path (bf16)."""
import pytest
import torch

from comfyui_sla.sla.runtime import patch as P
from comfyui_sla.sla.functional import triton_available
from comfyui_sla.sla.runtime.settings import SLASettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _call(ov, q, k, v, heads, block=0):
    def dense(q, k, v, heads, **kw):
        raise AssertionError("dense path taken")
    return ov(dense, q, k, v, heads=heads, transformer_options={"block_index": block}, _inside_attn_wrapper=True)


@pytest.mark.parametrize("length,heads,block_q", [(4097, 2, 128), (3000, 3, 64)])
def test_override_triton_matches_torch_on_cuda(length, heads, block_q):
    if not triton_available(torch.device("cuda")):
        pytest.skip("Triton kernel unavailable")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, length, heads * 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    wid = P.register_proj_l({0: (torch.randn(128, 128) * 0.05, torch.randn(128) * 0.05)})
    base = SLASettings(keep_ratio=0.2, min_tokens=0, weights_id=wid, block_q=block_q)
    ov_t = P.make_attention_override(base.replace(backend="auto"))
    ov_c = P.make_attention_override(base.replace(backend="torch"))
    out_t, out_c = _call(ov_t, q, k, v, heads), _call(ov_c, q, k, v, heads)
    assert ov_t.sla_runtime.stats.backends == {"triton": 1} and ov_c.sla_runtime.stats.backends == {"torch": 1}
    assert out_t.shape == q.shape and out_t.dtype == torch.bfloat16
    err = (out_t.float() - out_c.float()).abs().max().item()
    assert err < 3e-2, err
