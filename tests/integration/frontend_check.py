"""Load the example workflows in the real ComfyUI frontend (headless Chromium) and check what it draws.

    python3 tests/integration/serve_comfy.py /path/to/ComfyUI /tmp/base --port 8199 &   # needs the frontend pip
    python3 tests/integration/frontend_check.py --url http://127.0.0.1:8199

For each ``workflows/*.json``, opened as the templates browser opens it (the file from the server's
``/api/workflow_templates/<pack>/<name>.json`` into ``app.loadGraphData`` with the template's name), it reads the
live graph back and FAILS on:

* node types the frontend does not know, or a node count other than the file's; input files (the image-to-video
  start image) ComfyUI's input folder lacks;
* widget values the frontend rejected or shifted: every node's ``serialize().widgets_values`` must equal the
  file's, and the frontend's own ``app.graphToPrompt()`` must carry them (bypassed nodes left out);
* nodes drawn other than saved: a node's drawn size (``node.size`` after load) other than its saved size means the
  layout was made for boxes the frontend does not draw;
* overlapping boxes as the frontend draws them: each node's box including its title bar (``node.boundingRect``)
  against every other; a widget drawn past its node's bottom edge; a group whose title bar covers a node, a node
  partly inside a group, overlapping groups;
* App mode (a workflow with ``extra.linearMode``): not opened as an App, or App inputs/outputs that do not resolve
  to the declared widgets and nodes;
* console errors and warnings from the pack while loading (messages and failed requests naming the pack folder,
  a workflow, one of the pack's nodes, or the frontend's App-mode store).

It also checks the templates browser: the server lists exactly the ``workflows/*.json`` files under the pack's
folder name, A -> Z lists them in the builder's order (``scripts/build_workflows.py`` WORKFLOWS: the MiniMax H3
workflow, then the main Wan workflow ahead of the other Wan ones), no card title is cut off, and every card shows its thumbnail. Screenshots (small PNGs) go to ``--shots`` (default ``docs/screenshots``):
``<workflow>.png`` (the whole graph), ``<workflow> (App).png`` for App workflows and ``templates-browser.png``.

``--placeholders BASE`` first writes empty files named as the workflows' models into the server's base directory
(``BASE/models/<folder>/<file>``), so the graphs are drawn as for a user who has the files (no missing-model marks
in the screenshots). With ``--missing-models`` (a server whose models/ folders lack the files, e.g. a fresh
``serve_comfy.py`` base directory) it checks the frontend's missing-model list: every file of an active node's
``properties.models`` must be listed with its folder and address. Needs Chromium (``apt-get install chromium``),
aiohttp and Pillow. A manual tool, not part of the pytest suite; exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# A returning user: no templates browser and no onboarding tour over the canvas on the first page load.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.OnboardingCoachmarks.Seen": ["appMode", "firstRun"],
            # screenshots: no minimap over the canvas, node text drawn at every zoom (no level-of-detail boxes)
            "Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0}
PACK_NODES = ("SLADiffusionModelLoader", "ApplySLA", "SLAWeightsLoader", "SLAAttentionMap", "SLARunReport")


class CDP:
    """Chrome DevTools Protocol over one page's websocket: calls, and the events (console, log) kept in a list."""

    def __init__(self, ws):
        self.ws, self.next_id, self.pending, self.events = ws, 0, {}, []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                self.events.append(data)

    async def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        msg = await fut
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    async def eval(self, expr, timeout=60):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True,
                            timeout=timeout * 1000)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {json.dumps(r['exceptionDetails'])[:2000]}")
        return r["result"].get("value")

    async def json(self, expr, timeout=60):
        return json.loads(await self.eval(expr, timeout))

    def console(self, since=0):
        """(level, text) of the console messages, uncaught exceptions and failed requests since event ``since``."""
        out = []
        for e in self.events[since:]:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.append(("error" if p["type"] != "warning" else "warning", text))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(("error", d.get("exception", {}).get("description") or d.get("text", "")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                entry = p["entry"]
                out.append((entry["level"], f"{entry.get('text', '')} {entry.get('url', '')}".strip()))
        return out


class Browser:
    """Headless Chromium with a fresh profile, one page, a CDP session."""

    def __init__(self, chromium, port=9333, size=(1800, 1100)):
        self.chromium, self.port, self.size = chromium, port, size

    async def __aenter__(self):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen([self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.port}",
                                      f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session = aiohttp.ClientSession()
        pages = []
        for _ in range(150):
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                    pages = [p for p in await r.json() if p["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self.cdp = CDP(self.ws)
        for domain in ("Page", "Runtime", "Log"):
            await self.cdp.call(f"{domain}.enable")
        return self.cdp

    async def __aexit__(self, *exc):
        self.cdp.reader.cancel()
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def post_settings(url, settings=SETTINGS):
    req = urllib.request.Request(f"{url}/api/settings", data=json.dumps(settings).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10)


async def open_frontend(cdp, url):
    """Navigate to ComfyUI and wait until its app is up (dialogs a first start may open are closed)."""
    await cdp.call("Page.navigate", url=url)
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            if await cdp.eval("!!(window.app && window.app.graph && window.app.canvas && "
                              "document.querySelector('#vue-app')?.__vue_app__)"):
                break
        except RuntimeError:
            pass
        await asyncio.sleep(0.5)
    else:
        raise RuntimeError("the ComfyUI frontend did not start")
    await asyncio.sleep(2)
    await close_dialogs(cdp)


async def close_dialogs(cdp):
    for _ in range(2):
        for kind in ("keyDown", "keyUp"):
            await cdp.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
        await asyncio.sleep(0.3)
    await cdp.eval(JS_CLOSE_DIALOGS)
    await asyncio.sleep(0.3)


JS_CLOSE_DIALOGS = """
(() => {
  const buttons = Array.from(document.querySelectorAll(
    '.p-dialog .p-dialog-close-button, [role=dialog] button[aria-label="Close"], ' +
    '[role=dialog] button[aria-label="close"]'));
  buttons.forEach(b => b.click());
  return buttons.length;
})()
"""

JS_PINIA = "document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia"

# Open a template as the templates browser does: its JSON from the server's template route, loaded under its name.
JS_OPEN_TEMPLATE = """
(async () => {
  const [module, name] = %s;
  const r = await fetch(`/api/workflow_templates/${encodeURIComponent(module)}/${encodeURIComponent(name)}.json`);
  if (!r.ok) return JSON.stringify({error: `template route: HTTP ${r.status}`});
  await window.app.loadGraphData(await r.json(), true, true, name, {openSource: 'template'});
  await new Promise(res => setTimeout(res, 1500));
  return JSON.stringify({error: null});
})()
"""

# The live graph after load: every node's drawn box, widgets and serialized values, the groups, the prompt, App mode.
JS_READ = """
(async () => {
  const LG = window.LiteGraph, g = window.app.graph, pinia = %s;
  const known = LG.registered_node_types;
  const nodes = g.nodes.map(n => {
    const b = n.getBounding ? n.getBounding() : n.boundingRect;
    const widgets = (n.widgets || []).filter(w => !w.hidden && !(w.options && w.options.hidden)).map(w => {
      let h = w.computedHeight;
      if (h === undefined && w.computeSize) h = w.computeSize(n.size[0])[1];
      if (h === undefined) h = LG.NODE_WIDGET_HEIGHT;
      return {name: w.name, type: w.type, value: w.value, y: w.y, h: h, label: w.label || null};
    });
    return {id: Number(n.id), type: n.type, title: n.title, mode: n.mode, known: n.type in known,
            pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]], bounding: Array.from(b),
            collapsed: !!(n.flags && n.flags.collapsed), widgets, values: n.serialize().widgets_values || []};
  });
  const groups = g.groups.map(gr => ({title: gr.title, bounding: Array.from(gr._bounding),
                                       titleHeight: gr.titleHeight}));
  const p = await window.app.graphToPrompt();
  const am = pinia._s.get('appMode');
  const media = (pinia._s.get('missingMedia').missingMediaCandidates || []).map(c => ({node: Number(c.nodeId),
                                                                                      name: c.name}));
  return JSON.stringify({nodes, groups, titleHeight: LG.NODE_TITLE_HEIGHT, prompt: p.output, media,
                         view: am.viewMode, appInputs: am.selectedInputs, appOutputs: am.selectedOutputs});
})()
"""

# The widgets App mode shows for the selected inputs (its right-hand panel) and the output nodes it shows results of.
JS_APP_PANEL = """
(() => Array.from(document.querySelectorAll('[data-testid="app-mode-widget-item"]')).map(e => ({
   key: e.getAttribute('data-widget-key'), label: (e.querySelector('span') || e).innerText.trim()})))()
"""

JS_VIEW_ERRORS = """
(() => { const b = Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'View details');
         if (b) b.click(); return !!b; })()
"""

JS_MISSING_MODELS = """
(() => JSON.stringify((%s._s.get('missingModel').missingModelCandidates || []).map(c => ({
   node: Number(c.nodeId), name: c.name, directory: c.directory || null, url: c.url || null}))))()
"""

# Fit the whole graph (nodes and groups) into the canvas, in graph view; returns the canvas's page rectangle.
JS_FIT = """
(async () => {
  const c = window.app.canvas, g = window.app.graph, TH = LiteGraph.NODE_TITLE_HEIGHT;
  let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (const n of g.nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - TH);
                             x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
  for (const gr of g.groups) { const b = gr._bounding; x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]);
                               x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]); }
  // the canvas right of the side bar and under the top bar and its floating buttons
  const r = c.canvas.getBoundingClientRect(), view = [r.x + 70, r.y + 100, r.width - 90, r.height - 120];
  const s = Math.min(view[2] / (x1 - x0), view[3] / (y1 - y0), 1.2);
  c.ds.scale = s;
  c.ds.offset = [(view[0] + (view[2] - s * (x1 - x0)) / 2) / s - x0,
                 (view[1] + (view[3] - s * (y1 - y0)) / 2) / s - y0];
  c.setDirty(true, true);
  await new Promise(res => setTimeout(res, 800));
  return JSON.stringify([view[0] - 10, view[1] - 10, view[2] + 20, view[3] + 20]);
})()
"""


# ---------------------------------------------------------------------------------------------- geometry

def _overlap(a, b, slack=0.5):
    """Boxes (x, y, w, h) overlap by more than ``slack`` px in both directions."""
    return (min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]) > slack
            and min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]) > slack)


def _inside(a, b):
    """Box ``a`` lies wholly inside box ``b``."""
    return a[0] >= b[0] and a[1] >= b[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def layout_problems(live) -> list:
    """Overlaps as the frontend draws the graph: node boxes (title bar included), widgets past their node, group
    title bars over nodes, nodes partly in a group, overlapping groups."""
    problems = []
    nodes = [n for n in live["nodes"] if not n["collapsed"]]

    def name(n):
        return f"node {n['id']} ({n['title'] or n['type']})"
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if _overlap(a["bounding"], b["bounding"]):
                problems.append(f"{name(a)} box {fmt(a['bounding'])} overlaps {name(b)} box {fmt(b['bounding'])}")
        for wd in a["widgets"]:
            if wd["y"] is not None and wd["y"] + (wd["h"] or 0) > a["size"][1] + 1:
                problems.append(f"{name(a)}: widget {wd['name']} drawn at y {wd['y']:.0f}-{wd['y'] + wd['h']:.0f}, "
                                f"below the node's bottom edge {a['size'][1]:.0f}")
    groups = live["groups"]
    for gi, g in enumerate(groups):
        gb, th = g["bounding"], g["titleHeight"] or live["titleHeight"]
        title_bar = [gb[0], gb[1], gb[2], th]
        for n in nodes:
            if _overlap(title_bar, n["bounding"]):
                problems.append(f"group '{g['title']}': its title bar covers {name(n)}")
            if _overlap(gb, n["bounding"]) and not _inside(n["bounding"], gb):
                problems.append(f"{name(n)} lies partly inside group '{g['title']}'")
        for h in groups[gi + 1:]:
            if _overlap(gb, h["bounding"]) and not (_inside(gb, h["bounding"]) or _inside(h["bounding"], gb)):
                problems.append(f"groups '{g['title']}' and '{h['title']}' overlap")
    return problems


def fmt(box):
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


# ---------------------------------------------------------------------------------------------- checks

def node_problems(wf, live) -> list:
    problems = []
    by_id = {n["id"]: n for n in wf["nodes"]}
    unknown = sorted({n["type"] for n in live["nodes"] if not n["known"]})
    if unknown:
        problems.append(f"node types unknown to the frontend: {unknown}")
    if len(live["nodes"]) != len(wf["nodes"]):
        problems.append(f"{len(live['nodes'])} nodes loaded, the file has {len(wf['nodes'])}")
    for n in live["nodes"]:
        saved = by_id.get(n["id"])
        if saved is None:
            problems.append(f"node {n['id']} ({n['type']}) is not in the file")
            continue
        if n["values"] != saved["widgets_values"]:
            problems.append(f"node {n['id']} ({n['type']}): the frontend holds widgets_values {n['values']}, "
                            f"the file {saved['widgets_values']} (rejected or shifted)")
        if [round(v) for v in n["size"]] != [round(v) for v in saved["size"]]:
            problems.append(f"node {n['id']} ({n['type']}) drawn {n['size'][0]:.0f} x {n['size'][1]:.0f}, saved "
                            f"{saved['size'][0]} x {saved['size'][1]}")
        if [round(v) for v in n["pos"]] != [round(v) for v in saved["pos"]]:
            problems.append(f"node {n['id']} ({n['type']}) drawn at {n['pos']}, saved at {saved['pos']}")
        labels = {i["name"]: i["label"] for i in saved["inputs"] if i.get("widget") and i.get("label")}
        for wd in n["widgets"]:
            if wd["name"] in labels and wd["label"] != labels[wd["name"]]:
                problems.append(f"node {n['id']} ({n['type']}): widget {wd['name']} labelled {wd['label']!r}, "
                                f"the file says {labels[wd['name']]!r}")
    # Input files (Load Image) the server does not have: the frontend's missing-media list.
    problems += [f"node {m['node']}: input file {m['name']!r} is not in ComfyUI's input folder" for m in live["media"]]
    # The frontend's own prompt: every active node, with the file's widget values under the frontend's widget names.
    prompt = live["prompt"]
    for n in live["nodes"]:
        saved = by_id.get(n["id"])
        if saved is None or n["type"] in ("Note", "MarkdownNote"):
            continue
        entry = prompt.get(str(n["id"]))
        if saved["mode"] in (2, 4):
            if entry is not None:
                problems.append(f"node {n['id']} ({n['type']}) is bypassed/muted but in the prompt")
            continue
        if entry is None:
            problems.append(f"node {n['id']} ({n['type']}) is missing from the frontend's prompt")
            continue
        for wd in n["widgets"]:
            if wd["name"] in entry["inputs"] and entry["inputs"][wd["name"]] != wd["value"]:
                problems.append(f"prompt node {n['id']} input {wd['name']} = {entry['inputs'][wd['name']]!r}, "
                                f"widget {wd['value']!r}")
    return problems


def app_problems(wf, live) -> list:
    declared = wf.get("extra", {}).get("linearData")
    if not wf.get("extra", {}).get("linearMode"):
        return [] if live["view"] != "app" else ["opened as an App but the file does not ask for it"]
    problems = [] if live["view"] == "app" else [f"not opened as an App (view {live['view']!r})"]
    want_in = [(int(i[0]), i[1]) for i in declared["inputs"]]
    got_in = []
    for wid, wname, *_ in live["appInputs"]:
        parts = str(wid).split(":")
        got_in.append((int(parts[-2]) if len(parts) >= 3 else None, wname))
    if got_in != want_in:
        problems.append(f"App inputs {got_in}, the file declares {want_in}")
    nodes = {n["id"]: n for n in live["nodes"]}
    for nid, wname in want_in:
        if nid not in nodes or wname not in [w["name"] for w in nodes[nid]["widgets"]]:
            problems.append(f"App input {wname} of node {nid}: no such widget in the frontend")
    got_out = [int(o) for o in live["appOutputs"]]
    if got_out != [int(o) for o in declared["outputs"]]:
        problems.append(f"App outputs {got_out}, the file declares {declared['outputs']}")
    return problems


# Requests the frontend makes to other hosts (model sizes on Hugging Face, node info on the Comfy registry), which
# ComfyUI's Content-Security-Policy (connect-src 'self') blocks: not the pack's, whatever node or file they name.
EXTERNAL = ("violates the following Content Security Policy", "Refused to connect because it violates")


def pack_messages(messages, patterns) -> list:
    """Console messages (level, text) that come from the pack: they name one of ``patterns`` (and are not a blocked
    request to another host)."""
    low = [p.lower() for p in patterns]
    return [(lvl, text) for lvl, text in messages
            if any(p in text.lower() for p in low) and not any(e in text for e in EXTERNAL)]


def models_problems(wf, missing) -> list:
    """Every file of an active node's properties.models must be in the frontend's missing-model list, with its
    folder and address."""
    listed = {(m["node"], m["name"]): m for m in missing}
    problems = []
    for n in wf["nodes"]:
        if n.get("mode", 0) in (2, 4):
            continue
        for m in n.get("properties", {}).get("models", []):
            got = listed.get((n["id"], m["name"]))
            if got is None:
                problems.append(f"missing-models list lacks {m['directory']}/{m['name']} (node {n['id']})")
            elif (got["directory"], got["url"]) != (m["directory"], m["url"]):
                problems.append(f"missing-models entry {m['name']}: {got['directory']} {got['url']}, the file says "
                                f"{m['directory']} {m['url']}")
    return problems


# ---------------------------------------------------------------------------------------------- screenshots

async def screenshot(cdp, path, clip=None, colors=160):
    """A PNG of the page (or of ``clip`` = [x, y, w, h]), palette-reduced so it stays small."""
    from PIL import Image
    params = {"format": "png"}
    if clip:
        params["clip"] = {"x": clip[0], "y": clip[1], "width": clip[2], "height": clip[3], "scale": 1}
    shot = await cdp.call("Page.captureScreenshot", **params)
    img = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


async def set_view(cdp, mode):
    """Switch the active workflow to 'app' or 'graph' view."""
    view = await cdp.eval(f"{JS_PINIA}._s.get('appMode').viewMode")
    if view != mode:
        await cdp.eval("window.app.extensionManager.command.execute('Comfy.ToggleLinear').then(() => 1)")
        await asyncio.sleep(1.2)
    return await cdp.eval(f"{JS_PINIA}._s.get('appMode').viewMode")


# ---------------------------------------------------------------------------------------------- templates

JS_TEMPLATES_BROWSER = """
(async () => {
  const [module, sortBy] = %s;
  await window.app.extensionManager.setting.set('Comfy.Templates.SortBy', sortBy);
  await window.app.extensionManager.command.execute('Comfy.BrowseTemplates');
  await new Promise(r => setTimeout(r, 1500));
  const item = Array.from(document.querySelectorAll('[role=dialog] *')).find(
    e => e.children.length === 0 && e.textContent.trim() === module);
  if (!item) return JSON.stringify({error: `no '${module}' entry under Extensions`});
  item.click();
  await new Promise(r => setTimeout(r, 2500));
  const cards = Array.from(document.querySelectorAll('[role=dialog] h3'))
    .filter(h => h.className.includes('line-clamp'));
  return JSON.stringify({cards: cards.map(h => {
    const card = h.closest('[data-testid]') || h.parentElement.parentElement.parentElement;
    const img = Array.from(card.querySelectorAll('img')).find(i => i.getBoundingClientRect().width > 50);
    const r = img ? img.getBoundingClientRect() : null;
    return {title: h.textContent.trim(), cut: h.scrollWidth > h.clientWidth + 1,
            img: img ? {w: Math.round(r.width), h: Math.round(r.height), natural: [img.naturalWidth, img.naturalHeight]}
                     : null};
  })});
})()
"""


def compare_alphabetical(a: str, b: str) -> int:
    """The frontend's A -> Z order (compareAlphabetical): titles starting with a digit last, then natural order."""
    import re
    da, db = a[:1].isdigit(), b[:1].isdigit()
    if da != db:
        return 1 if da else -1

    def key(s):
        return [(0, int(t)) if t.isdigit() else (1, t.lower()) for t in re.findall(r"\d+|\D+", s)]
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


async def templates_check(cdp, url, files, expected_az, shots) -> list:
    problems = []
    with urllib.request.urlopen(f"{url}/api/workflow_templates") as r:
        listing = json.load(r)
    stems = sorted(os.path.basename(f)[:-len(".json")] for f in files)
    module = next((m for m, names in listing.items() if sorted(names) == stems), None)
    if module is None:
        return [f"/api/workflow_templates lists no pack folder with exactly {stems} (got {listing})"]
    print(f"templates: /api/workflow_templates['{module}'] = {listing[module]} (the server's order: the folder "
          f"listing; 'Default' in the browser)")
    import functools
    az = sorted(listing[module], key=functools.cmp_to_key(compare_alphabetical))
    print(f"templates: A -> Z order {az}")
    if az != [s for s in expected_az if s in az]:
        problems.append(f"A -> Z order {az}, expected the builder's order {expected_az}")
    res = await cdp.json(JS_TEMPLATES_BROWSER % json.dumps([module, "alphabetical"]))
    if res.get("error"):
        return problems + [f"templates browser: {res['error']}"]
    titles = [c["title"] for c in res["cards"]]
    print(f"templates browser (A -> Z): cards {titles}")
    if titles != az:
        problems.append(f"templates browser shows {titles}, expected {az}")
    from PIL import Image
    for c in res["cards"]:
        if c["cut"]:
            problems.append(f"card title {c['title']!r} is cut off")
        thumb = f"{url}/api/workflow_templates/{urllib.parse.quote(module)}/{urllib.parse.quote(c['title'])}.jpg"
        try:
            with urllib.request.urlopen(thumb) as r:
                size = list(Image.open(io.BytesIO(r.read())).size)
        except Exception as e:
            problems.append(f"card {c['title']!r}: no thumbnail at {thumb} ({e})")
            continue
        if not c["img"] or c["img"]["natural"] != size:
            problems.append(f"card {c['title']!r} does not show its {size[0]}x{size[1]} thumbnail (shows "
                            f"{c['img'] and c['img']['natural']})")
        else:
            print(f"    {c['title']}: thumbnail {size[0]}x{size[1]} shown at {c['img']['w']}x{c['img']['h']}")
    if shots:
        await screenshot(cdp, os.path.join(shots, "templates-browser.png"))
    await cdp.eval("window.app.extensionManager.setting.set('Comfy.Templates.SortBy', 'default').then(() => 1)")
    await close_dialogs(cdp)
    return problems


# ---------------------------------------------------------------------------------------------- main check

def write_placeholders(base, files):
    """Empty files named as the workflows' models (properties.models) under ``base``/models/<folder>/."""
    for path in files:
        with open(path) as f:
            wf = json.load(f)
        for n in wf["nodes"]:
            for m in n.get("properties", {}).get("models", []):
                target = os.path.join(base, "models", m["directory"], m["name"])
                if not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    open(target, "wb").close()


async def check(url, shots, chromium, files, models=False, templates=True, window=(2200, 1300)) -> list:
    post_settings(url)
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import build_workflows
    expected_az = [name[:-len(".json")] for name in build_workflows.WORKFLOWS]   # the builder lists them A -> Z
    with urllib.request.urlopen(f"{url}/api/workflow_templates") as r:
        listing = json.load(r)
    stems = {os.path.basename(f)[:-len(".json")] for f in files}
    module = next((m for m, names in listing.items() if stems <= set(names)), None)
    if module is None:
        raise SystemExit(f"the server lists no pack folder with {sorted(stems)}: {listing}")
    failures = []
    async with Browser(chromium, size=window) as cdp:
        await open_frontend(cdp, url)
        start = len(cdp.events)
        if templates:
            problems = await templates_check(cdp, url, files, expected_az, shots)
            ours = pack_messages(cdp.console(start), [module, *PACK_NODES, *stems])
            problems += [f"console {lvl}: {text[:300]}" for lvl, text in ours]
            print(f"templates browser: {'OK' if not problems else 'FAIL'}")
            for p in problems:
                print("   ", p)
            if problems:
                failures.append("templates browser")
        for path in files:
            name = os.path.basename(path)
            stem = name[:-len(".json")]
            with open(path) as f:
                wf = json.load(f)
            since = len(cdp.events)
            opened = await cdp.json(JS_OPEN_TEMPLATE % json.dumps([module, stem]))
            if opened["error"]:
                print(f"{name}: FAIL ({opened['error']})")
                failures.append(name)
                continue
            live = await cdp.json(JS_READ % JS_PINIA)
            problems = node_problems(wf, live) + layout_problems(live) + app_problems(wf, live)
            if models:
                missing = await cdp.json(JS_MISSING_MODELS % JS_PINIA)
                problems += models_problems(wf, missing)
                print(f"    missing models listed: {[m['directory'] + '/' + m['name'] for m in missing]}")
            if live["view"] == "app":
                panel = await cdp.eval(f"JSON.stringify({JS_APP_PANEL})")
                labels = [p["label"] for p in json.loads(panel)]
                print(f"    App panel: {labels}")
                if len(labels) != len(wf["extra"]["linearData"]["inputs"]):
                    problems.append(f"the App panel shows {len(labels)} inputs, the file declares "
                                    f"{len(wf['extra']['linearData']['inputs'])}")
                if shots:
                    await screenshot(cdp, os.path.join(shots, f"{stem} (App).png"))
            await close_dialogs(cdp)
            if shots:
                await set_view(cdp, "graph")
                rect = json.loads(await cdp.eval(JS_FIT))
                await screenshot(cdp, os.path.join(shots, f"{stem}.png"), clip=rect)
                if models and await cdp.eval(JS_VIEW_ERRORS):   # the errors panel with its Missing Models list
                    await asyncio.sleep(1.5)
                    await screenshot(cdp, os.path.join(shots, f"{stem} (missing models).png"))
                    await cdp.eval("window.app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false)"
                                   ".then(() => 1)")
                    await close_dialogs(cdp)
            patterns = [module, urllib.parse.quote(stem), stem, "appModeStore", "linearData", *PACK_NODES]
            messages = cdp.console(since)
            ours = pack_messages(messages, patterns)
            problems += [f"console {lvl}: {text[:300]}" for lvl, text in ours]
            others = [m for m in messages if m not in ours]
            n_groups, n_bypassed = len(live["groups"]), sum(1 for n in live["nodes"] if n["mode"] == 4)
            print(f"{name}: {'OK' if not problems else 'FAIL'} ({len(live['nodes'])} nodes, {n_groups} groups, "
                  f"{n_bypassed} bypassed, {len(live['prompt'])} in the prompt, view {live['view']}; checked: types, "
                  f"input files, widget values, prompt, drawn sizes, overlaps, groups"
                  f"{', App' if live['view'] == 'app' else ''}{', missing models' if models else ''}, console)")
            for p in problems:
                print("   ", p)
            for lvl, text in others:
                print(f"    (console {lvl}, not the pack's: {text[:200]})")
            if problems:
                failures.append(name)
        print(f"console during the whole check: {len(cdp.console(start))} errors/warnings, "
              f"{len(pack_messages(cdp.console(start), [module, *PACK_NODES]))} from the pack")
    return failures


def object_info_schemas(url):
    """Runner-style schemas from the server's /object_info (what the frontend itself builds widgets from)."""
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
                combo = isinstance(typ, list) or typ in ("COMBO", "COMFY_DYNAMICCOMBO_V3")
                widget = (combo or typ in ("INT", "FLOAT", "STRING", "BOOLEAN")) and not opts.get("forceInput")
                inputs.append({"name": iname, "widget": bool(widget),
                               "control_after_generate": bool(opts.get("control_after_generate")),
                               "image_upload": bool(opts.get("image_upload"))})
        schemas[name] = {"inputs": inputs, "outputs": d.get("output", [])}
    return schemas


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--shots", default=os.path.join(REPO, "docs", "screenshots"),
                    help="folder for screenshots ('' for none)")
    ap.add_argument("--missing-models", action="store_true",
                    help="also check the frontend's missing-model list (server without the models)")
    ap.add_argument("--no-templates", action="store_true", help="skip the templates browser check")
    ap.add_argument("--placeholders", default=None, metavar="BASE",
                    help="the server's --base-directory: write empty files named as the workflows' models into it")
    ap.add_argument("--window", default="2200x1300", help="browser window size (screenshots)")
    ap.add_argument("--files", nargs="*", default=None, help="workflow files (default: workflows/*.json)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(REPO, "workflows", "*.json")))
    if args.placeholders:
        write_placeholders(args.placeholders, files)
    window = tuple(int(v) for v in args.window.split("x"))
    failures = asyncio.run(check(args.url.rstrip("/"), args.shots or None, args.chromium, files,
                                 args.missing_models, not args.no_templates and not args.files, window))
    print("FAILED: " + ", ".join(failures) if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
