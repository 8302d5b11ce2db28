"""Draw the templates-browser thumbnails: ``workflows/<name>.jpg`` beside each workflow (a clean card per workflow).

    python3 scripts/make_thumbnails.py

ComfyUI's templates browser (frontend 1.49) shows ``<name>.jpg`` in a square box about 260 px wide, scaled to fit:
so each card is square, 512 px, with text at least 24 px (about 12 px as shown) - the title, what the workflow
does, and a small picture of it (the App's inputs, the 2x2 comparison, the start image, the settings). Uses DejaVu
Sans where installed (Debian: fonts-dejavu-core), else Pillow's own font.
"""
from __future__ import annotations

import os
import sys

from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import build_workflows as B  # noqa: E402

SIZE = 512
BG_TOP, BG_BOTTOM = (28, 31, 40), (38, 43, 58)
ACCENT, MUTED, TEXT = (134, 168, 255), (160, 168, 190), (240, 242, 248)
PANEL, PANEL_EDGE, SLA = (47, 52, 68), (74, 82, 104), (70, 80, 160)
DRAFT = (161, 48, 155)
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/Library/Fonts",
             "C:\\Windows\\Fonts")


def font(size, bold=False):
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in FONT_DIRS:
        path = os.path.join(d, name)
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def card(title, subtitle):
    img = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(img)
    for y in range(SIZE):
        t = y / SIZE
        d.line([(0, y), (SIZE, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(BG_TOP, BG_BOTTOM)))
    # the browser lays a "Node graph" / "App" badge over the top-left corner: keep the first 60 px for it
    label, f = "ComfyUI-SLA", font(20, True)
    d.text((SIZE - 28 - d.textlength(label, font=f), 24), label, font=f, fill=ACCENT)
    d.text((28, 62), title, font=font(40, True), fill=TEXT)
    d.text((28, 110), subtitle, font=font(25), fill=MUTED)
    return img, d


def pill(d, box, text, fill=PANEL, size=24, bold=False, color=TEXT):
    d.rounded_rectangle(box, 12, fill=fill, outline=PANEL_EDGE, width=2)
    f = font(size, bold)
    tw = d.textlength(text, font=f)
    d.text(((box[0] + box[2] - tw) / 2, (box[1] + box[3]) / 2 - size * 0.6), text, font=f, fill=color)


def footer(d, text="+ fast draft decode: lighttaew2_1"):
    d.text((28, SIZE - 44), text, font=font(22), fill=(212, 140, 210))


def main_app():
    img, d = card("TurboWan2.1 T2V", "1.3B · 480p · 4 steps · App")
    x0, x1 = 28, SIZE - 28
    d.rounded_rectangle([x0, 150, x1, 452], 16, fill=(33, 36, 46), outline=PANEL_EDGE, width=2)
    y = 166
    for label, widget in (("Prompt", "A stylish woman…"), ("Seed", "42"), ("Keep ratio", None),
                          ("Keep schedule", "0.3 -> 0.1")):
        d.text((x0 + 16, y), label, font=font(23, True), fill=TEXT)
        if widget is None:   # the slider
            d.line([(x0 + 214, y + 15), (x1 - 90, y + 15)], fill=PANEL_EDGE, width=6)
            d.ellipse([x0 + 230, y + 3, x0 + 254, y + 27], fill=ACCENT)
            d.text((x1 - 76, y), "0.10", font=font(24), fill=TEXT)
        else:
            d.rounded_rectangle([x0 + 214, y - 4, x1 - 16, y + 32], 8, fill=PANEL)
            d.text((x0 + 224, y + 1), widget, font=font(22), fill=MUTED)
        y += 54
    pill(d, (x0 + 18, 388, x0 + 170, 436), "▶ Run", fill=(40, 110, 220), size=24, bold=True)
    d.text((x0 + 190, 392), "video + run report", font=font(24), fill=MUTED)
    footer(d)
    return img


def comparison():
    img, d = card("TurboWan2.1 T2V", "keep comparison · one seed")
    x0, y0, w, h, gap = 48, 156, 200, 126, 16
    tiles = (("dense", "SLA off", (60, 60, 70)), ("keep 0.20", "", SLA), ("keep 0.10", "trained", SLA),
             ("keep 0.05", "fastest", SLA))
    for i, (label, sub, fill) in enumerate(tiles):
        x, y = x0 + (i % 2) * (w + gap), y0 + (i // 2) * (h + gap)
        d.rounded_rectangle([x, y, x + w, y + h], 14, fill=fill, outline=PANEL_EDGE, width=2)
        f = font(30, True)
        d.text((x + (w - d.textlength(label, font=f)) / 2, y + 30), label, font=f, fill=TEXT)
        if sub:
            f2 = font(22)
            d.text((x + (w - d.textlength(sub, font=f2)) / 2, y + 76), sub, font=f2, fill=MUTED)
    d.text((28, y0 + 2 * h + gap + 14), "2x2 video + run report per branch", font=font(23), fill=MUTED)
    footer(d)
    return img


def image_to_video():
    img, d = card("TurboWan2.2 I2V", "A14B · 720p · two experts · 4 steps")
    start = Image.open(os.path.join(B.OUT, "input", B.I2V_IMAGE)).convert("RGB").resize((288, 162), Image.LANCZOS)
    img.paste(start, (28, 156))
    d.rounded_rectangle([28, 156, 316, 318], 6, outline=PANEL_EDGE, width=2)
    d.text((28, 324), "start image", font=font(22), fill=MUTED)
    pill(d, (330, 156, SIZE - 28, 228), "high: 0.15", fill=SLA, size=25, bold=True)
    pill(d, (330, 246, SIZE - 28, 318), "low: 0.10", fill=SLA, size=25, bold=True)
    d.text((330, 324), "keep per expert", font=font(22), fill=MUTED)
    d.text((28, 372), "Load your own image, or", font=font(24), fill=TEXT)
    d.text((28, 404), "start from the cartoon", font=font(24), fill=TEXT)
    footer(d)
    return img


def training_free():
    img, d = card("Wan2.1 T2V 1.3B", "training-free SLA · stock weights")
    x0, x1 = 28, SIZE - 28
    for i, (text, fill) in enumerate((("stock Wan2.1 model", PANEL), ("SLA keep 0.30", SLA),
                                      ("dense blocks 0, 29", SLA), ("30 steps · cfg 6", PANEL))):
        y = 156 + i * 72
        pill(d, (x0, y, x1, y + 56), text, fill=fill, size=27, bold=True)
    footer(d)
    return img


def minimax_h3():
    img, d = card("MiniMax H3 FL2V", "Turbo-SLA LoRA · 4 steps · App")
    for i, name in enumerate((B.H3_FIRST, B.H3_LAST)):   # first frame -> last frame
        x = 28 + i * 244
        frame = Image.open(os.path.join(B.OUT, "input", name)).convert("RGB").resize((212, 121), Image.LANCZOS)
        img.paste(frame, (x, 160))
        d.rounded_rectangle([x, 160, x + 212, 281], 6, outline=PANEL_EDGE, width=2)
        d.text((x, 288), ("first", "last")[i] + " frame", font=font(22), fill=MUTED)
    d.text((246, 196), "→", font=font(34, True), fill=ACCENT)
    pill(d, (28, 336, 250, 396), "keep 0.15", fill=SLA, size=27, bold=True)
    pill(d, (266, 336, SIZE - 28, 396), "video + audio", size=25, bold=True)
    d.text((28, 410), "as trained: 85% sparse", font=font(23), fill=MUTED)
    footer(d, "+ fast draft decode: taeh3")
    return img


CARDS = {
    "MiniMaxH3_Turbo_SLA_FL2V.app.json": minimax_h3,
    "TurboWan2.1 T2V 1.3B 480p.app.json": main_app,
    "TurboWan2.1 T2V keep comparison.json": comparison,
    "TurboWan2.2 I2V A14B 720p.json": image_to_video,
    "Wan2.1 T2V training-free SLA.json": training_free,
}


def main():
    assert set(CARDS) == set(B.WORKFLOWS), "a workflow without a thumbnail card (or a card for none)"
    for name, fn in CARDS.items():
        out = os.path.join(B.OUT, name[:-len(".json")] + ".jpg")
        fn().save(out, quality=88, optimize=True)
        print(f"wrote workflows/{os.path.basename(out)} ({os.path.getsize(out) // 1024} KiB)")


if __name__ == "__main__":
    main()
