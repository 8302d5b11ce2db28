"""Peer sparse-attention kernels for ``bench/bench_h3_attention.py``, imported at run time from ``.thirdparty/``.

    python3 scripts/fetch_peers.py                      # builds .thirdparty/ (git-ignored; see that script)
    python3 bench/peers_h3.py --selfcheck [--thirdparty DIR] [--dtype float16]

Nothing of the peers is in this repository: their files are loaded by path from the folder the fetch script builds.
Each peer is ``fn(q, k, v, keep) -> out`` on the tensors H3 hands to ``optimized_attention``: q, k, v [1, H, S, D]
bf16 strided views (transposes of one fused qkv buffer), ``keep`` the fraction of key blocks each query block keeps
(0.15 = sparsity 0.85); out is [1, S, H * D], what H3's attention call returns. Every layout change a peer needs
happens inside ``fn`` (the peer's user pays it). Each peer runs with its own defaults:

* ``plaguekind``: the "H3 SLA Attention" node of PlagueKind/ComfyUI-PlagueKind-Nodes at its default block_size "64"
  (BLKQ = BLKK = 64): ``block_map.get_block_map`` + ``kernel.block_sparse_attention`` on (B, S, H, D) tensors, with
  the node's own layout step (``transpose(1, 2)``, and ``.contiguous()`` copies of all three when q is not contiguous
  in that layout: true for views of a fused qkv buffer). Plain top-k: the node's audio pinning needs the packed
  layout, and adds the audio blocks on top of the budget.
* ``thu_sla``: thu-ml/SLA's ``SparseLinearAttention(head_dim, topk=keep)`` module (softmax feature map, BLKQ = BLKK =
  64, bf16 compute; fp16 for fp16 inputs) with its own init (proj_l zero: the linear branch is computed and adds 0).
  It takes (B, H, S, D) and makes q, k, v contiguous itself; its output goes through ``transpose(1, 2).reshape``.
* ``thu_sla_sparse``: the same router and Triton sparse kernel without the linear branch (``get_block_map`` +
  ``_attention.apply``, BLKQ = BLKK = 64) on contiguous (B, H, S, D) copies.

A peer that cannot load (folder missing, import error) is left out with a one-line reason on stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import sys
from typing import Callable, Dict

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = 64   # both peers' default query and key block
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 5e-3}   # max abs error; fp32: tf32 on GPU


@dataclasses.dataclass
class Peer:
    """A loaded peer: ``fn(q, k, v, keep)`` -> [1, S, H * D] and ``lut(q, k, keep)`` -> its router's (1, H, Nq, W)
    key-block indices (for the self-check), both on [1, H, S, D] H3 views; ``commit`` the upstream commit."""
    name: str
    commit: str
    fn: Callable
    lut: Callable


def load_file(name: str, path: pathlib.Path, package: bool = False):
    """Import ``path`` as module ``name`` (a package when ``package``: ``path`` is its ``__init__.py``)."""
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # the package's relative imports look it up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def commits(thirdparty: pathlib.Path) -> Dict[str, str]:
    """{peer folder: upstream commit} from ``PEERS.json`` (written by scripts/fetch_peers.py); {} without it."""
    try:
        return {name: entry["commit"] for name, entry in json.loads((thirdparty / "PEERS.json").read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def plaguekind(thirdparty: pathlib.Path):
    """PlagueKind's H3 SLA Attention: (fn, lut) on [1, H, S, D] views, as the node's attention override calls it."""
    sla = thirdparty / "plaguekind" / "ComfyUI-H3-SLA-Attention" / "sla"
    # the two files import only torch and triton (the package's __init__ pulls in patch.py and ComfyUI)
    block_map = load_file("peers_h3_plaguekind_block_map", sla / "block_map.py")
    kernel = load_file("peers_h3_plaguekind_kernel", sla / "kernel.py")

    def to_blhd(q, k, v):
        qb, kb, vb = (t.transpose(1, 2) for t in (q, k, v))
        if not qb.is_contiguous():   # the node's rule: it copies all three when q is not already (B, S, H, D)
            qb, kb, vb = qb.contiguous(), kb.contiguous(), vb.contiguous()
        return qb, kb, vb

    def fn(q, k, v, keep):
        b, h, s, d = q.shape
        qb, kb, vb = to_blhd(q, k, v)
        lut, topk = block_map.get_block_map(qb, kb, keep, BLOCK, BLOCK)
        return kernel.block_sparse_attention(qb, kb, vb, lut, topk, BLOCK, BLOCK).reshape(b, s, h * d)

    def lut(q, k, keep):
        qb, kb, _ = to_blhd(q, k, k)   # the router reads q and k only
        return block_map.get_block_map(qb, kb, keep, BLOCK, BLOCK)[0]

    return fn, lut


@functools.lru_cache(maxsize=None)   # one import (and one set of Triton kernels) for both thu-ml peers
def thu_package(thirdparty: pathlib.Path):
    """thu-ml/SLA's ``sparse_linear_attention`` package (imports torch and triton only)."""
    return load_file("peers_h3_thu_sla", thirdparty / "thu_sla" / "sparse_linear_attention" / "__init__.py",
                     package=True)


def thu_sla(thirdparty: pathlib.Path):
    """thu-ml/SLA's ``SparseLinearAttention`` module (sparse + linear branch): (fn, lut) on [1, H, S, D] views."""
    pkg = thu_package(thirdparty)
    modules = {}

    def fn(q, k, v, keep):
        b, h, s, d = q.shape
        key = (d, keep, q.device, q.dtype)
        if key not in modules:   # one module per shape and keep, built on the first (untimed) call
            modules[key] = pkg.SparseLinearAttention(d, keep, use_bf16=q.dtype != torch.float16).to(q.device)
        with torch.no_grad():   # inference: no graph through proj_l
            out = modules[key](q, k, v)
        return out.transpose(1, 2).reshape(b, s, h * d)

    return fn, thu_lut(pkg)


def thu_sla_sparse(thirdparty: pathlib.Path):
    """thu-ml/SLA's router and Triton sparse kernel alone (no linear branch): (fn, lut) on [1, H, S, D] views."""
    pkg = thu_package(thirdparty)
    kernel, utils = pkg.kernel, pkg.utils   # submodules its __init__ imported

    def fn(q, k, v, keep):
        b, h, s, d = q.shape
        qc, kc, vc = (t.contiguous() for t in (q, k, v))   # its kernels index (B, H, L, D) contiguous memory
        with torch.no_grad():
            sparse_map, lut, topk = utils.get_block_map(qc, kc, topk_ratio=keep, BLKQ=BLOCK, BLKK=BLOCK)
            out = kernel._attention.apply(qc, kc, vc, sparse_map, lut, topk, BLOCK, BLOCK)
        return out.transpose(1, 2).reshape(b, s, h * d)

    return fn, thu_lut(pkg)


def thu_lut(pkg):
    """thu-ml/SLA's router on [1, H, S, D] views: (1, H, Nq, W) key-block indices, as its module computes them."""
    return lambda q, k, keep: pkg.utils.get_block_map(q.contiguous(), k.contiguous(), keep, BLOCK, BLOCK)[1]


FACTORIES = {"plaguekind": (plaguekind, "plaguekind"), "thu_sla": (thu_sla, "thu_sla"),
             "thu_sla_sparse": (thu_sla_sparse, "thu_sla")}   # name -> (factory, its .thirdparty folder)


def load_peers(thirdparty) -> Dict[str, Peer]:
    """{name: Peer} for every peer that loads from ``thirdparty``; each one that does not: a line on stderr."""
    thirdparty = pathlib.Path(thirdparty) if thirdparty else None
    if thirdparty is None or not thirdparty.is_dir():
        print(f"# peers skipped: no folder {thirdparty} (scripts/fetch_peers.py builds it)", file=sys.stderr)
        return {}
    known, peers = commits(thirdparty), {}
    for name, (factory, folder) in FACTORIES.items():
        try:
            fn, lut = factory(thirdparty)
        except Exception as e:  # noqa: BLE001
            print(f"# peer {name} skipped: {type(e).__name__}: {str(e)[:160]}", file=sys.stderr)
            continue
        peers[name] = Peer(name, known.get(folder, "unknown"), fn, lut)
    return peers


# -- self-check (python3 bench/peers_h3.py --selfcheck) ----------------------------------------------------------------
def h3_views(s: int, heads: int, head_d: int, dtype: torch.dtype, device: str):
    """q, k, v [1, H, S, D] as H3 hands them over: transposes of views of one fused [S, 3 * H * D] qkv buffer."""
    qkv = torch.randn(s, 3 * heads * head_d, device=device, dtype=dtype)
    return tuple(t.view(s, heads, head_d).transpose(0, 1).unsqueeze(0) for t in qkv.split(heads * head_d, dim=-1))


def dense_reference(q, k, v) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v in float64 from [1, H, S, D]; returns [1, S, H * D]."""
    b, h, s, d = q.shape
    p = torch.softmax((q.double() @ k.double().transpose(-1, -2)) * d ** -0.5, dim=-1)
    return (p @ v.double()).transpose(1, 2).reshape(b, s, h * d)


def check_peer(peer: Peer, q, k, v, keep: float, refs) -> dict:
    """One adapter call against the float64 reference (dense at keep 1, else block-sparse over the peer's own LUT),
    and the peer's router against ours (fraction of query-block rows choosing the same key-block set)."""
    b, h, s, d = q.shape
    lut = peer.lut(q, k, keep)
    ours = refs.block_lut(q.transpose(1, 2), k.transpose(1, 2), keep, BLOCK, BLOCK)
    nk = -(-s // BLOCK)
    same_rows = (refs.lut_to_mask(lut, nk) == refs.lut_to_mask(ours, nk)).all(-1).float().mean().item()
    if keep >= 1.0:
        ref = dense_reference(q, k, v)
    else:
        ref = refs.sla_reference(*(t.transpose(1, 2) for t in (q, k, v)), lut=lut, block_q=BLOCK, block_k=BLOCK,
                                 compute_dtype=q.dtype).reshape(b, s, h * d)
    # upstream casts proj_l's fp32 weight through CUDA autocast; on the CPU only CPU autocast can
    cpu_autocast = q.device.type == "cpu" and peer.name == "thu_sla"
    with torch.autocast("cpu", dtype=refs.compute_dtype(q.dtype), enabled=cpu_autocast):
        out = peer.fn(q, k, v, keep)
    err = (out.double() - ref).abs().max().item()
    return dict(peer=peer.name, keep=keep, shape=list(out.shape), topk=lut.shape[-1], router_rows_as_ours=same_rows,
                max_abs_err=err, ok=list(out.shape) == [b, s, h * d] and err < TOLERANCE[q.dtype])


def selfcheck(thirdparty: pathlib.Path, dtype: torch.dtype, s: int, heads: int, head_d: int) -> bool:
    """Every peer at keep 1.0 and 0.5 on H3-like views; on a machine without CUDA under TRITON_INTERPRET=1 (there
    float16 or float32 only: triton 3.9's interpreter returns garbage for a bf16 ``tl.dot``). True when all pass."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"   # read by @triton.jit as the peer files are imported below
    peers = load_peers(thirdparty)
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack
    load_pack()
    from comfyui_sla.sla import mask, reference

    refs = argparse.Namespace(block_lut=mask.block_lut, lut_to_mask=mask.lut_to_mask,
                              sla_reference=reference.sla_reference, compute_dtype=reference.default_compute_dtype)
    torch.manual_seed(0)
    q, k, v = h3_views(s, heads, head_d, dtype, device)
    ok = bool(peers)
    for peer in peers.values():
        for keep in (1.0, 0.5):
            try:
                row = check_peer(peer, q, k, v, keep, refs)
            except Exception as e:  # noqa: BLE001
                row = dict(peer=peer.name, keep=keep, ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
            row.update(commit=peer.commit[:12], device=device, dtype=str(dtype).split(".")[-1])
            ok &= row["ok"]
            print(json.dumps(row), flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description="peer adapters for bench_h3_attention.py")
    ap.add_argument("--selfcheck", action="store_true", help="check every adapter against a float64 reference")
    ap.add_argument("--thirdparty", type=pathlib.Path, default=ROOT / ".thirdparty")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--shape", type=int, nargs=3, default=[520, 2, 128], metavar=("S", "H", "D"),
                    help="S not a multiple of 64, so the partial last block is checked too")
    args = ap.parse_args()
    if not args.selfcheck:
        for name, peer in load_peers(args.thirdparty).items():
            print(f"{name}: {peer.commit}")
        return
    sys.exit(0 if selfcheck(args.thirdparty, getattr(torch, args.dtype), *args.shape) else 1)


if __name__ == "__main__":
    main()
