"""The Triton SLA kernels against the float64 reference.

Without a GPU these run through Triton's CPU interpreter (conftest sets TRITON_INTERPRET=1) in fp32/fp16 at small
shapes; with CUDA the same tests run on the GPU, plus bf16 tests at real shapes (tests/test_kernel_gpu.py).
The reference gets the kernel's own LUT so near-tied block scores cannot pick different blocks; the mask itself
is checked against ``sla.mask`` separately.
"""
import math

import pytest
import torch

from comfyui_sla.kernels import sla_forward, sla_forward_impl, supports
from comfyui_sla.sla import block_lut, block_scores, sla_reference
from comfyui_sla.sla.reference import feature_map as phi
from comfyui_sla.sla.spec import keep_count, num_blocks

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def make(b, length, h, d, dtype, seed, layout="blhd"):
    """Fresh random q, k, v (B, L, H, D); 'flat' = views of [B, L, H*D] slices of one fused qkv tensor."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "flat":
        qkv = torch.randn(b, length, 3 * h * d, generator=gen).to(DEV, dtype)
        return tuple(qkv[..., i * h * d:(i + 1) * h * d].view(b, length, h, d) for i in range(3))
    return tuple(torch.randn(b, length, h, d, generator=gen).to(DEV, dtype) for _ in range(3))


def blocks(q, keep_ratio):
    """Key blocks kept per row for ``keep_ratio`` at q's length (the caller's rule, sla.spec)."""
    return keep_count(num_blocks(q.shape[1], 64), keep_ratio)


def run_checked(q, k, v, keep_ratio, w, bias, fmap, bq, cdt, config=None):
    """Run the kernel with a NaN-poisoned output (every element must be overwritten); return out, lut."""
    poisoned = torch.full(q.shape, float("nan"), device=q.device, dtype=q.dtype)
    out, lut = sla_forward_impl(q, k, v, blocks(q, keep_ratio), w, bias, fmap, bq, 64, cdt, return_lut=True,
                                out=poisoned, config=config)
    assert out.data_ptr() == poisoned.data_ptr()
    assert torch.isfinite(out).all(), "kernel left NaN/inf (unwritten or overflowed elements)"
    return out, lut


# (B, L, H, D, block_q, keep ratio, feature map, dtype, compute dtype, proj) -- a covering set, not a full
# product: the interpreter is slow.
CASES = [
    (1, 200, 2, 64, 128, 0.3, "softmax", torch.float32, "fp32", "rand"),
    (2, 333, 2, 64, 64, 0.5, "elu", torch.float16, "auto", "rand"),
    (1, 130, 1, 128, 128, 1.0, "relu", torch.float32, "fp32", "rand"),
    (1, 257, 2, 64, 64, 0.01, "softmax", torch.float16, "auto", "zero"),   # one block kept
    (2, 190, 1, 128, 64, 0.3, "elu", torch.float32, "fp32", "none"),
    (1, 1, 1, 64, 128, 0.1, "softmax", torch.float32, "fp32", "rand"),     # L = 1
    (1, 64, 2, 64, 64, 1.0, "softmax", torch.float16, "auto", "rand"),     # exact blocks, all kept
    (1, 520, 1, 128, 128, 0.5, "softmax", torch.float16, "auto", "rand"),  # pair + single + tail
    (1, 512, 1, 128, 128, 0.75, "elu", torch.float32, "fp32", "rand"),     # pairs only, no tail
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:7])) + f"-{c[8]}-{c[9]}")
def test_kernel_matches_float64_reference(case):
    b, length, h, d, bq, keep, fmap, dtype, cdt, proj = case
    seed = CASES.index(case) * 97 + 1
    q, k, v = make(b, length, h, d, dtype, seed, layout="flat" if seed % 2 else "blhd")
    gen = torch.Generator().manual_seed(seed + 1)
    w = bias = None
    if proj == "rand":
        w, bias = torch.randn(d, d, generator=gen) * 0.2, torch.randn(d, generator=gen) * 0.2
    elif proj == "zero":
        w, bias = torch.zeros(d, d), torch.zeros(d)
    w, bias = (t.to(DEV) if t is not None else None for t in (w, bias))
    out, lut = run_checked(q, k, v, keep, w, bias, fmap, bq, cdt)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    assert lut.shape[3] == blocks(q, keep)
    ref = sla_reference(q.cpu(), k.cpu(), v.cpu(), keep, None if w is None else w.cpu(),
                        None if bias is None else bias.cpu(), fmap, bq, 64,
                        compute_dtype=torch.float32 if cdt == "fp32" else None, lut=lut.cpu())
    tol = 2e-5 if cdt == "fp32" else 4e-3
    assert rel_err(out.cpu(), ref) < tol


def test_mask_matches_block_lut():
    """The kernel's LUT (Triton block sums -> scores -> top-k) equals sla.mask's, up to near-ties."""
    b, length, h, d = 2, 300, 2, 64
    q, k, v = make(b, length, h, d, torch.float32, 11)
    for bq, keep in ((128, 0.3), (64, 0.5), (64, 0.01)):
        _, lut = sla_forward_impl(q, k, v, blocks(q, keep), None, None, "softmax", bq, 64, "fp32", return_lut=True)
        ref = block_lut(q.cpu(), k.cpu(), keep, bq, 64)
        assert lut.shape == ref.shape
        assert (lut.cpu().diff(dim=-1) > 0).all(), "LUT rows must be sorted, without repeats"
        same = (lut.cpu() == ref)
        if not same.all():  # a different pick is only allowed where the two scores tie to rounding
            scores = block_scores(q.cpu(), k.cpu(), bq, 64)
            picked = scores.gather(-1, lut.cpu().long()).sum(-1)
            best = scores.gather(-1, ref.long()).sum(-1)
            torch.testing.assert_close(picked, best, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nk,keep", [(1, 1), (7, 3), (37, 5), (64, 63), (300, 17)])
def test_topk_kernel_picks_the_largest_in_column_order(nk, keep):
    """Radix-select top-k: negatives, +-0, exact ties (first columns win, like a stable pick), padding columns;
    each program writes its own row only."""
    from comfyui_sla.kernels.topk import _topk_kernel, topk_num_warps
    import triton
    gen = torch.Generator().manual_seed(nk)
    rows = 6
    s = torch.randn(rows, nk, generator=gen)
    s[1] = -s[1].abs() - 1.0                                   # all negative
    s[2] = torch.randint(-2, 3, (nk,), generator=gen).float()  # many exact ties
    s[3] = 0.0
    s[3, ::2] = -0.0
    s = s.to(DEV)
    lut = torch.full((rows + 1, keep), -7, dtype=torch.int32, device=DEV)   # a guard row after the last
    nk_pad = triton.next_power_of_2(nk)
    _topk_kernel[(rows,)](s, lut, nk, keep, NK_PAD=nk_pad, num_warps=topk_num_warps(nk_pad))
    assert (lut[rows:].cpu() == -7).all(), "rows past R were written"
    lut = lut[:rows].cpu()
    s = s.cpu()
    assert (lut.diff(dim=-1) > 0).all()
    kth = s.topk(keep, dim=-1).values[:, -1:]
    picked = s.gather(-1, lut.long())
    assert (picked >= kth).all()                              # nothing below the keep-th largest is picked
    # exactly the right multiset of values
    torch.testing.assert_close(picked.sort(-1).values, s.topk(keep, dim=-1).values.sort(-1).values)
    # exact ties at the threshold: the first columns win (row 2 holds many; row 3's +0 / -0 are not ties to
    # the kernel, which orders -0 below +0)
    for r in (0, 1, 2, 4, 5):
        thr = kth[r, 0]
        n_above = int((s[r] > thr).sum())
        ties = (s[r] == thr).nonzero().flatten()[:keep - n_above]
        assert set(ties.tolist()) <= set(lut[r].tolist())


def test_strided_views_and_public_op():
    """[B, L, H*D] slices of a fused projection go in without copies; the custom op gives the same result."""
    q, k, v = make(1, 100, 2, 64, torch.float32, 5, layout="flat")
    assert not q.is_contiguous()
    direct = sla_forward_impl(q, k, v, 1, None, None, "softmax", 64, 64, "fp32")
    via_op = sla_forward(q, k, v, 1, None, None, "softmax", 64, 64, "fp32")
    torch.testing.assert_close(direct, via_op, rtol=0, atol=0)
    via_torch_ops = torch.ops.comfyui_sla.sla_forward(q, k, v, 1, None, None, "softmax", 64, 64, "fp32")
    torch.testing.assert_close(direct, via_torch_ops, rtol=0, atol=0)


def test_fake_impl_gives_shape_without_running():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(2, 300, 3, 64, dtype=torch.bfloat16)
        out = torch.ops.comfyui_sla.sla_forward(q, q, q, 1, None, None, "softmax", 128, 64, "auto")
        assert out.shape == q.shape and out.dtype == torch.bfloat16


def test_bad_inputs_are_refused_with_a_clear_message():
    q = torch.randn(1, 10, 2, 48, device=DEV)
    assert not supports(q, q, q, 128, 64)
    with pytest.raises(ValueError, match="head sizes"):
        sla_forward_impl(q, q, q, 1)
    q = torch.randn(1, 10, 2, 64, device=DEV)
    with pytest.raises(ValueError, match="block_q"):
        sla_forward_impl(q, q, q, 1, block_q=32)
    for keep in (0, 2, 0.5, True):       # one key block at L=10: only keep=1 is valid
        with pytest.raises(ValueError, match=r"keep must be an int in \[1, 1\]"):
            sla_forward_impl(q, q, q, keep)
    with pytest.raises(ValueError, match="keep must be an int"):
        sla_forward(q, q, q, 0.5)
    with pytest.raises(ValueError, match="feature_map"):
        sla_forward_impl(q, q, q, 1, feature_map="tanh")
    with pytest.raises(ValueError, match="compute_dtype"):
        sla_forward_impl(q, q, q, 1, compute_dtype="fp8")
    with pytest.raises(ValueError, match="proj_weight"):
        sla_forward_impl(q, q, q, 1, torch.zeros(3, 3, device=DEV))
    with pytest.raises(ValueError, match="unit stride"):
        sla_forward_impl(q.transpose(2, 3).contiguous().transpose(2, 3), q, q, 1)
    with pytest.raises(ValueError, match="lut must be"):
        sla_forward_impl(q, q, q, 1, lut=torch.zeros(1, 2, 1, 2, dtype=torch.int32))


def test_fp32_inputs_compute_in_bf16_by_default_and_return_fp32():
    """Upstream casts to bf16 inside the op: the default compute dtype for fp32 input is bf16."""
    if DEV == "cpu":
        pytest.skip("bf16 is not computed correctly by the Triton interpreter")
    q, k, v = make(1, 256, 2, 128, torch.float32, 9)
    out, lut = sla_forward_impl(q, k, v, blocks(q, 0.25), return_lut=True)
    assert out.dtype == torch.float32
    ref = sla_reference(q.cpu(), k.cpu(), v.cpu(), 0.25, lut=lut.cpu())  # bf16-rounded inputs
    assert rel_err(out.cpu(), ref) < 1e-2
    assert math.isfinite(out.abs().max().item())


TMA_CONFIGS = {
    "keys": dict(USE_TMA=True, PAIR=True, Q_TMA=False, KV_EARLY=False),
    "keys-query-summary": dict(USE_TMA=True, PAIR=True, Q_TMA=True, KV_EARLY=True),
}


@pytest.mark.parametrize("length,keep", [(520, 0.5), (512, 0.75)])
@pytest.mark.parametrize("config", list(TMA_CONFIGS))
def test_tma_path_matches_reference(length, keep, config):
    """The tensor-descriptor (TMA) kernel: key blocks two per iteration, an odd leftover and the masked tail by
    pointer loads; optionally the query tile (rows past L come back as zeros) and the folded summary too."""
    q, k, v = make(1, length, 2, 128, torch.float16, length, layout="flat")
    gen = torch.Generator().manual_seed(length)
    w, bias = (torch.randn(128, 128, generator=gen) * 0.2).to(DEV), (torch.randn(128, generator=gen) * 0.2).to(DEV)
    out, lut = run_checked(q, k, v, keep, w, bias, "softmax", 128, "auto", config=TMA_CONFIGS[config])
    ref = sla_reference(q.cpu(), k.cpu(), v.cpu(), keep, w.cpu(), bias.cpu(), "softmax", 128, 64, lut=lut.cpu())
    assert rel_err(out.cpu(), ref) < 4e-3


def test_torch_compile_sees_one_opaque_op():
    """fullgraph=True fails on a graph break: the custom op (with its fake impl) must trace as one node."""
    q, k, v = make(1, 70, 1, 64, torch.float32, 3)

    def f(q, k, v):
        return sla_forward(q, k, v, 1, None, None, "softmax", 64, 64, "fp32") * 2.0

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("progs", [dict(progs_per_sm=1, key_progs_per_sm=1), dict(progs_per_sm=64),
                                   dict(key_progs_per_sm=64), dict(DETERMINISTIC=False)])
def test_prepass_chunking_does_not_change_the_sums(progs):
    """Longer or shorter chunks per pre-pass program (fewer or more workspace slots), or the atomic baseline, give
    the same means and summaries: every key and query block is counted once."""
    from comfyui_sla.kernels.prepass import prepass
    q, k, v = make(2, 333, 2, 64, torch.float32, 11, layout="flat")
    ref = prepass(q, k, v, 128, 64, "softmax", torch.float32)
    got = prepass(q, k, v, 128, 64, "softmax", torch.float32, config=progs)
    for name, a, b in zip(("qmean", "kmean", "kv", "ks", "ktot"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def summaries_float64(k, v, fmap, cdt):
    """The pre-pass totals in float64: sum k (B, H, D), sum phi(k) (B, H, D) and phi(k)^T v (B, H, D, D), with
    phi applied to k rounded to ``cdt`` and its result and v rounded to ``cdt`` (the kernel's rule)."""
    kd = k.double().permute(0, 2, 1, 3)
    fk = phi(k.to(cdt).float(), fmap).to(cdt).double().permute(0, 2, 1, 3)
    vd = v.to(cdt).double().permute(0, 2, 1, 3)
    return kd.sum(2), fk.sum(2), fk.transpose(-1, -2) @ vd


# (B, L, H, D, dtype, compute dtype, feature map, pre-pass config): ragged L, several key chunks per (b, h)
DET_CASES = [
    (2, 333, 2, 64, torch.float32, torch.float32, "softmax", None),
    (1, 461, 2, 128, torch.float16, torch.float16, "elu", None),
    (2, 333, 1, 64, torch.float16, torch.float16, "relu", dict(key_progs_per_sm=2)),
]


@pytest.mark.parametrize("case", DET_CASES, ids=lambda c: f"{c[1]}-{c[3]}-{str(c[4])[6:]}-{c[6]}-{c[7]}")
def test_prepass_partial_sums_match_float64(case):
    """Each key chunk's slot holds its own partial sums; their fixed-order total is the float64 sum over all keys,
    and the workspace is exactly the size workspace_bytes reports."""
    from comfyui_sla.kernels.prepass import PREPASS_DEFAULT, chunking, num_sms, prepass, sum_slots, workspace_bytes
    b, length, h, d, dtype, cdt, fmap, cfg = case
    q, k, v = make(b, length, h, d, dtype, length + d, layout="flat")
    progs = (cfg or {}).get("key_progs_per_sm", PREPASS_DEFAULT["key_progs_per_sm"])
    _, n_chunks = chunking(num_blocks(length, 64), b * h, progs, num_sms(q.device))
    assert n_chunks >= 3, "the case must split every (b, h) over several key chunks"
    *_, kv, ks, ktot, ws = prepass(q, k, v, 128, 64, fmap, cdt, config=cfg, return_workspace=True)
    assert ws.shape == (n_chunks, b * h * d * (d + 2))
    assert ws.numel() * 4 == workspace_bytes(b, h, length, d, num_sms(q.device), 64, cfg)
    assert torch.equal(sum_slots(ws), torch.cat([kv.flatten(), ks.flatten(), ktot.flatten()]))
    ref_ktot, ref_ks, ref_kv = summaries_float64(k.cpu(), v.cpu(), fmap, cdt)
    for name, got, ref in (("ktot", ktot, ref_ktot), ("ks", ks, ref_ks), ("kv", kv, ref_kv)):
        err = ((got.cpu().double() - ref).norm() / ref.norm()).item()
        assert err < 2e-6, (name, err)
    # the first chunk's slot alone is the sum over its key blocks only
    per, _ = chunking(num_blocks(length, 64), b * h, progs, num_sms(q.device))
    first_ktot = ws[0, b * h * d * (d + 1):].view(b, h, d)
    torch.testing.assert_close(first_ktot.cpu().double(), k[:, :per * 64].cpu().double().sum(1), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("case", DET_CASES[:2], ids=lambda c: f"{c[1]}-{str(c[4])[6:]}")
def test_op_repeats_bit_for_bit(case):
    """The same inputs give the same output, LUT and pre-pass sums, bit for bit (no atomics anywhere)."""
    b, length, h, d, dtype, cdt, fmap, _ = case
    q, k, v = make(b, length, h, d, dtype, 3 * length, layout="flat")
    gen = torch.Generator().manual_seed(length)
    w, bias = (torch.randn(d, d, generator=gen) * 0.2).to(DEV), (torch.randn(d, generator=gen) * 0.2).to(DEV)
    cdt_name = "fp32" if cdt == torch.float32 else "auto"
    runs = [sla_forward_impl(q, k, v, blocks(q, 0.3), w, bias, fmap, 128, 64, cdt_name, return_lut=True)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    from comfyui_sla.kernels.prepass import prepass
    sums = [prepass(q, k, v, 128, 64, fmap, cdt) for _ in range(2)]
    for name, a, b in zip(("qmean", "kmean", "kv", "ks", "ktot"), *sums):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("d", [64, 128])
def test_prepass_tensor_core_column_sums_match(d):
    """Block column sums as ones @ x on the tensor cores give the plain reductions' means and sums (fp16, ragged
    L; both sum phi(k) after its rounding to the compute dtype, as upstream does)."""
    from comfyui_sla.kernels.prepass import prepass
    q, k, v = make(2, 333, 2, d, torch.float16, 12 + d, layout="flat")
    ref = prepass(q, k, v, 128, 64, "softmax", torch.float16, config=dict(COLSUM_MMA=False))
    got = prepass(q, k, v, 128, 64, "softmax", torch.float16, config=dict(COLSUM_MMA=True))
    for name, a, b in zip(("qmean", "kmean", "kv", "ks", "ktot"), got, ref):
        assert torch.isfinite(a).all(), name
        err = ((a - b).norm() / b.norm()).item()
        assert err < 1e-5, (name, err)
