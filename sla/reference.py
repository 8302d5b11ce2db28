"""SLA forward in plain PyTorch: a float64 dense reference and an exact blockwise path.

Semantics (thu-ml/SLA ``main``, which TurboWan checkpoints were trained and served with), q, k, v: (B, L, H, D):

* mask: per query block keep the top-``keep`` key blocks by block-mean score (see :mod:`sla.mask`);
* sparse branch O_s: softmax(q k^T * D^-0.5) over the tokens of the kept key blocks only;
* linear branch O_l: phi(q) (phi(K)^T V) / (LINEAR_EPS + phi(q) . sum_n phi(K_n)) over ALL keys;
* O = O_s + proj_l(O_l), proj_l a Linear(D, D) on the head dimension (absent = training-free block-sparse).

q, k, v are rounded to the compute dtype first (bf16 or fp16, as upstream casts inside the op); the mask is
predicted from the inputs as given.
"""
from __future__ import annotations

import torch

from .mask import block_lut, lut_to_mask
from .spec import FEATURE_MAPS, LINEAR_EPS, check_choice, num_blocks


def feature_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """phi(x) on the last (head) dimension: 'softmax', 'elu' (elu(x) + 1) or 'relu'."""
    check_choice("feature_map", name, FEATURE_MAPS)
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "elu":
        return torch.nn.functional.elu(x) + 1.0
    return torch.relu(x)


def default_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16 stays fp16, everything else computes in bf16 (upstream's default)."""
    return torch.float16 if dtype == torch.float16 else torch.bfloat16


def _token_mask(lut: torch.Tensor, length: int, block_q: int, block_k: int) -> torch.Tensor:
    """Expand a block LUT to a (B, H, L, L) bool token mask (reference only: L x L)."""
    blocks = lut_to_mask(lut, num_blocks(length, block_k))
    tok = blocks.repeat_interleave(block_q, dim=2).repeat_interleave(block_k, dim=3)
    return tok[:, :, :length, :length]


def sla_reference(q, k, v, keep_ratio: float = 0.1, proj_weight=None, proj_bias=None,
                  feature_map_name: str = "softmax", block_q: int = 128, block_k: int = 64,
                  compute_dtype=None, lut=None, prefix: int = 0) -> torch.Tensor:
    """Dense float64 reference of the exact semantics. Materialises L x L: small shapes only.

    q, k, v: (B, L, H, D).  proj_weight: (D, D), proj_bias: (D,) or None.  ``lut`` (B, H, Nq, keep) overrides
    the predicted mask (tests pass the kernel's own LUT so that near-ties cannot pick different blocks); ``prefix``:
    tokens whose key blocks every query attends (:func:`sla.mask.block_lut`). Returns (B, L, H, D) float64.
    """
    b, length, h, d = q.shape
    if lut is None:
        lut = block_lut(q, k, keep_ratio, block_q, block_k, prefix)
    cdt = compute_dtype or default_compute_dtype(q.dtype)
    qd, kd, vd = (t.to(cdt).double().permute(0, 2, 1, 3) for t in (q, k, v))  # (B, H, L, D)
    mask = _token_mask(lut, length, block_q, block_k)

    logits = (qd @ kd.transpose(-1, -2)) * d ** -0.5
    logits = logits.masked_fill(~mask, float("-inf"))
    o_s = torch.softmax(logits, dim=-1) @ vd

    fq, fk = feature_map(qd, feature_map_name), feature_map(kd, feature_map_name)
    o_l = (fq @ (fk.transpose(-1, -2) @ vd)) / (LINEAR_EPS + fq @ fk.sum(dim=2).unsqueeze(-1))
    out = o_s
    if proj_weight is not None:
        out = out + o_l @ proj_weight.double().t()
        if proj_bias is not None:
            out = out + proj_bias.double()
    return out.permute(0, 2, 1, 3)


def sla_torch(q, k, v, keep_ratio: float = 0.1, proj_weight=None, proj_bias=None,
              feature_map_name: str = "softmax", block_q: int = 128, block_k: int = 64,
              compute_dtype=None, lut=None,
              max_chunk_elems: int = 1 << 26, prefix: int = 0) -> torch.Tensor:
    """Exact SLA forward in PyTorch that never materialises L x L (works through chunks of query blocks).

    The CPU/MPS path of the pack. q, k, v: (B, L, H, D) in any float dtype; math in fp32 after rounding the
    inputs to ``compute_dtype`` (default: the input dtype, so an fp32 model on the CPU stays exact).
    ``prefix``: tokens whose key blocks every query attends (:func:`sla.mask.block_lut`). Returns (B, L, H, D)
    in q's dtype.
    """
    b, length, h, d = q.shape
    if q.numel() == 0:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if lut is None:
        lut = block_lut(q, k, keep_ratio, block_q, block_k, prefix)
    cdt = compute_dtype or q.dtype
    nq, nk = num_blocks(length, block_q), num_blocks(length, block_k)
    keep = lut.shape[-1]

    def heads_first(t, blk, nb):  # (B, L, H, D) -> (B, H, nb, blk, D) fp32, zero-padded
        t = t.to(cdt).float().permute(0, 2, 1, 3)
        t = torch.nn.functional.pad(t, (0, 0, 0, nb * blk - length))
        return t.reshape(b, h, nb, blk, d)

    qb, kb, vb = heads_first(q, block_q, nq), heads_first(k, block_k, nk), heads_first(v, block_k, nk)
    key_valid = (torch.arange(nk * block_k, device=q.device) < length).view(nk, block_k)

    linear = proj_weight is not None  # without proj_l the linear branch adds nothing: skip it
    if linear:
        fk = feature_map(kb, feature_map_name) * key_valid[..., None]      # (B, H, nk, BK, D)
        kv_all = torch.einsum("bhnkd,bhnke->bhde", fk, vb)                 # (B, H, D, D) over all keys
        ksum_all = fk.sum(dim=(2, 3))

    out = torch.empty(b, h, nq, block_q, d, device=q.device, dtype=torch.float32)
    per_qblock = keep * block_k * (block_q + 2 * d)
    chunk = max(1, max_chunk_elems // max(1, b * h * per_qblock))
    scale = d ** -0.5
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        idx = lut[:, :, s:e].long()                                        # (B, H, c, keep)
        gidx = idx[..., None, None].expand(-1, -1, -1, -1, block_k, d)
        kg = torch.gather(kb.unsqueeze(2).expand(-1, -1, e - s, -1, -1, -1), 3, gidx)
        vg = torch.gather(vb.unsqueeze(2).expand(-1, -1, e - s, -1, -1, -1), 3, gidx)
        kg = kg.reshape(b, h, e - s, keep * block_k, d)
        vg = vg.reshape(b, h, e - s, keep * block_k, d)
        valid = key_valid[idx].reshape(b, h, e - s, 1, keep * block_k)
        qs = qb[:, :, s:e]                                                 # (B, H, c, BQ, D)
        logits = (qs @ kg.transpose(-1, -2)) * scale
        o_s = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1) @ vg

        if not linear:
            out[:, :, s:e] = o_s
            continue
        fq = feature_map(qs, feature_map_name)
        kv, ks = kv_all[:, :, None], ksum_all[:, :, None]
        o_l = (fq @ kv) / (LINEAR_EPS + (fq * ks[..., None, :]).sum(-1, keepdim=True))
        o = o_s + o_l @ proj_weight.float().t()
        if proj_bias is not None:
            o = o + proj_bias.float()
        out[:, :, s:e] = o
    out = out.reshape(b, h, nq * block_q, d)[:, :, :length]
    return out.permute(0, 2, 1, 3).to(q.dtype)
