"""Compile every kernel configuration the launcher can pick for a list of GPU architectures, without a GPU, and
check that it builds and that its shared memory fits the architecture's per-block limit (what Triton checks at
launch: a config over the limit fails there with OutOfResources, i.e. the pack falls back to dense attention on
that GPU).

    python3 tests/compile_targets.py [--arch 80 86 89 90 100 120] [--json]

Must run without TRITON_INTERPRET (the interpreter's @triton.jit functions cannot be compiled); the installed
Triton's own ptxas does the work. The cases are the launcher's: head size 64 / 128, block_q 64 / 128, main and
sla1, 16-bit inputs, 16-bit inputs that TMA cannot take, fp32 inputs computed in bf16 and in fp32, with and
without proj_l; the main kernel's configuration comes from ``launch.main_config``, the pre-pass's and top-k's
from their defaults, exactly as the launchers pass them.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Largest shared memory one block may use (opt-in), bytes: CUDA programming guide, compute capabilities table.
SMEM_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
DEFAULT_ARCHS = (80, 86, 89, 90, 100, 120)


def _load_pack():
    spec = importlib.util.spec_from_file_location("comfyui_sla", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_sla"] = mod
    spec.loader.exec_module(mod)
    from comfyui_sla.kernels import launch, sla_triton
    return launch, sla_triton


def compile_for(fn, types: dict, consts: dict, opts: dict, arch: int):
    """triton.compile for sm_<arch> without a GPU (also bench/sass_report.py's): ``types`` names pointer /
    descriptor / float arguments, every other non-constexpr argument is i32; pointers and strides get the
    launcher's 16-byte divisibility hints."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {n: types.get(n, "constexpr" if n in consts else "i32") for n in fn.arg_names}
    if "constexprs" in inspect.signature(ASTSource.__init__).parameters:
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                 if sig[n].startswith("*") or n.startswith("stride_")}
        src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    else:  # Triton 3.2: another hint format; compiled without the divisibility hints
        src = ASTSource(fn, sig, constants=consts)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)


# (name, D, block_q, variant, input dtype, compute dtype, proj_l, feature map, TMA can take k/v)
MAIN_CASES = [
    ("d128 bq128 main bf16 proj", 128, 128, "main", "bf16", "bf16", True, 0, True),
    ("d128 bq128 main fp16 elu noproj", 128, 128, "main", "fp16", "fp16", False, 1, True),
    ("d128 bq128 main bf16 misaligned", 128, 128, "main", "bf16", "bf16", True, 0, False),
    ("d128 bq128 sla1 bf16 proj", 128, 128, "sla1", "bf16", "bf16", True, 0, True),
    ("d64 bq128 main bf16 proj", 64, 128, "main", "bf16", "bf16", True, 0, True),
    ("d128 bq64 main fp16 relu", 128, 64, "main", "fp16", "fp16", True, 2, True),
    ("d128 bq128 main fp32-in bf16", 128, 128, "main", "fp32", "bf16", True, 0, True),
    ("d128 bq128 main fp32", 128, 128, "main", "fp32", "fp32", True, 0, True),
    ("d128 bq128 sla1 fp32", 128, 128, "sla1", "fp32", "fp32", True, 0, True),
]


def cases(arch: int):
    """Yield (kernel name, case name, kernel, types, constexprs, options) for one architecture."""
    import torch
    import triton
    import triton.language as tl
    launch, k = _load_pack()
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    tl_dt = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}
    for name, d, bq, variant, idt, cdt, proj, fmap, tma_ok in MAIN_CASES:
        cfg = launch.main_config(d, bq, variant, tdt[cdt], idt == cdt, arch, tma_ok and launch._host_tma())
        folded = proj and variant == "main"           # KV holds KV W^T in the compute dtype
        kv_t = f"*{cdt}" if folded else "*fp32"
        types = {n: f"*{idt}" for n in ("Q", "K", "V", "O", "DK", "DV", "DQ")}
        types.update(LUT="*i32", KV=kv_t, KS="*fp32", W=f"*{cdt}" if proj and variant == "sla1" else kv_t,
                     BIAS="*fp32", DKVS=kv_t, qk_scale="fp32")
        if cfg["USE_TMA"]:
            types.update(DK=f"tensordesc<{idt}[1,64,1,{d}]>", DV=f"tensordesc<{idt}[1,64,1,{d}]>")
            if cfg["Q_TMA"]:
                types["DQ"] = f"tensordesc<{idt}[1,{bq},1,{d}]>"
            if cfg["KV_EARLY"] and folded:
                types["DKVS"] = f"tensordesc<{cdt}[{d},{d}]>"
            else:
                cfg["KV_EARLY"] = False
        opts = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
        consts = dict(TAIL_IN_LUT=True, ALL_KEPT=False, BLOCK_Q=bq, BLOCK_K=64, HEAD_D=d, FMAP=fmap,
                      SLA1=variant == "sla1", HAS_PROJ=proj, HAS_BIAS=proj, CDT=tl_dt[cdt], **cfg)
        yield "_sla_fwd_kernel", name, k._sla_fwd_kernel, types, consts, opts
    for d in (64, 128):
        for idt, cdt in (("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "bf16"), ("fp32", "fp32")):
            pre = launch.prepass_config(tdt[idt])
            types = {n: f"*{idt}" for n in ("Q", "K", "V")}
            types.update({n: "*fp32" for n in ("QMEAN", "KMEAN", "KV", "KS", "KTOT")})
            consts = dict(BLOCK_Q=128, BLOCK_K=64, HEAD_D=d, FMAP=0, CDT=tl_dt[cdt],
                          COLSUM_MMA=bool(pre["COLSUM_MMA"]) and idt != "fp32")
            yield ("_prepass_kernel", f"d{d} {idt} in {cdt}", k._prepass_kernel, types, consts,
                   dict(num_warps=pre["num_warps"], num_stages=pre["num_stages"]))
    for nk in (512, 1182):   # Wan 1.3B 480p and 14B 720p
        nk_pad = triton.next_power_of_2(nk)
        yield ("_topk_kernel", f"Nk={nk}", k._topk_kernel, {"S": "*fp32", "LUT": "*i32"},
               dict(NK_PAD=nk_pad, ROWS=launch.TOPK_DEFAULT["rows"]),
               dict(num_warps=launch.TOPK_DEFAULT["num_warps"] or (4 if nk_pad <= 2048 else 8),
                    num_stages=3))   # the launcher passes none: Triton's default


def check(arch: int) -> list[dict]:
    """Compile each case for ``arch``; where its shared memory is over the limit, with fewer stages, as
    ``launch._launch`` retries at run time. ``stages`` is the count that fits (None: none does)."""
    out = []
    for kname, name, fn, types, consts, opts in cases(arch):
        row = dict(arch=arch, kernel=kname, case=name, opts=opts,
                   path=("tma" if consts.get("USE_TMA") else "pairs" if consts.get("PAIR") else "single")
                   if kname == "_sla_fwd_kernel" else None)
        try:
            for stages in range(opts["num_stages"], 0, -1):
                compiled = compile_for(fn, types, consts, dict(opts, num_stages=stages), arch)
                if compiled.metadata.shared <= SMEM_LIMIT[arch]:
                    break
            fits = compiled.metadata.shared <= SMEM_LIMIT[arch]
            row.update(ok=True, shared=compiled.metadata.shared, limit=SMEM_LIMIT[arch], fits=fits,
                       stages=stages if fits else None)
        except Exception as e:  # noqa: BLE001 - reported per case
            row.update(ok=False, fits=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="*", default=list(DEFAULT_ARCHS))
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    import triton
    for arch in args.arch:
        for row in check(arch):
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                status = (f"shared {row['shared']:>6} / {row['limit']}"
                          + (f" at {row['stages']} of {row['opts']['num_stages']} stages" if row["fits"]
                             else "  OVER THE LIMIT at 1 stage") if row["ok"] else "FAILED " + row["error"])
                print(f"triton {triton.__version__} sm_{arch:<3} {row['kernel']:16s} {row['case']:32s} "
                      f"{row['path'] or '':6s} {status}", flush=True)


if __name__ == "__main__":
    main()
