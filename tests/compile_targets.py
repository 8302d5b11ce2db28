"""Compile every kernel configuration the launchers pick for a list of GPU architectures, without a GPU, and check
that it builds and that its shared memory fits the architecture's per-block limit (what Triton checks at launch:
a config over the limit fails there with OutOfResources, i.e. the pack falls back to dense attention on that GPU).

    python3 tests/compile_targets.py [--arch 80 86 89 90 100 120] [--jobs N] [--json] [--check]

The cases are ``kernels.targets.cases`` (the launchers' own configuration functions). Each distinct
configuration is compiled once, in ``--jobs`` worker processes; a worker past ``--timeout`` is killed with its
whole process group (no ptxas left behind). ``--check`` exits non-zero unless every case compiles and fits
(except the known fp32-compute cases on the 99 KB cards): CI's full sweep. Must run without TRITON_INTERPRET;
the installed Triton's own ptxas does the work.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALL_ARCHS = (80, 86, 89, 90, 100, 120)
# fp32 compute (compute_dtype="fp32", never chosen by the patch) at D=128, block_q=128 holds fp32 q, k and v tiles:
# ~131 KB at one stage, over the 99 KB per block of sm_86 / sm_89 / sm_120; the launcher raises a ValueError that
# says so (the patch then runs those calls dense).
EXPECTED_OVER = {(a, "d128 bq128 fp32") for a in (86, 89, 120)}


def _targets():
    sys.path.insert(0, str(ROOT))
    from _load_pack import load_pack
    load_pack()
    from comfyui_sla.kernels import targets
    return targets


def _key(arch, kname, types, consts, opts):
    return json.dumps([arch, kname, sorted(types.items()), sorted((k, str(v)) for k, v in consts.items()),
                       sorted(opts.items())])


def _work(archs, names=None):
    """(distinct configurations: key -> (arch, case name)), (arch, case name) -> key, in case order; only the
    cases in ``names`` when given."""
    targets = _targets()
    distinct, key_of = {}, {}
    for arch in archs:
        for kname, name, _fn, types, consts, opts in targets.cases(arch):
            if names is not None and name not in names:
                continue
            key = _key(arch, kname, types, consts, opts)
            distinct.setdefault(key, (arch, name))
            key_of[(arch, name)] = key
    return distinct, key_of


def _worker(todo):
    """Compile the (arch, case name) pairs in ``todo``, one JSON row each on stdout."""
    targets = _targets()
    for arch in sorted({a for a, _ in todo}):
        names = {n for a, n in todo if a == arch}
        for kname, name, fn, types, consts, opts in targets.cases(arch):
            if name in names:
                print(json.dumps(targets.check_case(arch, kname, name, fn, types, consts, opts)), flush=True)


def run(archs, jobs: int = 2, timeout: float = 1800.0, names=None) -> list[dict]:
    """Rows for every (arch, case) (only cases named in ``names`` when given), compiled in ``jobs`` worker
    processes; a worker that fails or runs past ``timeout`` seconds yields error rows for its cases."""
    distinct, key_of = _work(archs, names)
    todo = list(distinct.values())
    shards = [todo[i::jobs] for i in range(max(1, min(jobs, len(todo))))]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
             for _ in shards]
    by_key = {}
    for p, shard in zip(procs, shards):
        try:
            out, err = p.communicate(json.dumps(shard), timeout=timeout)
            why = f"worker exited {p.returncode}: {err.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)   # the worker and any ptxas it started
            out, _ = p.communicate()
            why = f"worker killed after {timeout:.0f} s"
        for line in out.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                by_key[key_of[(row["arch"], row["case"])]] = row
        for arch, name in shard:
            by_key.setdefault(key_of[(arch, name)], dict(arch=arch, case=name, ok=False, fits=False, error=why))
    return [dict(by_key[key], arch=arch, case=name) for (arch, name), key in key_of.items()]


def problems(rows) -> list[str]:
    """What is wrong in ``rows``: a case that does not compile, or one over the shared-memory limit that is not
    expected to be, or a fast path that is not the expected one or needed fewer stages than it was tuned for."""
    bad = []
    for r in rows:
        if not r["ok"]:
            bad.append(f"sm_{r['arch']} {r['case']}: does not compile: {r['error']}")
        elif not r["fits"] and (r["arch"], r["case"]) not in EXPECTED_OVER:
            bad.append(f"sm_{r['arch']} {r['case']}: over the shared-memory limit ({r['shared']} > {r['limit']})")
        elif r["fits"] and (r["arch"], r["case"]) in EXPECTED_OVER:
            bad.append(f"sm_{r['arch']} {r['case']}: now fits; update EXPECTED_OVER")
        if r["case"] == "d128 bq128 bf16 proj" and r.get("path") and r["path"] != ("tma" if r["arch"] >= 90
                                                                                    else "pairs"):
            bad.append(f"sm_{r['arch']} {r['case']}: path {r['path']}")
        if r["case"] in ("d128 bq128 bf16 proj", "d128 bf16 in bf16") and r["ok"] \
                and r["stages"] != r["opts"]["num_stages"]:
            bad.append(f"sm_{r['arch']} {r['case']}: needs {r['stages']} of {r['opts']['num_stages']} stages")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="*", default=list(ALL_ARCHS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="worker processes")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    ap.add_argument("--case", nargs="*", default=None, help="only these case names")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    ap.add_argument("--check", action="store_true", help="exit 1 when a case fails (CI)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    if args.worker:
        _worker([tuple(x) for x in json.load(sys.stdin)])
        return
    import triton
    rows = run(args.arch, args.jobs, args.timeout, args.case)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            status = (f"shared {row['shared']:>6} / {row['limit']}"
                      + (f" at {row['stages']} of {row['opts']['num_stages']} stages" if row["fits"]
                         else "  OVER THE LIMIT at 1 stage") if row["ok"] else "FAILED " + row["error"])
            print(f"triton {triton.__version__} sm_{row['arch']:<3} {row.get('kernel', '?'):20s} {row['case']:28s} "
                  f"{row.get('path') or '':6s} {status}  {row.get('seconds', '')}")
    bad = problems(rows)
    for line in bad:
        print("PROBLEM " + line, file=sys.stderr)
    if args.check and bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
