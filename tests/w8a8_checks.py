"""Comparisons shared by the W8A8 kernel tests (CPU interpreter and GPU), and the subprocess runs of the W8A8 tests
inside real ComfyUI checkouts."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from wan_factory import make_wan_state_dict, save_pth, to_turbodiffusion_quant

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def assert_matches_emulation(out, emu, tol):
    """Same integer dots and scales. Only two things may differ: fp32 summation order, and, rarely, one activation
    code where x * 127 / amax lies within an ulp of a .5 tie (the GPU contracts the multiply and the +-0.5 into one
    fma; PyTorch rounds twice)."""
    assert rel_err(out, emu) < tol, rel_err(out, emu)
    far = ((out.double() - emu.double()).abs() > tol * emu.abs().max()).float().mean().item()
    assert far < 0.01, far


def run_in_checkouts(script: str, tmp: pathlib.Path, env: dict | None = None) -> dict:
    """Write a tiny TurboDiffusion ``-quant`` Wan into ``tmp`` and run ``script`` (``python -c``; argv: checkout,
    repository root, checkpoint) in a subprocess per checkout of COMFYUI_PATH, with ``env`` added to the
    environment; {checkout: the last line it printed, as JSON}. Skips without COMFYUI_PATH."""
    paths = [p for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p]
    if not paths:
        pytest.skip("COMFYUI_PATH not set")
    native = make_wan_state_dict(dim=256, num_heads=2, num_layers=2, ffn_dim=384, text_dim=4096, seed=5)
    ckpt = save_pth(to_turbodiffusion_quant(native, prefix="net.", wrapped=True), tmp / "m-quant.pth")
    out = {}
    for comfy_path in paths:
        r = subprocess.run([sys.executable, "-c", script, comfy_path, str(ROOT), ckpt], capture_output=True,
                           text=True, timeout=900, cwd=tmp, env=dict(os.environ, **(env or {})))
        assert r.returncode == 0, r.stderr[-6000:]
        out[comfy_path] = json.loads(r.stdout.strip().splitlines()[-1])
    return out
