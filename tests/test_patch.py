"""The attention override on its own (no ComfyUI): routing, numerics against sla_torch, chaining, fallback,
settings parsing and the proj_l weights."""
import logging

import pytest
import torch

from comfyui_sla.sla.reference import sla_torch
from comfyui_sla.sla.runtime import patch as P
from comfyui_sla.sla.runtime import sparse_call as SC
from comfyui_sla.sla.runtime import stats as R
from comfyui_sla.sla.families import WAN
from comfyui_sla.sla.runtime.sla_patch import SLAPatch
from comfyui_sla.sla.runtime.weights import ProjLWeights
from comfyui_sla.sla.runtime.settings import SLASettings, format_blocks, parse_dense_blocks

B, L, H, D = 2, 200, 2, 128   # L is ragged for both 128- and 64-token blocks


def qkv(length=L, heads=H, d=D, batch=B, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, heads * d, generator=g).to(dtype) for _ in range(3)]


def dense_attention(q, k, v, heads, mask=None, **kwargs):
    """Stands for ComfyUI's dense ``func``: records that it was called."""
    dense_attention.calls += 1
    b, lq, hd = q.shape
    d = hd // heads
    qh, kh, vh = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, lq, hd)


dense_attention.calls = 0


def proj_l(blocks, d=D, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {i: (torch.randn(d, d, generator=g) * 0.05, torch.randn(d, generator=g) * 0.05) for i in blocks}


def call(override, q, k, v, heads=H, block=0, sigma=None, mask=None, **extra):
    to = {}
    if block is not None:
        to["block_index"] = block
    if sigma is not None:
        to["sigmas"] = torch.tensor([sigma, sigma])
    kwargs = dict(heads=heads, transformer_options=to, _inside_attn_wrapper=True, **extra)
    if mask is not None:
        kwargs["mask"] = mask
    return override(dense_attention, q, k, v, **kwargs)


def make_override(settings: SLASettings, weights=None, previous=None):
    """The override of a fresh Wan patch (what apply_sla installs), its patch as ``.sla_patch``."""
    return P.make_attention_override(SLAPatch(WAN, settings, ProjLWeights(weights) if weights else None, previous))


def expected_sla(q, k, v, s: SLASettings, w=None, b=None):
    q4, k4, v4 = (t.unflatten(-1, (H, D)) for t in (q, k, v))
    out = sla_torch(q4, k4, v4, s.keep_ratio, w, b, s.feature_map, s.block_q, s.block_k)
    return out.reshape(q.shape)


@pytest.fixture(autouse=True)
def _reset_counters():
    dense_attention.calls = 0
    yield


# --------------------------------------------------------------------------------------------- settings

def test_parse_dense_blocks():
    assert parse_dense_blocks("0, 1, 28-29") == {0, 1, 28, 29}
    assert parse_dense_blocks("  ") == frozenset()
    assert parse_dense_blocks(None) == frozenset()
    assert parse_dense_blocks("3 5;7,  9 - 10") == {3, 5, 7, 9, 10}
    assert format_blocks(parse_dense_blocks("0, 1, 2, 5, 7-8")) == "0-2, 5, 7-8"


@pytest.mark.parametrize("text,token", [("0, x, 3", "'x'"), ("5-2", "'5-2'"), ("1, -3", "'-3'"),
                                        ("1.5", "'1.5'"), ("300", "'300'"), ("2-a", "'2-a'")])
def test_parse_dense_blocks_names_bad_token(text, token):
    with pytest.raises(ValueError) as e:
        parse_dense_blocks(text)
    assert token in str(e.value)


def test_settings_validation():
    s = SLASettings(block_q="64", dense_blocks="1-2", min_tokens="0")
    assert (s.block_q, s.dense_blocks, s.min_tokens) == (64, {1, 2}, 0)
    assert s.to_dict()["dense_blocks"] == [1, 2]
    for bad in (dict(keep_ratio=0.0), dict(keep_ratio=1.5), dict(block_q=96), dict(block_k=128),
                dict(feature_map="gelu"), dict(backend="cuda"), dict(start_percent=0.8, end_percent=0.2),
                dict(min_tokens=-1), dict(end_percent=1.2)):
        with pytest.raises(ValueError):
            SLASettings(**bad)


# --------------------------------------------------------------------------------------------- numerics

def test_self_attention_matches_sla_torch_with_block_proj_l():
    s = SLASettings(keep_ratio=0.3, min_tokens=0, backend="torch")
    ov = make_override(s, proj_l([0, 1, 2]))
    q, k, v = qkv()
    for block in (0, 2):
        w, b = proj_l([0, 1, 2])[block]
        out = call(ov, q, k, v, block=block)
        torch.testing.assert_close(out, expected_sla(q, k, v, s, w, b), rtol=1e-5, atol=1e-5)
        # and the proj_l really matters: without it the output differs
        assert not torch.allclose(out, expected_sla(q, k, v, s))
    st = ov.sla_patch.stats
    assert st.sparse == 2 and dense_attention.calls == 0
    assert st.linear_blocks == {0, 2}
    nk = -(-L // 64)
    assert st.realised_keep == pytest.approx(int(0.3 * nk) / nk)


def test_training_free_without_weights_and_block_without_proj_l(caplog):
    q, k, v = qkv()
    s = SLASettings(keep_ratio=0.5, min_tokens=0, feature_map="elu", block_q=64)
    ov = make_override(s)
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        out1 = call(ov, q, k, v, block=None)  # no block index needed without weights / dense_blocks
        call(ov, q, k, v, block=1)
    torch.testing.assert_close(out1, expected_sla(q, k, v, s), rtol=1e-5, atol=1e-5)
    assert sum("not fine-tuned for SLA" in r.message for r in caplog.records) == 1

    s2 = SLASettings(keep_ratio=0.5, min_tokens=0)
    ov2 = make_override(s2, proj_l([0]))  # block 1 has no proj_l -> block-sparse only there
    torch.testing.assert_close(call(ov2, q, k, v, block=1), expected_sla(q, k, v, s2), rtol=1e-5, atol=1e-5)
    assert ov2.sla_patch.stats.sparse_only_blocks == {1}


def test_all_zero_proj_l_skips_the_linear_branch(monkeypatch):
    """A zero (never fine-tuned) proj_l adds nothing: the kernel is called without it, same output."""
    q, k, v = qkv()
    pl = proj_l([0, 1])
    pl[1] = (torch.zeros(D, D), torch.zeros(D))
    seen = []
    real = SC.sparse_linear_attention

    def spy(*args, **kwargs):
        seen.append(args[4] is not None)   # proj_weight
        return real(*args, **kwargs)

    monkeypatch.setattr(SC, "sparse_linear_attention", spy)
    s = SLASettings(keep_ratio=0.5, min_tokens=0)
    ov = make_override(s, pl)
    out0, out1 = call(ov, q, k, v, block=0), call(ov, q, k, v, block=1)
    assert seen == [True, False]
    torch.testing.assert_close(out0, expected_sla(q, k, v, s, *pl[0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out1, expected_sla(q, k, v, s, *pl[1]), rtol=1e-5, atol=1e-5)
    assert ov.sla_patch.stats.linear_blocks == {0} and ov.sla_patch.stats.sparse_only_blocks == {1}


def test_keep_one_is_dense_attention():
    """keep 1.0 without proj_l is exact softmax attention: SLA equals the dense function."""
    q, k, v = qkv()
    ov = make_override(SLASettings(keep_ratio=1.0, min_tokens=0))
    torch.testing.assert_close(call(ov, q, k, v), dense_attention(q, k, v, H), rtol=1e-4, atol=1e-5)


def test_bf16_input_keeps_dtype():
    q, k, v = qkv(dtype=torch.bfloat16)
    ov = make_override(SLASettings(min_tokens=0))
    out = call(ov, q, k, v)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape and torch.isfinite(out.float()).all()
    assert ov.sla_patch.stats.sparse == 1


# --------------------------------------------------------------------------------------------- routing

def test_cross_attention_and_mask_go_dense():
    q, _, _ = qkv()
    _, kc, vc = qkv(length=77)
    ov = make_override(SLASettings(min_tokens=0))
    torch.testing.assert_close(call(ov, q, kc, vc), dense_attention(q, kc, vc, H))
    q, k, v = qkv()
    mask = torch.zeros(L, L)
    call(ov, q, k, v, mask=mask)
    call(ov, q, k, v, skip_reshape=True)
    st = ov.sla_patch.stats
    assert st.sparse == 0 and st.dense == {R.R_CROSS: 1, R.R_MASK: 1, R.R_LAYOUT: 1}
    assert st.self_dense == 0   # none of these is self-attention SLA declined


@pytest.mark.parametrize("settings,kw,reason", [
    (dict(min_tokens=L + 1), {}, R.R_SHORT),
    (dict(enabled=False), {}, R.R_DISABLED),
    (dict(dense_blocks="0, 3-4"), dict(block=3), R.R_DENSE_BLOCK),
    (dict(dense_blocks="0"), dict(block=None), R.R_NO_INDEX),
])
def test_dense_routes(settings, kw, reason):
    q, k, v = qkv()
    ov = make_override(SLASettings(**{"min_tokens": 0, **settings}))
    out = call(ov, q, k, v, **kw)
    torch.testing.assert_close(out, dense_attention(q, k, v, H))
    assert ov.sla_patch.stats.dense == {reason: 1} and ov.sla_patch.stats.sparse == 0


def test_dense_blocks_only_affect_listed_blocks():
    q, k, v = qkv()
    ov = make_override(SLASettings(min_tokens=0, dense_blocks="1"))
    for blk in range(3):
        call(ov, q, k, v, block=blk)
    assert ov.sla_patch.stats.sparse == 2 and ov.sla_patch.stats.dense == {R.R_DENSE_BLOCK: 1}


def test_head_size_and_dtype_fallback(caplog):
    ov = make_override(SLASettings(min_tokens=0))
    q, k, v = qkv(heads=4, d=24)
    call(ov, q, k, v, heads=4)
    q, k, v = qkv(dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        for _ in range(3):
            out = call(ov, q, k, v)
    assert out.dtype == torch.float64
    assert ov.sla_patch.stats.dense == {R.R_HEAD: 1, R.R_DEVICE: 3}
    assert sum("unsupported device/dtype" in r.message for r in caplog.records) == 1


def test_sigma_window():
    q, k, v = qkv()
    ov = make_override(SLASettings(min_tokens=0, start_percent=0.2, end_percent=0.6))
    rt = ov.sla_patch
    rt.begin_run(window=(0.8, 0.4))   # what percent_to_sigma gives on a shift-1 flow schedule
    for sigma in (1.0, 0.8, 0.6, 0.4, 0.2):
        call(ov, q, k, v, sigma=sigma)
    assert rt.stats.sparse == 3 and rt.stats.dense == {R.R_WINDOW: 2}


def test_previous_override_gets_what_sla_does_not_take():
    seen = []

    def previous(func, *args, **kwargs):
        seen.append(args[1].shape[1])
        assert kwargs["transformer_options"] is not None and kwargs["heads"] == H
        return func(*args, **kwargs) * 2

    ov = make_override(SLASettings(min_tokens=0), previous=previous)
    q, k, v = qkv()
    _, kc, vc = qkv(length=77)
    out_cross = call(ov, q, kc, vc)
    torch.testing.assert_close(out_cross, 2 * dense_attention(q, kc, vc, H))
    call(ov, q, k, v)   # self-attention: SLA, previous not called
    assert seen == [77]
    assert ov.sla_patch.previous is previous and P.is_sla_override(ov)


def test_error_falls_back_to_dense_logged_once(monkeypatch, caplog):
    attempts = []

    def boom(*a, **k):
        attempts.append(tuple(a[0].shape))
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(SC, "sparse_linear_attention", boom)
    ov = make_override(SLASettings(min_tokens=0))
    q, k, v = qkv()
    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        outs = [call(ov, q, k, v) for _ in range(3)]
    for out in outs:
        torch.testing.assert_close(out, dense_attention(q, k, v, H))
    msgs = [r.message for r in caplog.records if "kernel exploded" in r.message]
    assert len(msgs) == 1
    assert ov.sla_patch.stats.dense == {R.R_ERROR: 3}
    assert len(attempts) == 1   # the failing shape is not retried on every call
    q2, k2, v2 = qkv(length=L + 64)
    call(ov, q2, k2, v2)        # another shape still gets its own try
    assert len(attempts) == 2


def test_unusable_transformer_options_fall_back_to_dense(caplog):
    # Another node's odd block_index (or sigmas) must not crash sampling: the call runs dense, logged once.
    ov = make_override(SLASettings(min_tokens=0, dense_blocks="1", start_percent=0.5))
    ov.sla_patch.begin_run(window=(0.5, 0.0))
    q, k, v = qkv()
    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        out = call(ov, q, k, v, block="first")
        out2 = ov(dense_attention, q, k, v, heads=H, transformer_options={"block_index": 0,
                                                                         "sigmas": torch.tensor([])})
    torch.testing.assert_close(out, dense_attention(q, k, v, H))
    torch.testing.assert_close(out2, dense_attention(q, k, v, H))
    assert ov.sla_patch.stats.dense == {R.R_ERROR: 2}
    assert any("failed" in r.message for r in caplog.records)


def test_run_wrapper_logs_summary_and_warns_when_never_called(caplog):
    ov = make_override(SLASettings(min_tokens=0, keep_ratio=0.25))
    rt = ov.sla_patch
    q, k, v = qkv()

    class Executor:
        class_obj = None

        def __init__(self, body):
            self.body = body

        def __call__(self, *a, **kw):
            return self.body()

    wrapper = P.make_run_wrapper(rt, window_resolver=lambda ex: (1.0, 0.0))
    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        wrapper(Executor(lambda: [call(ov, q, k, v, block=i) for i in range(3)]))
        wrapper(Executor(lambda: None))
        wrapper(Executor(lambda: call(ov, q, k, v, enabled=None, mask=torch.zeros(L, L))))
    lines = [r for r in caplog.records if r.name == "comfyui_sla"]
    info = [r.message for r in lines if r.message.startswith("SLA run:")]
    assert info[0].startswith("SLA run: 3 sparse / 0 dense self-attention calls")
    assert "realised keep 0.250" in info[0]
    warn = [r for r in lines if r.levelno == logging.WARNING and "never went through it" in r.message]
    assert len(warn) == 1
    assert "left to dense/previous attention: mask 1" in info[1]
    assert rt.stats.calls == 1  # counters restart per run


def test_run_interrupted_before_any_call_does_not_warn(caplog):
    rt = make_override(SLASettings(min_tokens=0)).sla_patch
    wrapper = P.make_run_wrapper(rt)

    def cancelled(*a, **kw):
        raise KeyboardInterrupt  # e.g. the user pressed cancel before the first step

    with caplog.at_level(logging.INFO, logger="comfyui_sla"):
        with pytest.raises(KeyboardInterrupt):
            wrapper(cancelled)
        wrapper(lambda *a, **kw: None)   # a finished run that never reached attention still warns
    warn = [r for r in caplog.records if "never went through it" in r.message]
    assert len(warn) == 1 and rt._depth == 0


# --------------------------------------------------------------------------------------------- proj_l weights

def test_weights_cache_device_copies_and_know_their_blocks():
    pl = proj_l([0, 1])
    w = ProjLWeights(pl, "file-a")
    assert w.blocks == (0, 1) and w.head_dim == D
    w1, _ = w.get(1, "cpu")
    w2, _ = w.get(1, "cpu")
    assert w1 is w2   # one copy per device/dtype
    assert w.get(7, "cpu") is None


@pytest.mark.parametrize("bad", [{}, {0: (torch.zeros(4, 5), None)},
                                 {0: (torch.zeros(4, 4), None), 1: (torch.zeros(8, 8), None)},
                                 {0: (torch.zeros(4, 4), torch.zeros(3))}])
def test_weights_reject_bad_shapes(bad):
    with pytest.raises(ValueError):
        ProjLWeights(bad)


def test_block_index_patch_sets_index_and_chains():
    order = []

    def previous(args, extra):
        order.append(("previous", args["transformer_options"]["block_index"]))
        return extra["original_block"](args)

    patch = P.make_block_index_patch(4, previous)
    to = {}
    out = patch({"img": 1, "transformer_options": to},
                {"original_block": lambda a: order.append("block") or {"img": a["img"] + 1}})
    assert out == {"img": 2} and to["block_index"] == 4 and order == [("previous", 4), "block"]


# --------------------------------------------------------------------------------------------- ComfyUI >= 0.33 kwargs

@pytest.mark.parametrize("extra,sparse", [(dict(low_precision_attention=True), True),
                                          (dict(scale=0.5), False), (dict(enable_gqa=True), False),
                                          (dict(attn_bias=torch.zeros(1)), False)])
def test_newer_attention_kwargs(extra, sparse):
    # A different softmax scale, grouped heads or an unknown tensor are not what SLA computes: the call goes on,
    # kwargs and all, to the previous/dense attention; a precision hint does not change what SLA computes.
    seen = []

    def previous(func, *args, **kwargs):
        seen.append(kwargs)
        return func(*args, **kwargs)

    ov = make_override(SLASettings(min_tokens=0), previous=previous)
    q, k, v = qkv()
    call(ov, q, k, v, **extra)
    assert ov.sla_patch.stats.sparse == int(sparse)
    if not sparse:
        assert len(seen) == 1 and all(seen[0][n] is extra[n] for n in extra)


def test_auto_backend_is_one_rule_for_the_api_and_the_patch(monkeypatch):
    # 'auto' asks sla.functional.kernel_refusal in both places: where it finds nothing against the kernel, the
    # patch picks the kernel too; where it names a reason, both run the PyTorch path.
    from comfyui_sla.sla import functional as F
    patch = make_override(SLASettings(min_tokens=0)).sla_patch
    q4 = torch.zeros(1, 64, 2, 128)
    assert SC.pick_backend(patch, q4, q4, q4) == "torch" and F.kernel_refusal(q4, q4, q4, 128, 64)
    monkeypatch.setattr(SC, "kernel_refusal", lambda *a: None)
    assert SC.pick_backend(patch, q4, q4, q4) == "triton"
    forced = make_override(SLASettings(min_tokens=0, backend="torch")).sla_patch
    assert SC.pick_backend(forced, q4, q4, q4) == "torch"
