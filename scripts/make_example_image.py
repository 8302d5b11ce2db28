"""Draw the example images of the image-to-video workflows: a cartoon cat in sunglasses on a surfboard riding a wave
(the Wan2.2 I2V start image), and for MiniMax H3's first-last-frame workflow the same scene at H3's 1344x768 canvas as
its first frame and, as its last frame, the wave broken and the cat gliding on calm water, arms up (flat shapes drawn
here with Pillow, so the pictures are the pack's own, under the pack's license).

    python3 scripts/make_example_image.py        # writes workflows/input/sla_example_*.png

The pack copies ``workflows/input/*`` into ComfyUI's input folder at startup (where no file of that name is there
yet): LoadImage lists only that folder.
"""
from __future__ import annotations

import math
import os

from PIL import Image, ImageDraw, ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "sla_example_surfing_cat.png"
OUT = os.path.join(ROOT, "workflows", "input", NAME)
W, H = 1280, 720          # the workflow's WanImageToVideo size
# MiniMax H3 first / last frame: its 768p canvas (MiniMaxH3ImageToVideo's default 1344x768, so no stretch or crop)
H3_FIRST, H3_LAST = "sla_example_h3_first_frame.png", "sla_example_h3_last_frame.png"
H3_W, H3_H = 1344, 768
S = 2                     # drawn at twice the size, then downsampled (smooth edges)


def lerp(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def rotated(points, cx, cy, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def ellipse_points(cx, cy, rx, ry, n=90):
    return [(cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n)) for i in range(n)]


def draw(width=W, height=H, last=False) -> Image.Image:
    """The surfing cat at ``width`` x ``height``; ``last``: the moment after the ride (wave broken, arms up)."""
    w, h = width * S, height * S
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    horizon = int(h * 0.52)
    for y in range(horizon):                                   # sky
        d.line([(0, y), (w, y)], fill=lerp((64, 150, 230), (190, 228, 250), y / horizon))
    for y in range(horizon, h):                                # sea
        d.line([(0, y), (w, y)], fill=lerp((30, 120, 190), (10, 60, 130), (y - horizon) / (h - horizon)))
    sx, sy = int(w * 0.84), int(h * 0.17)                      # sun with rays
    for i in range(12):
        a = 2 * math.pi * i / 12
        d.polygon([(sx + 150 * math.cos(a - 0.09), sy + 150 * math.sin(a - 0.09)),
                   (sx + 230 * math.cos(a), sy + 230 * math.sin(a)),
                   (sx + 150 * math.cos(a + 0.09), sy + 150 * math.sin(a + 0.09))], fill=(255, 226, 120))
    d.ellipse([sx - 120, sy - 120, sx + 120, sy + 120], fill=(255, 214, 70))
    for i, (x0, y0) in enumerate([(0.1, 0.14), (0.36, 0.08), (0.6, 0.2)]):   # clouds
        cx, cy = int(w * x0), int(h * y0)
        for dx, dy, r in ((0, 0, 60), (70, -30, 75), (150, 0, 60), (75, 20, 60)):
            d.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=(250, 252, 255))
    for i in range(9):                                          # sun glitter on the sea
        y = horizon + 40 + i * 70
        x = sx - 60 + (i % 3) * 40
        d.line([(x - 90 + i * 6, y), (x + 90 - i * 6, y)], fill=(150, 210, 245), width=10)
    if not last:
        # the wave: a big swell rising from the right, curling over, with foam
        wave = [(w * 0.30, h), (w * 0.42, h * 0.80), (w * 0.55, h * 0.66), (w * 0.68, h * 0.50), (w * 0.80, h * 0.38),
                (w * 0.92, h * 0.33), (w * 1.02, h * 0.36), (w * 1.02, h)]
        d.polygon(wave, fill=(25, 105, 175))
        d.polygon([(w * 0.45, h), (w * 0.60, h * 0.74), (w * 0.74, h * 0.55), (w * 0.88, h * 0.45), (w * 1.02, h * 0.47),
                   (w * 1.02, h)], fill=(18, 85, 150))
        lip = [(w * 0.66, h * 0.52), (w * 0.78, h * 0.38), (w * 0.92, h * 0.31), (w * 1.02, h * 0.33),
               (w * 1.02, h * 0.39), (w * 0.93, h * 0.37), (w * 0.82, h * 0.43), (w * 0.71, h * 0.53)]
        d.polygon(lip, fill=(245, 250, 255))
        for x, y, r in ((0.70, 0.50, 26), (0.75, 0.44, 30), (0.81, 0.39, 34), (0.87, 0.35, 30), (0.93, 0.32, 28),
                        (0.99, 0.33, 30)):
            d.ellipse([w * x - r, h * y - r, w * x + r, h * y + r], fill=(245, 250, 255))
        for i in range(40):                                         # spray
            t = i / 40
            x = w * (0.52 + 0.4 * t) + 60 * math.sin(i * 2.3)
            y = h * (0.30 + 0.18 * math.cos(i * 1.7)) - 40 * t
            r = 6 + (i * 7) % 12
            d.ellipse([x - r, y - r, x + r, y + r], fill=(235, 246, 255))
    else:
        # the wave has broken: a low band of foam rolling out on the right
        d.polygon([(w * 0.55, h), (w * 0.70, h * 0.86), (w * 0.86, h * 0.80), (w * 1.02, h * 0.78), (w * 1.02, h)],
                  fill=(40, 125, 190))
        for i in range(14):
            x, y, r = w * (0.60 + 0.03 * i), h * (0.84 - 0.004 * i) + 12 * math.sin(i * 1.9), 26 + (i * 5) % 14
            d.ellipse([x - r, y - r, x + r, y + r], fill=(245, 250, 255))
    # surfboard, tilted up the wave face
    bx, by, tilt = (w * 0.36, h * 0.80, -3) if last else (w * 0.47, h * 0.70, -17)
    board = rotated(ellipse_points(bx, by, 330, 52), bx, by, tilt)
    d.polygon(board, fill=(228, 72, 52))
    d.line(rotated([(bx - 300, by), (bx + 300, by)], bx, by, tilt), fill=(255, 240, 225), width=14)
    # the cat (orange tabby), standing on the board
    cx, cy = (w * 0.36, h * 0.62) if last else (w * 0.46, h * 0.52)
    orange, dark, cream = (240, 150, 60), (190, 100, 35), (255, 230, 190)
    d.line([(cx - 110, cy + 140), (cx - 210, cy + 150), (cx - 270, cy + 100), (cx - 285, cy + 40)],
           fill=orange, width=34, joint="curve")                                              # tail
    d.ellipse([cx - 150, cy - 60, cx + 150, cy + 170], fill=orange)                           # body
    d.ellipse([cx - 80, cy - 10, cx + 80, cy + 150], fill=cream)                              # belly
    for lx in (-95, 45):                                                                       # legs
        d.rounded_rectangle([cx + lx, cy + 120, cx + lx + 55, cy + 215], 24, fill=orange)
        d.ellipse([cx + lx - 8, cy + 190, cx + lx + 66, cy + 235], fill=cream)
    reach, lift = (1.3, 170) if last else (1.55, 30)                          # arms up, or out balancing
    for ax in (-150, 150):
        d.line([(cx + ax * 0.8, cy + 10), (cx + ax * reach, cy - lift)], fill=orange, width=46)
        d.ellipse([cx + ax * reach - 30, cy - lift - 30, cx + ax * reach + 30, cy - lift + 30], fill=cream)
    hx, hy, hr = cx, cy - 150, 125                                                             # head
    for ex in (-1, 1):                                                                         # ears
        d.polygon([(hx + ex * 115, hy - 40), (hx + ex * 95, hy - 175), (hx + ex * 20, hy - 105)], fill=orange)
        d.polygon([(hx + ex * 95, hy - 60), (hx + ex * 88, hy - 140), (hx + ex * 45, hy - 100)], fill=(250, 170, 160))
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=orange)
    for i in (-1, 0, 1):                                                                       # stripes
        d.line([(hx + i * 40, hy - hr + 8), (hx + i * 30, hy - hr + 55)], fill=dark, width=14)
    d.ellipse([hx - 70, hy + 10, hx + 70, hy + 110], fill=cream)                              # muzzle
    d.polygon([(hx - 16, hy + 30), (hx + 16, hy + 30), (hx, hy + 48)], fill=(225, 95, 110))   # nose
    d.arc([hx - 40, hy + 30, hx, hy + 80], 20, 160, fill=(90, 50, 30), width=6)              # calm smile
    d.arc([hx, hy + 30, hx + 40, hy + 80], 20, 160, fill=(90, 50, 30), width=6)
    for sgn in (-1, 1):                                                                        # whiskers
        for k in (-1, 0, 1):
            d.line([(hx + sgn * 60, hy + 60 + k * 12), (hx + sgn * 175, hy + 45 + k * 28)], fill=(70, 40, 25),
                   width=4)
    # sunglasses
    d.line([(hx - 120, hy - 25), (hx + 120, hy - 25)], fill=(20, 20, 25), width=14)
    for ex in (-1, 1):
        lens = [hx + ex * 62 - 52, hy - 42, hx + ex * 62 + 52, hy + 22]
        d.rounded_rectangle(lens, 26, fill=(20, 22, 30))
        d.line([(hx + ex * 62 - 30, hy - 30), (hx + ex * 62 - 5, hy - 5)], fill=(110, 140, 190), width=8)
    img = img.filter(ImageFilter.SMOOTH)
    return img.resize((width, height), Image.LANCZOS)


def save(img: Image.Image, path: str) -> None:
    img = img.quantize(colors=96, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
    img.save(path, optimize=True)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) // 1024} KiB)")


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save(draw(), OUT)
    save(draw(H3_W, H3_H), os.path.join(os.path.dirname(OUT), H3_FIRST))
    save(draw(H3_W, H3_H, last=True), os.path.join(os.path.dirname(OUT), H3_LAST))


if __name__ == "__main__":
    main()
