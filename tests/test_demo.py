"""demo.py runs without downloads or ComfyUI and reports what SLA did."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_and_reports():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "demo.py"), "--frames", "1", "--height", "8",
                           "--width", "40", "--keep", "0.25", "1.0", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "L=320" in out and "backend: torch" in out
    assert "3 query blocks x 5 key blocks" in out
    rows = {float(m.group(1)): (int(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\s*([\d.]+)\s+(\d+)/5\s+[\d.]+%\s+\|\s+([\d.]+)", out, re.M)}
    assert rows[0.25][0] == 1 and rows[1.0][0] == 5          # floor(0.25 * 5) = 1 block, all 5 blocks
    assert rows[1.0][1] < 1e-4                               # every block kept, no proj_l: dense attention
    assert rows[0.25][1] > 1e-3                              # a real sparsification
