"""Build the git-ignored ``.thirdparty/`` folder of peer kernels that ``bench/peers_h3.py`` imports at run time.

    python3 scripts/fetch_peers.py [--out .thirdparty] [--zip .thirdparty.zip]
                                   [--repo NAME=URL_OR_GIT_DIR] [--commit NAME=REV]

Peers (compared against, never copied into this repository; each keeps its own licence file):

* ``plaguekind``: PlagueKind/ComfyUI-PlagueKind-Nodes (MIT), the "H3 SLA Attention" node's Triton block-sparse
  kernel and router (``ComfyUI-H3-SLA-Attention/sla/{kernel,block_map}.py``, reduced from LightX2V). Pinned to
  6ca3037 (v1.3.0 "fix the init again", the commit the benchmarks in docs/BENCHMARKS.md used; it is also in the
  fork xmarre/ComfyUI-PlagueKind-Nodes, whose later commits touch only ``sla/patch.py``).
* ``thu_sla``: thu-ml/SLA (Apache-2.0), ``sparse_linear_attention/`` (the ``SparseLinearAttention`` module, its
  Triton router and forward kernel). Pinned to d973e55 (main, 2026-01-17).

For each peer the script clones the repository bare and blob-less (or reads a local git dir given with ``--repo``:
a clone, bare or not, or a mirror), writes the pinned commit's files (plain files, no git metadata) under
``OUT/<name>/<repo path>`` and records ``OUT/PEERS.json``: {name: {repo, source, commit, files}}. ``--commit
NAME=HEAD`` takes a newer commit (say so when you report timings). ``--zip`` also packs OUT into a zip whose
members start with ``.thirdparty/`` (to carry it to a machine without network: unzip it in the repo root).
Needs git; the peers themselves need only torch and triton.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]

PEERS = {
    "plaguekind": dict(
        repo="PlagueKind/ComfyUI-PlagueKind-Nodes",
        commit="6ca3037bd16dc143b6d461c67c87a28ca8074063",
        files=["LICENSE", "ComfyUI-H3-SLA-Attention/sla/kernel.py", "ComfyUI-H3-SLA-Attention/sla/block_map.py"]),
    "thu_sla": dict(
        repo="thu-ml/SLA",
        commit="d973e55ea5b5b5fd0bc5141959e8410f0d366336",
        files=["LICENSE.txt"] + [f"sparse_linear_attention/{f}.py" for f in ("__init__", "core", "kernel", "utils")]),
}


def git(git_dir, *args: str) -> bytes:
    """Run git on ``git_dir`` (a bare or non-bare repository) and return its stdout."""
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True).stdout


def git_dir_of(source: str, scratch: pathlib.Path) -> pathlib.Path:
    """The git dir to read: a local repository as given (its ``.git`` when it has one), else a bare blob-less clone
    of the URL into ``scratch``."""
    path = pathlib.Path(source)
    if path.exists():
        return path / ".git" if (path / ".git").exists() else path
    target = scratch / "repo.git"
    subprocess.run(["git", "clone", "--bare", "--filter=blob:none", "--quiet", source, str(target)], check=True)
    return target


def export_peer(name: str, peer: dict, source: str, rev: str, out: pathlib.Path) -> dict:
    """Write ``peer``'s files at ``rev`` under ``out/name`` and return its PEERS.json entry."""
    with tempfile.TemporaryDirectory() as scratch:
        gd = git_dir_of(source, pathlib.Path(scratch))
        commit = git(gd, "rev-parse", f"{rev}^{{commit}}").decode().strip()
        for rel in peer["files"]:
            dest = out / name / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(git(gd, "show", f"{commit}:{rel}"))
    return dict(repo=peer["repo"], source=source, commit=commit, files=peer["files"])


def write_zip(out: pathlib.Path, zip_path: pathlib.Path) -> None:
    """Pack ``out`` into ``zip_path`` with members named ``.thirdparty/...`` (sorted, so rebuilds compare equal)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in out.rglob("*") if p.is_file()):
            zf.write(f, pathlib.Path(".thirdparty") / f.relative_to(out))


def pairs(items, what: str) -> dict:
    """``["NAME=VALUE", ...]`` -> {NAME: VALUE}, NAME one of the peers."""
    parsed = dict(item.split("=", 1) for item in items)
    unknown = set(parsed) - set(PEERS)
    if unknown:
        sys.exit(f"--{what}: unknown peer(s) {sorted(unknown)}; known: {sorted(PEERS)}")
    return parsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / ".thirdparty")
    ap.add_argument("--zip", type=pathlib.Path, default=None, help="also write this zip of OUT")
    ap.add_argument("--repo", action="append", default=[], help="NAME=URL_OR_GIT_DIR (default: github.com)")
    ap.add_argument("--commit", action="append", default=[], help="NAME=REV (default: the pinned commit)")
    args = ap.parse_args()
    repos, revs = pairs(args.repo, "repo"), pairs(args.commit, "commit")
    if args.out.exists():
        shutil.rmtree(args.out)   # a stale file of another commit must not survive
    args.out.mkdir(parents=True)
    record = {}
    for name, peer in PEERS.items():
        source = repos.get(name, f"https://github.com/{peer['repo']}.git")
        record[name] = export_peer(name, peer, source, revs.get(name, peer["commit"]), args.out)
        print(f"{name}: {peer['repo']} @ {record[name]['commit']}")
    (args.out / "PEERS.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.zip is not None:
        write_zip(args.out, args.zip)
        print(f"wrote {args.zip}")


if __name__ == "__main__":
    main()
