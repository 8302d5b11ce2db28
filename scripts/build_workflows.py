"""Write the example workflows in ``workflows/`` (ComfyUI UI format, version 0.4).

    python3 scripts/build_workflows.py          # rewrites workflows/*.json

The JSON files are the product (ComfyUI's templates browser lists ``<pack>/workflows/*.json``); this script only
keeps their layout, links and widget lists consistent. ``tests/test_workflows.py`` checks the result against the
pack's node schemas (and, with COMFYUI_PATH set, against a real ComfyUI's); ``tests/integration/frontend_check.py``
loads them in the real frontend and checks what it draws.

Sampler settings of the TurboWan workflows come from thu-ml/TurboDiffusion (README "Inference" and
``turbodiffusion/inference/wan2.1_t2v_infer.py`` / ``wan2.2_i2v_infer.py``): 4 steps (1-4 supported), no
classifier-free guidance (only the positive embedding is used: cfg 1), rCM timesteps ``[atan(sigma_max), 1.5, 1.4,
1.0, 0]`` in TrigFlow converted to rectified-flow sigmas ``sin t / (cos t + sin t)`` = 0.988 (sigma_max 80; 0.995 for
the I2V default 200), 0.934, 0.853, 0.609, 0; each step predicts x0 then re-noises to the next sigma (ComfyUI's
``lcm`` sampler does exactly that for flow models), or with ``--ode`` an Euler step (``euler``). The ``simple``
scheduler with ModelSamplingSD3 shift 5 gives 1.0, 0.938, 0.833, 0.625, 0 for 4 steps, the closest shift. Wan2.2
I2V switches from the high- to the low-noise expert at t < 0.9, i.e. after 2 of the 4 steps. 81 frames, 16 fps.

MiniMax H3 (``MiniMaxH3_Turbo_SLA_FL2V.app.json``). The graph is ComfyUI's own H3 graph as its template
``templates/video_minimax_h3_i2v.json`` (Comfy-Org/workflow_templates) builds it inside its subgraph, and the
loaders, files and addresses are that template's and ``video_minimax_h3_t2v.json``'s (comfyui-workflow-templates-json
0.1.50): UNETLoader ``minimax_h3_fl2va_pruned_int8_convrot``, CLIPLoader type ``minimax`` with the Qwen3-VL 32B
encoder, two VAELoaders (video VAE, audio VAE), MiniMaxH3ImageToVideo (prompt, 1344x768, first/last frame; its
positive conditioning and AV latent), RandomNoise / KSamplerSelect / BasicScheduler / BasicGuider /
SamplerCustomAdvanced, VAEDecode + VAEDecodeAudio (both take the nested AV latent in 0.33.0: nodes.py VAEDecode and
comfy_extras/nodes_audio.py unbind it), CreateVideo at 24 fps, SaveVideo; download addresses from the nodes'
``properties.models``. Then LoraLoaderModelOnly with the Turbo-SLA LoRA (strength 1.0) and ApplySLA (keep 0.15 =
the LoRA's 85% sparsity, 128x64 blocks, exact_prefix off). The sampler follows LightX2V's preset for this LoRA,
ModelTC/LightX2V ``configs/minimax_h3/dmd/minimax_h3_fp8_4step_5090_vae_fp8_sla.json`` (checked): ``infer_steps``
4, ``enable_cfg`` false (BasicGuider: no guidance, as cfg 1), ``video_flow_shift`` 6.0 / ``audio_flow_shift`` 3.0,
``h3_step_update`` training_euler (ComfyUI: ``euler`` with the ``simple`` scheduler), LoRA strength 1.0, 768x1344,
24 fps, ``dynamic_sparse_attn`` at ``sparsity_ratio`` 0.85 (its sibling ``..._with_fp8_vae_sla.json`` names the
same shifts). In ComfyUI 0.33.0 the shifts are set by ModelSamplingMiniMaxH3 (``MiniMaxH3SigmaShift``,
comfy_extras/nodes_minimax_h3.py: the video shift drives the sigma schedule, both go to the DiT as
``transformer_options["minimax_h3_sigma_shift_video"/"..._audio"]``; without it the model's defaults 12 / 3 apply).
Length 124 frames (5.2 s, the node's default; the preset renders 362). The LoRA file is at the root of
huggingface.co/lightx2v/Minimax-h3-Turbo-SLA as its model card names it (``..._sla_comfyui_bf16``: ComfyUI's key
names), the address built as for lightx2v/Minimax-h3-Turbo's files in ComfyUI's own template. Decode: ComfyUI 0.33.0
loads one light decoder for H3: VAELoader takes ``taeh3`` from models/vae_approx (nodes.py ``VAELoader.video_taes``)
and comfy/sd.py builds it as a TAEHV with H3's 17k+5 frame grid (24 latent channels, 12-channel last conv); the file
is madebyollin/taehv's ``safetensors/taeh3.safetensors`` (the temporal taeh3; the older 2D preview-only H3 TAE files
do not load there). The audio has no light decoder: both videos take the H3 audio VAE's decode.

Template names and order. ComfyUI lists a pack's ``workflows/*.json`` in its templates browser (``GET
/api/workflow_templates``: the files as the folder lists them, unsorted) under the pack's folder name; the frontend
titles each card with the file name (no index file exists for custom nodes), shows ``<name>.jpg`` as its thumbnail,
keeps the server's order under "Default" and sorts by that title under "A -> Z" (natural order, titles starting
with a digit last). A name ending in ``.app`` (``*.app.json``) is an App template (the "App" badge and filter). So
the file names below are the titles, chosen so that A -> Z puts the main workflow first among the Wan workflows; the
MiniMax H3 workflow (named ``MiniMaxH3_Turbo_SLA_*`` on request) sorts before them.

Layout. Every node is saved at the size the ComfyUI 0.33 frontend (1.49.6) draws it (``FRONTEND_H``: a node saved
smaller is grown on load, which pushed it into the node below); the frontend draws the title bar (``TITLE_H``) above
``pos``. Columns are stacked with ``GAP`` between a node and the next one's title; groups are computed around their
nodes with room for their own title. Save Video and SLA Run Report grow downwards after a run (video preview,
report text): each is the last node of its column.
"""
from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "workflows")

# Link inputs (name, type) and outputs (name, type) of every node type used; widget inputs are given per node.
NODE_IO = {
    "SLADiffusionModelLoader": ([], [("MODEL", "MODEL"), ("info", "STRING")]),
    "ApplySLA": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "SLAWeightsLoader": ([("model", "MODEL")], [("MODEL", "MODEL"), ("info", "STRING")]),
    "SLARunReport": ([("model", "MODEL"), ("samples", "LATENT")], [("report", "STRING")]),
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "ModelSamplingSD3": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyHunyuanLatentVideo": ([], [("LATENT", "LATENT")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], [("video", "VIDEO")]),   # the output: ComfyUI 0.33 (older: none)
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "KSamplerAdvanced": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "WanImageToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                         ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("start_image", "IMAGE")],
                        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")]),
    "ImageStitch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "LoraLoaderModelOnly": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "MiniMaxH3SigmaShift": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "MiniMaxH3ImageToVideo": ([("clip", "CLIP"), ("vae", "VAE"), ("first_frame", "IMAGE"), ("last_frame", "IMAGE")],
                              [("positive", "CONDITIONING"), ("LATENT", "LATENT")]),
    "RandomNoise": ([], [("NOISE", "NOISE")]),
    "KSamplerSelect": ([], [("SAMPLER", "SAMPLER")]),
    "BasicScheduler": ([("model", "MODEL")], [("SIGMAS", "SIGMAS")]),
    "BasicGuider": ([("model", "MODEL"), ("conditioning", "CONDITIONING")], [("GUIDER", "GUIDER")]),
    "SamplerCustomAdvanced": ([("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                               ("latent_image", "LATENT")], [("output", "LATENT"), ("denoised_output", "LATENT")]),
    "VAEDecodeAudio": ([("samples", "LATENT"), ("vae", "VAE")], [("AUDIO", "AUDIO")]),
    "Note": ([], []),
}
# Widget input types, for the widget inputs a workflow names (labels in App mode and on the node).
WIDGET_TYPES = {("CLIPTextEncode", "text"): "STRING", ("KSampler", "seed"): "INT", ("ApplySLA", "keep_ratio"): "FLOAT",
                ("ApplySLA", "keep_schedule"): "STRING", ("MiniMaxH3ImageToVideo", "prompt"): "STRING",
                ("RandomNoise", "noise_seed"): "INT", ("LoadImage", "image"): "COMBO"}

# Drawn height of each node type in the ComfyUI 0.33 frontend (1.49.6): LGraphNode.computeSize() of a fresh node,
# the least it draws (a saved size below it is grown on load). Widths are kept as saved (all above its minimum).
FRONTEND_H = {"SLADiffusionModelLoader": 102, "ApplySLA": 322, "SLAWeightsLoader": 78, "SLARunReport": 46,
              "UNETLoader": 82, "ModelSamplingSD3": 58, "CLIPLoader": 106, "CLIPTextEncode": 88,
              "EmptyHunyuanLatentVideo": 130, "VAELoader": 58, "VAEDecode": 46, "CreateVideo": 102, "SaveVideo": 106,
              "KSampler": 262, "KSamplerAdvanced": 334, "LoadImage": 102, "WanImageToVideo": 210, "ImageStitch": 150,
              "Note": 88, "LoraLoaderModelOnly": 82, "MiniMaxH3SigmaShift": 82, "MiniMaxH3ImageToVideo": 220,
              "RandomNoise": 82, "KSamplerSelect": 58, "BasicScheduler": 106, "BasicGuider": 46,
              "SamplerCustomAdvanced": 106, "VAEDecodeAudio": 46}
# The run report: after a run the frontend (1.49) adds the report text as a widget at the bottom of the node that
# gets it, inside the node's size (it does not grow the node): room for its three or four lines.
REPORT_ROOM = 100
APPLY_SLA_H = FRONTEND_H["ApplySLA"] + REPORT_ROOM
RUN_REPORT_H = FRONTEND_H["SLARunReport"] + REPORT_ROOM
TITLE_H = 30        # LiteGraph.NODE_TITLE_HEIGHT: the title bar, drawn above pos
GAP = 40            # from a node's bottom edge to the next node's title bar
COL_GAP = 90        # between columns (room for two group margins)
GROUP_PAD = 15      # group edge to the nodes inside
GROUP_TITLE = 40    # a group's title bar (30 px in the frontend) and a margin under it

NOTE_COLOR, NOTE_BG = "#432", "#653"
SLA_COLOR, SLA_BG = "#223", "#335"
GROUP_SLA, GROUP_IO, GROUP_FINAL, GROUP_DRAFT = "#88A", "#3f789e", "#3f789e", "#a1309b"   # LiteGraph's palette
BYPASS = 4          # node mode: bypassed (the frontend draws it purple; the prompt leaves it out)


class Workflow:
    def __init__(self):
        self.nodes, self.links, self.groups = [], [], []
        self.extra = {}

    def node(self, type_, widgets, *, x=None, y=None, w=None, h=None, below=None, title=None, color=None,
             bgcolor=None, mode=0, labels=None):
        """Add a node at (x, y), or under node ``below`` (same x and width unless given). The height is at least
        what the frontend draws. ``labels``: {widget name: label} (shown on the node and in App mode)."""
        if below is not None:
            b = self.nodes[below - 1]
            x = b["pos"][0] if x is None else x
            w = b["size"][0] if w is None else w
            y = b["pos"][1] + b["size"][1] + GAP + TITLE_H
        h = max(h or 0, FRONTEND_H[type_])
        inputs, outputs = NODE_IO[type_]
        props = {} if type_ == "Note" else {"Node name for S&R": type_}
        # Model loaders: the frontend offers to download each file named in a widget that the user lacks.
        models = [download_entry(v) for v in widgets if isinstance(v, str) and v in MODEL_FILES]
        if models:
            props["models"] = models
        nid = len(self.nodes) + 1
        n = {"id": nid, "type": type_, "pos": [x, y], "size": [w, h], "flags": {},
             "order": nid - 1, "mode": mode,
             "inputs": [{"name": name, "type": typ, "link": None} for name, typ in inputs],
             "outputs": [{"name": name, "type": typ, "links": [], "slot_index": i}
                         for i, (name, typ) in enumerate(outputs)],
             "properties": props,
             "widgets_values": list(widgets)}
        for name, label in (labels or {}).items():  # a widget's input slot carries its label
            n["inputs"].append({"name": name, "type": WIDGET_TYPES[(type_, name)], "widget": {"name": name},
                                "link": None, "label": label})
        if title:
            n["title"] = title
        if color:
            n["color"], n["bgcolor"] = color, bgcolor
        self.nodes.append(n)
        return nid

    def bottom(self, nid):
        n = self.nodes[nid - 1]
        return n["pos"][1] + n["size"][1]

    def right(self, nid):
        n = self.nodes[nid - 1]
        return n["pos"][0] + n["size"][0]

    def link(self, src, src_slot, dst, dst_input):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        lid = len(self.links) + 1
        slot = [i["name"] for i in d["inputs"]].index(dst_input)
        typ = s["outputs"][src_slot]["type"]
        assert d["inputs"][slot]["type"] == typ, (s["type"], d["type"], dst_input)
        s["outputs"][src_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid
        self.links.append([lid, src, src_slot, dst, slot, typ])

    def group(self, title, ids, color=GROUP_IO):
        """A group around nodes ``ids`` (their title bars included), with room for its own title."""
        boxes = [(n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
                 for n in (self.nodes[i - 1] for i in ids)]
        x0, y0 = min(b[0] for b in boxes) - GROUP_PAD, min(b[1] for b in boxes) - GROUP_PAD - GROUP_TITLE
        x1, y1 = max(b[2] for b in boxes) + GROUP_PAD, max(b[3] for b in boxes) + GROUP_PAD
        self.groups.append({"title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color, "font_size": 24,
                            "flags": {}})

    def app(self, inputs, outputs):
        """Open as an App (frontend >= 1.41): ``inputs`` [(node, widget name, description)], ``outputs`` [node] -
        the frontend's ``extra.linearMode`` / ``extra.linearData`` (its own templates store [node id, widget name]
        pairs; a third element is the input's settings, here its description)."""
        self.extra["linearMode"] = True
        self.extra["linearData"] = {"inputs": [[nid, name, {"description": text}] for nid, name, text in inputs],
                                    "outputs": list(outputs)}

    def to_json(self):
        # Execution order: a node runs after its inputs (topological order, for the 'order' field).
        preds = {n["id"]: {self.links[i["link"] - 1][1] for i in n["inputs"] if i["link"]} for n in self.nodes}
        order, done = [], set()
        while len(order) < len(self.nodes):
            for n in self.nodes:
                if n["id"] not in done and preds[n["id"]] <= done:
                    order.append(n["id"])
                    done.add(n["id"])
        for i, nid in enumerate(order):
            self.nodes[nid - 1]["order"] = i
        # The view on opening: from the graph's top-left corner, the whole graph in a 1600 x 900 canvas where that
        # keeps the text legible (scale >= 0.65), else as much of it as fits at 0.65.
        xs = [n["pos"][0] for n in self.nodes] + [g["bounding"][0] for g in self.groups]
        ys = [n["pos"][1] - TITLE_H for n in self.nodes] + [g["bounding"][1] for g in self.groups]
        x1 = max([n["pos"][0] + n["size"][0] for n in self.nodes] + [g["bounding"][0] + g["bounding"][2]
                                                                     for g in self.groups])
        y1 = max([n["pos"][1] + n["size"][1] for n in self.nodes] + [g["bounding"][1] + g["bounding"][3]
                                                                     for g in self.groups])
        scale = round(max(0.65, min(1.0, 1520 / (x1 - min(xs)), 820 / (y1 - min(ys)))), 3)
        ds = {"scale": scale, "offset": [round(40 / scale - min(xs)), round(40 / scale - min(ys))]}
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": ds, **self.extra},
                "version": 0.4}


def apply_sla_widgets(keep=0.10, start=0.0, end=1.0, dense_blocks="", block_q="128", block_k="64",
                      feature_map="softmax", min_tokens=2048, backend="auto", enabled=True, keep_schedule="",
                      exact_prefix=False):
    """ApplySLA widgets_values, in the node's input order."""
    return [keep, start, end, dense_blocks, block_q, block_k, feature_map, min_tokens, backend, enabled,
            keep_schedule, exact_prefix]


def save_video_widgets(prefix):
    """SaveVideo widgets_values as ComfyUI 0.33's frontend saves them: filename_prefix, format, format.codec (the
    codec choice under format 'auto'), codec. Older frontends (format, codec) read the first three."""
    return [prefix, "auto", "auto", "auto"]


CREATE_VIDEO = [16, 8]  # fps, bit_depth (ComfyUI 0.33; older releases have fps only and ignore the second value)

NEGATIVE = ""  # cfg 1: the negative prompt is never evaluated by the distilled TurboWan models
T2V_PROMPT = ("A stylish woman walks down a Tokyo street filled with warm glowing neon and animated city signage. "
              "She wears a black leather jacket, a long red dress, and black boots, and carries a black purse. "
              "The street is damp and reflective, creating a mirror effect of the colorful lights.")
I2V_IMAGE = "sla_example_surfing_cat.png"   # workflows/input/, copied into ComfyUI/input at startup
I2V_PROMPT = ("A cartoon orange cat in sunglasses rides a red surfboard as the big wave behind it lifts the board; "
              "white spray flies past, the sun glitters on the sea, the clouds drift, and the cat keeps its calm "
              "smile and its arms out for balance. Flat cartoon style.")
WAN_NEGATIVE = ("blurry, low quality, static, overexposed, worst quality, jpeg artifacts, deformed, extra fingers, "
                "still picture, messy background")

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21_VAE = "wan_2.1_vae.safetensors"
LIGHT_VAE = "lighttaew2_1.safetensors"

# Where each model file of the workflows comes from: file name -> (download URL, models/ folder). Written into the
# loader nodes' ``properties.models`` ({name, url, directory}), from which the ComfyUI frontend offers downloads of
# missing files. TurboDiffusion's checkpoints: thu-ml/TurboDiffusion README ("Available Models", wget lines). The
# umT5 text encoder and the Wan 2.1 VAE (and stock Wan2.1 1.3B): Comfy-Org/workflow_templates' Wan templates
# (properties.models of their CLIPLoader / VAELoader / UNETLoader) and ComfyUI_examples' wan page. The light
# decoder: lightx2v's Autoencoders repository on Hugging Face (LightTAE for the Wan 2.1 VAE); ComfyUI's VAELoader
# lists and loads it from models/vae_approx (nodes.py VAELoader.video_taes: the file's stem must be "lighttaew2_1").
TURBO = "https://huggingface.co/TurboDiffusion/{repo}/resolve/main/{file}"
COMFY_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/{folder}/{file}"
LIGHTX2V = "https://huggingface.co/lightx2v/Autoencoders/resolve/main/{file}"
MODEL_FILES = {
    "TurboWan2.1-T2V-1.3B-480P.pth": (TURBO.format(repo="TurboWan2.1-T2V-1.3B-480P",
                                                   file="TurboWan2.1-T2V-1.3B-480P.pth"), "diffusion_models"),
    "TurboWan2.2-I2V-A14B-high-720P.pth": (TURBO.format(repo="TurboWan2.2-I2V-A14B-720P",
                                                        file="TurboWan2.2-I2V-A14B-high-720P.pth"), "diffusion_models"),
    "TurboWan2.2-I2V-A14B-low-720P.pth": (TURBO.format(repo="TurboWan2.2-I2V-A14B-720P",
                                                       file="TurboWan2.2-I2V-A14B-low-720P.pth"), "diffusion_models"),
    "wan2.1_t2v_1.3B_fp16.safetensors": (COMFY_WAN21.format(folder="diffusion_models",
                                                            file="wan2.1_t2v_1.3B_fp16.safetensors"),
                                         "diffusion_models"),
    UMT5: (COMFY_WAN21.format(folder="text_encoders", file=UMT5), "text_encoders"),
    WAN21_VAE: (COMFY_WAN21.format(folder="vae", file=WAN21_VAE), "vae"),
    LIGHT_VAE: (LIGHTX2V.format(file=LIGHT_VAE), "vae_approx"),
}
# MiniMax H3: ComfyUI's repackaged files (Comfy-Org/MiniMax-H3, <folder>/<file>, as ComfyUI's H3 templates download
# them), the Turbo-SLA LoRA (root of lightx2v/Minimax-h3-Turbo-SLA) and the temporal taeh3 (madebyollin/taehv).
H3_MODEL = "minimax_h3_fl2va_pruned_int8_convrot.safetensors"
H3_TEXT = "qwen3vl_32b_minimax_h3_nvfp4_awq.safetensors"
H3_VIDEO_VAE = "minimax_h3_video_vae_fp16.safetensors"
H3_AUDIO_VAE = "minimax_h3_audio_vae_fp32.safetensors"
H3_LORA = "minimax_h3_fl2v_turbo_4step_v0.1_768p_sla_comfyui_bf16.safetensors"
H3_LIGHT_VAE = "taeh3.safetensors"
COMFY_H3 = "https://huggingface.co/Comfy-Org/MiniMax-H3/resolve/main/{folder}/{file}"
MODEL_FILES.update({
    H3_MODEL: (COMFY_H3.format(folder="diffusion_models", file=H3_MODEL), "diffusion_models"),
    H3_TEXT: (COMFY_H3.format(folder="text_encoders", file=H3_TEXT), "text_encoders"),
    H3_VIDEO_VAE: (COMFY_H3.format(folder="vae", file=H3_VIDEO_VAE), "vae"),
    H3_AUDIO_VAE: (COMFY_H3.format(folder="vae", file=H3_AUDIO_VAE), "vae"),
    H3_LORA: (f"https://huggingface.co/lightx2v/Minimax-h3-Turbo-SLA/resolve/main/{H3_LORA}", "loras"),
    H3_LIGHT_VAE: (f"https://github.com/madebyollin/taehv/raw/refs/heads/main/safetensors/{H3_LIGHT_VAE}",
                   "vae_approx"),
})


def download_entry(name):
    """One ``properties.models`` entry, the schema the ComfyUI frontend reads: name (= the widget value), url,
    directory (a models/ folder name)."""
    url, directory = MODEL_FILES[name]
    return {"name": name, "url": url, "directory": directory}


# What the light decoder trades, as lightx2v publish it (ModelTC/ComfyUI-LightVAE README, "Performance
# Comparison", H100, bf16, 81 frames at 480p; huggingface.co/lightx2v/Autoencoders model card).
LIGHT_DECODE_NOTE = (
    "Fast decode for drafts: the 'Fast decode: lighttaew2_1' group (bypassed, purple) decodes with lightx2v's "
    "LightTAE for the Wan 2.1 VAE (models/vae_approx/lighttaew2_1.safetensors, 45 MB). lightx2v publish 0.25 s and "
    "0.4 GB to decode 81 frames at 480p on an H100, against 5.5 s and 10.1 GB for the Wan 2.1 VAE, and call its "
    "quality near the official VAE's; the full VAE keeps the most detail. Switch: click the group's title, press "
    "Ctrl+B (or its toolbar's ⋮ > Bypass) to run it; bypass the 'Decode: Wan 2.1 VAE' group the same way to skip "
    "the full decode while drafting.")


def decode_groups(w, samples, x, y, prefix, vae=None, width=340):
    """The two decodes every workflow offers, side by side from (x, y): the full Wan 2.1 VAE for finals (its own
    VAELoader unless ``vae`` is given) and lighttaew2_1 for drafts (bypassed). Returns the final SaveVideo id."""
    first = []
    if vae is None:
        vae = w.node("VAELoader", [WAN21_VAE], x=x, y=y, w=width, title="Load VAE (Wan 2.1)")
        first.append(vae)
        dec = w.node("VAEDecode", [], below=vae, title="VAE Decode (full)")
    else:
        dec = w.node("VAEDecode", [], x=x, y=y, w=width, title="VAE Decode (full)")
    vid = w.node("CreateVideo", CREATE_VIDEO, below=dec)
    save = w.node("SaveVideo", save_video_widgets(prefix), below=vid)
    w.group("Decode: Wan 2.1 VAE (final)", first + [dec, vid, save], GROUP_FINAL)
    lx = x + width + COL_GAP
    light = w.node("VAELoader", [LIGHT_VAE], x=lx, y=y, w=width, title="Load VAE (lighttaew2_1, fast)",
                   mode=BYPASS)
    ldec = w.node("VAEDecode", [], below=light, title="VAE Decode (fast)", mode=BYPASS)
    lvid = w.node("CreateVideo", CREATE_VIDEO, below=ldec, mode=BYPASS)
    lsave = w.node("SaveVideo", save_video_widgets(prefix + "_draft"), below=lvid, title="Save Video (draft)",
                   mode=BYPASS)
    w.group("Fast decode: lighttaew2_1 (draft)", [light, ldec, lvid, lsave], GROUP_DRAFT)
    for src, slot, dst, name in ((samples, 0, dec, "samples"), (vae, 0, dec, "vae"), (dec, 0, vid, "images"),
                                 (vid, 0, save, "video"), (samples, 0, ldec, "samples"), (light, 0, ldec, "vae"),
                                 (ldec, 0, lvid, "images"), (lvid, 0, lsave, "video")):
        w.link(src, slot, dst, name)
    return save


COL_A, COL_W_A = 0, 380          # model column
COL_B, COL_W_B = COL_A + COL_W_A + COL_GAP, 420    # prompt column
COL_C, COL_W_C = COL_B + COL_W_B + COL_GAP, 340    # sampler column
COL_D = COL_C + COL_W_C + COL_GAP                  # decode groups
NOTE_X, NOTE_W = -(400 + COL_GAP), 400


def _text_to_video(w, model_node, sla, shift, negative, neg_title, sampler, save_prefix, labels=False):
    """The T2V chain both text-to-video examples share, from the model column on: ApplySLA -> ModelSamplingSD3 ->
    KSampler, umT5 prompts, latent, and the two decode groups. Returns the ids App mode needs."""
    ms = w.node("ModelSamplingSD3", [shift], below=sla)
    w.group("Model (SLA)", [model_node, sla, ms], GROUP_SLA)
    clip = w.node("CLIPLoader", [UMT5, "wan", "default"], x=COL_B, y=0, w=COL_W_B)
    pos = w.node("CLIPTextEncode", [T2V_PROMPT], below=clip, h=200, title="Positive Prompt",
                 labels={"text": "Prompt"} if labels else None)
    neg = w.node("CLIPTextEncode", [negative], below=pos, h=110, title=neg_title)
    latent = w.node("EmptyHunyuanLatentVideo", [832, 480, 81, 1], below=neg)
    w.group("Prompt and video size", [clip, pos, neg, latent], GROUP_IO)
    ks = w.node("KSampler", sampler, x=COL_C, y=0, w=COL_W_C, labels={"seed": "Seed"} if labels else None)
    for src, dst, name in ((model_node, sla, "model"), (sla, ms, "model"), (ms, ks, "model"), (clip, pos, "clip"),
                           (clip, neg, "clip"), (pos, ks, "positive"), (neg, ks, "negative"),
                           (latent, ks, "latent_image")):
        w.link(src, 0, dst, name)
    save = decode_groups(w, ks, COL_D, 0, save_prefix)
    return {"ks": ks, "pos": pos, "save": save, "ms": ms}


def turbowan_t2v():
    w = Workflow()
    w.node("Note", [
        "TurboWan2.1 T2V 1.3B 480p with Sparse-Linear Attention\n\n"
        "This workflow opens as an App: prompt, seed, keep ratio and keep schedule on the right, the video and "
        "the SLA run report as results. 'Graph' at the top left shows the nodes (this note among them).\n\n"
        "Files:\n"
        "- models/diffusion_models: TurboWan2.1-T2V-1.3B-480P.pth from TurboDiffusion (the -quant.pth loads too: "
        "its int8 weights are dequantised at load)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE}\n"
        f"- models/vae_approx: {LIGHT_VAE} (only for the fast decode)\n\n"
        "Load SLA Diffusion Model builds the native Wan model and keeps the checkpoint's SLA weights (proj_l). "
        "Apply Sparse-Linear Attention sets how sparse attention is:\n"
        "- keep_ratio 0.10 is what TurboWan was trained with (~90% sparsity); TurboDiffusion recommends 0.15 for "
        "better quality. Lower = faster, higher = closer to dense.\n"
        "- enabled off = dense attention, for A/B comparisons (the seed is fixed so you can compare).\n\n"
        "Sampler settings follow thu-ml/TurboDiffusion (README and turbodiffusion/inference/wan2.1_t2v_infer.py): "
        "the checkpoint is distilled (rCM) for 1-4 steps without classifier-free guidance, so steps 4, cfg 1.0 "
        "(the negative prompt is unused). Its sampler predicts the clean video and re-noises to the next sigma: "
        "that is ComfyUI's 'lcm' sampler. Its sigmas are 0.988, 0.934, 0.853, 0.609; the 'simple' scheduler with "
        "ModelSamplingSD3 shift 5 gives 1.0, 0.938, 0.833, 0.625, the closest match. 81 frames at 832x480, "
        "16 fps.\n\n"
        "Is it on? SLA Run Report (under the sampler) shows the run report after each run: sparse / dense "
        "self-attention calls, the realised keep and the attention speed-up; Apply Sparse-Linear Attention shows "
        "it too.\n\n" + LIGHT_DECODE_NOTE], x=NOTE_X, y=0, w=NOTE_W, h=900, color=NOTE_COLOR, bgcolor=NOTE_BG)
    loader = w.node("SLADiffusionModelLoader", ["TurboWan2.1-T2V-1.3B-480P.pth", "default"], x=COL_A, y=0,
                    w=COL_W_A, color=SLA_COLOR, bgcolor=SLA_BG)
    sla = w.node("ApplySLA", apply_sla_widgets(keep=0.10), below=loader, h=APPLY_SLA_H, color=SLA_COLOR,
                 bgcolor=SLA_BG,
                 labels={"keep_ratio": "Keep ratio", "keep_schedule": "Keep schedule"})
    ids = _text_to_video(w, loader, sla, 5.0, NEGATIVE, "Negative Prompt (unused at cfg 1)",
                         [42, "fixed", 4, 1.0, "lcm", "simple", 1.0], "video/TurboWan_SLA", labels=True)
    report = w.node("SLARunReport", [], below=ids["ks"], h=RUN_REPORT_H, color=SLA_COLOR, bgcolor=SLA_BG)
    w.link(ids["ms"], 0, report, "model")
    w.link(ids["ks"], 0, report, "samples")
    w.app([(ids["pos"], "text", "What the video shows"),
           (ids["ks"], "seed", "Same seed, same video"),
           (sla, "keep_ratio", "Lower = faster; 0.10 as trained"),
           (sla, "keep_schedule", "Per step, e.g. 0.3 -> 0.1 (optional)")],
          [ids["save"], report])
    return w.to_json()


def wan22_i2v():
    w = Workflow()
    w.node("Note", [
        "TurboWan2.2 I2V A14B 720p (two experts) with Sparse-Linear Attention\n\n"
        f"Start image: Load Image starts with {I2V_IMAGE}, a cartoon the pack copies into ComfyUI/input at "
        "startup, to match the prompt. Load your own start image: drop a picture on Load Image (or click its "
        "upload button), then describe in the positive prompt what should move. WanImageToVideo scales it to "
        "1280x720.\n\n"
        "Files:\n"
        "- models/diffusion_models: TurboWan2.2-I2V-A14B-high-720P.pth and TurboWan2.2-I2V-A14B-low-720P.pth "
        "from TurboDiffusion (-quant.pth files load too; weight_dtype fp8_e4m3fn halves their memory)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE} (Wan2.2 A14B uses the Wan2.1 VAE; it also encodes the start image)\n"
        f"- models/vae_approx: {LIGHT_VAE} (only for the fast decode)\n\n"
        "Each expert has its own Apply Sparse-Linear Attention: the two models never see each other's settings. "
        "Here the high-noise expert (layout and motion) keeps 0.15 of the key blocks, TurboDiffusion's quality "
        "recommendation, and the low-noise expert (detail) 0.10, the trained value; TurboDiffusion itself uses "
        "one value for both (--sla_topk, default 0.1).\n\n"
        "Sampling follows thu-ml/TurboDiffusion (README and turbodiffusion/inference/wan2.2_i2v_infer.py): 4 "
        "distilled steps, cfg 1.0 (negative prompt unused), Euler steps as in its --ode example (use 'lcm' for "
        "its default stochastic sampler), sigmas ~0.995, 0.934, 0.853, 0.609 (ModelSamplingSD3 shift 5 + "
        "'simple' is the closest). It switches to the low-noise expert below t = 0.9, i.e. after step 2 of 4: the "
        "first KSamplerAdvanced runs steps 0-2 and returns its leftover noise, the second runs 2-4 without adding "
        "noise. ApplySLA's start/end percent are by sigma, so both halves agree on the schedule.\n\n"
        + LIGHT_DECODE_NOTE], x=NOTE_X, y=0, w=NOTE_W, h=1000, color=NOTE_COLOR, bgcolor=NOTE_BG)
    hi = w.node("SLADiffusionModelLoader", ["TurboWan2.2-I2V-A14B-high-720P.pth", "default"], x=COL_A, y=0,
                w=COL_W_A, title="Load SLA Diffusion Model (high noise)", color=SLA_COLOR, bgcolor=SLA_BG)
    hi_sla = w.node("ApplySLA", apply_sla_widgets(keep=0.15), below=hi, h=APPLY_SLA_H,
                    title="Apply SLA (high noise expert)",
                    color=SLA_COLOR, bgcolor=SLA_BG)
    hi_shift = w.node("ModelSamplingSD3", [5.0], below=hi_sla)
    w.group("High-noise expert", [hi, hi_sla, hi_shift], GROUP_SLA)
    lo_y = w.bottom(hi_shift) + GROUP_PAD + GAP + GROUP_PAD + GROUP_TITLE + TITLE_H
    lo = w.node("SLADiffusionModelLoader", ["TurboWan2.2-I2V-A14B-low-720P.pth", "default"], x=COL_A, y=lo_y,
                w=COL_W_A, title="Load SLA Diffusion Model (low noise)", color=SLA_COLOR, bgcolor=SLA_BG)
    lo_sla = w.node("ApplySLA", apply_sla_widgets(keep=0.10), below=lo, h=APPLY_SLA_H,
                    title="Apply SLA (low noise expert)",
                    color=SLA_COLOR, bgcolor=SLA_BG)
    lo_shift = w.node("ModelSamplingSD3", [5.0], below=lo_sla)
    w.group("Low-noise expert", [lo, lo_sla, lo_shift], GROUP_SLA)
    clip = w.node("CLIPLoader", [UMT5, "wan", "default"], x=COL_B, y=0, w=COL_W_B)
    pos = w.node("CLIPTextEncode", [I2V_PROMPT], below=clip, h=180, title="Positive Prompt")
    neg = w.node("CLIPTextEncode", [NEGATIVE], below=pos, h=110, title="Negative Prompt (unused at cfg 1)")
    img = w.node("LoadImage", [I2V_IMAGE, "image"], below=neg, h=380, title="Load Image (start image)")
    w.group("Prompt and start image", [clip, pos, neg, img], GROUP_IO)
    vae = w.node("VAELoader", [WAN21_VAE], x=COL_C, y=0, w=COL_W_C + 60, title="Load VAE (Wan 2.1)")
    i2v = w.node("WanImageToVideo", [1280, 720, 81, 1], below=vae)
    ks1 = w.node("KSamplerAdvanced", ["enable", 42, "fixed", 4, 1.0, "euler", "simple", 0, 2, "enable"],
                 below=i2v, title="KSamplerAdvanced (high noise, steps 0-2)")
    ks2 = w.node("KSamplerAdvanced", ["disable", 42, "fixed", 4, 1.0, "euler", "simple", 2, 10000, "disable"],
                 below=ks1, title="KSamplerAdvanced (low noise, steps 2-4)")
    w.group("Image to video, two experts", [vae, i2v, ks1, ks2], GROUP_IO)
    for src, slot, dst, name in ((hi, 0, hi_sla, "model"), (hi_sla, 0, hi_shift, "model"), (lo, 0, lo_sla, "model"),
                                 (lo_sla, 0, lo_shift, "model"), (clip, 0, pos, "clip"), (clip, 0, neg, "clip"),
                                 (pos, 0, i2v, "positive"), (neg, 0, i2v, "negative"), (vae, 0, i2v, "vae"),
                                 (img, 0, i2v, "start_image"), (hi_shift, 0, ks1, "model"), (i2v, 0, ks1, "positive"),
                                 (i2v, 1, ks1, "negative"), (i2v, 2, ks1, "latent_image"), (lo_shift, 0, ks2, "model"),
                                 (i2v, 0, ks2, "positive"), (i2v, 1, ks2, "negative"), (ks1, 0, ks2, "latent_image")):
        w.link(src, slot, dst, name)
    decode_groups(w, ks2, COL_D + 60, 0, "video/TurboWan22_I2V_SLA", vae=vae)
    return w.to_json()


def training_free_wan21():
    w = Workflow()
    w.node("Note", [
        "Training-free SLA on stock Wan2.1 T2V 1.3B\n\n"
        "Files:\n"
        "- models/diffusion_models: wan2.1_t2v_1.3B_fp16.safetensors (or any Wan2.1/2.2 model)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE}\n"
        f"- models/vae_approx: {LIGHT_VAE} (only for the fast decode)\n\n"
        "This model was not fine-tuned for SLA (no proj_l weights), so Apply Sparse-Linear Attention runs plain "
        "block-sparse attention: each query block attends only to its top key blocks and nothing covers the rest. "
        "Settings are conservative:\n"
        "- keep_ratio 0.30 (70% sparsity). Below ~0.2 quality drops visibly without SLA weights.\n"
        "- dense_blocks '0, 29': the first and last of the 30 blocks stay dense.\n"
        "- start_percent 0.20: the first sampling steps (which lay out the video) run dense; SLA starts after "
        "them (thresholds are by sigma).\n"
        "- min_tokens 2048: short sequences run dense (sparse does not pay there).\n\n"
        "Sampler: the stock Wan2.1 settings (30 steps, cfg 6, uni_pc, simple, shift 8). Sparse attention pays at "
        "long sequences: 81 frames at 832x480 is 32 760 tokens. Compare against enabled = off with the same fixed "
        "seed.\n\n" + LIGHT_DECODE_NOTE], x=NOTE_X, y=0, w=NOTE_W, h=880, color=NOTE_COLOR, bgcolor=NOTE_BG)
    unet = w.node("UNETLoader", ["wan2.1_t2v_1.3B_fp16.safetensors", "default"], x=COL_A, y=0, w=COL_W_A)
    sla = w.node("ApplySLA", apply_sla_widgets(keep=0.30, start=0.20, end=1.0, dense_blocks="0, 29"), below=unet,
                 h=APPLY_SLA_H,
                 title="Apply SLA (training-free)", color=SLA_COLOR, bgcolor=SLA_BG)
    _text_to_video(w, unet, sla, 8.0, WAN_NEGATIVE, "Negative Prompt",
                   [42, "fixed", 30, 6.0, "uni_pc", "simple", 1.0], "video/Wan21_SLA_training_free")
    return w.to_json()


# The comparison's branches, left to right and top to bottom in the stitched video: (label, keep, SLA on).
COMPARE_BRANCHES = (("dense (SLA off)", 0.10, False), ("keep 0.20", 0.20, True), ("keep 0.10", 0.10, True),
                    ("keep 0.05", 0.05, True))


def _stitch_2x2(w, decoded, x, y, width, mode=0, suffix="", split_at=None, x2=None):
    """Three ImageStitch nodes making the 2x2 grid of the four branches' frames, and CreateVideo, stacked at x (from
    node ``split_at`` on in a second column at ``x2``); returns their ids."""
    top = w.node("ImageStitch", ["right", True, 8, "white"], x=x, y=y, w=width, mode=mode,
                 title=f"Stitch top: dense | 0.20{suffix}")
    bottom = w.node("ImageStitch", ["right", True, 8, "white"], below=top, mode=mode,
                    title=f"Stitch bottom: 0.10 | 0.05{suffix}")
    if split_at == 2:
        grid = w.node("ImageStitch", ["down", True, 8, "white"], x=x2, y=y, w=width, mode=mode,
                      title=f"Stitch 2x2 grid{suffix}")
    else:
        grid = w.node("ImageStitch", ["down", True, 8, "white"], below=bottom, mode=mode,
                      title=f"Stitch 2x2 grid{suffix}")
    vid = w.node("CreateVideo", CREATE_VIDEO, below=grid, mode=mode)
    for src, dst, name in ((decoded[0], top, "image1"), (decoded[1], top, "image2"), (decoded[2], bottom, "image1"),
                           (decoded[3], bottom, "image2"), (top, grid, "image1"), (bottom, grid, "image2"),
                           (grid, vid, "images")):
        w.link(src, 0, dst, name)
    return [top, bottom, grid, vid]


def turbowan_keep_comparison():
    w = Workflow()
    w.node("Note", [
        "TurboWan2.1 T2V 1.3B: keep 0.05 / 0.10 / 0.20 and dense, side by side\n\n"
        "Files: as in the TurboWan2.1 T2V example (TurboWan2.1-T2V-1.3B-480P.pth, " + UMT5 + ", " + WAN21_VAE +
        "; " + LIGHT_VAE + " in models/vae_approx for the fast decode).\n\n"
        "One model, one prompt, one seed; four Apply Sparse-Linear Attention nodes, each feeding its own KSampler. "
        "The stitched video shows them in a 2x2 grid: top left dense (enabled off), top right keep 0.20, bottom "
        "left keep 0.10 (what TurboWan was trained with), bottom right keep 0.05.\n\n"
        "After a run each Apply SLA node shows its run report: sparse / dense self-attention calls, the realised "
        "keep, and 'attention Nx faster, step ~Mx (est.)' - the attention time measured on a sample of calls "
        "against the dense time it replaced (one dense call per shape is timed once), and the whole step's "
        "speed-up estimated from attention's share of the measured model-call time. The dense branch shows its "
        "attention time.\n\n"
        "Where does quality go? Lower keep is faster; compare the tiles, then try a keep_schedule such as "
        "'0.2 -> 0.05' (more exact attention early, where the layout forms).\n\n" + LIGHT_DECODE_NOTE.replace(
            "decodes with", "decodes all four branches with")], x=NOTE_X, y=0, w=NOTE_W, h=940, color=NOTE_COLOR,
        bgcolor=NOTE_BG)
    loader = w.node("SLADiffusionModelLoader", ["TurboWan2.1-T2V-1.3B-480P.pth", "default"], x=COL_A, y=0,
                    w=COL_W_A, color=SLA_COLOR, bgcolor=SLA_BG)
    shift = w.node("ModelSamplingSD3", [5.0], below=loader)
    clip = w.node("CLIPLoader", [UMT5, "wan", "default"], below=shift)
    pos = w.node("CLIPTextEncode", [T2V_PROMPT], below=clip, h=200, title="Positive Prompt")
    neg = w.node("CLIPTextEncode", [NEGATIVE], below=pos, h=100, title="Negative Prompt (unused at cfg 1)")
    latent = w.node("EmptyHunyuanLatentVideo", [832, 480, 81, 1], below=neg)
    vae = w.node("VAELoader", [WAN21_VAE], below=latent, title="Load VAE (Wan 2.1)")
    w.group("One model, prompt and size", [loader, shift, clip, pos, neg, latent, vae], GROUP_IO)
    w.link(loader, 0, shift, "model")
    w.link(clip, 0, pos, "clip")
    w.link(clip, 0, neg, "clip")
    branch_w = 360
    decoded, samplers, xs = [], [], []
    for i, (label, keep, on) in enumerate(COMPARE_BRANCHES):
        x = COL_B + (branch_w + COL_GAP) * i
        xs.append(x)
        sla = w.node("ApplySLA", apply_sla_widgets(keep=keep, enabled=on), x=x, y=0, w=branch_w, h=APPLY_SLA_H,
                     title=f"Apply SLA ({label})", color=SLA_COLOR, bgcolor=SLA_BG)
        ks = w.node("KSampler", [42, "fixed", 4, 1.0, "lcm", "simple", 1.0], below=sla, title=f"KSampler ({label})")
        dec = w.node("VAEDecode", [], below=ks, title=f"VAE Decode ({label})")
        for src, dst, name in ((shift, sla, "model"), (sla, ks, "model"), (pos, ks, "positive"),
                               (neg, ks, "negative"), (latent, ks, "latent_image"), (ks, dec, "samples"),
                               (vae, dec, "vae")):
            w.link(src, 0, dst, name)
        w.group(label, [sla, ks, dec], GROUP_SLA if on else "#777")
        decoded.append(dec)
        samplers.append(ks)
    sx = xs[-1] + branch_w + COL_GAP
    final = _stitch_2x2(w, decoded, sx, 0, 320)
    save = w.node("SaveVideo", save_video_widgets("video/TurboWan_SLA_keep_comparison"),
                  x=sx + 320 + COL_GAP, y=0, w=520)
    w.link(final[-1], 0, save, "video")
    w.group("2x2 video (full decode)", final + [save], GROUP_FINAL)
    # The fast draft decode: one band under everything above, bypassed.
    # Save Video grows after a run by its video preview: about its width / 1.7 for the 2x2 grid, under it.
    above = max([w.bottom(n["id"]) for n in w.nodes if n["type"] != "Note"] + [w.bottom(save) + 320])
    band_y = above + 2 * GROUP_PAD + GAP + GROUP_TITLE + TITLE_H
    light = w.node("VAELoader", [LIGHT_VAE], x=COL_A, y=band_y, w=COL_W_A, title="Load VAE (lighttaew2_1, fast)",
                   mode=BYPASS)
    fast = []
    for i, (label, _keep, _on) in enumerate(COMPARE_BRANCHES):
        dec = w.node("VAEDecode", [], x=xs[i], y=band_y, w=branch_w, title=f"VAE Decode (fast, {label})",
                     mode=BYPASS)
        w.link(samplers[i], 0, dec, "samples")
        w.link(light, 0, dec, "vae")
        fast.append(dec)
    draft = _stitch_2x2(w, fast, sx, band_y, 320, mode=BYPASS, suffix=" (draft)", split_at=2,
                        x2=sx + 320 + COL_GAP)
    dsave = w.node("SaveVideo", save_video_widgets("video/TurboWan_SLA_keep_comparison_draft"), below=draft[-1],
                   w=520, title="Save Video (draft)", mode=BYPASS)
    w.link(draft[-1], 0, dsave, "video")
    w.group("Fast decode: lighttaew2_1 (draft), all four branches", [light] + fast + draft + [dsave], GROUP_DRAFT)
    return w.to_json()


H3_FIRST, H3_LAST = "sla_example_h3_first_frame.png", "sla_example_h3_last_frame.png"   # workflows/input/
H3_PROMPT = ("A cartoon orange cat in sunglasses rides a red surfboard up the face of a big wave; the wave curls "
             "over and breaks behind it into white foam, the board drops onto calm water and the cat glides on, "
             "raising both arms and cheering. Flat cartoon style, bright sun, clear sky. Audio: the roar of the "
             "breaking wave, spray hissing, then gentle lapping water and the cat's happy \"Wooo!\".")
H3_SIGMA_SHIFT = [6.0, 3.0]   # video, audio: LightX2V's preset for the Turbo-SLA LoRA
# The decode path, stated on the canvas (group titles and the note) and in the README.
H3_DECODE_NOTE = (
    "Decode path: ComfyUI's H3 video VAE decodes the video and its audio VAE the stereo sound (group 'Decode: H3 "
    "video VAE (final)'; the audio decode is shared by both videos). The one light decoder ComfyUI 0.33 loads for H3 "
    f"is taeh3 (models/vae_approx/{H3_LIGHT_VAE}, madebyollin/taehv): the bypassed group 'Fast decode: taeh3 "
    "(draft)' decodes the same latents with it, for drafts (lower quality than the full VAE; 1.6 s against 9.0 s "
    "for 5 s at 768p on an H100). Switch: click the group's title, press Ctrl+B (or its toolbar's ⋮ > Bypass); bypass the final group "
    "the same way to skip the full video decode while drafting. There is no light decoder for the audio.")


def minimax_h3_fl2v():
    w = Workflow()
    w.node("Note", [
        "MiniMax H3 first-last-frame to video, Turbo-SLA LoRA, 4 steps, with Sparse-Linear Attention\n\n"
        "This workflow opens as an App: first and last frame, prompt, seed and keep ratio on the right, the video (with sound) and the SLA "
        "run report as results. 'Graph' at the top left shows the nodes (this note among them).\n\n"
        f"First and last frame: the two Load Image nodes start with {H3_FIRST} and {H3_LAST}, cartoons the pack "
        "copies into ComfyUI/input at startup, to match the prompt. Load your own: drop pictures on them and "
        "describe in the prompt what happens between them (and what is heard). The first frame is stretched to "
        "1344x768, the last cover-cropped.\n\n"
        "Files (ComfyUI's own H3 loaders, ComfyUI 0.33 or newer):\n"
        f"- models/diffusion_models: {H3_MODEL} (Comfy-Org/MiniMax-H3; its model card prefers int8_convrot with "
        "PyTorch cu130, else the fp8_scaled file)\n"
        f"- models/loras: {H3_LORA} (lightx2v/Minimax-h3-Turbo-SLA)\n"
        f"- models/text_encoders: {H3_TEXT}\n"
        f"- models/vae: {H3_VIDEO_VAE} and {H3_AUDIO_VAE}\n"
        f"- models/vae_approx: {H3_LIGHT_VAE} (only for the fast decode)\n\n"
        "The Turbo-SLA LoRA is a plain QKV/FFN LoRA distilled for 4 steps with 85% attention sparsity. Apply "
        "Sparse-Linear Attention runs the router it was trained with, per head over the whole packed "
        "[text | frames | audio | video] sequence of every DiT block:\n"
        "- keep_ratio 0.15 = the training value (85% sparsity); 0.10 is faster, further from training.\n"
        "- block_q 128 as trained; 64 is offered: users report cleaner speech with 64-token query blocks, at a "
        "speed cost.\n"
        "- exact_prefix off = training parity; on = every query also attends the text and frame segments exactly "
        "(a few blocks more per query), may help prompt and speech fidelity.\n"
        "- The 2-layer text refiner stays dense (ComfyUI runs it outside the attention override).\n\n"
        "Sampler settings follow LightX2V's preset for this LoRA (ModelTC/LightX2V configs/minimax_h3/dmd/"
        "minimax_h3_fp8_4step_5090_vae_fp8_sla.json): 4 steps, euler, simple, no CFG (Basic Guider), video shift 6 / "
        "audio shift 3 (ModelSamplingMiniMaxH3), 1344x768 at 24 fps. 124 frames = 5.2 s (the preset renders 362 = "
        "15 s; longer clips gain more from sparse attention).\n\n"
        "Is it on? SLA Run Report (under the sampler) shows the run report after each run; Apply Sparse-Linear "
        "Attention shows it too. Put Apply SLA last before the sampler.\n\n" + H3_DECODE_NOTE],
        x=NOTE_X, y=0, w=NOTE_W, h=1360, color=NOTE_COLOR, bgcolor=NOTE_BG)
    unet = w.node("UNETLoader", [H3_MODEL, "default"], x=COL_A, y=0, w=COL_W_A, title="Load Diffusion Model (H3 FL2V)")
    lora = w.node("LoraLoaderModelOnly", [H3_LORA, 1.0], below=unet, title="LoRA: Turbo-SLA (4 steps)")
    shift = w.node("MiniMaxH3SigmaShift", H3_SIGMA_SHIFT, below=lora)
    sla = w.node("ApplySLA", apply_sla_widgets(keep=0.15, exact_prefix=False), below=shift, h=APPLY_SLA_H,
                 color=SLA_COLOR, bgcolor=SLA_BG, labels={"keep_ratio": "Keep ratio"})
    w.group("Model: H3 + Turbo-SLA LoRA + SLA", [unet, lora, shift, sla], GROUP_SLA)
    clip = w.node("CLIPLoader", [H3_TEXT, "minimax", "default"], x=COL_B, y=0, w=COL_W_B)
    vae = w.node("VAELoader", [H3_VIDEO_VAE], below=clip, title="Load VAE (H3 video)")
    first = w.node("LoadImage", [H3_FIRST, "image"], below=vae, h=330, title="Load Image (first frame)",
                   labels={"image": "First frame"})
    last = w.node("LoadImage", [H3_LAST, "image"], below=first, h=330, title="Load Image (last frame)",
                  labels={"image": "Last frame"})
    h3 = w.node("MiniMaxH3ImageToVideo", [H3_PROMPT, 1344, 768, 124], below=last, h=400,
                labels={"prompt": "Prompt"})
    w.group("Prompt, first and last frame", [clip, vae, first, last, h3], GROUP_IO)
    noise = w.node("RandomNoise", [42, "fixed"], x=COL_C, y=0, w=COL_W_C, labels={"noise_seed": "Seed"})
    sampler = w.node("KSamplerSelect", ["euler"], below=noise)
    sigmas = w.node("BasicScheduler", ["simple", 4, 1.0], below=sampler)
    guider = w.node("BasicGuider", [], below=sigmas, title="Basic Guider (no CFG)")
    ks = w.node("SamplerCustomAdvanced", [], below=guider)
    w.group("Sampler: 4 steps, euler, simple", [noise, sampler, sigmas, guider, ks], GROUP_IO)
    report = w.node("SLARunReport", [], x=COL_C, y=w.bottom(ks) + 2 * GROUP_PAD + GAP + TITLE_H, w=COL_W_C,
                    h=RUN_REPORT_H, color=SLA_COLOR, bgcolor=SLA_BG)
    for src, slot, dst, name in ((unet, 0, lora, "model"), (lora, 0, shift, "model"), (shift, 0, sla, "model"),
                                 (clip, 0, h3, "clip"), (vae, 0, h3, "vae"), (first, 0, h3, "first_frame"),
                                 (last, 0, h3, "last_frame"), (sla, 0, sigmas, "model"), (sla, 0, guider, "model"),
                                 (h3, 0, guider, "conditioning"), (noise, 0, ks, "noise"), (guider, 0, ks, "guider"),
                                 (sampler, 0, ks, "sampler"), (sigmas, 0, ks, "sigmas"), (h3, 1, ks, "latent_image"),
                                 (sla, 0, report, "model"), (ks, 0, report, "samples")):
        w.link(src, slot, dst, name)
    # Decode: the audio once (no light audio decoder), the video by the full H3 VAE and, bypassed, by taeh3.
    width = 340
    avae = w.node("VAELoader", [H3_AUDIO_VAE], x=COL_D, y=0, w=width, title="Load VAE (H3 audio)")
    adec = w.node("VAEDecodeAudio", [], below=avae)
    w.group("Decode audio: H3 audio VAE", [avae, adec], GROUP_FINAL)
    dec = w.node("VAEDecode", [], x=COL_D, y=w.bottom(adec) + 2 * GROUP_PAD + GAP + GROUP_TITLE + TITLE_H, w=width,
                 title="VAE Decode (full)")
    vid = w.node("CreateVideo", [24, 8], below=dec)
    save = w.node("SaveVideo", save_video_widgets("video/MiniMaxH3_TurboSLA"), below=vid)
    w.group("Decode: H3 video VAE (final)", [dec, vid, save], GROUP_FINAL)
    lx = COL_D + width + COL_GAP
    light = w.node("VAELoader", [H3_LIGHT_VAE], x=lx, y=0, w=width, title="Load VAE (taeh3, fast)", mode=BYPASS)
    ldec = w.node("VAEDecode", [], below=light, title="VAE Decode (fast)", mode=BYPASS)
    lvid = w.node("CreateVideo", [24, 8], below=ldec, mode=BYPASS)
    lsave = w.node("SaveVideo", save_video_widgets("video/MiniMaxH3_TurboSLA_draft"), below=lvid,
                   title="Save Video (draft)", mode=BYPASS)
    w.group("Fast decode: taeh3 (draft)", [light, ldec, lvid, lsave], GROUP_DRAFT)
    for src, slot, dst, name in ((ks, 0, adec, "samples"), (avae, 0, adec, "vae"), (ks, 0, dec, "samples"),
                                 (vae, 0, dec, "vae"), (dec, 0, vid, "images"), (adec, 0, vid, "audio"),
                                 (vid, 0, save, "video"), (ks, 0, ldec, "samples"), (light, 0, ldec, "vae"),
                                 (ldec, 0, lvid, "images"), (adec, 0, lvid, "audio"), (lvid, 0, lsave, "video")):
        w.link(src, slot, dst, name)
    w.app([(first, "image", "Where the video starts"),
           (last, "image", "Where the video ends"),
           (h3, "prompt", "Scene, motion and sound"),
           (noise, "noise_seed", "Same seed, same video"),
           (sla, "keep_ratio", "Lower = faster; 0.15 as trained")],
          [save, report])
    return w.to_json()


# File name = the template's title in ComfyUI's templates browser (see the module docstring); A -> Z puts them in
# this order (the H3 one, named on request, before the Wan ones). "*.app.json": opens as an App.
WORKFLOWS = {
    "MiniMaxH3_Turbo_SLA_FL2V.app.json": minimax_h3_fl2v,
    "TurboWan2.1 T2V 1.3B 480p.app.json": turbowan_t2v,
    "TurboWan2.1 T2V keep comparison.json": turbowan_keep_comparison,
    "TurboWan2.2 I2V A14B 720p.json": wan22_i2v,
    "Wan2.1 T2V training-free SLA.json": training_free_wan21,
}
MAIN = "TurboWan2.1 T2V 1.3B 480p.app.json"


def main():
    os.makedirs(OUT, exist_ok=True)
    stale = {f for f in os.listdir(OUT) if f.endswith(".json")} - set(WORKFLOWS)
    for name in sorted(stale):   # renamed workflows: drop the old file and its thumbnail
        os.remove(os.path.join(OUT, name))
        jpg = os.path.join(OUT, name[:-len(".json")] + ".jpg")
        if os.path.exists(jpg):
            os.remove(jpg)
        print(f"removed workflows/{name}")
    for name, fn in WORKFLOWS.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(fn(), f, indent=2)
            f.write("\n")
        print(f"wrote workflows/{name}")


if __name__ == "__main__":
    main()
