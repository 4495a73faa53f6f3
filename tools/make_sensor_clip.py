#!/usr/bin/env python3
"""Make the clip `lookout bench --camera` replays to measure slice reuse (README, "Sensors").

A still 1920x1080 scene, each frame with its own sensor noise (Gaussian, sigma 2 levels) and
its own JPEG compression (quality 85, MJPEG in AVI, as many IP cameras send), plus an object
(a person-sized textured box) that walks in from the left, stops, and stays:

  frames  0-14  the empty scene
  frames 15-24  the object walks in
  frames 25-39  the object stands still

Needs numpy, Pillow and gst-launch-1.0 (gstreamer1.0-tools, plugins-good).

  python3 tools/make_sensor_clip.py --image models/fixtures/images/wide16x9_1280x720.jpg --out clip.avi
"""
import argparse
import pathlib
import subprocess
import tempfile

import numpy as np
from PIL import Image

W, H = 1920, 1080
FPS = 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="the still scene (any size; resized to 1920x1080)")
    parser.add_argument("--out", required=True, help="the clip to write (.avi)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    scene = np.asarray(Image.open(args.image).convert("RGB").resize((W, H), Image.BICUBIC), dtype=np.float32)
    # The object: 160x420 px, a dark coat over lighter legs, with its own fixed texture.
    obj = np.empty((420, 160, 3), np.float32)
    obj[:260] = [40, 45, 70]
    obj[260:] = [90, 80, 70]
    obj += rng.normal(0, 12, obj.shape)
    top = 560
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(40):
            frame = scene.copy()
            if i >= 15:
                x = int(-160 + min(i - 15, 9) * (760 / 9))
                left, right = max(x, 0), min(x + 160, W)
                if right > left:
                    frame[top : top + 420, left:right] = obj[:, left - x : right - x]
            frame += rng.normal(0, 2, frame.shape)
            pixels = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(pathlib.Path(tmp) / f"f{i:03d}.jpg", quality=85)
        subprocess.run(
            [
                "gst-launch-1.0", "-q",
                "multifilesrc", f"location={tmp}/f%03d.jpg", "index=0", f"caps=image/jpeg,framerate={FPS}/1",
                "!", "jpegparse", "!", "avimux", "!", "filesink", f"location={args.out}",
            ],
            check=True,
        )
    print(f"{args.out}: 40 frames, {W}x{H}, {FPS} fps")


if __name__ == "__main__":
    main()
