"""Screenshot of a workflow in the real ComfyUI frontend after a run, with the SLA run reports shown.

    python3 tests/integration/report_screenshot.py --comfy .comfy/comfy-0.33.0 \
        --workflow "workflows/TurboWan2.1 T2V keep comparison.json" --out docs/keep_comparison_report.png
    python3 tests/integration/report_screenshot.py --comfy .comfy/comfy-0.33.0 --app \
        --workflow "workflows/TurboWan2.1 T2V 1.3B 480p.app.json" --out docs/screenshots/app-mode-after-a-run.png

Starts ComfyUI (``serve_comfy.py``) on the CPU with the tiny random Wan of the integration tests, opens the workflow
in headless Chromium as the templates browser does and runs it, made runnable without text encoder / VAE weights
(the SLA loader reads the tiny checkpoint, CLIPTextEncode -> SLATestConditioning, VAEDecode -> SLATestDecode, a
240x128x9 latent, min_tokens 0; same node ids, so the reports land on the workflow's own nodes), waits for the run
to finish and saves a screenshot. The graph view (default) queues that prompt directly and shows the reports on the
nodes; ``--app`` clicks the App's own Run button (the frontend's prompt is swapped for the runnable one on its way
to the server) and shows the App with its results: the video and the SLA Run Report. Needs Chromium, aiohttp,
Pillow and the frontend package. Manual tool.
"""
from __future__ import annotations

import argparse
import asyncio
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

import comfy_env  # noqa: E402
import comfy_runner  # noqa: E402
from frontend_check import (JS_PINIA, Browser, close_dialogs, open_frontend, post_settings,  # noqa: E402
                            screenshot)

TEST_NODES_INIT = """import sys
sys.path[:0] = [{here!r}, {tests!r}]
from comfy_runner import SLATestConditioning, SLATestDecode
NODE_CLASS_MAPPINGS = {{"SLATestConditioning": SLATestConditioning, "SLATestDecode": SLATestDecode}}
"""

# The frontend's own prompt made runnable with the tiny model (comfy_runner.headless_workflow_prompt's rules).
JS_HEADLESS = """
window.__slaHeadless = (output, t) => {
  const p = JSON.parse(JSON.stringify(output));
  for (const [id, node] of Object.entries(p)) {
    const c = node.class_type, inputs = node.inputs;
    if (c === 'SLADiffusionModelLoader') inputs.ckpt_name = t.ckpt;
    else if (c === 'CLIPTextEncode')
      p[id] = {class_type: 'SLATestConditioning', inputs: {seed: Number(id), tokens: 12}};
    else if (c === 'VAEDecode') p[id] = {class_type: 'SLATestDecode', inputs: {samples: inputs.samples}};
    else if (c === 'CLIPLoader' || c === 'VAELoader') delete p[id];
    else if (c === 'EmptyHunyuanLatentVideo')
      Object.assign(inputs, {width: t.width, height: t.height, length: t.length});
    else if (c === 'ApplySLA') inputs.min_tokens = 0;
  }
  return p;
};
"""

JS_OPEN = """
(async () => {
  const [name, t] = %s;
  const r = await fetch(`/api/workflow_templates/${encodeURIComponent(t.pack)}/${encodeURIComponent(name)}.json`);
  await window.app.loadGraphData(await r.json(), true, true, name, {openSource: 'template'});
  await new Promise(res => setTimeout(res, 1500));
  const api = window.app.api;
  window.__slaDone = new Promise(resolve => {
    api.addEventListener('execution_success', () => resolve('success'));
    api.addEventListener('execution_error', e => resolve('error: ' + JSON.stringify(e.detail).slice(0, 2000)));
  });
  const queue = api.queuePrompt.bind(api);   // every prompt the frontend queues goes out runnable
  api.queuePrompt = (n, data, opts) => queue(n, {...data, output: window.__slaHeadless(data.output, t)}, opts);
  return 1;
})()
"""

JS_RUN_GRAPH = """
(async () => {
  await window.app.queuePrompt(0);
  return await window.__slaDone;
})()
"""

JS_RUN_APP = """
(async () => {
  const run = Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Run' &&
                                                                         b.getBoundingClientRect().width > 100);
  if (!run) return 'no Run button in the App';
  run.click();
  return await window.__slaDone;
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


async def shoot(url, chromium, workflow, out, app, scale, offset):
    tiny = {"ckpt": comfy_runner.CKPT_PROJL, "width": comfy_runner.WIDTH, "height": comfy_runner.HEIGHT,
            "length": comfy_runner.LENGTH, "pack": comfy_env.PACK_DIR_NAME}
    name = os.path.basename(workflow)[:-len(".json")]
    async with Browser(chromium, port=9334, size=(1600, 950)) as cdp:
        await open_frontend(cdp, url)
        await cdp.eval(JS_HEADLESS + "1")
        await cdp.eval(JS_OPEN % json.dumps([name, tiny]))
        view = await cdp.eval(f"{JS_PINIA}._s.get('appMode').viewMode")
        if app and view != "app":
            return f"the workflow opened in {view!r} view, not as an App"
        status = await cdp.eval(JS_RUN_APP if app else JS_RUN_GRAPH, timeout=600)
        print("run:", status)
        await asyncio.sleep(3)   # results and reports reach the page after the run's last message
        await close_dialogs(cdp)
        if not app:
            await cdp.eval("(() => { const c = window.app.canvas; c.ds.scale = %s; c.ds.offset = %s; "
                           "c.setDirty(true, true); return 1; })()" % (scale, json.dumps(offset)))
            await asyncio.sleep(1.5)
        await screenshot(cdp, out, colors=200)
        if app:   # the same App with its second result selected: the SLA Run Report's text
            items = await cdp.eval("document.querySelectorAll('[data-testid=linear-history-item]').length")
            await cdp.eval("(() => { const items = document.querySelectorAll('[data-testid=linear-history-item]'); "
                           "items[items.length - 1].click(); return items.length; })()")
            await asyncio.sleep(1.5)
            await screenshot(cdp, out[:-len(".png")] + "-report.png", colors=200)
            print(f"App results: {items}")
        return status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--app", action="store_true", help="run it from its App view and shoot the App")
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
        post_settings(url)
        status = asyncio.run(shoot(url, args.chromium, os.path.abspath(args.workflow), os.path.abspath(args.out),
                                   args.app, args.scale, list(args.offset)))
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)
    print(status)
    sys.exit(0 if status == "success" else 1)


if __name__ == "__main__":
    main()
