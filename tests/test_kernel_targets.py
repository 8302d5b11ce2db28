"""The launch configurations on every GPU generation: what ``main_config`` picks, the shared-memory fallback of
``launch._launch``, and (offline, no GPU needed) that every configuration the launchers pick compiles for
sm_80 / sm_89 / sm_90 / sm_100 / sm_120 with the installed Triton and fits that architecture's shared memory."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from comfyui_sla.kernels import launch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compile_targets import MAIN_CASES  # noqa: E402
ARCHS = (80, 89, 90, 100, 120)
# fp32 compute (compute_dtype="fp32", never chosen by the patch) at D=128, block_q=128 holds fp32 q, k and v
# tiles: ~131 KB at one stage, over the 99 KB per block of sm_86 / sm_89 / sm_120. The launcher raises a
# ValueError that says so (the patch then runs those calls dense).
EXPECTED_OVER = {(a, c) for a in (86, 89, 120) for c in ("d128 bq128 main fp32", "d128 bq128 sla1 fp32")}


def test_main_config_paths():
    bf16, fp32 = torch.bfloat16, torch.float32
    hopper = launch.main_config(128, 128, "main", bf16, True, 90, True)
    assert hopper["USE_TMA"] and hopper["PAIR"] and hopper == dict(launch.MAIN_TMA_DEFAULT, USE_TMA=True)
    ada = launch.main_config(128, 128, "main", bf16, True, 89, True)
    assert not ada["USE_TMA"] and ada["PAIR"] and ada["num_stages"] == 3 and not ada["Q_TMA"] and not ada["KV_EARLY"]
    # TMA needs descriptors that can take k and v (alignment, Triton >= 3.4): else the pointer pairs
    assert launch.main_config(128, 128, "main", bf16, True, 90, False) == ada
    # inputs cast in-kernel: single blocks, 2 stages, on every generation
    for cap in (80, 90):
        cast = launch.main_config(128, 128, "main", bf16, False, cap, True)
        assert (cast["USE_TMA"], cast["PAIR"], cast["num_stages"]) == (False, False, 2)
    assert launch.main_config(128, 128, "main", fp32, True, 90, True)["num_stages"] == 1
    small = launch.main_config(64, 128, "main", bf16, True, 90, True)
    assert (small["num_warps"], small["USE_TMA"], small["PAIR"]) == (4, False, False)
    sla1 = launch.main_config(128, 128, "sla1", bf16, True, 90, True)
    assert not sla1["USE_TMA"] and not sla1["PAIR"]


def test_main_config_override_cannot_force_tma_where_it_cannot_run():
    cfg = launch.main_config(128, 128, "sla1", torch.bfloat16, True, 90, True, dict(USE_TMA=True, Q_TMA=True))
    assert not cfg["USE_TMA"] and not cfg["Q_TMA"]
    cfg = launch.main_config(128, 128, "main", torch.bfloat16, True, 0, True, dict(USE_TMA=True))
    assert cfg["USE_TMA"]   # benchmarks / interpreter tests may force it where the descriptors work


def test_prepass_config_fp32_inputs_get_two_stages():
    assert launch.prepass_config(torch.bfloat16)["num_stages"] == launch.PREPASS_DEFAULT["num_stages"]
    assert launch.prepass_config(torch.float32)["num_stages"] == min(2, launch.PREPASS_DEFAULT["num_stages"])
    assert launch.prepass_config(torch.float32, dict(num_stages=4))["num_stages"] == 4


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
    monkeypatch.setattr(launch, "_STAGES_THAT_FIT", {})
    k = _FakeKernel(fits=1)
    launch._launch("fake", k, (1,), (), dict(A=1), torch.device("cpu"), 4, 3)
    assert k.calls == [3, 2, 1]
    launch._launch("fake", k, (1,), (), dict(A=1), torch.device("cpu"), 4, 3)
    assert k.calls == [3, 2, 1, 1], "the stage count that fits is remembered for the same configuration"
    launch._launch("fake", k, (1,), (), dict(A=2), torch.device("cpu"), 4, 3)
    assert k.calls[-3:] == [3, 2, 1], "another configuration starts from its own stage count"


def test_launch_says_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(launch, "_STAGES_THAT_FIT", {})
    with pytest.raises(ValueError, match=r"needs 130000 bytes of shared memory per block and the GPU allows "
                                         r"101376 .*HEAD_D=128.*num_stages=1"):
        launch._launch("SLA kernel", _FakeKernel(fits=None), (1,), (), dict(HEAD_D=128), torch.device("cpu"), 8, 2)


def _has_ptxas():
    try:
        import triton
    except ImportError:
        return False
    return (pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.fixture(scope="module")
def compiled_targets():
    """Run tests/compile_targets.py once per architecture, all in parallel, outside the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {a: subprocess.Popen([sys.executable, str(HERE / "compile_targets.py"), "--json", "--arch", str(a)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for a in ARCHS}
    rows = {}
    for a, p in procs.items():
        out, err = p.communicate(timeout=1800)
        assert p.returncode == 0, f"compile_targets.py --arch {a} failed:\n{err[-3000:]}"
        rows[a] = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    return rows


@pytest.mark.skipif(not _has_ptxas(), reason="Triton without its NVIDIA backend (ptxas)")
@pytest.mark.parametrize("arch", ARCHS)
def test_every_launcher_config_compiles_and_fits(compiled_targets, arch):
    rows = compiled_targets[arch]
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"_sla_fwd_kernel", "_prepass_kernel", "_topk_kernel"}
    assert len(rows) == len(MAIN_CASES) + 8 + 2     # + pre-pass: D 64/128 x 4 dtypes; top-k: 2 widths
    failed = [(r["case"], r["error"]) for r in rows if not r["ok"]]
    assert not failed, f"sm_{arch}: does not compile: {failed}"
    over = {(arch, r["case"]) for r in rows if not r["fits"]}
    assert over == {x for x in EXPECTED_OVER if x[0] == arch}, f"sm_{arch}: over the shared-memory limit: {over}"
    paths = {r["case"]: r["path"] for r in rows if r["kernel"] == "_sla_fwd_kernel"}
    assert paths["d128 bq128 main bf16 proj"] == ("tma" if arch >= 90 else "pairs")
    # the fast 16-bit paths run with the stages they were tuned for, no fallback needed
    fast = [r for r in rows if r["case"] in ("d128 bq128 main bf16 proj", "d128 bf16 in bf16")]
    assert all(r["stages"] == r["opts"]["num_stages"] for r in fast), fast
