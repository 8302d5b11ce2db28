"""One named test per row of the checkpoint probe table: crafted or damaged checkpoints end in a clear CheckpointError,
the converter leaves nothing behind, the proj_l registry forgets, dense_blocks beyond the model warn."""
from __future__ import annotations

import gc
import json
import logging
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

import stubs
import wan_factory as wf
from comfyui_sla.nodes import sla_nodes as N
from comfyui_sla.sla.checkpoint import CheckpointError, load_checkpoint, load_proj_l
from comfyui_sla.sla.checkpoint import convert as CV
from comfyui_sla.sla.runtime import weights as W

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny(**kw):
    args = dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256, in_dim=4, out_dim=4, text_dim=16, freq_dim=16,
                dtype=torch.bfloat16)
    args.update(kw)
    return wf.make_wan_state_dict(**args)


def header_file(path, header, body: bytes, raw: bytes = None):
    raw = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path = pathlib.Path(path)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return str(path)


def split(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8: 8 + n]), data[8 + n:]


def error_of(fn, *a, **kw) -> str:
    with pytest.raises(CheckpointError) as ei:
        fn(*a, **kw)
    return str(ei.value)


# ------------------------------------------------------------------------------------------ safetensors headers

def test_overlapping_data_offsets_are_refused(tmp_path):
    """Block 1's tensors pointing at block 0's bytes (aliased weights), and a misaligned overlap."""
    src = wf.save_safetensors(tiny(), tmp_path / "m.safetensors")
    header, body = split(src)
    for k in [k for k in header if k.startswith("blocks.1.self_attn.q.")]:
        header[k]["data_offsets"] = header[k.replace("blocks.1", "blocks.0")]["data_offsets"]
    msg = error_of(load_checkpoint, header_file(tmp_path / "alias.safetensors", header, body))
    assert "alias.safetensors" in msg and "offset" in msg and "blocks." in msg
    header, body = split(src)
    b, e = header["blocks.1.self_attn.k.weight"]["data_offsets"]
    header["blocks.1.self_attn.k.weight"]["data_offsets"] = [b - 2, e - 2]  # misaligned, overlapping its neighbour
    msg = error_of(load_checkpoint, header_file(tmp_path / "mis.safetensors", header, body))
    assert "offset" in msg and "blocks.1.self_attn" in msg


def test_header_of_two_million_junk_entries_is_refused_fast(tmp_path):
    """143 MB of zero-size junk entries: over the format's 100 MB header limit, refused before it is parsed."""
    p = tmp_path / "junk.safetensors"
    entry = b'"j%07d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
    chunk = 100_000
    with open(p, "wb") as f:
        f.write(b"\0" * 8 + b"{")
        for c in range(0, 2_400_000, chunk):
            f.write(b"".join(entry % i for i in range(c, c + chunk)))
        f.write(b'"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}')
        n = f.tell() - 8
        f.seek(0)
        f.write(struct.pack("<Q", n))
    assert n > 140_000_000
    t = time.perf_counter()
    msg = error_of(load_checkpoint, str(p))
    assert time.perf_counter() - t < 5 and "header" in msg and "large" in msg
    p.unlink()


def test_many_junk_entries_under_the_size_limit_are_refused(tmp_path):
    """Junk keys never pass into the state dict: too many tensors, or a few that are not Wan tensors."""
    src = wf.save_safetensors(tiny(), tmp_path / "m.safetensors")
    header, body = split(src)
    many = dict(header)
    many.update({f"j{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(120_000)})
    t = time.perf_counter()
    msg = error_of(load_checkpoint, header_file(tmp_path / "many.safetensors", many, body))
    assert time.perf_counter() - t < 10 and "120" in msg and "tensors" in msg
    few = dict(header)
    few.update({f"junk.{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(5)})
    msg = error_of(load_checkpoint, header_file(tmp_path / "few.safetensors", few, body))
    assert "unexpected tensor 'junk." in msg and "Wan" in msg


def test_float_shape_is_refused_not_truncated(tmp_path):
    p = header_file(tmp_path / "f.safetensors", {"head.modulation": {"dtype": "F32", "shape": [1, 2, 128.9],
                                                                     "data_offsets": [0, 1024]}}, b"\0" * 1024)
    msg = error_of(load_checkpoint, p)
    assert "128.9" in msg and "head.modulation" in msg


def test_deeply_nested_json_header_is_a_checkpoint_error(tmp_path):
    good = {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    msg = error_of(load_checkpoint, header_file(tmp_path / "a.safetensors", None, b"", raw))
    assert "a.safetensors" in msg and "nested too deeply" in msg
    raw = (b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":' + b'{"a":' * 50_000 + b"1"
           + b"}" * 50_000 + b"}}")
    msg = error_of(load_checkpoint, header_file(tmp_path / "b.safetensors", good, b"\0" * 4, raw))
    assert "b.safetensors" in msg and "recursion" in msg.lower()


def test_pth_of_5000_nested_dicts_is_a_checkpoint_error(tmp_path):
    obj = cur = {}
    for _ in range(5000):
        cur["x"] = {}
        cur = cur["x"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30_000)
    try:
        torch.save(obj, tmp_path / "deep.pth")
    finally:
        sys.setrecursionlimit(limit)
    for fn in (load_checkpoint, load_proj_l):
        msg = error_of(fn, str(tmp_path / "deep.pth"))
        assert "deep.pth" in msg and "nested" in msg


def test_head_modulation_of_shape_scalar(tmp_path):
    sd = tiny()
    sd["head.modulation"] = torch.zeros((), dtype=torch.float32)
    msg = error_of(load_checkpoint, wf.save_safetensors(sd, tmp_path / "m.safetensors"))
    assert "'head.modulation' has shape []" in msg and "[1, 2, dim]" in msg


def test_negative_shape_whose_product_matches_the_length(tmp_path):
    p = header_file(tmp_path / "n.safetensors", {"blocks.0.ffn.0.weight": {
        "dtype": "F32", "shape": [-1, -6, 256], "data_offsets": [0, 6 * 256 * 4]}}, b"\0" * (6 * 256 * 4))
    msg = error_of(load_checkpoint, p)
    assert "blocks.0.ffn.0.weight" in msg and "non-negative" in msg


def test_metadata_value_that_is_a_list(tmp_path):
    src = wf.save_safetensors(tiny(), tmp_path / "m.safetensors")
    header, body = split(src)
    header["__metadata__"] = {"sla.keep_ratio": [0.1], "sla.source_layout": "turbodiffusion"}
    msg = error_of(load_checkpoint, header_file(tmp_path / "meta.safetensors", header, body))
    assert "__metadata__" in msg and "meta.safetensors" in msg


def test_negative_data_offsets_message(tmp_path):
    p = header_file(tmp_path / "o.safetensors", {"x": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},
                    b"\0" * 8)
    msg = error_of(load_checkpoint, p)
    assert "'x'" in msg and "[-8, 0]" in msg and "non-negative" in msg and "spans 8 bytes, expected 8" not in msg


# ------------------------------------------------------------------------------------------ the model against itself

def test_wan_keys_with_wrong_shapes_loader_and_converter(tmp_path, caplog):
    """One block at another width, and an ffn of [256, 7]: loader and converter refuse (exit 2, nothing written)."""
    sd = tiny()
    other = tiny(dim=256, num_heads=2, ffn_dim=512)
    for k in [k for k in sd if k.startswith("blocks.1.")]:
        sd[k] = other[k]
    wide = wf.save_safetensors(sd, tmp_path / "wide.safetensors")
    msg = error_of(load_checkpoint, wide)
    assert "'blocks.1." in msg and "[256" in msg and "expected [128" in msg
    sd = tiny(dim=256, num_heads=2)
    sd["blocks.1.ffn.0.weight"] = torch.zeros(256, 7, dtype=torch.bfloat16)
    ffn = wf.save_pth(wf.to_turbodiffusion(sd), tmp_path / "ffn.pth")
    msg = error_of(load_checkpoint, ffn)
    assert "'blocks.1.ffn.0.weight' has shape [256, 7]; expected [256, 256]" in msg
    for src in (wide, ffn):
        out = tmp_path / "out.safetensors"
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            assert CV.main([src, str(out)]) == 2
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "\n" not in errors[0].getMessage() and "expected" in errors[0].getMessage()
        assert sorted(os.listdir(tmp_path)) == ["ffn.pth", "wide.safetensors"]


def test_nonfinite_base_weights_and_int8_scale_of_1e38(tmp_path):
    for value, fmt in ((float("nan"), "safetensors"), (float("inf"), "pth")):
        sd = tiny()
        sd["blocks.1.self_attn.v.weight"][3, 5] = value
        path = (wf.save_safetensors if fmt == "safetensors" else wf.save_pth)(sd, tmp_path / f"m.{fmt}")
        msg = error_of(load_checkpoint, path)
        assert "'blocks.1.self_attn.v.weight'" in msg and "non-finite" in msg and "row 0" in msg
    q = wf.to_turbodiffusion_quant(tiny())
    q["blocks.0.ffn.2.scale"][0, 1] = 1e38
    msg = error_of(load_checkpoint, wf.save_safetensors(q, tmp_path / "q.safetensors"), torch.bfloat16)
    assert "'blocks.0.ffn.2.int8_weight'" in msg and "non-finite" in msg


def test_refused_pickle_names_the_blocked_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"blocks.0.ffn.0.weight": Evil()}, tmp_path / "evil.pth")
    msg = error_of(load_checkpoint, str(tmp_path / "evil.pth"))
    assert "posix.system" in msg or "nt.system" in msg
    assert "module posix is blocked" in msg or "is blocked" in msg  # torch's own reason, not cut off


# ------------------------------------------------------------------------------------------ converter

_SLOW_CONVERTER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from sla.checkpoint import convert as CV
orig = CV.SafetensorsWriter.write_parts
def slow(self, key, parts):
    orig(self, key, parts)
    self.f.flush()
    print("wrote", key, flush=True)
    time.sleep(0.3)
CV.SafetensorsWriter.write_parts = slow
sys.exit(CV.main(sys.argv[2:]))
"""


def _start_slow_conversion(src, out):
    p = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERTER, str(ROOT), str(src), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout.readline().startswith("wrote")  # mid-write: the partial file exists
    return p


def _partials(folder):
    return [n for n in os.listdir(folder) if n.endswith(".partial")]


def test_converter_killed_mid_write_leaves_nothing_behind(tmp_path):
    src = wf.save_pth(wf.to_turbodiffusion(tiny()), tmp_path / "in.pth")
    out = tmp_path / "out.safetensors"
    p = _start_slow_conversion(src, out)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 128 + signal.SIGTERM
    assert _partials(tmp_path) == [] and not out.exists()

    p = _start_slow_conversion(src, out)
    p.kill()  # SIGKILL: nothing can run in the killed process
    p.wait(30)
    assert len(_partials(tmp_path)) == 1 and not out.exists()
    CV.convert(src, out)  # the next run on that output removes it
    assert _partials(tmp_path) == []
    with safe_open(str(out), framework="pt") as f:
        assert "head.modulation" in f.keys()


def test_converter_output_folder_missing_or_a_directory(tmp_path, monkeypatch, caplog):
    src = wf.save_pth(wf.to_turbodiffusion(tiny()), tmp_path / "in.pth")
    (tmp_path / "dir.safetensors").mkdir()

    def no_work(*a, **k):
        raise AssertionError("the input was opened before the output was checked")

    monkeypatch.setattr(CV, "open_source", no_work)
    for argv, want in (([str(tmp_path / "missing" / "o.safetensors")], "does not exist"),
                       ([str(tmp_path / "dir.safetensors"), "--force"], "is a directory")):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert CV.main([src] + argv) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and want in errors[0] and "\n" not in errors[0]


# ------------------------------------------------------------------------------------------ registry, dense_blocks

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.fixture
def comfy(tmp_path):
    with stubs.activated():
        import folder_paths
        import comfy.sd
        folder_paths.add_model_folder_path("diffusion_models", str(tmp_path))
        yield comfy


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="measures RSS through /proc")
def test_same_path_loaded_200_times_while_it_changes_keeps_memory_flat(comfy, tmp_path):
    base = wf.make_wan_state_dict(proj_l=False)
    stock = comfy.sd.load_diffusion_model_state_dict(base)
    path = tmp_path / "w.safetensors"
    start_entries = W.registry_size()
    rss = []
    for i in range(200):
        proj = {f"blocks.{b}.self_attn.attn_op.local_attn.proj_l.{p}": torch.full(
            (128, 128) if p == "weight" else (128,), float(i + 1)) for b in range(3) for p in ("weight", "bias")}
        wf.save_safetensors(proj, path)
        os.utime(path, ns=(10 ** 18 + i, 10 ** 18 + i))  # a changed file: new mtime every time
        m = N.SLAWeightsLoader().load(stock, "w.safetensors")[0]
        wid = m.model_options["transformer_options"]["optimized_attention_override"].sla_runtime.settings.weights_id
        assert W.get_proj_l(wid, 1, "cpu", torch.float16)[0][0, 0] == i + 1  # the new file's values, device copy
        del m
        gc.collect()
        assert W.registry_size() == start_entries  # freed with its model
        rss.append(_rss_mb())
    assert rss[-1] - rss[20] < 15, f"RSS grew {rss[-1] - rss[20]:.1f} MB over 180 loads"


def test_registry_entry_lives_while_a_clone_or_reconfiguration_refers_to_it(comfy, tmp_path):
    proj = {f"blocks.{b}.self_attn.attn_op.local_attn.proj_l.{p}": torch.ones((128, 128) if p == "weight" else 128)
            for b in range(3) for p in ("weight", "bias")}
    wf.save_safetensors(proj, tmp_path / "w.safetensors")
    stock = comfy.sd.load_diffusion_model_state_dict(wf.make_wan_state_dict(proj_l=False))
    m = N.SLAWeightsLoader().load(stock, "w.safetensors")[0]
    wid = m.model_options["transformer_options"]["optimized_attention_override"].sla_runtime.settings.weights_id
    m2 = N.ApplySLA().apply(m, 0.5, 0.0, 1.0, "", "128", "64", "softmax", 0, "torch", True)[0]
    m3 = m2.clone()
    del m
    gc.collect()
    assert W.has_weights(wid)
    del m2
    gc.collect()
    assert W.has_weights(wid)  # the clone still uses it
    del m3
    gc.collect()
    assert not W.has_weights(wid)


def test_dense_blocks_beyond_the_model_warn_with_its_block_count(comfy, caplog):
    stock = comfy.sd.load_diffusion_model_state_dict(wf.make_wan_state_dict(proj_l=False))  # 3 blocks
    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        N.ApplySLA().apply(stock, 0.3, 0.0, 1.0, "7, 200", "128", "64", "softmax", 0, "torch", True)
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("7, 200" in w and "3 blocks" in w for w in warn), warn
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui_sla"):
        N.ApplySLA().apply(stock, 0.3, 0.0, 1.0, "0, 2", "128", "64", "softmax", 0, "torch", True)
    assert not [r for r in caplog.records if "dense_blocks" in r.getMessage()]


def test_comfyui_quantised_layers_pass_through_with_their_packed_shapes(tmp_path):
    """ComfyUI's own quantised layers (comfy_quant, packed e.g. NVFP4 [out, in/2] uint8) are left to ComfyUI; the
    same packed shape on a plain layer is an error."""
    sd = tiny()
    sd["blocks.0.self_attn.q.weight"] = torch.randint(0, 255, (128, 64), dtype=torch.uint8)
    sd["blocks.0.self_attn.q.weight_scale"] = torch.ones((), dtype=torch.float32)
    sd["blocks.0.self_attn.q.comfy_quant"] = torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    loaded = load_checkpoint(wf.save_safetensors(sd, tmp_path / "q.safetensors"))
    assert torch.equal(loaded.state_dict["blocks.0.self_attn.q.weight"], sd["blocks.0.self_attn.q.weight"])
    del sd["blocks.0.self_attn.q.comfy_quant"], sd["blocks.0.self_attn.q.weight_scale"]
    msg = error_of(load_checkpoint, wf.save_safetensors(sd, tmp_path / "plain.safetensors"))
    assert "'blocks.0.self_attn.q.weight' has shape [128, 64]; expected [128, 128]" in msg
