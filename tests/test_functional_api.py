"""The functional API outside ComfyUI: the pack's one import name, options named in errors, the backends."""
import os
import subprocess
import sys

import pytest
import torch

from comfyui_sla.sla import sparse_linear_attention
from comfyui_sla.sla.reference import sla_reference, sla_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_pack_has_one_import_name():
    # From a clone, scripts load the pack as ``comfyui_sla`` (_load_pack.py), the same name ComfyUI's load by path
    # hands over to: the kernels are reached through it, and no other module name is planted. ``sla`` imported on
    # its own (no parent package) has no kernels and says so instead of registering a second copy.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch\n"
            "before = set(sys.modules)\n"
            "from _load_pack import load_pack; load_pack()\n"
            "from comfyui_sla.sla.functional import _kernels\n"
            "k = _kernels()\n"
            "q = torch.randn(1, 70, 1, 64)\n"
            "out = k.sla_forward(q, q, q, 1, compute_dtype='fp32')\n"
            "new = sorted(m for m in set(sys.modules) - before if 'sla' in m.lower() and not m.startswith('comfyui_sla'))\n"
            "import sla.functional as alone\n"
            "try:\n    alone._kernels(); standalone = 'kernels'\nexcept ImportError:\n    standalone = 'none'\n"
            "print(k.__name__, tuple(out.shape), new, standalone)\n")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["comfyui_sla.kernels", "(1,", "70,", "1,", "64)", "[]", "none"]


def test_bad_shapes_and_options_are_named():
    q = torch.randn(1, 10, 2, 64)
    with pytest.raises(ValueError, match="share one"):
        sparse_linear_attention(q, q[:, :5], q)
    with pytest.raises(ValueError, match="feature_map"):
        sparse_linear_attention(q, q, q, feature_map="tanh")
    with pytest.raises(ValueError, match="backend"):
        sparse_linear_attention(q, q, q, backend="cuda")


def test_torch_backend_matches_reference_on_strided_comfy_layout():
    b, length, h, d = 2, 150, 2, 64
    qkv = torch.randn(b, length, 3 * h * d)
    q, k, v = (t.unflatten(-1, (h, d)) for t in qkv.chunk(3, dim=-1))   # non-contiguous views
    w, bias = 0.1 * torch.randn(d, d), 0.1 * torch.randn(d)
    out = sparse_linear_attention(q, k, v, 0.4, w, bias, block_q=64, block_k=64, backend="torch")
    ref = sla_reference(q, k, v, 0.4, w, bias, "softmax", 64, 64, compute_dtype=torch.float32)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
@pytest.mark.parametrize("shape", [(0, 10, 2, 64), (2, 0, 2, 64)])
def test_empty_batch_or_sequence_gives_an_empty_output_on_every_backend(backend, shape):
    q = torch.randn(*shape, dtype=torch.float16)
    w = torch.zeros(64, 64)
    out = sparse_linear_attention(q, q, q, 0.1, w, None, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype and out.numel() == 0
    if shape[1] == 0:   # the blockwise PyTorch path itself, below the API
        assert sla_torch(q, q, q, 0.1, w).shape == q.shape
