"""Compile the SLA main kernel for sm_90a without a GPU and report registers, spills, shared memory and the
instruction mix of its hot loop (for predicting a kernel change before spending device time on it).

    PYTHONPATH=/path/to/triton-3.6 python3 bench/sass_report.py [--variant NAME ...] [--dump DIR]

The variants are the launcher's main-kernel configurations at D=128, block_q=128, bf16, main variant with
proj_l; the 16-byte divisibility hints match what the launcher passes for aligned tensors.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

sys.path.insert(0, os.path.dirname(HERE))
from _load_pack import load_pack  # noqa: E402

load_pack()
from comfyui_sla.kernels import targets  # noqa: E402
from comfyui_sla.kernels.attend import _sla_fwd_kernel  # noqa: E402
from comfyui_sla.kernels.attend_tma import _sla_fwd_tma_kernel  # noqa: E402
from comfyui_sla.kernels.prepass import _prepass_kernel  # noqa: E402

compile_for = targets.compile_for
BASE = dict(TAIL_IN_LUT=True, Q_TMA=True, KV_EARLY=True, BLOCK_Q=128, BLOCK_K=64, HEAD_D=128, FMAP=0,
            HAS_PROJ=True, HAS_BIAS=True, CDT=tl.bfloat16)
VARIANTS = {
    "default": ({}, dict(num_warps=8, num_stages=2)),
    "no_q_kv_tma": (dict(Q_TMA=False, KV_EARLY=False, DQ=None, DKVS=None), dict(num_warps=8, num_stages=2)),
    "notail": (dict(TAIL_IN_LUT=False), dict(num_warps=8, num_stages=2)),
    "noproj": (dict(HAS_PROJ=False, HAS_BIAS=False), dict(num_warps=8, num_stages=2)),
    "s3": ({}, dict(num_warps=8, num_stages=3)),
}
PTR_BASE = dict(TAIL_IN_LUT=True, PAIR=True, BLOCK_Q=128, BLOCK_K=64, HEAD_D=128, FMAP=0, HAS_PROJ=True,
                HAS_BIAS=True, CDT=tl.bfloat16)
PTR_VARIANTS = {"pointer_pairs": ({}, dict(num_warps=8, num_stages=3))}
PRE_BASE = dict(BLOCK_Q=128, BLOCK_K=64, HEAD_D=128, FMAP=0, CDT=tl.bfloat16, COLSUM_MMA=True)
PRE_VARIANTS = {
    "pre_default": ({}, dict(num_warps=4, num_stages=3)),
    "pre_no_colsum_mma": (dict(COLSUM_MMA=False), dict(num_warps=4, num_stages=3)),
}
# kernel name -> (argument types other than i32 scalars and constexprs, base constexprs, variants)
_KV_DESC = "tensordesc<bf16[1,64,1,128]>"
_PTRS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "LUT": "*i16", "KV": "*bf16", "KS": "*fp32",
         "BIAS": "*fp32", "qk_scale": "fp32"}
KERNELS = {
    "_sla_fwd_tma_kernel": (dict(_PTRS, DK=_KV_DESC, DV=_KV_DESC, DQ="tensordesc<bf16[1,128,1,128]>",
                                 DKVS="tensordesc<bf16[128,128]>"), BASE, VARIANTS),
    "_sla_fwd_kernel": (_PTRS, PTR_BASE, PTR_VARIANTS),
    "_prepass_kernel": ({"Q": "*bf16", "K": "*bf16", "V": "*bf16", "QMEAN": "*fp32", "KMEAN": "*fp32",
                         "KV": "*fp32", "KS": "*fp32", "KTOT": "*fp32"}, PRE_BASE, PRE_VARIANTS),
}


def sass_of(kernel) -> tuple[str, str]:
    """(SASS, resource usage line) of a compiled kernel's cubin."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.cubin")
        with open(p, "wb") as f:
            f.write(kernel.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        sass = subprocess.run([tool, "-sass", p], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([tool, "-res-usage", p], capture_output=True, text=True, check=True).stdout
    m = re.search(r"(REG:\d+ STACK:\d+)", res)
    # ptxas serialises every wgmma of the function when it finds one it cannot pipeline (C7515): say so.
    ptxas = os.path.join(os.path.dirname(tool), "ptxas")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.ptx")
        with open(p, "w") as f:
            f.write(kernel.asm["ptx"])
        log = subprocess.run([ptxas, "-arch=sm_90a", "-v", "-o", os.path.join(d, "k.cubin"), p],
                             capture_output=True, text=True).stderr
    serial = "WGMMA-SERIALISED " if "C7515" in log else ""
    return sass, serial + (m.group(1).strip() if m else res.strip())


def loop_mix(sass: str) -> str:
    """Per backward-branch loop that issues wgmma: its size, spill loads/stores, barriers, MUFU and waits."""
    addr = []
    for ln in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);", ln)
        if m:
            addr.append((int(m.group(1), 16), m.group(2)))
    out = []
    for a, ins in addr:
        m = re.search(r"BRA\s+0x([0-9a-f]+)", ins)
        if not m or int(m.group(1), 16) >= a:
            continue
        lo = int(m.group(1), 16)
        body = [i for x, i in addr if lo <= x <= a]
        n_mma = sum("HGMMA" in i for i in body)
        if n_mma == 0 and len(body) < 100:
            continue
        cnt = lambda key: sum(key in i for i in body)  # noqa: E731
        out.append(f"[{len(body)} instr, HGMMA={n_mma} MUFU={cnt('MUFU')} LDL/STL={cnt('LDL')}/{cnt('STL')} "
                   f"BAR={cnt('BAR.SYNC')} DEPBAR={cnt('DEPBAR')}]")
    return " ".join(out) if out else "no wgmma loop found"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="*", default=None)
    ap.add_argument("--dump", default=None, help="write each variant's SASS/PTX here")
    args = ap.parse_args()
    fns = dict(_sla_fwd_tma_kernel=_sla_fwd_tma_kernel, _sla_fwd_kernel=_sla_fwd_kernel,
               _prepass_kernel=_prepass_kernel)
    names = args.variant or [n for _, _, variants in KERNELS.values() for n in variants]
    print(f"triton {triton.__version__}, sm_90a")
    for name in names:
        kname = next(kn for kn, (_, _, variants) in KERNELS.items() if name in variants)
        types, base, variants = KERNELS[kname]
        extra, opts = variants[name]
        try:
            consts = dict(base, **extra)
            k = compile_for(fns[kname], {n: t for n, t in types.items() if n not in consts}, consts, opts, 90)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{name:14s} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        sass, res = sass_of(k)
        n_stl = len(re.findall(r"\bSTL\b", sass))
        print(f"{name:14s} {res} STL={n_stl} | loop {loop_mix(sass)}")
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, name + ".sass"), "w") as f:
                f.write(sass)
            with open(os.path.join(args.dump, name + ".ptx"), "w") as f:
                f.write(k.asm["ptx"])


if __name__ == "__main__":
    main()
