"""Seeded mutation fuzzer over checkpoint files: safetensors headers (offsets, shapes, dtypes, lengths, nesting,
metadata, keys), torch zip files (pickle opcodes, globals, truncation) and int8 tile scales.

For every case: the load either succeeds with finite weights of the planned shapes or raises ``CheckpointError``;
nothing else escapes, no case runs past its time box, no file is written or changed, and the process's peak memory
stays bounded over the whole run. ``SLA_FUZZ_CASES`` scales the number of cases (default: about 2 100 in total,
well under a minute on two CPU cores); ``SLA_FUZZ_SEED`` changes the seed.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import resource
import signal
import struct
import time
import zipfile
import zlib

import pytest
import torch

import wan_factory as wf
from comfyui_sla.sla.checkpoint import CheckpointError, load_checkpoint, load_proj_l

SEED = int(os.environ.get("SLA_FUZZ_SEED", "20261202"))
SCALE = float(os.environ.get("SLA_FUZZ_CASES", "2100")) / 2100
N_SAFETENSORS, N_TORCH, N_INT8 = int(1000 * SCALE), int(700 * SCALE), int(400 * SCALE)
CASE_LIMIT_S = 5.0  # time box of one case (a good load of the tiny model takes ~10 ms)
MEMORY_LIMIT_MB = 400  # growth of the process's peak RSS over one whole fuzz test

DTYPE_NAMES = ["F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "F8_E5M2",
               "F8_E8M0", "F4", "C64", "Q4", "", 7, None]
WEIRD_NUMBERS = [-1, -8, 0, 1, 3, 7, 128.9, 2 ** 31, 2 ** 63 - 1, 2 ** 64, -(2 ** 63), 1e300, "8", None, True, [],
                 {}]


class CaseTimeout(BaseException):
    """Raised by the time box; a BaseException so that no ``except Exception`` in the loader can swallow it."""


def _alarm(signum, frame):
    raise CaseTimeout()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Wan (dim 128, 2 blocks) in the layouts the fuzzer mutates, as bytes."""
    native = wf.make_wan_state_dict(dim=128, num_heads=1, num_layers=2, ffn_dim=256, in_dim=4, out_dim=4,
                                    text_dim=16, freq_dim=16, dtype=torch.bfloat16, seed=3)
    d = tmp_path_factory.mktemp("fuzz_base")
    files = {
        "st": wf.save_safetensors(native, d / "native.safetensors"),
        "st_int8": wf.save_safetensors(wf.to_turbodiffusion_quant(native), d / "quant.safetensors"),
        "pth": wf.save_pth(wf.to_turbodiffusion(native, prefix="net."), d / "turbo.pth"),
    }
    return {k: open(p, "rb").read() for k, p in files.items()}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared CI cores: threads only contend on tensors this small
    yield
    torch.set_num_threads(n)


class Runner:
    """Runs cases in one folder, checking the contract of each; counts outcomes."""

    def __init__(self, folder):
        self.folder = folder
        self.counts = {"ok": 0, "error": 0}
        self.slowest = 0.0
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def case(self, name: str, data: bytes, how: int) -> None:
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        before = {e: os.stat(os.path.join(self.folder, e)).st_mtime_ns for e in os.listdir(self.folder)}
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
        t0 = time.perf_counter()
        try:
            if how == 0:
                loaded = load_checkpoint(path)
                for k, v in loaded.state_dict.items():
                    assert v.dtype.is_floating_point, k
                    t = v.to(torch.float16) if v.dtype.itemsize == 1 else v
                    assert torch.isfinite(t).all(), f"{name}: non-finite {k} loaded without an error"
                for i, (w, b) in loaded.proj_l.items():
                    assert torch.isfinite(w).all() and torch.isfinite(b).all()
            elif how == 1:
                load_checkpoint(path, weight_dtype=torch.float8_e4m3fn)
            else:
                load_proj_l(path, num_blocks=2)
            self.counts["ok"] += 1
        except CheckpointError as e:
            assert str(e), name
            self.counts["error"] += 1
        except CaseTimeout:
            pytest.fail(f"case {name} ran past its {CASE_LIMIT_S}s time box")
        except BaseException as e:  # anything but CheckpointError is a failure of the contract
            pytest.fail(f"case {name}: {type(e).__name__} escaped instead of CheckpointError: {e}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        self.slowest = max(self.slowest, time.perf_counter() - t0)
        after = {e: os.stat(os.path.join(self.folder, e)).st_mtime_ns for e in os.listdir(self.folder)}
        assert after == before, f"case {name} wrote or changed files: {set(after) ^ set(before)}"
        os.remove(path)

    def finish(self, label: str, n: int) -> None:
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss0) / 1024
        assert grown < MEMORY_LIMIT_MB, f"{label}: peak RSS grew {grown:.0f} MB"
        assert sum(self.counts.values()) == n
        print(f"{label}: {n} cases, {self.counts}, slowest {self.slowest * 1000:.0f} ms, peak RSS +{grown:.0f} MB")


# ------------------------------------------------------------------------------------------ safetensors

def split_safetensors(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8: 8 + n]), data[8 + n:]


def join_safetensors(header, body: bytes, raw: bytes = None) -> bytes:
    raw = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _nested(depth: int, leaf="x"):
    v = leaf
    for _ in range(depth):
        v = [v] if depth % 2 else {"a": v}
    return v


def mutate_safetensors(rng: random.Random, data: bytes) -> bytes:
    header, body = split_safetensors(data)
    keys = [k for k in header if k != "__metadata__"]
    raw = None
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        k = rng.choice(keys)
        e = header.get(k)
        if not isinstance(e, dict):
            continue
        op = rng.randrange(17)
        if op == 0:  # offsets: point at another tensor's bytes (overlap / alias)
            e["data_offsets"] = list(header[rng.choice(keys)]["data_offsets"])
        elif op == 1:  # offsets: shift, swap, negative, weird values
            b, end = e["data_offsets"]
            e["data_offsets"] = rng.choice([[b + 1, end + 1], [end, b], [-8, 0], [b - 2, end - 2],
                                            [b, rng.choice(WEIRD_NUMBERS)], [rng.choice(WEIRD_NUMBERS), end],
                                            [b], [b, end, end], "0,8"])
        elif op == 2:  # shapes: product-preserving reshapes (the library is satisfied; our shape rules decide)
            s = e["shape"]
            n = 1
            for x in s:
                n *= x
            e["shape"] = rng.choice([s[::-1], [n], [1] + s, s + [1], [n // 2, 2] if n % 2 == 0 else [n],
                                     [-1, -n] if n else [0], [1, 2, n // 2] if n % 2 == 0 else [n]])
        elif op == 3:  # shapes: weird values
            s = list(e["shape"])
            if s:
                s[rng.randrange(len(s))] = rng.choice(WEIRD_NUMBERS)
            e["shape"] = rng.choice([s, [], [0], None, "128", [[128]], s + [0]])
        elif op == 4:  # dtypes
            e["dtype"] = rng.choice(DTYPE_NAMES)
        elif op == 5:  # drop a field / add one
            if rng.random() < 0.5:
                e.pop(rng.choice(["dtype", "shape", "data_offsets"]), None)
            else:
                e[rng.choice(["x", "dtype2", "offsets"])] = _nested(rng.randrange(1, 50))
        elif op == 6:  # metadata
            header["__metadata__"] = rng.choice([
                ["a", "list"], 7, "text", {"format": ["pt"]}, {"sla.source_layout": "x", "sla.keep_ratio": "nan"},
                {"sla.source_layout": "turbodiffusion", "sla.block_q": "-3", "sla.feature_map": "x" * 10000},
                {"a": {"b": "c"}}, {"a": None}, _nested(rng.randrange(1, 300)), {}])
        elif op == 7:  # nesting of an entry
            header[k] = _nested(rng.randrange(1, 400))
        elif op == 8:  # delete a tensor
            header.pop(k, None)
        elif op == 9:  # rename a tensor: junk, another block, another naming
            new = rng.choice(["junk", f"blocks.{rng.choice([2, 7, 99])}.ffn.0.weight", "blocks.x.q.weight",
                              k.replace("blocks.1", "blocks.0"), k + ".extra", "", "head.modulation",
                              "blocks.0.self_attn.attn_op.local_attn.proj_l.weight", "lora_A.weight",
                              "model.diffusion_model." + k])
            header[new] = header.pop(k)
        elif op == 10:  # zero-size junk entries
            for i in range(rng.choice((1, 10, 1000))):
                header[f"junk.{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
        elif op == 11:  # header length field / file length
            raw = json.dumps(header, separators=(",", ":")).encode()
            n = len(raw) + rng.choice([-9, -1, 1, 8, 1 << 40, -len(raw)])
            tail = body[: rng.randrange(len(body) + 1)] if rng.random() < 0.5 else body + b"\0" * rng.choice((1, 8))
            return struct.pack("<Q", max(n, 0) % (1 << 64)) + raw + tail
        elif op == 12:  # truncate / extend the data section
            body = body[: rng.randrange(len(body))] if rng.random() < 0.7 else body + b"\x00" * 8
        elif op == 13:  # flip bytes of the header text
            raw = bytearray(json.dumps(header, separators=(",", ":")).encode())
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw)
        elif op == 14:  # non-finite values in a tensor's bytes
            b, end = e["data_offsets"]
            if isinstance(b, int) and isinstance(end, int) and 0 <= b < end <= len(body):
                pat = {"F32": struct.pack("<f", float(rng.choice(["nan", "inf", "-inf"]))), "BF16": b"\x80\x7f",
                       "F16": b"\x00\x7c"}.get(e.get("dtype"), b"\xff")
                at = b + rng.randrange(max(1, (end - b) // len(pat))) * len(pat)
                body = body[:at] + pat + body[at + len(pat):]
        elif op == 15:  # a tensor's shape swapped with another's (widths of another block / layer)
            o = header.get(rng.choice(keys))
            if isinstance(o, dict):
                e["shape"], o["shape"] = o.get("shape"), e.get("shape")
        else:  # deep nesting of the whole header
            raw = b'{"__metadata__":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return join_safetensors(header, body, raw)


def test_fuzz_safetensors(tiny, tmp_path, one_thread):
    rng = random.Random(SEED)
    run = Runner(str(tmp_path))
    for i in range(N_SAFETENSORS):
        base = tiny["st_int8"] if i % 4 == 3 else tiny["st"]
        run.case(f"c{i}.safetensors", mutate_safetensors(rng, base), how=rng.choice((0, 0, 0, 1, 2)))
    run.finish("safetensors", N_SAFETENSORS)
    assert run.counts["error"] > N_SAFETENSORS // 2  # the mutations do reach the checks


# ------------------------------------------------------------------------------------------ torch zip

def zip_parts(data: bytes):
    z = zipfile.ZipFile(io.BytesIO(data))
    return [(i.filename, z.read(i)) for i in z.infolist()]


def build_zip(parts) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, payload in parts:
            z.writestr(name, payload)
    return buf.getvalue()


def patch_in_place(data: bytes, name_suffix: str, new: bytes) -> bytes:
    """Replace an entry's bytes (same length) inside the archive, fixing its CRC, so torch reads the mutated pickle
    exactly where it expects it."""
    z = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in z.infolist() if i.filename.endswith(name_suffix))
    (n, m) = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + n + m
    assert len(new) == info.file_size
    out = bytearray(data)
    out[start: start + len(new)] = new
    old_crc, new_crc = struct.pack("<I", info.CRC), struct.pack("<I", zlib.crc32(new) & 0xFFFFFFFF)
    return bytes(out).replace(old_crc, new_crc)


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, self.arg)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def crafted_pickles(rng: random.Random):
    """Opcode streams the weights_only unpickler must refuse or read, each a complete data.pkl."""
    P = pickle
    g = rng.choice([b"posix\nsystem\n", b"builtins\neval\n", b"os\nremove\n", b"subprocess\nPopen\n",
                    b"torch._utils\n_rebuild_tensor_v2\n", b"collections\nOrderedDict\n", b"\n\n",
                    b"a" * 300 + b"\nb\n"])
    streams = [
        P.PROTO + b"\x02" + P.GLOBAL + g + P.MARK + P.BINUNICODE + struct.pack("<I", 4) + b"true" + P.TUPLE
        + P.REDUCE + P.STOP,
        P.PROTO + b"\x02" + P.EMPTY_DICT + P.STOP,
        P.PROTO + b"\x02" + P.EMPTY_LIST + P.STOP,
        P.PROTO + b"\x02" + P.EMPTY_DICT + P.MARK + P.BININT1 + b"\x01" + P.NONE + P.SETITEMS + P.STOP,
        P.PROTO + b"\x02" + P.EMPTY_DICT * 3000 + P.STOP,
        P.PROTO + b"\x02" + (P.EMPTY_DICT + P.BINUNICODE + struct.pack("<I", 1) + b"k") * 2000 + P.STOP,
        P.PROTO + b"\x02" + P.BINPERSID + P.STOP,
        P.PROTO + b"\x02" + P.MARK * 100 + P.STOP,
        P.PROTO + b"\x02" + P.BINUNICODE + struct.pack("<I", 1 << 30) + b"x" + P.STOP,
        P.PROTO + b"\x02" + P.LONG4 + struct.pack("<i", 1 << 20) + b"\x01" * 64 + P.STOP,
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        b"",
    ]
    return streams[rng.randrange(len(streams))]


def mutate_torch(rng: random.Random, data: bytes, tiny_state) -> bytes:
    op = rng.randrange(8)
    if op == 0:  # truncation anywhere
        return data[: rng.randrange(len(data))]
    if op == 1:  # random byte flips anywhere (CRC / headers / storages)
        out = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    parts = zip_parts(data)
    pkl_i = next(i for i, (n, _) in enumerate(parts) if n.endswith("data.pkl"))
    pkl = parts[pkl_i][1]
    if op == 2:  # pickle opcodes flipped in place (same length, CRC fixed)
        b = bytearray(pkl)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return patch_in_place(data, "data.pkl", bytes(b))
    if op == 3:  # storage digits / names changed in place
        b = bytearray(pkl)
        digits = [i for i, c in enumerate(b) if 0x30 <= c <= 0x39]
        if digits:
            b[rng.choice(digits)] = rng.randrange(0x30, 0x3A)
        return patch_in_place(data, "data.pkl", bytes(b))
    if op == 4:  # a crafted opcode stream as the whole pickle
        parts[pkl_i] = (parts[pkl_i][0], crafted_pickles(rng))
        return build_zip(parts)
    if op == 5:  # globals through torch.save itself
        fn = rng.choice([(os.system, ("true",)), (eval, ("1",)), (os.getcwd, ()), (print, ("x",)),
                         (getattr, ("text", "upper"))])
        return _torch_bytes({"blocks.0.ffn.0.weight": Evil(*fn)})
    if op == 6:  # structure: nesting, non-dicts, non-str keys, lists of tensors, odd wrappers
        t = torch.zeros(2)
        obj = rng.choice([[t, t], t, 7, {"state_dict": {"model": {"net": {}}}}, {1: t, None: t},
                          {"a": {"b": [t]}}, {"state": {"128:bf16": {"proj_l.weight": t}}, "version": 1},
                          {"state": {"128:bf16": [1, 2]}, "settings": {}}, {"state": {"x": t}, "version": 1},
                          {"state": {"128:bf16": {"proj_l.weight": torch.zeros(128, 128),
                                                  "proj_l.bias": torch.full((128,), float("nan"))}}, "version": 1}])
        if rng.random() < 0.3:
            obj = {}
            cur = obj
            for _ in range(rng.choice((40, 200))):
                cur["x"] = {}
                cur = cur["x"]
        return _torch_bytes(obj)
    # op == 7: the tiny model with one tensor replaced by something of another kind
    sd = dict(tiny_state)
    k = rng.choice(sorted(sd))
    sd[k] = rng.choice([torch.zeros(0), torch.zeros(3, dtype=torch.int64), torch.tensor(float("nan")),
                        sd[k].float().mul(float("inf")), sd[k].t().contiguous() if sd[k].ndim == 2 else sd[k][None],
                        torch.zeros(2, dtype=torch.complex64), torch.zeros(1, dtype=torch.bool)])
    return _torch_bytes(sd)


def test_fuzz_torch_zip(tiny, tmp_path, one_thread):
    rng = random.Random(SEED + 1)
    state = torch.load(io.BytesIO(tiny["pth"]), weights_only=True)
    run = Runner(str(tmp_path))
    for i in range(N_TORCH):
        run.case(f"c{i}.pth", mutate_torch(rng, tiny["pth"], state), how=rng.choice((0, 0, 2)))
    run.finish("torch zip", N_TORCH)
    assert run.counts["error"] > N_TORCH // 3


# ------------------------------------------------------------------------------------------ int8 scales

SPECIAL = [1e38, 3.4e38, float("inf"), -float("inf"), float("nan"), 0.0, -1.0, 1e-45, 1e30, 65504.0, 1e5]


def mutate_int8(rng: random.Random, data: bytes) -> bytes:
    header, body = split_safetensors(data)
    scales = [k for k in header if k.endswith(".scale")]
    body = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        k = rng.choice(scales)
        b, end = header[k]["data_offsets"]
        n = (end - b) // 4
        if rng.random() < 0.85:
            at = b + 4 * rng.randrange(n)
            body[at: at + 4] = struct.pack("<f", rng.choice(SPECIAL))
        else:  # a scale grid of another shape (the library agrees; our check does not)
            header[k]["shape"] = rng.choice([[n], [1, n], [n, 1]] if n > 1 else [[1, 1, 1], [1]])
    ints = [k for k in header if k.endswith(".int8_weight")]
    if rng.random() < 0.3:  # extreme int8 values
        k = rng.choice(ints)
        b, end = header[k]["data_offsets"]
        body[b + rng.randrange(end - b)] = rng.choice((0x7F, 0x80, 0x81))
    return join_safetensors(header, bytes(body))


def test_fuzz_int8_scales(tiny, tmp_path, one_thread):
    rng = random.Random(SEED + 2)
    run = Runner(str(tmp_path))
    for i in range(N_INT8):
        run.case(f"c{i}.safetensors", mutate_int8(rng, tiny["st_int8"]), how=rng.choice((0, 0, 1)))
    run.finish("int8 scales", N_INT8)
    assert run.counts["ok"] and run.counts["error"]
