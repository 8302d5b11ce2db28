"""The launch configurations on every GPU generation: what ``main_config`` picks, the shared-memory fallback of
``stages.launch``, and (offline, no GPU needed) that the configurations the launchers pick compile with the
installed Triton and fit each architecture's shared memory.

The default run compiles the tuned configurations for sm_89 and sm_90 (pointer pairs and TMA); with
SLA_FULL_COMPILE_CHECK=1 every case for every architecture (what ``.ci/run`` runs as its own step, through
``python3 tests/compile_targets.py --check``).
"""
import os
import pathlib
import sys

import pytest
import torch

from comfyui_sla.kernels import launch, stages

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import compile_targets  # noqa: E402

FULL = os.environ.get("SLA_FULL_COMPILE_CHECK") == "1"
ARCHS = compile_targets.ALL_ARCHS if FULL else (89, 90)
CASES = None if FULL else ("d128 bq128 bf16 proj", "d128 bf16 in bf16", "Nk=1182")


def test_main_config_paths():
    bf16, fp32 = torch.bfloat16, torch.float32
    hopper = launch.main_config(128, 128, bf16, True, 90, True)
    assert hopper["USE_TMA"] and hopper["PAIR"] and hopper == dict(launch.MAIN_TMA_DEFAULT, USE_TMA=True)
    ada = launch.main_config(128, 128, bf16, True, 89, True)
    assert not ada["USE_TMA"] and ada["PAIR"] and ada["num_stages"] == 2 and not ada["Q_TMA"] and not ada["KV_EARLY"]
    # TMA needs descriptors that can take k and v (alignment, Triton >= 3.4): else the pointer pairs, 3 stages
    assert launch.main_config(128, 128, bf16, True, 90, False) == dict(ada, num_stages=3)
    # pointer pairs elsewhere: 2 stages (the A100's footprint as measured there; 99 KB parts)
    assert launch.main_config(128, 128, bf16, True, 80, True) == ada
    assert launch.main_config(128, 128, bf16, True, 120, False)["num_stages"] == 2
    # inputs cast in-kernel: single blocks, 2 stages, on every generation
    for cap in (80, 90):
        cast = launch.main_config(128, 128, bf16, False, cap, True)
        assert (cast["USE_TMA"], cast["PAIR"], cast["num_stages"]) == (False, False, 2)
    assert launch.main_config(128, 128, fp32, True, 90, True)["num_stages"] == 1
    small = launch.main_config(64, 128, bf16, True, 90, True)
    assert (small["num_warps"], small["USE_TMA"], small["PAIR"]) == (4, False, False)


def test_main_config_override_cannot_force_tma_where_it_cannot_run():
    cfg = launch.main_config(128, 128, torch.bfloat16, False, 90, True, dict(USE_TMA=True, Q_TMA=True))
    assert not cfg["USE_TMA"] and not cfg["Q_TMA"]
    cfg = launch.main_config(128, 128, torch.bfloat16, True, 0, True, dict(USE_TMA=True))
    assert cfg["USE_TMA"]   # benchmarks / interpreter tests may force it where the descriptors work


def test_prepass_config_fp32_inputs_get_two_stages():
    from comfyui_sla.kernels.prepass import PREPASS_DEFAULT, prepass_config
    assert prepass_config(torch.bfloat16)["num_stages"] == PREPASS_DEFAULT["num_stages"]
    assert prepass_config(torch.float32)["num_stages"] == min(2, PREPASS_DEFAULT["num_stages"])
    assert prepass_config(torch.float32, dict(num_stages=4))["num_stages"] == 4


class _FakeKernel:
    """Stands in for a JIT function: raises Triton's OutOfResources while num_stages > fits."""

    def __init__(self, fits):
        self.fits, self.calls = fits, []

    def __getitem__(self, grid):
        def run(*args, num_warps, num_stages, **consts):
            from triton.runtime.errors import OutOfResources
            self.calls.append(num_stages)
            if self.fits is None or num_stages > self.fits:
                raise OutOfResources(100_000 + 30_000 * num_stages, 101_376, "shared memory")
        return run


def test_launch_retries_with_fewer_stages_and_remembers(monkeypatch):
    monkeypatch.setattr(stages, "_STAGES_THAT_FIT", {})
    k = _FakeKernel(fits=1)
    stages.launch("fake", k, (1,), (), dict(A=1), torch.device("cpu"), 4, 3)
    assert k.calls == [3, 2, 1]
    stages.launch("fake", k, (1,), (), dict(A=1), torch.device("cpu"), 4, 3)
    assert k.calls == [3, 2, 1, 1], "the stage count that fits is remembered for the same configuration"
    stages.launch("fake", k, (1,), (), dict(A=2), torch.device("cpu"), 4, 3)
    assert k.calls[-3:] == [3, 2, 1], "another configuration starts from its own stage count"


def test_launch_says_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(stages, "_STAGES_THAT_FIT", {})
    with pytest.raises(ValueError, match=r"needs 130000 bytes of shared memory per block and the GPU allows "
                                         r"101376 .*HEAD_D=128.*num_stages=1"):
        stages.launch("SLA kernel", _FakeKernel(fits=None), (1,), (), dict(HEAD_D=128), torch.device("cpu"), 8, 2)


def _has_ptxas():
    try:
        import triton
    except ImportError:
        return False
    return (pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.skipif(not _has_ptxas(), reason="Triton without its NVIDIA backend (ptxas)")
def test_launcher_configs_compile_and_fit():
    rows = compile_targets.run(ARCHS, jobs=2, timeout=1500, names=CASES)
    assert {r["arch"] for r in rows} == set(ARCHS)
    names = {r["case"] for r in rows}
    assert CASES is None or names == set(CASES)
    assert not compile_targets.problems(rows)
    paths = {r["arch"]: r["path"] for r in rows if r["case"] == "d128 bq128 bf16 proj"}
    assert paths == {a: "tma" if a >= 90 else "pairs" for a in ARCHS}


def test_problems_names_what_is_wrong():
    ok = dict(arch=89, case="d128 bq128 bf16 proj", ok=True, fits=True, path="pairs", shared=1, limit=2,
              stages=3, opts=dict(num_stages=3))
    assert compile_targets.problems([ok]) == []
    assert "path tma" in compile_targets.problems([dict(ok, path="tma")])[0]
    assert "needs 2 of 3 stages" in compile_targets.problems([dict(ok, stages=2)])[0]
    assert "over the shared-memory limit" in compile_targets.problems([dict(ok, fits=False, stages=None)])[0]
    assert "does not compile" in compile_targets.problems([dict(ok, ok=False, error="x")])[0]
    assert compile_targets.problems([dict(ok, arch=89, case="d128 bq128 fp32", fits=False)]) == []
