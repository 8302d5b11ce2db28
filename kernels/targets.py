"""The launch configurations the launchers pick, compiled offline (no GPU) for a GPU architecture.

Used by ``tests/compile_targets.py`` (does every configuration build and fit each architecture's shared memory?)
and ``bench/sass_report.py`` (instruction counts). Needs Triton's NVIDIA backend and no TRITON_INTERPRET.
"""
from __future__ import annotations

import inspect
import time

import torch

from .attend import _sla_fwd_kernel
from .attend_tma import _sla_fwd_tma_kernel
from .launch import host_tma, main_config
from .prepass import _prepass_kernel, prepass_config
from .topk import _topk_kernel, topk_num_warps

# Largest shared memory one block may use (opt-in), bytes: CUDA programming guide, compute capabilities table.
SMEM_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def compile_for(fn, types: dict, consts: dict, opts: dict, arch: int):
    """triton.compile for sm_<arch> without a GPU: ``types`` names pointer / descriptor / float arguments, every
    other non-constexpr argument is i32; pointers and strides get the launcher's 16-byte divisibility hints."""
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


# (name, D, block_q, input dtype, compute dtype, proj_l, feature map code, TMA can take k/v)
MAIN_CASES = [
    ("d128 bq128 bf16 proj", 128, 128, "bf16", "bf16", True, 0, True),
    ("d128 bq128 fp16 elu noproj", 128, 128, "fp16", "fp16", False, 1, True),
    ("d128 bq128 bf16 misaligned", 128, 128, "bf16", "bf16", True, 0, False),
    ("d64 bq128 bf16 proj", 64, 128, "bf16", "bf16", True, 0, True),
    ("d128 bq64 fp16 relu", 128, 64, "fp16", "fp16", True, 2, True),
    ("d128 bq128 fp32-in bf16", 128, 128, "fp32", "bf16", True, 0, True),
    ("d128 bq128 fp32", 128, 128, "fp32", "fp32", True, 0, True),
]
PREPASS_CASES = [(d, idt, cdt) for d in (64, 128)
                 for idt, cdt in (("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "bf16"), ("fp32", "fp32"))]
TOPK_WIDTHS = (512, 1182)   # key blocks of Wan 1.3B 480p and 14B 720p


def _main_case(arch, d, bq, idt, cdt, proj, fmap, tma_ok):
    import triton.language as tl
    cfg = main_config(d, bq, _TORCH[cdt], idt == cdt, arch, tma_ok and host_tma())
    opts = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
    types = {n: f"*{idt}" for n in ("Q", "K", "V", "O")}
    types.update(LUT="*i16", qk_scale="fp32")
    consts = dict(TAIL_IN_LUT=True, BLOCK_Q=bq, BLOCK_K=64, HEAD_D=d, FMAP=fmap, HAS_PROJ=proj, HAS_BIAS=proj,
                  CDT=getattr(tl, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[cdt]))
    if proj:
        types.update(KV=f"*{cdt}", KS="*fp32", BIAS="*fp32")    # KV holds KV W^T in the compute dtype
    else:
        consts.update(KV=None, KS=None, BIAS=None)
    if not cfg["USE_TMA"]:
        return "_sla_fwd_kernel", _sla_fwd_kernel, types, dict(consts, PAIR=cfg["PAIR"]), opts
    types.update(DK=f"tensordesc<{idt}[1,64,1,{d}]>", DV=f"tensordesc<{idt}[1,64,1,{d}]>")
    if cfg["Q_TMA"]:
        types["DQ"] = f"tensordesc<{idt}[1,{bq},1,{d}]>"
    else:
        consts["DQ"] = None
    kv_early = cfg["KV_EARLY"] and proj
    if kv_early:
        types["DKVS"] = f"tensordesc<{cdt}[{d},{d}]>"
    else:
        consts["DKVS"] = None
    return ("_sla_fwd_tma_kernel", _sla_fwd_tma_kernel, types, dict(consts, Q_TMA=cfg["Q_TMA"], KV_EARLY=kv_early),
            opts)


def cases(arch: int):
    """Yield (kernel name, case name, kernel, types, constexprs, options) for one architecture, exactly as the
    launchers would launch them there."""
    import triton
    import triton.language as tl
    tl_dt = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}
    for name, *case in MAIN_CASES:
        kname, fn, types, consts, opts = _main_case(arch, *case)
        yield kname, name, fn, types, consts, opts
    for d, idt, cdt in PREPASS_CASES:
        pre = prepass_config(_TORCH[idt])
        types = {n: f"*{idt}" for n in ("Q", "K", "V")}
        types.update({n: "*fp32" for n in ("QMEAN", "KMEAN", "KV", "KS", "KTOT")})
        consts = dict(BLOCK_Q=128, BLOCK_K=64, HEAD_D=d, FMAP=0, CDT=tl_dt[cdt],
                      COLSUM_MMA=bool(pre["COLSUM_MMA"]) and idt != "fp32",
                      DETERMINISTIC=bool(pre["DETERMINISTIC"]))
        yield ("_prepass_kernel", f"d{d} {idt} in {cdt}", _prepass_kernel, types, consts,
               dict(num_warps=pre["num_warps"], num_stages=pre["num_stages"]))
    for nk in TOPK_WIDTHS:
        nk_pad = triton.next_power_of_2(nk)
        yield ("_topk_kernel", f"Nk={nk}", _topk_kernel, {"S": "*fp32", "LUT": "*i16"}, dict(NK_PAD=nk_pad),
               dict(num_warps=topk_num_warps(nk_pad), num_stages=3))   # the launcher passes none: the default


def check_case(arch: int, kname: str, name: str, fn, types: dict, consts: dict, opts: dict) -> dict:
    """Compile one case for ``arch``; where its shared memory is over the limit, with fewer stages, as the
    launcher retries at run time (``stages``: the count that fits, None when none does)."""
    row = dict(arch=arch, kernel=kname, case=name, opts=opts,
               path=("tma" if kname == "_sla_fwd_tma_kernel" else "pairs" if consts.get("PAIR") else "single")
               if kname.startswith("_sla_fwd") else None)
    t0 = time.perf_counter()
    try:
        for stages in range(opts["num_stages"], 0, -1):
            compiled = compile_for(fn, types, consts, dict(opts, num_stages=stages), arch)
            if compiled.metadata.shared <= SMEM_LIMIT[arch]:
                break
        fits = compiled.metadata.shared <= SMEM_LIMIT[arch]
        row.update(ok=True, shared=compiled.metadata.shared, limit=SMEM_LIMIT[arch], fits=fits,
                   stages=stages if fits else None, seconds=round(time.perf_counter() - t0, 1))
    except Exception as e:  # noqa: BLE001 - reported per case
        row.update(ok=False, fits=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
    return row
