"""ApplySLA's exact_prefix on MiniMax H3, and the memory the H3 calls leave beside the output.

exact_prefix: every query block also attends, exactly, each key block holding tokens of the packed sequence's prefix
(the segments before the target video); the router's top-k picks its keep blocks among the others. Checked against
a float64 reference of that rule (the training router with the prefix blocks forced), on the PyTorch path and the
kernel (Triton's interpreter without a GPU), and through the stand-in H3 model: the layout comes from the model
call's ``minimax_payload`` (0.33+) or the call's ``transformer_options["minimax_h3_layout"]`` (0.35+), the run
report shows the segments, and a compiled model still compiles once.

Memory: without proj_l the pre-pass keeps no linear summaries, and the mask phase (pre-pass, block scores, top-k)
runs a few heads at a time, with the same LUT as all heads at once.
"""
import pytest
import torch

from compiled_model import compiled
from comfyui_sla.kernels import launch as launch_module, router as router_module, sla_forward_impl, topk as topk_module
from comfyui_sla.kernels.prepass import prepass, workspace_bytes
from comfyui_sla.kernels.router import block_lut as router_lut, head_groups, mask_bytes_per_head
from comfyui_sla.kernels.topk import lut_dtype, lut_from_means
from comfyui_sla.sla import block_lut
from comfyui_sla.sla.families import MINIMAX_H3
from comfyui_sla.sla.families.base import AttentionCall, describe_segments, exact_prefix
from comfyui_sla.sla.functional import sparse_linear_attention
from comfyui_sla.sla.mask import lut_to_mask
from comfyui_sla.sla.runtime.settings import SLASettings
from comfyui_sla.sla.spec import keep_count, lut_width, num_blocks, prefix_blocks
from test_minimax_h3 import (DEV, H, HIDDEN, LAYERS, ROWS, TEXT, comfy, h3_qkv, kernel_cdt,  # noqa: F401
                             layouts_handed_on, make_model, patch_of, router_reference)

AUDIO = 40   # the stand-in model's audio rows: layout text 0-19 | audio 20-59 | video 60-639


def prefix_reference(q, k, v, keep_ratio, prefix, block_q=128, block_k=64):
    """The training router with the prefix forced, in float64: the key blocks holding tokens [0, prefix) are kept
    for every query block, then the top max(1, min(K, int(keep * K))) of the remaining blocks by the router's score.
    Returns (block mask [B, H, Nq, Nk] bool, output [B, S, H*D] float64)."""
    q64, k64, v64 = (t.double() for t in (q, k, v))
    b, h, s, d = q64.shape
    k_smooth = k64 - k64.mean(dim=2, keepdim=True)
    pool = lambda x, blk: torch.stack([x[:, :, i:i + blk].mean(dim=2) for i in range(0, s, blk)], dim=2)  # noqa
    score = pool(q64, block_q) @ pool(k_smooth, block_k).transpose(-1, -2)
    n_k = score.shape[-1]
    n_pre = min(n_k, -(-prefix // block_k))
    keep = max(1, min(n_k, int(keep_ratio * n_k + 1e-9)))
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[..., :n_pre] = True
    rest = min(keep, n_k - n_pre)
    if rest:
        top = score[..., n_pre:].topk(rest, dim=-1).indices + n_pre
        mask.scatter_(-1, top, True)
    tokens = mask.repeat_interleave(block_q, dim=2).repeat_interleave(block_k, dim=3)[:, :, :s, :s]
    logits = (q64 @ k64.transpose(-1, -2)) * d ** -0.5
    out = torch.softmax(logits.masked_fill(~tokens, float("-inf")), dim=-1) @ v64
    return mask, out.transpose(1, 2).reshape(b, s, h * d)


# (S, dtype, keep, block_q, prefix tokens): a prefix inside one block, across several, not block-aligned, and one
# that leaves fewer blocks than keep
CASES = [(1000, torch.float32, 0.15, 128, 60), (1337, torch.float16, 0.15, 128, 300),
         (700, torch.float32, 0.3, 64, 128), (520, torch.float16, 0.5, 64, 400),
         pytest.param((9000, torch.bfloat16, 0.15, 128, 1100),
                      marks=pytest.mark.skipif(DEV != "cuda", reason="bf16 kernel: GPU only"))]


def test_prefix_helpers():
    assert prefix_blocks(0, 64, 10) == 0 and prefix_blocks(1, 64, 10) == 1 and prefix_blocks(64, 64, 10) == 1
    assert prefix_blocks(65, 64, 10) == 2 and prefix_blocks(10_000, 64, 10) == 10
    assert lut_width(10, 3, 2) == 5 and lut_width(10, 9, 4) == 10
    segs = ((0, 20, "text"), (20, 60, "audio"), (60, 640, "video"))
    assert exact_prefix(segs, 640) == 60
    assert exact_prefix(segs, 641) is None and exact_prefix(None, 640) is None
    assert exact_prefix(segs[:2], 60) is None   # the sequence must end in the target video
    assert describe_segments(segs) == "text 0-19 | audio 20-59 | video 60-639"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"S{c[0]}-{str(c[1])[6:]}-keep{c[2]}-bq{c[3]}-p{c[4]}")
def test_mask_and_output_are_the_prefix_reference(case):
    s, dtype, keep, bq, prefix = case
    q, k, v = h3_qkv(s, dtype, seed=s + prefix, device=DEV)
    ref_mask, ref = prefix_reference(q, k, v, keep, prefix, bq)
    call = AttentionCall(q, k, v, H, 0)
    q4, k4, v4 = MINIMAX_H3.to_heads(call)
    n_k = num_blocks(s, 64)
    assert torch.equal(lut_to_mask(block_lut(q4, k4, keep, bq, 64, prefix), n_k), ref_mask)
    out, lut = sla_forward_impl(q4, k4, v4, keep_count(n_k, keep), None, None, "softmax", bq, 64, kernel_cdt(dtype),
                                return_lut=True, prefix_blocks=prefix_blocks(prefix, 64, n_k))
    assert torch.equal(lut_to_mask(lut, n_k), ref_mask)
    assert (lut[..., 1:] > lut[..., :-1]).all()   # rows ascending, no block twice
    kern = MINIMAX_H3.from_heads(out, call)
    rel = ((kern.double() - ref).norm() / ref.norm()).item()
    assert not kern.isnan().any() and rel < {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 1e-2}[dtype]
    torch_out = MINIMAX_H3.from_heads(
        sparse_linear_attention(q4, k4, v4, keep, block_q=bq, backend="torch", prefix=prefix), call)
    atol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(torch_out.double(), ref, atol=atol, rtol=1e-3 if dtype != torch.bfloat16 else 2e-2)
    # the prefix changes what is attended: without it the router picks other blocks for some rows
    assert not torch.equal(ref_mask, router_reference(q, k, v, keep, bq, 64)[0])


# -- memory ----------------------------------------------------------------------------------------------------
def test_prepass_without_linear_branch_keeps_only_what_the_mask_needs():
    q, k, v = h3_qkv(1100, torch.float16, seed=5, device=DEV)
    q4, k4, v4 = MINIMAX_H3.to_heads(AttentionCall(q, k, v, H, 0))
    full = prepass(q4, k4, v4, 128, 64, "softmax", torch.float16, return_workspace=True)
    lean = prepass(q4, k4, v4, 128, 64, "softmax", torch.float16, return_workspace=True, linear=False)
    for a, b in zip(full[:2], lean[:2]):                       # block means: same bits
        assert torch.equal(a, b)
    torch.testing.assert_close(lean[4], full[4], rtol=1e-6, atol=1e-4)   # sum of k (fewer partial slots' order)
    assert lean[2] is None and lean[3] is None
    assert lean[5].numel() * 130 == full[5].numel()             # a D-float slot instead of D * (D + 2)
    assert workspace_bytes(1, 56, 110_000, 128, 132, linear=False) * 130 == workspace_bytes(1, 56, 110_000, 128, 132)


@pytest.mark.parametrize("prefix_blocks_", [0, 3])
def test_scores_in_head_groups_give_the_same_lut(prefix_blocks_):
    torch.manual_seed(0)
    b, h, nq, nk, d = 2, 5, 9, 17, 128
    qmean, kmean = torch.randn(b, h, nq, d, device=DEV), torch.randn(b, h, nk, d, device=DEV)
    ktot = torch.randn(b, h, d, device=DEV)
    whole = lut_from_means(qmean, kmean, ktot, 1000, 4, prefix_blocks_)
    for budget in (1, (nq + d) * nk * 4 * 3, 1 << 30):          # one head, three heads, all heads per group
        assert torch.equal(lut_from_means(qmean, kmean, ktot, 1000, 4, prefix_blocks_, budget), whole)
    assert whole.shape == (b, h, nq, 4 + prefix_blocks_)
    if prefix_blocks_:
        assert (whole[..., :prefix_blocks_] == torch.arange(prefix_blocks_, device=DEV, dtype=torch.int32)).all()


@pytest.mark.parametrize("b, h, budget_heads", [(1, 5, 2), (2, 3, 1), (3, 2, 4), (2, 4, 9)])
def test_head_groups_cover_every_head_once_in_contiguous_slices(b, h, budget_heads):
    groups = head_groups(b, h, 10, budget_heads * 10)
    seen = torch.zeros(b, h, dtype=torch.int32)
    ref = torch.arange(b * h).view(b, h)
    for b0, b1, h0, h1 in groups:
        seen[b0:b1, h0:h1] += 1
        assert ref[b0:b1, h0:h1].is_contiguous() and (b1 - b0) * (h1 - h0) * 10 <= max(budget_heads, 1) * 10
    assert (seen == 1).all()
    assert head_groups(b, h, 10, None) == [(0, b, 0, h)]


@pytest.mark.parametrize("linear", [False, True])
def test_mask_phase_in_head_groups_matches_all_heads_at_once(linear):
    """The grouped pre-pass + top-k gives the LUT (and linear summaries) of one pass over every head."""
    torch.manual_seed(3)
    b, s, h, d = 2, 700, 3, 64
    q, k, v = (torch.randn(b, s, h, d, device=DEV, dtype=torch.float16) for _ in range(3))
    whole, kv_w, ks_w = router_lut(q, k, v, 128, 64, "softmax", torch.float16, 3, 1, linear, budget=None)
    per_head = mask_bytes_per_head(6, 11, d)
    for budget in (1, per_head * 2, per_head * h):             # one head, two heads, one batch element
        got, kv_g, ks_g = router_lut(q, k, v, 128, 64, "softmax", torch.float16, 3, 1, linear, budget=budget)
        assert len(head_groups(b, h, per_head, budget)) > 1
        assert torch.equal(got, whole)
        if linear:
            torch.testing.assert_close(kv_g, kv_w, rtol=1e-6, atol=1e-5)
            torch.testing.assert_close(ks_g, ks_w, rtol=1e-6, atol=1e-5)
        else:
            assert kv_g is None and ks_g is None
    assert whole.shape == (b, h, 6, 4) and (whole[..., 0] == 0).all()


def test_lut_is_int16_and_the_kernels_take_int32_past_its_range(monkeypatch):
    """int16 block indices up to 32 767 key blocks (2M tokens); past that the LUT is int32, and every kernel path
    reads it the same (forced here on a small shape: the same output bit for bit)."""
    assert lut_dtype(32_767) == torch.int16 and lut_dtype(32_768) == torch.int32
    torch.manual_seed(4)
    q, k, v = (torch.randn(1, 700, 2, 128, device=DEV, dtype=torch.float16) for _ in range(3))
    for block_q in (128, 64):
        out16, lut16 = sla_forward_impl(q, k, v, 3, block_q=block_q, return_lut=True)
        with monkeypatch.context() as m:
            for module in (topk_module, router_module, launch_module):
                m.setattr(module, "lut_dtype", lambda n: torch.int32)
            out32, lut32 = sla_forward_impl(q, k, v, 3, block_q=block_q, return_lut=True)
        assert lut16.dtype == torch.int16 and lut32.dtype == torch.int32
        assert torch.equal(lut16.int(), lut32) and torch.equal(out16, out32)


# -- through the stand-in model ----------------------------------------------------------------------------------
def sample_with_layout(c, model, steps=2, seed=0, payload=True):
    """Sample the stand-in H3 model; ``payload``: pass extra_conds' prebuilt layout in minimax_payload (0.33+)."""
    g = torch.Generator().manual_seed(seed)
    guider = c.samplers.CFGGuider(model)
    extra = {"minimax_payload": {"layout": c.h3.PackedLayout(TEXT, AUDIO, ROWS - AUDIO)}} if payload else {}
    guider.set_conds(torch.randn(1, TEXT, HIDDEN, generator=g), **extra)
    noise = torch.randn(1, ROWS, HIDDEN, generator=g)
    with torch.no_grad():
        return guider.sample(noise, torch.zeros_like(noise), None, torch.linspace(1.0, 0.0, steps + 1))


def prefix_override(keep, prefix):
    def override(func, q, k, v, heads, **kwargs):
        return prefix_reference(q, k, v, keep, prefix)[1].to(q.dtype)
    return override


@pytest.mark.parametrize("new,payload", [(False, True), (True, False), (True, True)],
                         ids=["0.33-payload", "0.35-options", "0.35-both"])
def test_exact_prefix_runs_the_prefix_reference_and_the_report_shows_segments(comfy, new, payload):
    keep, prefix = 0.15, TEXT + AUDIO
    settings = SLASettings(min_tokens=0, keep_ratio=keep, exact_prefix=True)
    m = comfy.bridge.apply_sla(make_model(comfy, new), settings)
    ours = sample_with_layout(comfy, m, payload=payload)
    ref = sample_with_layout(comfy, make_model(comfy, new, override=prefix_override(keep, prefix)), payload=payload)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    p = patch_of(m)
    st = p.stats
    assert st.sparse == 2 * LAYERS and st.prefix_calls == 2 * LAYERS and st.last_prefix == prefix
    assert st.realised_keep == pytest.approx((keep_count(10, keep) + 1) / 10)   # one prefix block more per row
    assert "segments text 0-19 | audio 20-59 | video 60-639; exact prefix: 60 tokens (1 key blocks)" in p.last_report
    off = comfy.bridge.apply_sla(make_model(comfy, new), settings.replace(exact_prefix=False))
    plain = sample_with_layout(comfy, off, payload=payload)
    assert not torch.allclose(plain, ours, atol=1e-3)
    assert "segments text 0-19" in patch_of(off).last_report and "exact prefix" not in patch_of(off).last_report


def test_exact_prefix_without_a_layout_runs_without_it(comfy, caplog):
    m = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, keep_ratio=0.15, exact_prefix=True))
    plain = comfy.bridge.apply_sla(make_model(comfy), SLASettings(min_tokens=0, keep_ratio=0.15))
    with caplog.at_level("INFO", logger="comfyui_sla"):
        out = sample_with_layout(comfy, m, payload=False)   # 0.33 without extra_conds' layout: nothing says
    torch.testing.assert_close(out, sample_with_layout(comfy, plain, payload=False))
    assert "carries no packed layout" in caplog.text and patch_of(m).stats.prefix_calls == 0
    assert "segments" not in patch_of(m).last_report


def test_exact_prefix_compiles_once_and_equals_eager(comfy):
    settings = SLASettings(min_tokens=0, keep_ratio=0.15, exact_prefix=True)
    m = comfy.bridge.apply_sla(make_model(comfy), settings)
    eager_out = sample_with_layout(comfy, m)
    counter, restore = compiled(m)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            outs = [sample_with_layout(comfy, m), sample_with_layout(comfy, m, seed=1)]
            sample_with_layout(comfy, comfy.bridge.apply_sla(m, settings.replace(exact_prefix=False)))
    finally:
        restore()
    assert counter.frame_count == 1
    torch.testing.assert_close(outs[0], eager_out, atol=1e-5, rtol=1e-5)
    assert patch_of(m).stats.prefix_calls == 2 * LAYERS


def test_override_before_sla_gets_the_payload_layout_under_compile(comfy):
    # 0.35+ writes the layout into transformer_options for attention patches; compiled, the dense call SLA hands on
    # is rebuilt with the model call's layout (extra_conds' prebuilt one, the object the forward writes)
    eager, compiled = layouts_handed_on(comfy, lambda c, m: sample_with_layout(c, m, steps=1))
    assert eager == [(1, "PackedLayout")]
    assert compiled == [(1, "PackedLayout")]
