"""demo.py runs without downloads or ComfyUI and reports what SLA did."""
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "demo.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_runs_and_reports():
    proc = run_demo("--frames", "1", "--height", "8", "--width", "40", "--keep", "0.25", "1.0", "--device", "cpu",
                    "--repeats", "2", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "L=320" in out and "backend: torch" in out
    assert "3 query blocks x 5 key blocks" in out
    rows = {float(m.group(1)): (int(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\s*([\d.]+)\s+(\d+)/5\s+[\d.]+%\s+\|\s+([\d.]+)", out, re.M)}
    assert rows[0.25][0] == 1 and rows[1.0][0] == 5          # floor(0.25 * 5) = 1 block, all 5 blocks
    assert rows[1.0][1] < 1e-4                               # every block kept, no proj_l: dense attention
    assert rows[0.25][1] > 1e-3                              # a real sparsification
    assert "median of 2 runs after 1 warm-up run(s)" in out
    assert "CPU timings are not meaningful" in out and "NOT a speed measurement" in out


@pytest.mark.parametrize("args,message", [
    (["--keep", "0"], "keep_ratio must be in (0, 1], got '0'"),
    (["--keep", "1.5"], "keep_ratio must be in (0, 1], got '1.5'"),
    (["--keep", "0.1", "abc"], "keep_ratio must be a number"),
    (["--block-k", "48"], "argument --block-k: invalid choice: 48"),
    (["--block-q", "96"], "argument --block-q: invalid choice: 96"),
    (["--feature-map", "tanh"], "argument --feature-map: invalid choice: 'tanh'"),
    (["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (["--warmup", "-1"], "argument --warmup: must be at least 0, got -1"),
    (["--heads", "two"], "argument --heads: 'two' is not an integer"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    proc = run_demo(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("demo.py: error: "), proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_gpu_exits_2_with_one_line():
    proc = run_demo("--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--device cuda: no CUDA GPU is visible" in proc.stderr and "--device cpu" in proc.stderr


def test_help_shows_defaults():
    proc = run_demo("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for shown in ("latent frames (an 81-frame video has 21) (default: 2)", "(default: [0.05, 0.1, 0.15, 0.3, 1.0])",
                  "--block-q {128,64}", "--block-k {64}", "--feature-map {softmax,elu,relu}",
                  "(default: 10 on CUDA, 3 on the CPU)", "(default: fp32 on the CPU, bf16 on CUDA)",
                  "untimed runs before timing each point (default: 1)", "(default: 0)"):
        assert shown in text, shown
