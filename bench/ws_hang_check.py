"""Does the experimental WS_HOPPER path finish at tiny shapes? Each case (B, L, H, keep, WS on/off, ws_stages) in
its own process with a 75 s timeout (a hung kernel cannot be interrupted otherwise).

    python3 bench/ws_hang_check.py        (on the GPU machine, from the commit that still has WS_HOPPER)

H100 80GB HBM3, torch 2.11.0+cu130, Triton 3.6.0, 2026-11-27 (bench/results/h100_2026-11-27_ws_hang_check.jsonl):
the default path finishes (22 s with compilation); WS_HOPPER hangs at every shape, down to B=1, L=256, H=1.
"""
import json, os, subprocess, sys, time
CASE = r'''
import sys, torch, time
import importlib.util
spec = importlib.util.spec_from_file_location("comfyui_sla", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]])
m = importlib.util.module_from_spec(spec); sys.modules["comfyui_sla"] = m; spec.loader.exec_module(m)
from comfyui_sla.kernels import launch
b, L, h, keep, ws, stages = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "1", int(sys.argv[7])
g = torch.Generator(device="cuda").manual_seed(1)
q, k, v = (torch.randn(b, L, h, 128, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
launch.CONFIG_OVERRIDE = dict(WS_HOPPER=ws, ws_stages=stages)
t = time.time(); out = launch.sla_forward_impl(q, k, v, keep); torch.cuda.synchronize()
print("OK", time.time() - t, torch.isfinite(out).all().item(), flush=True)
'''
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
for args in [("1", "256", "1", "0.5", "0", "2"), ("1", "256", "1", "0.5", "1", "2"), ("1", "1024", "1", "0.25", "1", "2"),
             ("1", "4096", "4", "0.25", "1", "3")]:
    t = time.time()
    try:
        r = subprocess.run([sys.executable, "-c", CASE, root, *args], capture_output=True, text=True, timeout=75,
                           cwd=here)
        res = (r.stdout + r.stderr)[-400:]
    except subprocess.TimeoutExpired:
        res = "TIMEOUT (75 s)"
    print(json.dumps(dict(args=args, wall=round(time.time() - t, 1), result=res)), flush=True)
