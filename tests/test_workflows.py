"""The example workflows (``workflows/*.json``, ComfyUI UI format) against the nodes they use.

Runs without ComfyUI: structure (ids, links, slots, types, acyclic), our nodes' widget lists against the pack's own
``INPUT_TYPES`` (count, order, types, ranges, combo values), core nodes against a table of their widgets, and what
each example must demonstrate (TurboWan sampler settings, two experts with their own SLA, conservative
training-free settings). With COMFYUI_PATH set, ``test_workflows_against_real_comfyui`` checks every node type,
widget list and link type against the node classes of a real ComfyUI checkout (and the table below against it),
and runs each workflow, converted to an API prompt as the frontend does, through ComfyUI's ``validate_prompt``.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys

import pytest

from comfyui_sla import NODE_CLASS_MAPPINGS as PACK_NODES
from comfyui_sla.sla.runtime.schedule import parse_keep_schedule
from comfyui_sla.sla.runtime.settings import parse_dense_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_DIR = os.path.join(ROOT, "workflows")
WORKFLOW_FILES = sorted(glob.glob(os.path.join(WORKFLOW_DIR, "*.json")))

# Frontend-only node types (no Python class in ComfyUI).
FRONTEND_ONLY = {"Note", "MarkdownNote"}

# Widget slots (widgets_values order) of the core nodes the workflows use, as ComfyUI 0.33's frontend saves them.
# test_workflows_against_real_comfyui checks this table against a real checkout.
CORE_WIDGETS = {
    "UNETLoader": ("unet_name", "weight_dtype"),
    "ModelSamplingSD3": ("shift",),
    "CLIPLoader": ("clip_name", "type", "device"),
    "CLIPTextEncode": ("text",),
    "EmptyHunyuanLatentVideo": ("width", "height", "length", "batch_size"),
    "VAELoader": ("vae_name",),
    "VAEDecode": (),
    "CreateVideo": ("fps", "bit_depth"),
    # 0.33: 'format' is a dynamic combo; its choice 'auto' brings a 'format.codec' widget (the frontend saves it
    # after 'format'); 'codec' stays for older workflows. 0.3.6x / 0.8: filename_prefix, format, codec.
    "SaveVideo": ("filename_prefix", "format", "format.codec", "codec"),
    "KSampler": ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "start_at_step",
                         "end_at_step", "return_with_leftover_noise"),
    "LoadImage": ("image",),
    "WanImageToVideo": ("width", "height", "length", "batch_size"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "ImageStitch": ("direction", "match_image_size", "spacing_width", "spacing_color"),
    "MiniMaxH3SigmaShift": ("shift_video", "shift_audio"),
    "MiniMaxH3ImageToVideo": ("prompt", "width", "height", "length"),
    "RandomNoise": ("noise_seed",),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "BasicGuider": (),
    "SamplerCustomAdvanced": (),
    "VAEDecodeAudio": (),
}
# Slots older releases (0.3.6x, 0.8) lack, and sub-widgets of a dynamic combo (a dotted name, not a node input): a
# frontend without them assigns the values it has widgets for, in order, and ignores the rest (the extra values
# come last, or, for SaveVideo's format.codec, before a 'codec' of the same value 'auto').
NEWER_SLOTS = {"CreateVideo": {"bit_depth"}}
# Outputs older releases lack (their frontends drop an output the node does not have).
NEWER_OUTPUTS = {"SaveVideo": ["VIDEO"]}
DYNAMIC_TYPES = ("COMFY_DYNAMICCOMBO_V3",)
# Seeds get a hidden 'control_after_generate' value after them; LoadImage an 'upload' value after the file name.
CONTROL_AFTER = {("KSampler", "seed"), ("KSamplerAdvanced", "noise_seed"), ("RandomNoise", "noise_seed")}
UPLOAD_AFTER = {("LoadImage", "image")}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Model file widgets: their options are whatever files the user has; check the extension only.
MODEL_FILE_WIDGETS = {"ckpt_name", "weights_name", "unet_name", "clip_name", "vae_name", "lora_name"}
MODEL_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".sft", ".gguf")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def load(path):
    with open(path) as f:
        return json.load(f)


def by_name(name):
    return load(os.path.join(WORKFLOW_DIR, name))


# ------------------------------------------------------------------------------------------------ schema helpers

def widget_spec(input_types: dict) -> list:
    """[(name, type, options, opts)] of the widget inputs, in order, from a V1 INPUT_TYPES dict."""
    out = []
    for section in ("required", "optional"):
        for name, entry in (input_types.get(section) or {}).items():
            typ = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            is_combo = isinstance(typ, (list, tuple)) or typ == "COMBO"
            if (is_combo or typ in WIDGET_TYPES) and not opts.get("forceInput", False):
                options = list(typ) if isinstance(typ, (list, tuple)) else opts.get("options")
                out.append((name, "COMBO" if is_combo else typ, options, opts))
    return out


def expected_slots(node_type: str, spec: list) -> list:
    """Names of the widgets_values slots: widget names plus the hidden control/upload values."""
    slots = []
    for name, typ, _options, opts in spec:
        slots.append(name)
        if opts.get("control_after_generate") or (node_type, name) in CONTROL_AFTER:
            slots.append("control_after_generate")
        if opts.get("image_upload") or (node_type, name) in UPLOAD_AFTER:
            slots.append("upload")
    return slots


_MISSING = object()


def check_widget_values(node: dict, spec: list, newer_ok: bool = False) -> list:
    """Problems (strings) of one node's widgets_values against its widget spec (count, order, type, range).
    ``newer_ok``: the spec may end in widgets newer than the file (a newer ComfyUI core node)."""
    problems = []
    where = f"node {node['id']} ({node['type']})"
    slots = expected_slots(node["type"], spec)
    values = node.get("widgets_values")
    if not isinstance(values, list):
        return [f"{where}: widgets_values must be a list, got {type(values).__name__}"]
    if len(values) != len(slots) and not (newer_ok and len(values) < len(slots)):
        return [f"{where}: {len(values)} widget values for {len(slots)} widgets {slots}"]
    it = iter(values)
    for name, typ, options, opts in spec:
        v = next(it, _MISSING)
        if v is _MISSING:  # a widget newer than the file: the frontend gives it its default
            break
        if typ == "INT":
            if not isinstance(v, int) or isinstance(v, bool):
                problems.append(f"{where}: {name}={v!r} is not an INT")
        elif typ == "FLOAT":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                problems.append(f"{where}: {name}={v!r} is not a FLOAT")
        elif typ == "BOOLEAN":
            if not isinstance(v, bool):
                problems.append(f"{where}: {name}={v!r} is not a BOOLEAN")
        elif typ == "STRING":
            if not isinstance(v, str):
                problems.append(f"{where}: {name}={v!r} is not a STRING")
        elif typ == "COMBO":
            if name in MODEL_FILE_WIDGETS:
                if not (isinstance(v, str) and v.endswith(MODEL_EXTENSIONS)):
                    problems.append(f"{where}: {name}={v!r} is not a model file name")
            elif options and v not in options:
                problems.append(f"{where}: {name}={v!r} is not one of {options}")
        if typ in ("INT", "FLOAT") and isinstance(v, (int, float)):
            if "min" in opts and v < opts["min"] or "max" in opts and v > opts["max"]:
                problems.append(f"{where}: {name}={v} outside [{opts.get('min')}, {opts.get('max')}]")
        if opts.get("control_after_generate") or (node["type"], name) in CONTROL_AFTER:
            c = next(it)
            if c not in CONTROL_VALUES:
                problems.append(f"{where}: control_after_generate after {name} is {c!r}")
        if opts.get("image_upload") or (node["type"], name) in UPLOAD_AFTER:
            next(it)
    return problems


# ------------------------------------------------------------------------------------------------ structure

MAIN = "TurboWan2.1 T2V 1.3B 480p.app.json"
COMPARISON = "TurboWan2.1 T2V keep comparison.json"
I2V = "TurboWan2.2 I2V A14B 720p.json"
TRAINING_FREE = "Wan2.1 T2V training-free SLA.json"
H3 = "MiniMaxH3_Turbo_SLA_FL2V.app.json"
APPS = {MAIN, H3}


def frontend_az(names):
    """The templates browser's A -> Z order of titles (frontend compareAlphabetical): titles starting with a digit
    last, then natural order (numbers by value), case-insensitive."""
    def key(title):
        return (title[:1].isdigit(), [(0, int(t)) if t.isdigit() else (1, t.lower())
                                      for t in re.findall(r"\d+|\D+", title)])
    return sorted(names, key=key)


def test_there_are_five_workflows_titled_and_ordered_for_the_templates_browser():
    names = {os.path.basename(p) for p in WORKFLOW_FILES}
    assert names == {H3, MAIN, COMPARISON, I2V, TRAINING_FREE}, names
    titles = [n[:-len(".json")] for n in names]   # the browser titles each card with the file name
    # the H3 name was given (MiniMaxH3_Turbo_SLA_*): it sorts first; the main Wan workflow leads the Wan ones
    assert frontend_az(titles) == [n[:-len(".json")] for n in (H3, MAIN, COMPARISON, I2V, TRAINING_FREE)]
    assert list(_builder().WORKFLOWS) == [H3, MAIN, COMPARISON, I2V, TRAINING_FREE]   # the builder lists A -> Z
    for t in titles:   # one line on a card (about 30 characters); underscores only in the given H3 name
        assert len(t) <= 32 and ("_" not in t or t.startswith("MiniMaxH3_Turbo_SLA_")), t
    assert {n for n in names if n.endswith(".app.json")} == APPS   # '.app': the App badge; opens as an App
    from PIL import Image
    for p in WORKFLOW_FILES:  # the templates browser shows <name>.jpg beside each, in a square box ~260 px wide
        img = Image.open(p[:-len(".json")] + ".jpg")
        assert img.format == "JPEG" and img.size[0] == img.size[1] >= 256, (p, img.size)


def structure_problems(wf: dict) -> list:
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "version"):
        if key not in wf:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        return problems
    if wf["version"] != 0.4:
        problems.append(f"version {wf['version']} (expected 0.4)")
    nodes = {}
    for n in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"):
            if key not in n:
                problems.append(f"node {n.get('id')} ({n.get('type')}) has no {key!r}")
        if n["id"] in nodes:
            problems.append(f"duplicate node id {n['id']}")
        nodes[n["id"]] = n
        if len(n.get("pos", [])) != 2 or len(n.get("size", [])) != 2:
            problems.append(f"node {n['id']}: pos/size must be [x, y] / [w, h]")
    if nodes and wf["last_node_id"] < max(nodes):
        problems.append(f"last_node_id {wf['last_node_id']} < max node id {max(nodes)}")
    link_ids = [link[0] for link in wf["links"]]
    if len(set(link_ids)) != len(link_ids):
        problems.append("duplicate link ids")
    if link_ids and wf["last_link_id"] < max(link_ids):
        problems.append(f"last_link_id {wf['last_link_id']} < max link id {max(link_ids)}")
    referenced = set()
    for link in wf["links"]:
        if len(link) != 6:
            problems.append(f"link {link} is not [id, src, src_slot, dst, dst_slot, type]")
            continue
        lid, src, src_slot, dst, dst_slot, typ = link
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid} joins missing nodes {src} -> {dst}")
            continue
        outs, ins = nodes[src]["outputs"], nodes[dst]["inputs"]
        if src_slot >= len(outs) or lid not in (outs[src_slot].get("links") or []):
            problems.append(f"link {lid}: not listed on output {src_slot} of node {src}")
        elif outs[src_slot]["type"] != typ:
            problems.append(f"link {lid}: type {typ} but output is {outs[src_slot]['type']}")
        if dst_slot >= len(ins) or ins[dst_slot].get("link") != lid:
            problems.append(f"link {lid}: not set on input {dst_slot} of node {dst}")
        elif ins[dst_slot]["type"] != typ:
            problems.append(f"link {lid}: type {typ} into input {ins[dst_slot]['name']} of type "
                            f"{ins[dst_slot]['type']}")
        referenced.add(lid)
    for n in wf["nodes"]:
        for i in n["inputs"]:
            if i.get("link") is not None and i["link"] not in referenced:
                problems.append(f"node {n['id']} input {i['name']} points at missing link {i['link']}")
        for o in n["outputs"]:
            for lid in o.get("links") or []:
                if lid not in referenced:
                    problems.append(f"node {n['id']} output {o['name']} lists missing link {lid}")
    # Acyclic, and 'order' is a topological order.
    order = {n["id"]: n["order"] for n in wf["nodes"]}
    for link in wf["links"]:
        if len(link) == 6 and link[1] in order and link[3] in order and order[link[1]] >= order[link[3]]:
            problems.append(f"link {link[0]}: node {link[1]} does not run before node {link[3]} (cycle/order)")
    return problems


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_workflow_structure(path):
    assert structure_problems(load(path)) == []


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_node_types_exist(path):
    for n in load(path)["nodes"]:
        assert n["type"] in PACK_NODES or n["type"] in CORE_WIDGETS or n["type"] in FRONTEND_ONLY, n["type"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_pack_nodes_match_input_types(path):
    problems = []
    for n in load(path)["nodes"]:
        if n["type"] not in PACK_NODES:
            continue
        cls = PACK_NODES[n["type"]]
        spec = widget_spec(cls.INPUT_TYPES())
        problems += check_widget_values(n, spec)
        links = [(i["name"], i["type"]) for i in n["inputs"]]
        for name, entry in cls.INPUT_TYPES()["required"].items():
            if not isinstance(entry[0], (list, tuple)) and entry[0] not in WIDGET_TYPES:
                assert (name, entry[0]) in links, f"node {n['id']} ({n['type']}) lacks link input {name}"
                assert any(i["name"] == name and i["link"] is not None for i in n["inputs"]), \
                    f"node {n['id']} ({n['type']}): required input {name} is not connected"
        assert [o["type"] for o in n["outputs"]] == list(cls.RETURN_TYPES)
        if n["type"] == "ApplySLA":
            parse_dense_blocks(n["widgets_values"][3])  # raises on a malformed list
            parse_keep_schedule(n["widgets_values"][10])
    assert problems == []


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_core_nodes_widget_counts(path):
    for n in load(path)["nodes"]:
        if n["type"] in CORE_WIDGETS:
            spec = [(name, None, None, {}) for name in CORE_WIDGETS[n["type"]]]
            slots = expected_slots(n["type"], spec)
            assert len(n["widgets_values"]) == len(slots), (n["id"], n["type"], n["widgets_values"], slots)
        elif n["type"] in FRONTEND_ONLY:
            assert len(n["widgets_values"]) == 1 and isinstance(n["widgets_values"][0], str)


# ------------------------------------------------------------------------------------------------ downloads

# Which models/ folder each loader's file widget reads from (ComfyUI's folder_paths names).
LOADER_FOLDERS = {
    ("SLADiffusionModelLoader", "ckpt_name"): "diffusion_models",
    ("SLAWeightsLoader", "weights_name"): "diffusion_models",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}
# Where the files come from. TurboDiffusion: one Hugging Face repository per model, the -quant file beside the
# full one (thu-ml/TurboDiffusion README); the Wan2.2 I2V repository holds the high- and low-noise experts.
TURBO_REPOS = ("TurboWan2.1-T2V-1.3B-480P", "TurboWan2.1-T2V-14B-480P", "TurboWan2.1-T2V-14B-720P",
               "TurboWan2.2-I2V-A14B-720P")
TURBO_URL = re.compile(r"https://huggingface\.co/TurboDiffusion/(?P<repo>[^/]+)/resolve/main/(?P<file>[^/?]+)")
# ComfyUI's repackaged Wan 2.1 files (Comfy-Org's Wan templates): split_files/<models folder>/<file>.
COMFY_URL = re.compile(r"https://huggingface\.co/Comfy-Org/Wan_2\.1_ComfyUI_repackaged/resolve/main/split_files/"
                       r"(?P<folder>[a-z_]+)/(?P<file>[^/?]+)")
# lightx2v's tiny decoders (LightTAE) for the Wan 2.1 VAE: huggingface.co/lightx2v/Autoencoders.
LIGHTX2V_URL = re.compile(r"https://huggingface\.co/lightx2v/Autoencoders/resolve/main/(?P<file>[^/?]+)")
# MiniMax H3: ComfyUI's repackaged files (Comfy-Org/MiniMax-H3, <models folder>/<file>), the Turbo-SLA LoRA (root of
# lightx2v/Minimax-h3-Turbo-SLA) and the temporal taeh3 decoder (madebyollin/taehv, safetensors/).
COMFY_H3_URL = re.compile(r"https://huggingface\.co/Comfy-Org/MiniMax-H3/resolve/main/(?P<folder>[a-z_]+)/"
                          r"(?P<file>minimax_h3_[^/?]+|qwen3vl_32b_minimax_h3_[^/?]+)")
H3_LORA_URL = re.compile(r"https://huggingface\.co/lightx2v/Minimax-h3-Turbo-SLA/resolve/main/"
                         r"(?P<file>minimax_h3_fl2v_turbo_[^/?]+_sla_[^/?]*\.safetensors)")
TAEH3_URL = "https://github.com/madebyollin/taehv/raw/refs/heads/main/safetensors/taeh3.safetensors"
# ComfyUI's VAELoader (0.33, nodes.py VAELoader.video_taes) loads a file from models/vae_approx, not models/vae,
# when its name without the extension is one of these; it lists vae_approx files starting with them.
VIDEO_TAES = ("taehv", "lighttaew2_2", "lighttaew2_1", "lighttaehy1_5", "taeltx_2", "taeh3")


def loader_folder(node_type, slot, value):
    if node_type == "VAELoader" and os.path.splitext(value)[0] in VIDEO_TAES:
        return "vae_approx"
    return LOADER_FOLDERS[(node_type, slot)]


def turbo_files(repo):
    """The checkpoint file names a TurboDiffusion repository publishes."""
    if "-A14B-" in repo:  # TurboWan2.2-I2V-A14B-720P -> TurboWan2.2-I2V-A14B-{high,low}-720P[-quant].pth
        head, res = repo.rsplit("-", 1)
        stems = [f"{head}-{expert}-{res}" for expert in ("high", "low")]
    else:
        stems = [repo]
    return {f"{stem}{quant}.pth" for stem in stems for quant in ("", "-quant")}


def download_problems(node):
    """What is wrong with a model-loading node's ``properties.models`` (the frontend's download offer)."""
    where = f"node {node['id']} ({node['type']})"
    files = {slot: v for slot, v in widgets(node).items() if (node["type"], slot) in LOADER_FOLDERS}
    models = node.get("properties", {}).get("models")
    if not isinstance(models, list) or not models:
        return [f"{where}: no properties.models (the frontend cannot offer {sorted(files.values())} for download)"]
    problems = []
    for slot, value in files.items():
        entry = [m for m in models if m.get("name") == value]
        if len(entry) != 1:
            problems.append(f"{where}: properties.models has {len(entry)} entries named {value!r} (its {slot})")
            continue
        entry = entry[0]
        if set(entry) != {"name", "url", "directory"}:
            problems.append(f"{where}: entry {entry} must have exactly name, url, directory")
        folder = loader_folder(node["type"], slot, value)
        if entry.get("directory") != folder:
            problems.append(f"{where}: {value} directory {entry.get('directory')!r}, the loader reads {folder!r}")
        url = entry.get("url", "")
        turbo, comfy, light = TURBO_URL.fullmatch(url), COMFY_URL.fullmatch(url), LIGHTX2V_URL.fullmatch(url)
        h3, h3_lora = COMFY_H3_URL.fullmatch(url), H3_LORA_URL.fullmatch(url)
        if h3 or h3_lora:
            if (h3 or h3_lora)["file"] != value or (h3 and h3["folder"] != folder) or (h3_lora and folder != "loras"):
                problems.append(f"{where}: {url} does not serve {folder}/{value}")
        elif url == TAEH3_URL:
            if value != "taeh3.safetensors" or folder != "vae_approx":
                problems.append(f"{where}: {url} does not serve vae_approx/{value}")
        elif light:
            if light["file"] != value or folder != "vae_approx":
                problems.append(f"{where}: {url} does not serve vae_approx/{value}")
        elif turbo:
            if turbo["repo"] not in TURBO_REPOS or value not in turbo_files(turbo["repo"]) or turbo["file"] != value:
                problems.append(f"{where}: {url} is not a TurboDiffusion file named {value}")
        elif comfy:
            if comfy["file"] != value or comfy["folder"] != folder:
                problems.append(f"{where}: {url} does not serve {folder}/{value}")
        else:
            problems.append(f"{where}: {url!r} is not a TurboDiffusion, ComfyUI Wan 2.1 / MiniMax H3, lightx2v or "
                            f"taehv download")
    return problems


def test_turbo_file_names():
    assert turbo_files("TurboWan2.1-T2V-1.3B-480P") == {"TurboWan2.1-T2V-1.3B-480P.pth",
                                                         "TurboWan2.1-T2V-1.3B-480P-quant.pth"}
    assert "TurboWan2.2-I2V-A14B-low-720P-quant.pth" in turbo_files("TurboWan2.2-I2V-A14B-720P")


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_model_loaders_offer_downloads(path):
    """Every node that loads a model file carries properties.models ({name, url, directory}, as ComfyUI's own
    templates do): one entry named like its file widget, in the folder the loader reads, from a known source."""
    loaders = [n for n in load(path)["nodes"] if any(t == n["type"] for t, _ in LOADER_FOLDERS)]
    assert loaders
    problems = [p for n in loaders for p in download_problems(n)]
    assert problems == []


def test_download_check_catches_mistakes():
    node = {"id": 1, "type": "VAELoader", "widgets_values": ["wan_2.1_vae.safetensors"], "properties": {}}
    assert "no properties.models" in download_problems(node)[0]
    good = {"name": "wan_2.1_vae.safetensors", "directory": "vae",
            "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
                   "wan_2.1_vae.safetensors"}
    node["properties"]["models"] = [good]
    assert download_problems(node) == []
    node["properties"]["models"] = [dict(good, directory="checkpoints")]
    assert "directory" in download_problems(node)[0]
    node["properties"]["models"] = [dict(good, name="other.safetensors")]
    assert "0 entries" in download_problems(node)[0]
    node["properties"]["models"] = [dict(good, url="https://example.com/wan_2.1_vae.safetensors")]
    assert "is not a TurboDiffusion" in download_problems(node)[0]
    light = {"id": 3, "type": "VAELoader", "widgets_values": ["lighttaew2_1.safetensors"], "properties": {"models": [
        {"name": "lighttaew2_1.safetensors", "directory": "vae_approx",
         "url": "https://huggingface.co/lightx2v/Autoencoders/resolve/main/lighttaew2_1.safetensors"}]}}
    assert download_problems(light) == []
    light["properties"]["models"][0]["directory"] = "vae"   # VAELoader reads the tiny decoders from vae_approx
    assert "the loader reads 'vae_approx'" in download_problems(light)[0]
    turbo = {"id": 2, "type": "SLADiffusionModelLoader", "widgets_values": ["TurboWan2.1-T2V-1.3B-480P.pth", "default"],
             "properties": {"models": [{"name": "TurboWan2.1-T2V-1.3B-480P.pth", "directory": "diffusion_models",
                                        "url": "https://huggingface.co/TurboDiffusion/TurboWan2.1-T2V-14B-480P/"
                                               "resolve/main/TurboWan2.1-T2V-1.3B-480P.pth"}]}}
    assert "not a TurboDiffusion file" in download_problems(turbo)[0]


# ------------------------------------------------------------------------------------------------ content

def widgets(node):
    spec = CORE_WIDGETS.get(node["type"])
    if spec is None:
        spec = [s[0] for s in widget_spec(PACK_NODES[node["type"]].INPUT_TYPES())]
    slots = expected_slots(node["type"], [(name, None, None, {}) for name in spec])
    return dict(zip(slots, node["widgets_values"]))


def upstream(wf, node_id, input_name):
    node = next(n for n in wf["nodes"] if n["id"] == node_id)
    lid = next(i["link"] for i in node["inputs"] if i["name"] == input_name)
    link = next(link for link in wf["links"] if link[0] == lid)
    return next(n for n in wf["nodes"] if n["id"] == link[1])


def model_chain(wf, sampler):
    chain, node = [], sampler
    while any(i["name"] == "model" for i in node["inputs"]):
        node = upstream(wf, node["id"], "model")
        chain.append(node["type"])
    return chain


def of_type(wf, t):
    return [n for n in wf["nodes"] if n["type"] == t]


def test_turbowan_t2v_settings():
    wf = by_name(MAIN)
    (ks,) = of_type(wf, "KSampler")
    assert model_chain(wf, ks) == ["ModelSamplingSD3", "ApplySLA", "SLADiffusionModelLoader"]
    k = widgets(ks)
    assert k["steps"] == 4 and k["cfg"] == 1.0 and k["sampler_name"] == "lcm"  # TurboDiffusion: 4 steps, no CFG
    (sla,) = of_type(wf, "ApplySLA")
    assert widgets(sla)["keep_ratio"] == 0.10 and widgets(sla)["block_q"] == "128" and widgets(sla)["enabled"]
    assert widgets(of_type(wf, "EmptyHunyuanLatentVideo")[0]) == {"width": 832, "height": 480, "length": 81,
                                                                   "batch_size": 1}
    assert widgets(of_type(wf, "CreateVideo")[0])["fps"] == 16
    assert widgets(of_type(wf, "CLIPLoader")[0])["type"] == "wan"
    assert of_type(wf, "Note") and "TurboDiffusion" in of_type(wf, "Note")[0]["widgets_values"][0]


def test_wan22_i2v_two_experts_with_own_settings():
    wf = by_name(I2V)
    first, second = sorted(of_type(wf, "KSamplerAdvanced"), key=lambda n: widgets(n)["start_at_step"])
    a, b = widgets(first), widgets(second)
    assert a["add_noise"] == "enable" and a["return_with_leftover_noise"] == "enable"
    assert b["add_noise"] == "disable" and b["return_with_leftover_noise"] == "disable"
    assert a["end_at_step"] == b["start_at_step"] == 2 and a["steps"] == b["steps"] == 4
    assert upstream(wf, second["id"], "latent_image")["id"] == first["id"]
    applies = []
    for ks in (first, second):
        assert model_chain(wf, ks) == ["ModelSamplingSD3", "ApplySLA", "SLADiffusionModelLoader"]
        shift = upstream(wf, ks["id"], "model")
        applies.append(upstream(wf, shift["id"], "model"))
    assert applies[0]["id"] != applies[1]["id"]
    loaders = [widgets(upstream(wf, n["id"], "model"))["ckpt_name"] for n in applies]
    assert "high" in loaders[0] and "low" in loaders[1], loaders
    assert widgets(applies[0]) != widgets(applies[1])  # each expert its own settings
    assert of_type(wf, "WanImageToVideo") and of_type(wf, "LoadImage")


def test_training_free_is_conservative():
    wf = by_name(TRAINING_FREE)
    (ks,) = of_type(wf, "KSampler")
    assert model_chain(wf, ks) == ["ModelSamplingSD3", "ApplySLA", "UNETLoader"]
    s = widgets(of_type(wf, "ApplySLA")[0])
    assert 0.2 <= s["keep_ratio"] <= 0.5
    assert s["start_percent"] > 0.0  # the first steps run dense
    dense = parse_dense_blocks(s["dense_blocks"])
    assert 0 in dense and 29 in dense  # first and last of Wan2.1 1.3B's 30 blocks


def test_keep_comparison_side_by_side():
    wf = by_name(COMPARISON)
    samplers = of_type(wf, "KSampler")
    assert len(samplers) == 4
    seen = []
    for ks in samplers:
        k = widgets(ks)
        assert (k["seed"], k["steps"], k["cfg"], k["sampler_name"]) == (42, 4, 1.0, "lcm")  # one seed for all
        assert model_chain(wf, ks) == ["ApplySLA", "ModelSamplingSD3", "SLADiffusionModelLoader"]
        sla = widgets(upstream(wf, ks["id"], "model"))
        seen.append(sla["keep_ratio"] if sla["enabled"] else "dense")
        assert ks["title"].endswith(f"({'dense (SLA off)' if not sla['enabled'] else 'keep %.2f' % sla['keep_ratio']})")
    assert sorted(map(str, seen)) == ["0.05", "0.1", "0.2", "dense"]
    assert len({upstream(wf, ks["id"], "latent_image")["id"] for ks in samplers}) == 1   # one latent, one size
    assert len({upstream(wf, ks["id"], "positive")["id"] for ks in samplers}) == 1       # one prompt
    for mode in (0, BYPASSED):   # the full decode's 2x2 grid, and the same for the fast draft decode
        stitches = [n for n in of_type(wf, "ImageStitch") if n["mode"] == mode]
        assert len(stitches) == 3 and sorted(widgets(n)["direction"] for n in stitches) == ["down", "right", "right"]
        assert len([n for n in of_type(wf, "SaveVideo") if n["mode"] == mode]) == 1


# ------------------------------------------------------------------------------------------------ decode, App, image

BYPASSED = 4   # node mode: bypassed (left out of the prompt; the frontend's Ctrl+B toggles it)


def group_of(wf, node):
    """Title of the group whose box holds ``node`` (None outside every group)."""
    x, y = node["pos"]
    for g in wf["groups"]:
        gx, gy, gw, gh = g["bounding"]
        if gx <= x and x + node["size"][0] <= gx + gw and gy <= y and y + node["size"][1] <= gy + gh:
            return g["title"]
    return None


WAN_FILES = [p for p in WORKFLOW_FILES if os.path.basename(p) != H3]


@pytest.mark.parametrize("path", WAN_FILES, ids=os.path.basename)
def test_full_and_fast_decode_both_wired(path):
    """Every Wan workflow decodes with the full Wan 2.1 VAE (active) and offers lighttaew2_1 beside it: the same
    sampler output into a second decode -> video -> save chain in its own group, bypassed, one toggle away."""
    wf = load(path)
    loaders = {widgets(n)["vae_name"]: n for n in of_type(wf, "VAELoader")}
    assert set(loaders) == {"wan_2.1_vae.safetensors", "lighttaew2_1.safetensors"}
    full, light = loaders["wan_2.1_vae.safetensors"], loaders["lighttaew2_1.safetensors"]
    assert full["mode"] == 0 and light["mode"] == BYPASSED
    decodes = of_type(wf, "VAEDecode")
    fast = [n for n in decodes if upstream(wf, n["id"], "vae")["id"] == light["id"]]
    final = [n for n in decodes if upstream(wf, n["id"], "vae")["id"] == full["id"]]
    assert fast and len(fast) == len(final)
    assert sorted(upstream(wf, n["id"], "samples")["id"] for n in fast) == \
        sorted(upstream(wf, n["id"], "samples")["id"] for n in final)   # the same latents, decoded twice
    draft_group = group_of(wf, light)
    assert draft_group and "lighttaew2_1" in draft_group
    draft = [n for n in wf["nodes"] if group_of(wf, n) == draft_group]
    assert all(n["mode"] == BYPASSED for n in draft)                        # the whole group: one toggle
    assert {n["id"] for n in wf["nodes"] if n["mode"] == BYPASSED} == {n["id"] for n in draft}
    saves = [n for n in draft if n["type"] == "SaveVideo"]
    assert len(saves) == 1 and widgets(saves[0])["filename_prefix"].endswith("_draft")
    (entry,) = light["properties"]["models"]
    assert entry == {"name": "lighttaew2_1.safetensors", "directory": "vae_approx",
                     "url": "https://huggingface.co/lightx2v/Autoencoders/resolve/main/lighttaew2_1.safetensors"}
    note = of_type(wf, "Note")[0]["widgets_values"][0]
    assert "lighttaew2_1" in note and "0.25 s" in note and "5.5 s" in note and "Ctrl+B" in note


def test_main_workflow_opens_as_an_app():
    """extra.linearMode / extra.linearData (frontend >= 1.41): prompt, seed, keep ratio (a slider), keep schedule
    in; the final video and the SLA run report out."""
    wf = by_name(MAIN)
    assert wf["extra"]["linearMode"] is True
    data = wf["extra"]["linearData"]
    nodes = {n["id"]: n for n in wf["nodes"]}
    chosen = [(nodes[nid]["type"], name) for nid, name, _cfg in data["inputs"]]
    assert chosen == [("CLIPTextEncode", "text"), ("KSampler", "seed"), ("ApplySLA", "keep_ratio"),
                      ("ApplySLA", "keep_schedule")]
    for nid, name, cfg in data["inputs"]:
        assert name in widgets(nodes[nid]) and set(cfg) == {"description"} and len(cfg["description"]) <= 40
        label = [i["label"] for i in nodes[nid]["inputs"] if i.get("widget", {}).get("name") == name]
        assert len(label) == 1 and label[0][0].isupper()   # 'Prompt', 'Seed', ...: the App shows the label
    (ks,) = of_type(wf, "KSampler")
    pos = upstream(wf, ks["id"], "positive")
    assert data["inputs"][0][0] == pos["id"]                   # the positive prompt, not the unused negative one
    assert PACK_NODES["ApplySLA"].INPUT_TYPES()["required"]["keep_ratio"][1]["display"] == "slider"
    out = [nodes[i] for i in data["outputs"]]
    assert [n["type"] for n in out] == ["SaveVideo", "SLARunReport"] and all(n["mode"] == 0 for n in out)
    assert upstream(wf, out[1]["id"], "samples")["id"] == ks["id"]
    assert upstream(wf, out[1]["id"], "model")["id"] == upstream(wf, ks["id"], "model")["id"]
    for name in WORKFLOW_FILES:   # the others open as node graphs
        other = load(name)
        if os.path.basename(name) not in APPS:
            assert "linearMode" not in other["extra"] and "linearData" not in other["extra"]


def test_i2v_start_image_is_shipped_and_explained():
    wf = by_name(I2V)
    (img,) = of_type(wf, "LoadImage")
    name = widgets(img)["image"]
    path = os.path.join(WORKFLOW_DIR, "input", name)
    from PIL import Image
    assert Image.open(path).size == (1280, 720)   # WanImageToVideo's size; copied into ComfyUI/input at startup
    (i2v,) = of_type(wf, "WanImageToVideo")
    assert upstream(wf, i2v["id"], "start_image")["id"] == img["id"]
    prompt = widgets(upstream(wf, i2v["id"], "positive"))["text"].lower()
    assert all(word in prompt for word in ("cat", "sunglasses", "surfboard", "wave", "cartoon"))
    note = of_type(wf, "Note")[0]["widgets_values"][0]
    assert name in note and "your own start image" in note


def test_h3_fl2v_settings():
    """MiniMax H3 with its Turbo-SLA LoRA: ComfyUI's own H3 nodes, the LoRA at 1.0, ApplySLA at the LoRA's training
    keep (0.15, 128x64, exact_prefix off) last before the sampler, and LightX2V's preset for the LoRA: 4 steps,
    euler/simple, no CFG, video shift 6 / audio shift 3, 1344x768 at 24 fps."""
    wf = by_name(H3)
    (ks,) = of_type(wf, "SamplerCustomAdvanced")
    guider = upstream(wf, ks["id"], "guider")
    assert guider["type"] == "BasicGuider"   # no classifier-free guidance (LightX2V: enable_cfg false)
    assert model_chain(wf, guider) == ["ApplySLA", "MiniMaxH3SigmaShift", "LoraLoaderModelOnly", "UNETLoader"]
    sla = upstream(wf, guider["id"], "model")
    s = widgets(sla)
    assert (s["keep_ratio"], s["block_q"], s["block_k"], s["exact_prefix"], s["enabled"]) == (0.15, "128", "64",
                                                                                               False, True)
    assert (s["start_percent"], s["end_percent"], s["dense_blocks"], s["keep_schedule"]) == (0.0, 1.0, "", "")
    shift = upstream(wf, sla["id"], "model")
    assert (widgets(shift)["shift_video"], widgets(shift)["shift_audio"]) == (6.0, 3.0)
    lora = widgets(upstream(wf, shift["id"], "model"))
    assert lora["lora_name"] == "minimax_h3_fl2v_turbo_4step_v0.1_768p_sla_comfyui_bf16.safetensors"
    assert lora["strength_model"] == 1.0
    sigmas = upstream(wf, ks["id"], "sigmas")
    assert widgets(sigmas) == {"scheduler": "simple", "steps": 4, "denoise": 1.0}
    assert upstream(wf, sigmas["id"], "model")["id"] == sla["id"]   # the schedule sees the shifted sampling
    assert widgets(upstream(wf, ks["id"], "sampler")) == {"sampler_name": "euler"}
    (h3,) = of_type(wf, "MiniMaxH3ImageToVideo")
    assert upstream(wf, guider["id"], "conditioning")["id"] == h3["id"]
    assert upstream(wf, ks["id"], "latent_image")["id"] == h3["id"]
    v = widgets(h3)
    assert (v["width"], v["height"]) == (1344, 768) and (v["length"] - 5) % 17 == 0   # H3's 17k+5 frame grid
    assert widgets(upstream(wf, h3["id"], "clip"))["type"] == "minimax"
    assert all(widgets(n)["fps"] == 24 for n in of_type(wf, "CreateVideo"))
    note = of_type(wf, "Note")[0]["widgets_values"][0]
    assert "minimax_h3_fp8_4step_5090_vae_fp8_sla.json" in note and "refiner stays dense" in note


def test_h3_first_and_last_frame_are_shipped_and_explained():
    wf = by_name(H3)
    (h3,) = of_type(wf, "MiniMaxH3ImageToVideo")
    from PIL import Image
    names = []
    for slot in ("first_frame", "last_frame"):
        img = upstream(wf, h3["id"], slot)
        assert img["type"] == "LoadImage"
        names.append(widgets(img)["image"])
        # H3's canvas: the first frame is stretched to it and the last cover-cropped, so neither is distorted
        assert Image.open(os.path.join(WORKFLOW_DIR, "input", names[-1])).size == (1344, 768)
    assert names[0] != names[1]
    prompt = widgets(h3)["prompt"].lower()
    assert all(word in prompt for word in ("cat", "sunglasses", "surfboard", "wave", "audio"))
    note = of_type(wf, "Note")[0]["widgets_values"][0]
    assert all(n in note for n in names) and "Load your own" in note


def test_h3_decode_path_is_wired_and_stated():
    """ComfyUI's H3 video VAE decodes (active) and the audio VAE gives the sound to both videos; the one light
    decoder ComfyUI 0.33 loads for H3, taeh3 (models/vae_approx), decodes the same latents in a bypassed group."""
    wf = by_name(H3)
    loaders = {widgets(n)["vae_name"]: n for n in of_type(wf, "VAELoader")}
    assert set(loaders) == {"minimax_h3_video_vae_fp16.safetensors", "minimax_h3_audio_vae_fp32.safetensors",
                            "taeh3.safetensors"}
    video, audio, light = (loaders[k] for k in ("minimax_h3_video_vae_fp16.safetensors",
                                                "minimax_h3_audio_vae_fp32.safetensors", "taeh3.safetensors"))
    assert video["mode"] == audio["mode"] == 0 and light["mode"] == BYPASSED
    assert os.path.splitext(widgets(light)["vae_name"])[0] in VIDEO_TAES   # VAELoader reads it from vae_approx
    (ks,) = of_type(wf, "SamplerCustomAdvanced")
    decodes = {upstream(wf, n["id"], "vae")["id"]: n for n in of_type(wf, "VAEDecode")}
    assert set(decodes) == {video["id"], light["id"]}
    assert all(upstream(wf, n["id"], "samples")["id"] == ks["id"] for n in decodes.values())
    (adec,) = of_type(wf, "VAEDecodeAudio")
    assert upstream(wf, adec["id"], "vae")["id"] == audio["id"] and adec["mode"] == 0
    assert upstream(wf, adec["id"], "samples")["id"] == ks["id"]
    videos = of_type(wf, "CreateVideo")
    assert len(videos) == 2 and all(upstream(wf, n["id"], "audio")["id"] == adec["id"] for n in videos)
    draft_group = group_of(wf, light)
    assert draft_group and "taeh3" in draft_group
    draft = [n for n in wf["nodes"] if group_of(wf, n) == draft_group]
    assert {n["id"] for n in wf["nodes"] if n["mode"] == BYPASSED} == {n["id"] for n in draft}   # one toggle
    saves = [n for n in of_type(wf, "SaveVideo") if n["mode"] == 0]
    assert len(saves) == 1 and group_of(wf, saves[0]) == group_of(wf, decodes[video["id"]])
    assert "H3 video VAE" in group_of(wf, saves[0])
    (entry,) = light["properties"]["models"]
    assert entry == {"name": "taeh3.safetensors", "directory": "vae_approx", "url": TAEH3_URL}
    note = of_type(wf, "Note")[0]["widgets_values"][0]
    assert "taeh3" in note and "no light decoder for the audio" in note and "Ctrl+B" in note


def test_h3_workflow_opens_as_an_app():
    wf = by_name(H3)
    assert wf["extra"]["linearMode"] is True
    data = wf["extra"]["linearData"]
    nodes = {n["id"]: n for n in wf["nodes"]}
    chosen = [(nodes[nid]["type"], name) for nid, name, _cfg in data["inputs"]]
    assert chosen == [("LoadImage", "image"), ("LoadImage", "image"), ("MiniMaxH3ImageToVideo", "prompt"),
                      ("RandomNoise", "noise_seed"), ("ApplySLA", "keep_ratio")]
    (h3,) = of_type(wf, "MiniMaxH3ImageToVideo")
    assert [nid for nid, _n, _c in data["inputs"][:2]] == [upstream(wf, h3["id"], s)["id"]
                                                           for s in ("first_frame", "last_frame")]
    for nid, name, cfg in data["inputs"]:
        assert name in widgets(nodes[nid]) and set(cfg) == {"description"} and len(cfg["description"]) <= 40
        label = [i["label"] for i in nodes[nid]["inputs"] if i.get("widget", {}).get("name") == name]
        assert len(label) == 1 and label[0][0].isupper()
    out = [nodes[i] for i in data["outputs"]]
    assert [n["type"] for n in out] == ["SaveVideo", "SLARunReport"] and all(n["mode"] == 0 for n in out)
    (ks,) = of_type(wf, "SamplerCustomAdvanced")
    assert upstream(wf, out[1]["id"], "samples")["id"] == ks["id"]
    guider = upstream(wf, ks["id"], "guider")
    assert upstream(wf, out[1]["id"], "model")["id"] == upstream(wf, guider["id"], "model")["id"]


# ------------------------------------------------------------------------------------------------ layout

def boxes_overlap(a, b):
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])


def layout_problems(wf, title_h, min_h):
    """As the frontend draws the saved layout: nodes at least their drawn height, node boxes (title bar above pos
    included) apart, each node wholly in or out of a group, group title bars (30 px) clear of nodes."""
    problems = []
    boxes = {n["id"]: [n["pos"][0], n["pos"][1] - title_h, n["size"][0], n["size"][1] + title_h]
             for n in wf["nodes"]}
    for n in wf["nodes"]:
        if n["size"][1] < min_h.get(n["type"], 0):
            problems.append(f"node {n['id']} ({n['type']}) saved {n['size'][1]} tall, the frontend draws "
                            f"{min_h[n['type']]}")
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            if boxes_overlap(boxes[a], boxes[b]):
                problems.append(f"nodes {a} and {b} overlap")
    for g in wf["groups"]:
        gx, gy, gw, gh = g["bounding"]
        for nid, bx in boxes.items():
            inside = gx <= bx[0] and gy <= bx[1] and bx[0] + bx[2] <= gx + gw and bx[1] + bx[3] <= gy + gh
            if boxes_overlap(bx, g["bounding"]) and not inside:
                problems.append(f"node {nid} partly in group {g['title']!r}")
            if boxes_overlap(bx, [gx, gy, gw, 30]):
                problems.append(f"group {g['title']!r}: title bar over node {nid}")
    return problems


def _builder():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_workflows", os.path.join(ROOT, "scripts",
                                                                                  "build_workflows.py"))
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    return builder


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=os.path.basename)
def test_layout_as_the_frontend_draws_it(path):
    b = _builder()
    assert layout_problems(load(path), b.TITLE_H, b.FRONTEND_H) == []


def test_layout_check_catches_the_old_overlap():
    """The layout the 0.33 frontend drew wrong: the SLA loader saved 82 px tall (drawn 102) right above ApplySLA."""
    b = _builder()
    wf = {"nodes": [{"id": 1, "type": "SLADiffusionModelLoader", "pos": [0, 0], "size": [360, 82]},
                    {"id": 2, "type": "ApplySLA", "pos": [0, 130], "size": [360, 322]}], "groups": []}
    assert layout_problems(wf, b.TITLE_H, b.FRONTEND_H) == ["node 1 (SLADiffusionModelLoader) saved 82 tall, the "
                                                             "frontend draws 102"]
    wf["nodes"][0]["size"][1] = 102
    assert layout_problems(wf, b.TITLE_H, b.FRONTEND_H) == ["nodes 1 and 2 overlap"]


# ------------------------------------------------------------------------------------------------ real ComfyUI

def _checkouts():
    raw = os.environ.get("COMFYUI_PATH", "")
    return [os.path.abspath(p) for p in raw.split(os.pathsep) if p.strip()]


def frontend_widgets(schema):
    """A node schema's inputs the frontend makes widgets of (a dynamic combo is one, with sub-widgets)."""
    return [i for i in schema["inputs"] if i["widget"] or i["type"] in DYNAMIC_TYPES]


@pytest.mark.skipif(not _checkouts(), reason="COMFYUI_PATH is not set (no ComfyUI checkout to test in)")
@pytest.mark.parametrize("comfy_path", _checkouts(), ids=lambda p: os.path.basename(p.rstrip("/")))
def test_workflows_against_real_comfyui(comfy_path, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))
    import comfy_env

    from comfy_runner import widget_entries

    # the MiniMax H3 workflow needs ComfyUI's H3 nodes (0.33+); older trees check the Wan ones
    has_h3 = os.path.isdir(os.path.join(comfy_path, "comfy", "ldm", "minimax"))
    files = [p for p in WORKFLOW_FILES if has_h3 or not os.path.basename(p).startswith("MiniMaxH3")]
    assert len(files) >= 4
    results = comfy_env.run_runner(comfy_path, str(tmp_path), "--schemas-only", "--validate-workflows", *files)
    schemas = results["schemas"]
    # What happens when a user queues it: the frontend's UI -> API conversion, then ComfyUI's validate_prompt
    # (node classes, link types, widget types/ranges/combo values, our VALIDATE_INPUTS), with placeholder model
    # files of the names the workflows use.
    for name, v in results["workflow_validation"].items():
        assert v["valid"], f"{name}: ComfyUI rejects it: {v['error']} {v['node_errors']}"
    for node_type, names in CORE_WIDGETS.items():
        if node_type not in schemas and not has_h3:
            continue   # an H3 node, absent before 0.33
        # a dynamic combo's own widgets (0.33 SaveVideo: format -> format.codec) by their last name
        real = tuple(i["name"].split(".")[-1] for i in widget_entries(schemas[node_type]["inputs"]))
        want = tuple(n for n in names if "." not in n and (n in real or n not in NEWER_SLOTS.get(node_type, ())))
        assert real == want, f"{node_type}: table {names} != ComfyUI {real}"
    problems = []
    for path in files:
        wf = load(path)
        for n in wf["nodes"]:
            if n["type"] in FRONTEND_ONLY:
                continue
            if n["type"] not in schemas:
                problems.append(f"{os.path.basename(path)}: node type {n['type']} does not exist in ComfyUI")
                continue
            real = schemas[n["type"]]
            spec = [(i["name"], i["type"], i["options"],
                     {"control_after_generate": i["control_after_generate"], "image_upload": i["image_upload"]})
                    for i in frontend_widgets(real)]
            if n["type"] in CORE_WIDGETS:   # our slots; those this release lacks (or dynamic ones) unchecked
                by_slot = {name: entry for name, *entry in spec}
                spec = [(name, *by_slot[name]) if name in by_slot and by_slot[name][0] not in DYNAMIC_TYPES
                        else (name, "ANY", None, {}) for name in CORE_WIDGETS[n["type"]]]
            problems += [f"{os.path.basename(path)}: {p}" for p in check_widget_values(n, spec)]
            link_types = {i["name"]: i["type"] for i in real["inputs"] if not i["widget"]}
            for i in n["inputs"]:
                if i["link"] is not None and link_types.get(i["name"]) != i["type"]:
                    problems.append(f"{os.path.basename(path)}: node {n['id']} ({n['type']}) input {i['name']} "
                                    f"is {i['type']}, ComfyUI says {link_types.get(i['name'])}")
            saved = [o["type"] for o in n["outputs"]]
            if saved != real["outputs"] and saved != real["outputs"] + NEWER_OUTPUTS.get(n["type"], ["-"]):
                problems.append(f"{os.path.basename(path)}: node {n['id']} ({n['type']}) outputs "
                                f"{[o['type'] for o in n['outputs']]}, ComfyUI says {real['outputs']}")
    assert problems == []


def test_workflows_match_their_builder():
    """workflows/*.json are what scripts/build_workflows.py writes (edit the builder, then rerun it)."""
    builder = _builder()
    assert builder.MAIN == MAIN
    for name, fn in builder.WORKFLOWS.items():
        assert json.loads(json.dumps(fn())) == by_name(name), f"{name} differs from scripts/build_workflows.py"
