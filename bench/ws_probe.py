"""Probe: does Triton 3.6's Hopper automatic warp specialisation accept an SLA-style key loop? (offline, no GPU)

    PYTHONPATH=/path/to/triton-3.6 python3 bench/ws_probe.py

`tl.range(..., warp_specialize=True)` with num_warps=4 on sm_90 runs Triton's Hopper warp-specialisation pass
(producer warp + two consumer warpgroups, the 128-row query tile data-partitioned into 2 x 64 rows, registers
rebalanced with setmaxnreg): the FA3 structure that `tl` cannot otherwise express. This compiles a stripped-down
copy of the main kernel's loop (LUT-indexed key blocks through TMA, online softmax) with the kernel's other
features switched on one at a time, and reports whether the pass succeeds (setmaxnreg and named barriers in the
SASS) and whether ptxas serialises the wgmma (C7515). Results on 2026-11-27 (KERNEL_NOTES.md): the single-block
loop with 2-D descriptors passes, with or without a row mask on the store (168 registers, 8 setmaxnreg, 47 named
barriers, no C7515); the masked tail block after the loop, the linear epilogue, 4-D descriptors with reshape, and
two blocks per iteration each stop the pass ("Unexpected op" in WSDataPartition); so do two single-block updates
back to back in one iteration (PAIR2), while one joined (BLOCK_Q, 2 * BLOCK_K) tile (PAIRJ: tl.join of the two
blocks) passes but moves k and v through registers (867 instructions per 128 keys per consumer, vs ~600-740 for
two single iterations). In-loop tail mask (LOOPMASK) and adding back a linear part written to the output
(ADDBACK) pass. On the GPU (H100, Triton 3.6.0, session 3): the kernel built this way (_sla_fwd_ws_kernel, commit
25eada2) compiles but hangs at every shape (bench/ws_hang_check.py), so the path was removed. Triton 3.6 documents
`warp_specialize` as Blackwell-only; the Hopper pass runs but its output deadlocks on this loop.
"""
import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

@triton.jit
def _update(acc, m_i, l_i, qk, v, qk_scale):
    """One online-softmax step over a (BLOCK_Q, N) score tile qk and its values v (N, D)."""
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
    alpha = tl.math.exp2(m_i - m_ij)
    return tl.dot(p.to(tl.bfloat16), v, acc * alpha[:, None]), m_ij, l_i * alpha + tl.sum(p, 1)


@triton.jit
def _phi(x, AXIS: tl.constexpr):
    e = tl.exp2((x - tl.expand_dims(tl.max(x, AXIS), AXIS)) * 1.4426950408889634)
    return e * tl.expand_dims(1.0 / tl.sum(e, AXIS), AXIS)

@triton.jit
def probe_kernel(DQ, DK, DV, O, LUT, K, V, KV, KS, L, H, NQ, KEEP, qk_scale, stride_kl, stride_vl,
                 BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, HEAD_D: tl.constexpr, PAIR: tl.constexpr,
                 WS: tl.constexpr, TAIL: tl.constexpr, EPI: tl.constexpr, D4: tl.constexpr, MS: tl.constexpr,
                 LOOPMASK: tl.constexpr, ADDBACK: tl.constexpr, TAILD: tl.constexpr,
                 PAIR2: tl.constexpr, PAIRJ: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = offs_m < L
    if D4:
        q = DQ.load([b, pid_m * BLOCK_Q, h, 0]).reshape(BLOCK_Q, HEAD_D)
    else:
        q = DQ.load([b * L + pid_m * BLOCK_Q, h * HEAD_D])
    m_i = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_Q], dtype=tl.float32)
    acc = tl.zeros([BLOCK_Q, HEAD_D], dtype=tl.float32)
    lut_row = LUT + (pid_bh * NQ + pid_m) * KEEP
    n_plain = KEEP - 1 if TAIL else KEEP
    if PAIR:
        for jj in tl.range(0, n_plain // 2, warp_specialize=WS):
            if D4:
                r1 = tl.load(lut_row + 2 * jj) * BLOCK_K
                r2 = tl.load(lut_row + 2 * jj + 1) * BLOCK_K
                k1 = DK.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
                v1 = DV.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
                k2 = DK.load([b, r2, h, 0]).reshape(BLOCK_K, HEAD_D)
                v2 = DV.load([b, r2, h, 0]).reshape(BLOCK_K, HEAD_D)
            else:
                r1 = tl.load(lut_row + 2 * jj) * BLOCK_K + b * L
                r2 = tl.load(lut_row + 2 * jj + 1) * BLOCK_K + b * L
                k1 = DK.load([r1, h * HEAD_D])
                v1 = DV.load([r1, h * HEAD_D])
                k2 = DK.load([r2, h * HEAD_D])
                v2 = DV.load([r2, h * HEAD_D])
            qk1 = tl.dot(q, k1.T)
            qk2 = tl.dot(q, k2.T)
            m_ij = tl.maximum(m_i, tl.maximum(tl.max(qk1, 1), tl.max(qk2, 1)) * qk_scale)
            p1 = tl.math.exp2(qk1 * qk_scale - m_ij[:, None])
            p2 = tl.math.exp2(qk2 * qk_scale - m_ij[:, None])
            alpha = tl.math.exp2(m_i - m_ij)
            l_i = l_i * alpha + tl.sum(p1, 1) + tl.sum(p2, 1)
            acc = acc * alpha[:, None]
            acc = tl.dot(p1.to(tl.bfloat16), v1, acc)
            acc = tl.dot(p2.to(tl.bfloat16), v2, acc)
            m_i = m_ij
        j = (n_plain // 2) * 2
    elif PAIR2:
        # two blocks per iteration as two back-to-back single-block updates (no joint max)
        for jj in tl.range(0, n_plain // 2, warp_specialize=WS):
            r1 = tl.load(lut_row + 2 * jj) * BLOCK_K + b * L
            r2 = tl.load(lut_row + 2 * jj + 1) * BLOCK_K + b * L
            k1 = DK.load([r1, h * HEAD_D])
            v1 = DV.load([r1, h * HEAD_D])
            k2 = DK.load([r2, h * HEAD_D])
            v2 = DV.load([r2, h * HEAD_D])
            qk = tl.dot(q, k1.T)
            acc, m_i, l_i = _update(acc, m_i, l_i, qk, v1, qk_scale)
            qk = tl.dot(q, k2.T)
            acc, m_i, l_i = _update(acc, m_i, l_i, qk, v2, qk_scale)
        j = (n_plain // 2) * 2
    elif PAIRJ:
        # two blocks per iteration as one (BLOCK_Q, 2 * BLOCK_K) score tile: k1, k2 joined along the keys
        for jj in tl.range(0, n_plain // 2, warp_specialize=WS):
            r1 = tl.load(lut_row + 2 * jj) * BLOCK_K + b * L
            r2 = tl.load(lut_row + 2 * jj + 1) * BLOCK_K + b * L
            k = tl.join(DK.load([r1, h * HEAD_D]).T, DK.load([r2, h * HEAD_D]).T)          # (D, BK, 2)
            k = tl.reshape(tl.permute(k, (0, 2, 1)), (HEAD_D, 2 * BLOCK_K))
            v = tl.join(DV.load([r1, h * HEAD_D]).T, DV.load([r2, h * HEAD_D]).T)
            v = tl.reshape(tl.permute(v, (2, 1, 0)), (2 * BLOCK_K, HEAD_D))
            qk = tl.dot(q, k)
            acc, m_i, l_i = _update(acc, m_i, l_i, qk, v, qk_scale)
        j = (n_plain // 2) * 2
    else:
        for jj in tl.range(0, n_plain, warp_specialize=WS):
            if D4:
                r1 = tl.load(lut_row + jj) * BLOCK_K
                k = DK.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
                v = DV.load([b, r1, h, 0]).reshape(BLOCK_K, HEAD_D)
            else:
                r1 = tl.load(lut_row + jj) * BLOCK_K + b * L
                k = DK.load([r1, h * HEAD_D])
                v = DV.load([r1, h * HEAD_D])
            qk = tl.dot(q, k.T)
            if LOOPMASK:
                # every key row past L (the partial tail block) masked inside the loop
                qk = tl.where((tl.load(lut_row + jj) * BLOCK_K + tl.arange(0, BLOCK_K) < L)[None, :], qk,
                              float("-inf"))
            acc, m_i, l_i = _update(acc, m_i, l_i, qk, v, qk_scale)
        j = n_plain
    if TAILD:
        # the partial tail block after the loop, through the descriptors, masked
        offs_n = tl.arange(0, BLOCK_K)
        row0 = tl.load(lut_row + KEEP - 1) * BLOCK_K
        k = DK.load([b * L + row0, h * HEAD_D])
        v = DV.load([b * L + row0, h * HEAD_D])
        qk = tl.dot(q, k.T)
        qk = tl.where((row0 + offs_n < L)[None, :], qk, float("-inf"))
        acc, m_i, l_i = _update(acc, m_i, l_i, qk, v, qk_scale)
    if TAIL:
        offs_n = tl.arange(0, BLOCK_K)
        k_base = K + b.to(tl.int64) * L * stride_kl + h * HEAD_D
        v_base = V + b.to(tl.int64) * L * stride_vl + h * HEAD_D
        for jj in range(j, KEEP):
            row0 = tl.load(lut_row + jj) * BLOCK_K
            valid = row0 + offs_n < L
            kt = tl.load(k_base + row0.to(tl.int64) * stride_kl + offs_d[:, None] + offs_n[None, :] * stride_kl,
                         mask=valid[None, :], other=0.0)
            v = tl.load(v_base + row0.to(tl.int64) * stride_vl + offs_n[:, None] * stride_vl + offs_d[None, :],
                        mask=valid[:, None], other=0.0)
            qk = tl.dot(q, kt)
            qk = tl.where(valid[None, :], qk, float("-inf"))
            acc, m_i, l_i = _update(acc, m_i, l_i, qk, v, qk_scale)
    out = acc / l_i[:, None]
    if ADDBACK:
        # the linear branch written earlier by another kernel, added back
        out += tl.load(O + (b * L + offs_m)[:, None].to(tl.int64) * (H * HEAD_D) + h * HEAD_D + offs_d[None, :],
                       mask=row_ok[:, None], other=0.0).to(tl.float32)
    if EPI:
        fq = _phi(q.to(tl.float32), 1)
        offs_dd = offs_d[:, None] * HEAD_D + offs_d[None, :]
        kv = tl.load(KV + pid_bh * HEAD_D * HEAD_D + offs_dd)
        ks = tl.load(KS + pid_bh * HEAD_D + offs_d)
        num = tl.dot(fq.to(tl.bfloat16), kv)
        den = tl.sum(fq * ks[None, :], 1)
        out += num / (1e-5 + den)[:, None]
    if MS:
        tl.store(O + (b * L + offs_m)[:, None].to(tl.int64) * (H * HEAD_D) + h * HEAD_D + offs_d[None, :],
                 out.to(tl.bfloat16), mask=row_ok[:, None])
    else:
        tl.store(O + (b * L + offs_m)[:, None].to(tl.int64) * (H * HEAD_D) + h * HEAD_D + offs_d[None, :],
                 out.to(tl.bfloat16))

def run(nw, ns, **c):
    fn = probe_kernel
    d4 = c.get("D4", False)
    bk = 64
    sig = {"DQ": "tensordesc<bf16[1,128,1,128]>" if d4 else "tensordesc<bf16[128,128]>",
           "DK": f"tensordesc<bf16[1,{bk},1,128]>" if d4 else f"tensordesc<bf16[{bk},128]>",
           "DV": f"tensordesc<bf16[1,{bk},1,128]>" if d4 else f"tensordesc<bf16[{bk},128]>",
           "O": "*bf16", "LUT": "*i32", "K": "*bf16", "V": "*bf16", "KV": "*bf16", "KS": "*fp32",
           "L": "i32", "H": "i32", "NQ": "i32", "KEEP": "i32", "qk_scale": "fp32", "stride_kl": "i32", "stride_vl": "i32"}
    consts = dict(BLOCK_Q=128, BLOCK_K=bk, HEAD_D=128, PAIR=True, WS=True, TAIL=False, EPI=False, D4=False, MS=True, LOOPMASK=False, ADDBACK=False, TAILD=False, PAIR2=False, PAIRJ=False)
    consts.update(c)
    for kk in consts: sig[kk] = "constexpr"
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ("O", "LUT", "K", "V", "KV", "KS", "stride_kl", "stride_vl")}
    try:
        k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                           options=dict(num_warps=nw, num_stages=ns))
    except Exception as e:
        return f"FAILED {str(e).splitlines()[0][:150]}"
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        open(d + "/k.cubin", "wb").write(k.asm["cubin"])
        sass = subprocess.run([tools + "/cuobjdump", "-sass", d + "/k.cubin"], capture_output=True, text=True).stdout
        open(d + "/k.ptx", "w").write(k.asm["ptx"])
        log = subprocess.run([tools + "/ptxas", "-arch=sm_90a", "-v", "-o", d + "/x.cubin", d + "/k.ptx"], capture_output=True, text=True).stderr
    tag = "_".join(f"{a}{int(b) if isinstance(b, bool) else b}" for a, b in sorted(c.items()))
    open(f"/tmp/wsprobe/p2_{tag}_w{nw}_s{ns}.sass", "w").write(sass)
    regs = re.findall(r"Used (\d+) registers", log)
    stack = re.findall(r"(\d+) bytes stack frame", log)
    return (f"ok regs={regs} stack={stack} C7515={'C7515' in log} setmaxnreg={sass.count('USETMAXREG')} "
            f"HGMMA={sass.count('HGMMA')} DEPBAR={sass.count('WARPGROUP.DEPBAR')} namedbar={len(re.findall(r'BAR.(SYNC|ARV).*0x[1-9]', sass))}")

CASES = [dict(PAIR=False, MS=False), dict(PAIR=False, MS=True), dict(PAIR=False, MS=False, TAIL=True),
         dict(PAIR=False, MS=False, EPI=True), dict(PAIR=False, MS=False, D4=True), dict(MS=False),
         dict(PAIR=False, LOOPMASK=True), dict(PAIR=False, ADDBACK=True), dict(PAIR=False, LOOPMASK=True, ADDBACK=True),
         dict(PAIR=False, TAILD=True, ADDBACK=True), dict(PAIR=False, PAIR2=True), dict(PAIR=False, PAIRJ=True)]

if __name__ == "__main__":
    for c in CASES:
        print(c, run(4, 2, **c), flush=True)
