"""Write the example workflows in ``workflows/`` (ComfyUI UI format, version 0.4).

    python3 scripts/build_workflows.py          # rewrites workflows/*.json

The JSON files are the product (ComfyUI's templates browser lists ``<pack>/workflows/*.json``); this script only
keeps their layout, links and widget lists consistent. ``tests/test_workflows.py`` checks the result against the
pack's node schemas (and, with COMFYUI_PATH set, against a real ComfyUI's).

Sampler settings of the TurboWan workflows come from thu-ml/TurboDiffusion (README "Inference" and
``turbodiffusion/inference/wan2.1_t2v_infer.py`` / ``wan2.2_i2v_infer.py``): 4 steps (1-4 supported), no
classifier-free guidance (only the positive embedding is used: cfg 1), rCM timesteps ``[atan(sigma_max), 1.5, 1.4,
1.0, 0]`` in TrigFlow converted to rectified-flow sigmas ``sin t / (cos t + sin t)`` = 0.988 (sigma_max 80; 0.995 for
the I2V default 200), 0.934, 0.853, 0.609, 0; each step predicts x0 then re-noises to the next sigma (ComfyUI's
``lcm`` sampler does exactly that for flow models), or with ``--ode`` an Euler step (``euler``). The ``simple``
scheduler with ModelSamplingSD3 shift 5 gives 1.0, 0.938, 0.833, 0.625, 0 for 4 steps, the closest shift. Wan2.2
I2V switches from the high- to the low-noise expert at t < 0.9, i.e. after 2 of the 4 steps. 81 frames, 16 fps.
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
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "ModelSamplingSD3": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyHunyuanLatentVideo": ([], [("LATENT", "LATENT")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "KSamplerAdvanced": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "WanImageToVideo": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                         ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("start_image", "IMAGE")],
                        [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")]),
    "ImageStitch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "Note": ([], []),
}

NOTE_COLOR, NOTE_BG = "#432", "#653"
SLA_COLOR, SLA_BG = "#223", "#335"


class Workflow:
    def __init__(self):
        self.nodes, self.links, self.groups = [], [], []

    def node(self, type_, pos, size, widgets, title=None, color=None, bgcolor=None):
        inputs, outputs = NODE_IO[type_]
        props = {} if type_ == "Note" else {"Node name for S&R": type_}
        # Model loaders: the frontend offers to download each file named in a widget that the user lacks.
        models = [download_entry(v) for v in widgets if isinstance(v, str) and v in MODEL_FILES]
        if models:
            props["models"] = models
        nid = len(self.nodes) + 1
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
             "order": nid - 1, "mode": 0,
             "inputs": [{"name": name, "type": typ, "link": None} for name, typ in inputs],
             "outputs": [{"name": name, "type": typ, "links": [], "slot_index": i}
                         for i, (name, typ) in enumerate(outputs)],
             "properties": props,
             "widgets_values": list(widgets)}
        if title:
            n["title"] = title
        if color:
            n["color"], n["bgcolor"] = color, bgcolor
        self.nodes.append(n)
        return nid

    def link(self, src, src_slot, dst, dst_input):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        lid = len(self.links) + 1
        slot = [i["name"] for i in d["inputs"]].index(dst_input)
        typ = s["outputs"][src_slot]["type"]
        assert d["inputs"][slot]["type"] == typ, (s["type"], d["type"], dst_input)
        s["outputs"][src_slot]["links"].append(lid)
        d["inputs"][slot]["link"] = lid
        self.links.append([lid, src, src_slot, dst, slot, typ])

    def group(self, title, bounding, color="#3f789e"):
        # bounding (x, y, w, h) around node bodies; grow it upwards to leave room for the node and group titles
        x, y, w, h = bounding
        self.groups.append({"title": title, "bounding": [x, y - 40, w, h + 40], "color": color, "font_size": 24,
                            "flags": {}})

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
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [40, 60]}}, "version": 0.4}


def apply_sla_widgets(keep=0.10, start=0.0, end=1.0, dense_blocks="", block_q="128", block_k="64",
                      feature_map="softmax", min_tokens=2048, backend="auto", enabled=True, keep_schedule=""):
    """ApplySLA widgets_values, in the node's input order."""
    return [keep, start, end, dense_blocks, block_q, block_k, feature_map, min_tokens, backend, enabled,
            keep_schedule]


NEGATIVE = ""  # cfg 1: the negative prompt is never evaluated by the distilled TurboWan models
T2V_PROMPT = ("A stylish woman walks down a Tokyo street filled with warm glowing neon and animated city signage. "
              "She wears a black leather jacket, a long red dress, and black boots, and carries a black purse. "
              "The street is damp and reflective, creating a mirror effect of the colorful lights.")
I2V_PROMPT = ("The cat in sunglasses rides the surfboard as a wave lifts it; water sprays past the camera, the "
              "sunlight flickers on the sea, the cat keeps a calm look.")
WAN_NEGATIVE = ("blurry, low quality, static, overexposed, worst quality, jpeg artifacts, deformed, extra fingers, "
                "still picture, messy background")

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21_VAE = "wan_2.1_vae.safetensors"

# Where each model file of the workflows comes from: file name -> (download URL, models/ folder). Written into the
# loader nodes' ``properties.models`` ({name, url, directory}), from which the ComfyUI frontend offers downloads of
# missing files. TurboDiffusion's checkpoints: thu-ml/TurboDiffusion README ("Available Models", wget lines). The
# umT5 text encoder and the Wan 2.1 VAE (and stock Wan2.1 1.3B): Comfy-Org/workflow_templates' Wan templates
# (properties.models of their CLIPLoader / VAELoader / UNETLoader) and ComfyUI_examples' wan page.
TURBO = "https://huggingface.co/TurboDiffusion/{repo}/resolve/main/{file}"
COMFY_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/{folder}/{file}"
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
}


def download_entry(name):
    """One ``properties.models`` entry, the schema the ComfyUI frontend reads: name (= the widget value), url,
    directory (a models/ folder name)."""
    url, directory = MODEL_FILES[name]
    return {"name": name, "url": url, "directory": directory}


def _text_to_video(w, model, sla, shift, negative, neg_title, neg_height, latent_y, sampler, save_prefix):
    """The T2V chain both text-to-video examples share, from the model loader on: ApplySLA -> ModelSamplingSD3 ->
    KSampler -> VAEDecode -> CreateVideo -> SaveVideo. ``model`` and ``sla`` are already placed; the rest is created
    here in one fixed order, so node ids stay stable."""
    shift = w.node("ModelSamplingSD3", (0, 480), (360, 58), [shift])
    clip = w.node("CLIPLoader", (0, 600), (360, 106), [UMT5, "wan", "default"])
    pos = w.node("CLIPTextEncode", (420, 0), (420, 200), [T2V_PROMPT], title="Positive Prompt")
    neg = w.node("CLIPTextEncode", (420, 250), (420, neg_height), [negative], title=neg_title)
    latent = w.node("EmptyHunyuanLatentVideo", (420, latent_y), (320, 130), [832, 480, 81, 1])
    ks = w.node("KSampler", (900, 0), (320, 262), sampler)
    vae = w.node("VAELoader", (900, 320), (320, 58), [WAN21_VAE])
    dec = w.node("VAEDecode", (900, 430), (220, 46), [])
    vid = w.node("CreateVideo", (1280, 0), (280, 78), [16])
    save = w.node("SaveVideo", (1280, 130), (420, 420), [save_prefix, "auto", "auto"])
    for src, dst, name in ((model, sla, "model"), (sla, shift, "model"), (shift, ks, "model"), (clip, pos, "clip"),
                           (clip, neg, "clip"), (pos, ks, "positive"), (neg, ks, "negative"),
                           (latent, ks, "latent_image"), (ks, dec, "samples"), (vae, dec, "vae"),
                           (dec, vid, "images"), (vid, save, "video")):
        w.link(src, 0, dst, name)


def turbowan_t2v():
    w = Workflow()
    w.node("Note", (-420, 0), (380, 640), [
        "TurboWan2.1 T2V 1.3B 480p with Sparse-Linear Attention\n\n"
        "Files:\n"
        "- models/diffusion_models: TurboWan2.1-T2V-1.3B-480P.pth from TurboDiffusion (the -quant.pth loads too: "
        "its int8 weights are dequantised at load)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE}\n\n"
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
        "Is it on? The console prints one 'SLA run: N sparse / M dense self-attention calls, realised keep ...' "
        "line per sampling run."], color=NOTE_COLOR, bgcolor=NOTE_BG)
    loader = w.node("SLADiffusionModelLoader", (0, 0), (360, 82), ["TurboWan2.1-T2V-1.3B-480P.pth", "default"],
                    color=SLA_COLOR, bgcolor=SLA_BG)
    sla = w.node("ApplySLA", (0, 130), (360, 298), apply_sla_widgets(keep=0.10), color=SLA_COLOR, bgcolor=SLA_BG)
    _text_to_video(w, loader, sla, 5.0, NEGATIVE, "Negative Prompt (unused at cfg 1)", 120, 420,
                   [42, "fixed", 4, 1.0, "lcm", "simple", 1.0], "video/TurboWan_SLA")
    w.group("Model (SLA)", (-10, -40, 380, 590), "#335")
    w.group("Prompt and latent", (410, -40, 440, 600))
    return w.to_json()


def wan22_i2v():
    w = Workflow()
    w.node("Note", (-440, 0), (400, 700), [
        "TurboWan2.2 I2V A14B 720p (two experts) with Sparse-Linear Attention\n\n"
        "Files:\n"
        "- models/diffusion_models: TurboWan2.2-I2V-A14B-high-720P.pth and TurboWan2.2-I2V-A14B-low-720P.pth "
        "from TurboDiffusion (-quant.pth files load too; weight_dtype fp8_e4m3fn halves their memory)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE} (Wan2.2 A14B uses the Wan2.1 VAE)\n\n"
        "Each expert has its own Apply Sparse-Linear Attention: the two models never see each other's settings. "
        "Here the high-noise expert (layout and motion) keeps 0.15 of the key blocks, TurboDiffusion's quality "
        "recommendation, and the low-noise expert (detail) 0.10, the trained value; TurboDiffusion itself uses "
        "one value for both (--sla_topk, default 0.1).\n\n"
        "Sampling follows thu-ml/TurboDiffusion (README and turbodiffusion/inference/wan2.2_i2v_infer.py): 4 "
        "distilled steps, cfg 1.0 (negative prompt unused), Euler steps as in its --ode example (use 'lcm' for "
        "its default stochastic sampler), sigmas ~0.995, 0.934, 0.853, 0.609 (ModelSamplingSD3 shift 5 + "
        "'simple' is the closest). It switches to the low-noise expert below t = 0.9, i.e. after step 2 of 4: the "
        "first KSamplerAdvanced runs steps 0-2 and returns its leftover noise, the second runs 2-4 without adding "
        "noise. ApplySLA's start/end percent are by sigma, so both halves agree on the schedule."],
        color=NOTE_COLOR, bgcolor=NOTE_BG)
    hi = w.node("SLADiffusionModelLoader", (0, 0), (380, 82), ["TurboWan2.2-I2V-A14B-high-720P.pth", "default"],
                title="Load SLA Diffusion Model (high noise)", color=SLA_COLOR, bgcolor=SLA_BG)
    hi_sla = w.node("ApplySLA", (0, 130), (380, 298), apply_sla_widgets(keep=0.15),
                    title="Apply SLA (high noise expert)", color=SLA_COLOR, bgcolor=SLA_BG)
    hi_shift = w.node("ModelSamplingSD3", (0, 480), (380, 58), [5.0])
    lo = w.node("SLADiffusionModelLoader", (0, 600), (380, 82), ["TurboWan2.2-I2V-A14B-low-720P.pth", "default"],
                title="Load SLA Diffusion Model (low noise)", color=SLA_COLOR, bgcolor=SLA_BG)
    lo_sla = w.node("ApplySLA", (0, 730), (380, 298), apply_sla_widgets(keep=0.10),
                    title="Apply SLA (low noise expert)", color=SLA_COLOR, bgcolor=SLA_BG)
    lo_shift = w.node("ModelSamplingSD3", (0, 1080), (380, 58), [5.0])
    clip = w.node("CLIPLoader", (440, 0), (380, 106), [UMT5, "wan", "default"])
    pos = w.node("CLIPTextEncode", (440, 150), (420, 180), [I2V_PROMPT], title="Positive Prompt")
    neg = w.node("CLIPTextEncode", (440, 380), (420, 120), [NEGATIVE], title="Negative Prompt (unused at cfg 1)")
    vae = w.node("VAELoader", (440, 550), (380, 58), [WAN21_VAE])
    img = w.node("LoadImage", (440, 660), (380, 380), ["example.png", "image"])
    i2v = w.node("WanImageToVideo", (900, 0), (340, 210), [1280, 720, 81, 1])
    ks1 = w.node("KSamplerAdvanced", (900, 260), (340, 334),
                 ["enable", 42, "fixed", 4, 1.0, "euler", "simple", 0, 2, "enable"],
                 title="KSamplerAdvanced (high noise, steps 0-2)")
    ks2 = w.node("KSamplerAdvanced", (900, 640), (340, 334),
                 ["disable", 42, "fixed", 4, 1.0, "euler", "simple", 2, 10000, "disable"],
                 title="KSamplerAdvanced (low noise, steps 2-4)")
    dec = w.node("VAEDecode", (1300, 0), (220, 46), [])
    vid = w.node("CreateVideo", (1300, 90), (280, 78), [16])
    save = w.node("SaveVideo", (1300, 220), (460, 460), ["video/TurboWan22_I2V_SLA", "auto", "auto"])
    w.link(hi, 0, hi_sla, "model")
    w.link(hi_sla, 0, hi_shift, "model")
    w.link(lo, 0, lo_sla, "model")
    w.link(lo_sla, 0, lo_shift, "model")
    w.link(clip, 0, pos, "clip")
    w.link(clip, 0, neg, "clip")
    w.link(pos, 0, i2v, "positive")
    w.link(neg, 0, i2v, "negative")
    w.link(vae, 0, i2v, "vae")
    w.link(img, 0, i2v, "start_image")
    w.link(hi_shift, 0, ks1, "model")
    w.link(i2v, 0, ks1, "positive")
    w.link(i2v, 1, ks1, "negative")
    w.link(i2v, 2, ks1, "latent_image")
    w.link(lo_shift, 0, ks2, "model")
    w.link(i2v, 0, ks2, "positive")
    w.link(i2v, 1, ks2, "negative")
    w.link(ks1, 0, ks2, "latent_image")
    w.link(ks2, 0, dec, "samples")
    w.link(vae, 0, dec, "vae")
    w.link(dec, 0, vid, "images")
    w.link(vid, 0, save, "video")
    w.group("High-noise expert", (-10, -40, 400, 590), "#335")
    w.group("Low-noise expert", (-10, 560, 400, 590), "#335")
    return w.to_json()


def training_free_wan21():
    w = Workflow()
    w.node("Note", (-440, 0), (400, 640), [
        "Training-free SLA on stock Wan2.1 T2V 1.3B\n\n"
        "Files:\n"
        "- models/diffusion_models: wan2.1_t2v_1.3B_fp16.safetensors (or any Wan2.1/2.2 model)\n"
        f"- models/text_encoders: {UMT5}\n"
        f"- models/vae: {WAN21_VAE}\n\n"
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
        "seed."], color=NOTE_COLOR, bgcolor=NOTE_BG)
    unet = w.node("UNETLoader", (0, 0), (360, 82), ["wan2.1_t2v_1.3B_fp16.safetensors", "default"])
    sla = w.node("ApplySLA", (0, 130), (360, 298),
                 apply_sla_widgets(keep=0.30, start=0.20, end=1.0, dense_blocks="0, 29"),
                 title="Apply SLA (training-free)", color=SLA_COLOR, bgcolor=SLA_BG)
    _text_to_video(w, unet, sla, 8.0, WAN_NEGATIVE, "Negative Prompt", 150, 450,
                   [42, "fixed", 30, 6.0, "uni_pc", "simple", 1.0], "video/Wan21_SLA_training_free")
    w.group("Model (SLA, training-free)", (-10, -40, 380, 590), "#335")
    return w.to_json()


# The comparison's branches, left to right and top to bottom in the stitched video: (label, keep, SLA on).
COMPARE_BRANCHES = (("dense (SLA off)", 0.10, False), ("keep 0.20", 0.20, True), ("keep 0.10", 0.10, True),
                    ("keep 0.05", 0.05, True))


def turbowan_keep_comparison():
    w = Workflow()
    w.node("Note", (-440, 0), (400, 700), [
        "TurboWan2.1 T2V 1.3B: keep 0.05 / 0.10 / 0.20 and dense, side by side\n\n"
        "Files: as in the TurboWan2.1 T2V example (TurboWan2.1-T2V-1.3B-480P.pth, " + UMT5 + ", " + WAN21_VAE + ").\n\n"
        "One model, one prompt, one seed; four Apply Sparse-Linear Attention nodes, each feeding its own KSampler. "
        "The stitched video shows them in a 2x2 grid: top left dense (enabled off), top right keep 0.20, bottom "
        "left keep 0.10 (what TurboWan was trained with), bottom right keep 0.05.\n\n"
        "After a run each Apply SLA node shows its run report: sparse / dense self-attention calls, the realised "
        "keep, and 'attention Nx faster, step ~Mx (est.)' - the attention time measured on a sample of calls "
        "against the dense time it replaced (one dense call per shape is timed once), and the whole step's "
        "speed-up estimated from attention's share of the measured model-call time. The dense branch shows its "
        "attention time.\n\n"
        "Where does quality go? Lower keep is faster; compare the tiles, then try a keep_schedule such as "
        "'0.2 -> 0.05' (more exact attention early, where the layout forms)."], color=NOTE_COLOR, bgcolor=NOTE_BG)
    loader = w.node("SLADiffusionModelLoader", (0, 0), (380, 82), ["TurboWan2.1-T2V-1.3B-480P.pth", "default"],
                    color=SLA_COLOR, bgcolor=SLA_BG)
    shift = w.node("ModelSamplingSD3", (0, 130), (380, 58), [5.0])
    clip = w.node("CLIPLoader", (0, 240), (380, 106), [UMT5, "wan", "default"])
    pos = w.node("CLIPTextEncode", (0, 390), (380, 200), [T2V_PROMPT], title="Positive Prompt")
    neg = w.node("CLIPTextEncode", (0, 640), (380, 100), [NEGATIVE], title="Negative Prompt (unused at cfg 1)")
    latent = w.node("EmptyHunyuanLatentVideo", (0, 790), (380, 130), [832, 480, 81, 1])
    vae = w.node("VAELoader", (0, 970), (380, 58), [WAN21_VAE])
    w.link(loader, 0, shift, "model")
    w.link(clip, 0, pos, "clip")
    w.link(clip, 0, neg, "clip")
    decoded = []
    for i, (label, keep, on) in enumerate(COMPARE_BRANCHES):
        x = 460 + 400 * i
        sla = w.node("ApplySLA", (x, 0), (360, 420), apply_sla_widgets(keep=keep, enabled=on),
                     title=f"Apply SLA ({label})", color=SLA_COLOR, bgcolor=SLA_BG)
        ks = w.node("KSampler", (x, 480), (360, 262), [42, "fixed", 4, 1.0, "lcm", "simple", 1.0],
                    title=f"KSampler ({label})")
        dec = w.node("VAEDecode", (x, 800), (220, 46), [], title=f"VAE Decode ({label})")
        for src, dst, name in ((shift, sla, "model"), (sla, ks, "model"), (pos, ks, "positive"),
                               (neg, ks, "negative"), (latent, ks, "latent_image"), (ks, dec, "samples"),
                               (vae, dec, "vae")):
            w.link(src, 0, dst, name)
        w.group(label, (x - 10, -40, 380, 900), "#335" if on else "#444")
        decoded.append(dec)
    top = w.node("ImageStitch", (2080, 0), (300, 150), ["right", True, 8, "white"], title="Stitch top: dense | 0.20")
    bottom = w.node("ImageStitch", (2080, 200), (300, 150), ["right", True, 8, "white"],
                    title="Stitch bottom: 0.10 | 0.05")
    grid = w.node("ImageStitch", (2080, 400), (300, 150), ["down", True, 8, "white"], title="Stitch 2x2 grid")
    vid = w.node("CreateVideo", (2080, 600), (300, 78), [16])
    save = w.node("SaveVideo", (2420, 0), (520, 420), ["video/TurboWan_SLA_keep_comparison", "auto", "auto"])
    w.link(decoded[0], 0, top, "image1")
    w.link(decoded[1], 0, top, "image2")
    w.link(decoded[2], 0, bottom, "image1")
    w.link(decoded[3], 0, bottom, "image2")
    w.link(top, 0, grid, "image1")
    w.link(bottom, 0, grid, "image2")
    w.link(grid, 0, vid, "images")
    w.link(vid, 0, save, "video")
    return w.to_json()


WORKFLOWS = {
    "TurboWan2.1_T2V_1.3B_480p_SLA.json": turbowan_t2v,
    "TurboWan2.2_I2V_A14B_720p_SLA.json": wan22_i2v,
    "Wan2.1_T2V_training_free_SLA.json": training_free_wan21,
    "TurboWan2.1_T2V_1.3B_SLA_keep_comparison.json": turbowan_keep_comparison,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in WORKFLOWS.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(fn(), f, indent=2)
            f.write("\n")
        print(f"wrote workflows/{name}")


if __name__ == "__main__":
    main()
