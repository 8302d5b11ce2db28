"""Comparisons shared by the W8A8 kernel tests (CPU interpreter and GPU)."""
from __future__ import annotations


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def assert_matches_emulation(out, emu, tol):
    """Same integer dots and scales. Only two things may differ: fp32 summation order, and, rarely, one activation
    code where x * 127 / amax lies within an ulp of a .5 tie (the GPU contracts the multiply and the +-0.5 into one
    fma; PyTorch rounds twice)."""
    assert rel_err(out, emu) < tol, rel_err(out, emu)
    far = ((out.double() - emu.double()).abs() > tol * emu.abs().max()).float().mean().item()
    assert far < 0.01, far
