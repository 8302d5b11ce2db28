"""Screenshot of a workflow in the real ComfyUI frontend after a run, with the SLA run reports shown on the nodes.

    python3 tests/integration/report_screenshot.py --comfy .comfy/comfy-0.8.0 \
        --workflow workflows/TurboWan2.1_T2V_1.3B_SLA_keep_comparison.json --out docs/keep_comparison_report.png

Starts ComfyUI (``serve_comfy.py``) on the CPU with the tiny random Wan of the integration tests, loads the workflow
in headless Chromium (``app.loadGraphData``), queues it as ``comfy_runner.headless_workflow_prompt`` makes it
runnable without text encoder / VAE weights (same node ids, so the reports land on the workflow's own nodes), waits
for the run to finish and saves a screenshot. Needs Chromium, aiohttp and the frontend package. Manual tool.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import aiohttp  # noqa: E402

import comfy_runner  # noqa: E402
from frontend_check import CDP, object_info_schemas  # noqa: E402

TEST_NODES_INIT = """import sys
sys.path[:0] = [{here!r}, {tests!r}]
from comfy_runner import SLATestConditioning, SLATestDecode
NODE_CLASS_MAPPINGS = {{"SLATestConditioning": SLATestConditioning, "SLATestDecode": SLATestDecode}}
"""

JS_RUN = """
(async () => {
  const api = window.comfyAPI?.api?.api || window.app.api;
  const done = new Promise(resolve => {
    api.addEventListener("execution_success", () => resolve("success"));
    api.addEventListener("execution_error", e => resolve("error: " + JSON.stringify(e.detail).slice(0, 2000)));
  });
  const r = await api.fetchApi("/prompt", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({prompt: %s, client_id: api.clientId})});
  if (r.status !== 200) return "queue failed: " + (await r.text());
  return await done;
})()
"""


def prepare_base(base: str, workflow: str) -> None:
    models = os.path.join(base, "models")
    for sub in ("diffusion_models", "loras", "text_encoders", "vae"):
        os.makedirs(os.path.join(models, sub), exist_ok=True)
    comfy_runner.write_models(models)
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    comfy_runner.placeholder_files([workflow], base)   # the workflow's own file names, so its combos are valid
    nodes = os.path.join(base, "custom_nodes", "sla_test_nodes")
    os.makedirs(nodes, exist_ok=True)
    with open(os.path.join(nodes, "__init__.py"), "w") as f:
        f.write(TEST_NODES_INIT.format(here=HERE, tests=os.path.dirname(HERE)))


async def shoot(url, chromium, workflow, prompt, out, scale, offset):
    profile = tempfile.mkdtemp(prefix="chromium-")
    port = 9334
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                             f"--remote-debugging-port={port}", "--window-size=1900,1150", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            pages = []
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                        pages = [p for p in await r.json() if p["type"] == "page"]
                    if pages:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = CDP(ws)
                await cdp.call("Page.enable")
                await cdp.call("Page.navigate", url=url)
                t0 = time.time()
                while time.time() - t0 < 120:
                    try:
                        if await cdp.eval("!!(window.app && window.app.graph && window.app.canvas)"):
                            break
                    except RuntimeError:
                        pass
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)
                for _ in range(2):  # close the templates browser a first start opens
                    for kind in ("keyDown", "keyUp"):
                        await cdp.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                                       windowsVirtualKeyCode=27)
                    await asyncio.sleep(0.5)
                with open(workflow) as f:
                    await cdp.eval(f"window.app.loadGraphData({f.read()}).then(() => 1)")
                await asyncio.sleep(1)
                status = await cdp.eval(JS_RUN % json.dumps(prompt), timeout=600)
                print("run:", status)
                # the frontend opens the templates browser for a new user: close every dialog before the shot
                await cdp.eval("(() => { document.querySelectorAll('[role=dialog] button').forEach(b => { "
                               "if (/close/i.test(b.getAttribute('aria-label') || '') || b.querySelector('.pi-times')) "
                               "b.click(); }); return 1; })()")
                await asyncio.sleep(1)
                await cdp.eval("(() => { const c = window.app.canvas; c.ds.scale = %s; c.ds.offset = %s; "
                               "c.setDirty(true, true); return 1; })()" % (scale, json.dumps(offset)))
                await asyncio.sleep(1.5)
                shot = await cdp.call("Page.captureScreenshot", format="png")
                os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
                return status
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=8197)
    ap.add_argument("--scale", type=float, default=0.62)
    ap.add_argument("--offset", type=float, nargs=2, default=[117, 170])
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="sla-shot-")
    prepare_base(base, os.path.abspath(args.workflow))
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "serve_comfy.py"), os.path.abspath(args.comfy), base,
                               "--port", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/object_info/ApplySLA", timeout=2)
                break
            except Exception:
                time.sleep(0.5)
        # a returning user: no templates browser over the canvas on the first page load
        req = urllib.request.Request(f"{url}/settings/Comfy.TutorialCompleted", data=b"true", method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10)
        schemas = object_info_schemas(url)
        prompt = comfy_runner.headless_workflow_prompt(args.workflow, schemas)
        status = asyncio.run(shoot(url, args.chromium, os.path.abspath(args.workflow), prompt, args.out,
                                   args.scale, list(args.offset)))
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(0 if status == "success" else 1)


if __name__ == "__main__":
    main()
