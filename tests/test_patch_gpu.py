"""The attention override on CUDA: Triton kernel through the override equals the exact PyTorch path (bf16)."""
import pytest
import torch

from comfyui_sla.sla.runtime import patch as P
from comfyui_sla.sla.functional import triton_available
from comfyui_sla.sla.families import WAN
from comfyui_sla.sla.runtime.settings import SLASettings
from comfyui_sla.sla.runtime.sla_patch import SLAPatch
from comfyui_sla.sla.runtime.weights import ProjLWeights


def sdpa_attention(q, k, v, heads, **kwargs):
    """ComfyUI's dense attention on [B, L, H*D] q, k, v (what the override falls back to)."""
    b, length, hd = q.shape
    qh, kh, vh = (t.view(b, -1, heads, hd // heads).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(b, length, hd)

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
    w = ProjLWeights({0: (torch.randn(128, 128) * 0.05, torch.randn(128) * 0.05)})
    base = SLASettings(keep_ratio=0.2, min_tokens=0, block_q=block_q)
    ov_t = P.make_attention_override(SLAPatch(WAN, base.replace(backend="auto"), w))
    ov_c = P.make_attention_override(SLAPatch(WAN, base.replace(backend="torch"), w))
    out_t, out_c = _call(ov_t, q, k, v, heads), _call(ov_c, q, k, v, heads)
    assert ov_t.sla_patch.stats.backends == {"triton": 1} and ov_c.sla_patch.stats.backends == {"torch": 1}
    assert out_t.shape == q.shape and out_t.dtype == torch.bfloat16
    err = (out_t.float() - out_c.float()).abs().max().item()
    assert err < 3e-2, err


def test_run_report_times_attention_with_cuda_events():
    """The run report's attention line on a GPU: CUDA-event timing (no "CPU timing" mark), and a speed-up that
    agrees with timing the SLA op and dense SDPA directly."""
    if not triton_available(torch.device("cuda")):
        pytest.skip("Triton kernel unavailable")
    import re

    import triton.testing
    from comfyui_sla.sla.functional import sparse_linear_attention
    heads, length, blocks = 12, 16384, 4
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, length, heads * 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    weights = ProjLWeights({i: (torch.randn(128, 128) * 0.05, torch.randn(128) * 0.05) for i in range(blocks)})
    ov = P.make_attention_override(SLAPatch(WAN, SLASettings(keep_ratio=0.10, min_tokens=0), weights))
    rt, sent = ov.sla_patch, []
    rt.report = sent.append
    rt.begin_run()
    sigma = torch.tensor([0.9], device="cuda")
    for _step in range(6):
        interval = rt.enter_model_call(sigma, {})
        for b in range(blocks):  # ComfyUI's dense function: the report times one dense call beside a sparse one
            ov(sdpa_attention, q, k, v, heads=heads, transformer_options={"block_index": b},
               _inside_attn_wrapper=True)
        rt.leave_model_call(interval)
    rt.end_run()
    assert rt.stats.sparse == 6 * blocks and len(sent) == 1, (rt.stats.sparse, sent)
    m = re.search(r"attention (\d+\.\d)x faster \(.*dense\), step ~(\d+\.\d)x \(est\.\)$", sent[0], re.M)
    assert sent[0].split("\n")[-1].startswith("sampling run ")   # the whole run, measured
    assert m and "CPU timing" not in sent[0], sent[0]
    ql, kl, vl = (t.view(1, length, heads, 128) for t in (q, k, v))  # (B, L, H, D), as the override passes them
    qh, kh, vh = (t.transpose(1, 2) for t in (ql, kl, vl))
    dense_ms = triton.testing.do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh))
    w, b = weights.get(0, torch.device("cuda"), torch.bfloat16)
    sla_ms = triton.testing.do_bench(lambda: sparse_linear_attention(ql, kl, vl, keep_ratio=0.10, proj_weight=w,
                                                                     proj_bias=b))
    reported, direct = float(m.group(1)), dense_ms / sla_ms
    assert direct / 2 < reported < direct * 2, (sent[0], dense_ms, sla_ms)
