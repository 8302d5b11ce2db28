"""Load the example workflows in the real ComfyUI frontend (headless Chromium) and compare what it makes of them.

    python3 tests/integration/serve_comfy.py /path/to/ComfyUI /tmp/base --port 8199 &   # needs the frontend pip
    python3 tests/integration/frontend_check.py --url http://127.0.0.1:8199 --shots /tmp/shots

For each ``workflows/*.json`` it calls the page's ``app.loadGraphData``, then reads back every node's widget values
and the frontend's own ``app.graphToPrompt()`` output, and checks: no node type is unknown to the frontend, every
widget value is what the file says (no shifted slots), and the API prompt equals the UI->API conversion that
``comfy_runner.py`` validates with ComfyUI's ``validate_prompt``. Screenshots go to ``--shots``. Needs Chromium
(``apt-get install chromium``) and aiohttp. Manual tool, not part of the pytest suite.

With ``--missing-models DIR`` (a server whose models/ folders lack the workflows' files, e.g. a fresh
``serve_comfy.py`` base directory) it also checks the frontend's missing-models dialog that loading opens: every
file in the nodes' ``properties.models`` must be listed, and it saves the dialog as ``DIR/<workflow>.png``; entries
the frontend refuses to download (it takes only .safetensors/.sft names from huggingface.co, civitai.com, localhost)
are printed with the frontend's reason.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


class CDP:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expr, timeout=60):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True,
                            timeout=timeout * 1000)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {json.dumps(r['exceptionDetails'])[:2000]}")
        return r["result"].get("value")


# The frontend's missing-models dialog: its "folder / file" lines and, under an entry, the reason when the frontend
# will not download it.
JS_MISSING_MODELS = """
(() => {
  const dialog = Array.from(document.querySelectorAll('.p-dialog')).find(d => d.innerText.includes('Missing Models'));
  if (!dialog) return JSON.stringify(null);
  const lines = dialog.innerText.split('\\n').map(l => l.trim()).filter(l => l);
  const entries = [];
  for (const line of lines) {
    if (/^[a-z_]+ \\/ .+/.test(line)) entries.push({label: line, refused: null});
    else if (entries.length && /allowed|Invalid directory/.test(line)) entries[entries.length - 1].refused = line;
  }
  return JSON.stringify(entries);
})()
"""

JS_CLOSE_DIALOGS = """
(() => {
  const buttons = Array.from(document.querySelectorAll('.p-dialog .p-dialog-close-button, .p-dialog button[aria-label="Close"]'));
  buttons.forEach(b => b.click());
  return buttons.length;
})()
"""

JS_LOAD = """
(async () => {
  const wf = %s;
  await window.app.loadGraphData(wf);
  await new Promise(r => setTimeout(r, 500));
  const g = window.app.graph;
  const nodes = g._nodes || g.nodes;
  const LG = window.LiteGraph || (window.comfyAPI && window.comfyAPI.litegraph && window.comfyAPI.litegraph.LiteGraph);
  const known = LG ? LG.registered_node_types : {};
  const missing = nodes.filter(n => !(n.type in known)).map(n => n.type);
  const widgets = nodes.map(n => ({id: n.id, type: n.type,
                                   values: (n.widgets || []).filter(w => w.serialize !== false || true)
                                           .map(w => w.value)}));
  const serialized = nodes.map(n => ({id: n.id, type: n.type, values: n.widgets_values || (n.serialize ? n.serialize().widgets_values : null)}));
  const p = await window.app.graphToPrompt();
  return JSON.stringify({missing, widgets, serialized, output: p.output, count: nodes.length});
})()
"""


def object_info_schemas(url):
    """Runner-style schemas from the server's /object_info (what the frontend itself builds widgets from)."""
    import urllib.request
    with urllib.request.urlopen(f"{url}/object_info") as r:
        info = json.load(r)
    schemas = {}
    for name, d in info.items():
        inputs = []
        for section in ("required", "optional"):
            for iname in (d.get("input_order", {}).get(section) or list((d["input"].get(section) or {}).keys())):
                entry = d["input"][section][iname]
                typ = entry[0]
                opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                combo = isinstance(typ, list) or typ == "COMBO"
                widget = (combo or typ in ("INT", "FLOAT", "STRING", "BOOLEAN")) and not opts.get("forceInput")
                inputs.append({"name": iname, "widget": bool(widget),
                               "control_after_generate": bool(opts.get("control_after_generate")),
                               "image_upload": bool(opts.get("image_upload"))})
        schemas[name] = {"inputs": inputs, "outputs": d.get("output", [])}
    return schemas


async def missing_models_dialog(cdp, wf, name, folder):
    """Problems of the missing-models dialog that loading ``wf`` opened; saves it as ``folder/<name>.png``."""
    want = {f"{m['directory']} / {m['name']}" for n in wf["nodes"] for m in n.get("properties", {}).get("models", [])}
    entries = None
    for _ in range(20):  # the dialog opens after the graph is configured (the folder listing is awaited first)
        entries = json.loads(await cdp.eval(JS_MISSING_MODELS))
        if entries:
            break
        await asyncio.sleep(0.25)
    if not entries:
        return [f"no missing-models dialog (expected {sorted(want)})"]
    os.makedirs(folder, exist_ok=True)
    shot = await cdp.call("Page.captureScreenshot", format="png")
    with open(os.path.join(folder, name.replace(".json", ".png")), "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    listed = {e["label"] for e in entries}
    for e in entries:
        print(f"    download offered: {e['label']}" + (f" -- refused by the frontend: {e['refused']}"
                                                       if e["refused"] else ""))
    return [f"missing-models dialog lacks {label}" for label in sorted(want - listed)]


async def check(url, shots, chromium, files, thumbs=None, models_dir=None):
    import comfy_runner
    schemas = object_info_schemas(url)
    profile = tempfile.mkdtemp(prefix="chromium-")
    port = 9333
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                             f"--remote-debugging-port={port}", "--window-size=1800,1100", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = []
    try:
        async with aiohttp.ClientSession() as session:
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
                while time.time() - t0 < 90:
                    try:
                        if await cdp.eval("!!(window.app && window.app.graph && window.app.canvas)"):
                            break
                    except RuntimeError:
                        pass
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError("the ComfyUI frontend did not start")
                await asyncio.sleep(2)
                for _ in range(2):  # close the templates browser a first start opens over the canvas
                    for kind in ("keyDown", "keyUp"):
                        await cdp.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                                       windowsVirtualKeyCode=27)
                    await asyncio.sleep(0.5)
                await cdp.eval(JS_CLOSE_DIALOGS)
                await asyncio.sleep(0.5)
                for path in files:
                    name = os.path.basename(path)
                    with open(path) as f:
                        wf = json.load(f)
                    res = json.loads(await cdp.eval(JS_LOAD % json.dumps(wf)))
                    problems = []
                    if models_dir:
                        problems += await missing_models_dialog(cdp, wf, name, models_dir)
                    await cdp.eval(JS_CLOSE_DIALOGS)  # the canvas screenshots show the graph, not a dialog
                    if res["missing"]:
                        problems.append(f"unknown node types {res['missing']}")
                    if res["count"] != len(wf["nodes"]):
                        problems.append(f"{res['count']} nodes loaded, file has {len(wf['nodes'])}")
                    by_id = {n["id"]: n for n in wf["nodes"]}
                    for n in res["widgets"]:
                        want = by_id[n["id"]]["widgets_values"]
                        if n["values"] != want:
                            problems.append(f"node {n['id']} ({n['type']}) widgets {n['values']} != file {want}")
                    expected = comfy_runner.ui_to_api(wf, schemas)
                    got = {k: {"class_type": v.get("class_type"), "inputs": v.get("inputs")}
                           for k, v in res["output"].items()}
                    if got != expected:
                        for k in sorted(set(got) | set(expected)):
                            if got.get(k) != expected.get(k):
                                problems.append(f"API node {k}: frontend {got.get(k)} != ours {expected.get(k)}")
                    if shots:
                        os.makedirs(shots, exist_ok=True)
                        await cdp.eval("(() => { const c = window.app.canvas; c.ds.scale = 0.65; "
                                       "c.ds.offset = [558, 235]; c.setDirty(true, true); return 1; })()")
                        await asyncio.sleep(0.7)
                        shot = await cdp.call("Page.captureScreenshot", format="png")
                        png = os.path.join(shots, name.replace(".json", ".png"))
                        with open(png, "wb") as f:
                            f.write(base64.b64decode(shot["data"]))
                        if thumbs:  # templates-browser thumbnail: <workflow>.jpg next to the .json
                            from PIL import Image
                            os.makedirs(thumbs, exist_ok=True)
                            img = Image.open(png).convert("RGB").crop((70, 95, 1470, 915))
                            img.thumbnail((720, 720))
                            img.save(os.path.join(thumbs, name.replace(".json", ".jpg")), quality=82)
                    print(f"{name}: {'OK' if not problems else 'FAIL'} ({res['count']} nodes)")
                    for p in problems:
                        print("   ", p)
                    if problems:
                        failures.append(name)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--shots", default=None, help="folder for screenshots")
    ap.add_argument("--thumbs", default=None, help="folder for templates-browser thumbnails (<name>.jpg)")
    ap.add_argument("--missing-models", default=None,
                    help="folder for screenshots of the missing-models dialog (server without the models)")
    ap.add_argument("--files", nargs="*", default=None, help="workflow files (default: workflows/*.json)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(REPO, "workflows", "*.json")))
    failures = asyncio.run(check(args.url.rstrip("/"), args.shots or args.thumbs, args.chromium, files,
                                 args.thumbs, args.missing_models))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
