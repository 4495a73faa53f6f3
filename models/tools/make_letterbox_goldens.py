#!/usr/bin/env python3
"""Generate the goldens for lookout's YOLO preprocessing (pipeline/src/detect/letterbox.rs).

Every expected value comes from the reference code itself, run on the same RGB8 pixels the Rust
test reads:

  * `cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)` for the plain resize cases;
  * Ultralytics' `LetterBox(new_shape=(h, w), auto=False, stride=32)` (what its predictor uses for
    ONNX models: scaleup and center on, grey 114 padding) for the letterbox cases, with the
    geometry taken from `LetterBox.get_params`;
  * the predictor's tensor steps (`torch.from_numpy`, BHWC->BCHW, BGR->RGB flip, `.float()`,
    `.div_(255)`) for the NCHW tensor, and the same in torch float32 followed by ImageNet
    `(x - mean) / std` for the normalised variant;
  * `ultralytics.utils.ops.scale_boxes` for mapping canvas boxes back to the source.

Resize and LetterBox are per-channel operations (the padding is the same in every channel), so
they are run on RGB arrays directly; the script checks that running them on BGR, as the
predictor does after `cv2.imread`, gives the channel-swapped result.

JPEGs are never decoded by the Rust test (decoders differ in their IDCT / upsampling): the repo
photo is decoded here once, by cv2, and stored as a PNG that is the source of its cases.

Output: models/fixtures/letterbox/
  goldens.json       versions, source list, resize / letterbox / tensor / scale_boxes cases
  src_*.png          source images (RGB8, lossless)
  resize_*.png       expected cv2.resize outputs
  lb_*.png           expected letterbox canvases
  nchw_*.f32         expected tensors, little-endian float32, C-order (1, 3, H, W)

Run:   /work/venv/bin/python models/tools/make_letterbox_goldens.py
Needs: opencv-python(-headless), ultralytics, torch, numpy. No network. Deterministic.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import ultralytics
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ops

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "models" / "fixtures" / "letterbox"
PHOTO_JPEG = REPO / "models" / "fixtures" / "images" / "photo_640x480.jpg"


def write_png(path: Path, rgb: np.ndarray) -> None:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok, path
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb), path


# ---------------------------------------------------------------------------------------------
# Sources

def noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth ramps + hard-edged diagonal stripes + a seeded sparse speckle: compresses well
    (unlike noise), yet the ramps put every output pixel on a different pair of values."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = np.where(((x + 2 * y) // 9) % 2 == 0, 40, 215)
    img = np.stack([r, g, b], axis=-1)
    speckle = rng.random((h, w)) < 0.01
    img[speckle] = 255 - img[speckle]
    return img.astype(np.uint8)


def scene(w: int, h: int) -> np.ndarray:
    """A camera-frame-sized synthetic scene with sharp edges (checkerboard, discs, bars)."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255) // (w - 1)
    g = (y * 255) // (h - 1)
    b = np.where(((x // 7) + (y // 5)) % 2 == 0, 30, 225)
    img = np.stack([r, g, b], axis=-1).astype(np.int64)
    for cx, cy, rad, col in [(400, 300, 180, (250, 20, 20)), (1500, 700, 260, (10, 240, 60)), (960, 540, 90, (255, 255, 255))]:
        m = (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad
        img[m] = col
    bars = (x % 97) < 3
    img[bars] = (0, 0, 0)
    return img.astype(np.uint8)


def photo() -> np.ndarray:
    bgr = cv2.imread(str(PHOTO_JPEG), cv2.IMREAD_COLOR)
    assert bgr is not None, PHOTO_JPEG
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sources() -> dict[str, np.ndarray]:
    return {
        "photo_640x480": photo(),
        "scene_1920x1080": scene(1920, 1080),
        "noise_97x61": noise(97, 61, 1),
        "noise_41x29": noise(41, 29, 2),
        "grad_333x217": gradient(333, 217, 3),
        "grad_64x48": gradient(64, 48, 10),
        "strip_1000x1": noise(1000, 1, 4),
        "column_1x250": noise(1, 250, 5),
        "pixel_1x1": noise(1, 1, 6),
        "tiny_2x2": noise(2, 2, 7),
        "tiny_3x1": noise(3, 1, 8),
        "tiny_7x5": noise(7, 5, 9),
    }


# (source, width, height, what it covers)
RESIZE_CASES = [
    ("noise_97x61", 250, 157, "upscale, non-integer factor"),
    ("noise_97x61", 37, 23, "downscale, odd non-integer factor"),
    ("noise_97x61", 150, 20, "non-uniform: up in x, down in y"),
    ("noise_97x61", 194, 122, "exact 2x upscale"),
    ("grad_333x217", 666, 434, "exact 2x upscale, larger"),
    ("grad_333x217", 200, 500, "non-uniform: down in x, up in y"),
    ("grad_333x217", 111, 31, "odd integer factors 3x / 7x"),
    ("grad_333x217", 333, 100, "y only"),
    ("grad_333x217", 150, 217, "x only"),
    ("photo_640x480", 320, 240, "exact 2x downscale (INTER_AREA fast path)"),
    ("photo_640x480", 213, 160, "~3x down, odd"),
    ("photo_640x480", 640, 1, "1-pixel tall output"),
    ("photo_640x480", 1, 480, "1-pixel wide output"),
    ("scene_1920x1080", 640, 360, "exact 3x downscale, camera frame"),
    ("scene_1920x1080", 417, 233, "odd downscale, camera frame"),
    ("scene_1920x1080", 960, 1080, "exact 2x down in x only (stays linear)"),
    ("scene_1920x1080", 960, 540, "exact 2x downscale (INTER_AREA fast path), camera frame"),
    ("strip_1000x1", 640, 1, "1-pixel tall source, down"),
    ("strip_1000x1", 1500, 3, "1-pixel tall source, up"),
    ("column_1x250", 1, 160, "1-pixel wide source, down"),
    ("column_1x250", 5, 400, "1-pixel wide source, up"),
    ("pixel_1x1", 5, 3, "single pixel source"),
    ("tiny_2x2", 7, 7, "2x2 up"),
    ("tiny_2x2", 1, 1, "2x2 -> 1x1 (INTER_AREA fast path)"),
    ("tiny_2x2", 1, 2, "2x2 -> 1x2 (2x in x only)"),
    ("tiny_3x1", 1, 1, "3x1 -> 1x1"),
    ("tiny_3x1", 2, 1, "3x1 -> 2x1"),
    ("tiny_7x5", 3, 2, "tiny down"),
    ("tiny_7x5", 13, 11, "tiny up"),
]

# (source, canvas width, canvas height)
LETTERBOX_CASES = [
    ("photo_640x480", 640, 640),  # r = 1: no resize, pad only
    ("photo_640x480", 320, 320),  # r = 0.5: the INTER_AREA fast path
    ("photo_640x480", 64, 96),
    ("photo_640x480", 640, 384),
    ("scene_1920x1080", 640, 640),  # 1080p camera: exact 3x
    ("scene_1920x1080", 320, 320),
    ("scene_1920x1080", 64, 96),
    ("scene_1920x1080", 640, 384),
    ("noise_41x29", 64, 96),
    ("noise_41x29", 256, 256),
    ("grad_333x217", 320, 320),
    ("grad_333x217", 384, 640),  # tall canvas: pads top and bottom
    ("grad_64x48", 640, 640),  # 10x upscale
    ("strip_1000x1", 640, 640),  # resized height rounds to 1
    ("strip_1000x1", 320, 320),  # resized height rounds to 0, kept at 1
    ("column_1x250", 640, 640),
    ("pixel_1x1", 64, 96),
    ("tiny_7x5", 320, 320),
]

# Letterbox cases whose canvas is also stored as an NCHW tensor.
TENSOR_CASES = [("photo_640x480", 64, 96)]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def predictor_tensor(canvas_bgr: np.ndarray) -> torch.Tensor:
    """ultralytics.engine.predictor.BasePredictor.preprocess for one numpy image, fp32, CPU."""
    im = torch.from_numpy(canvas_bgr).unsqueeze(0)
    im = im.permute(0, 3, 1, 2).contiguous()
    im = im.flip(1)  # BGR to RGB
    return im.float().div_(255)


def boxes_for(cw: int, ch: int) -> list[list[float]]:
    """Canvas-pixel boxes: inside, touching the padding, partly outside, degenerate."""
    return [
        [0.0, 0.0, float(cw), float(ch)],
        [cw * 0.25, ch * 0.3, cw * 0.6, ch * 0.7],
        [cw * 0.1 + 0.37, ch * 0.05 + 0.61, cw * 0.45 + 0.13, ch * 0.95 - 0.29],
        [-5.5, -3.25, cw * 0.2, ch * 0.15],
        [cw * 0.5, ch * 0.5, cw * 0.5, ch * 0.5],
        [cw * 0.9, ch * 0.85, cw + 7.75, ch + 2.5],
    ]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        if old.suffix in (".png", ".f32", ".json"):
            old.unlink()

    srcs = sources()
    source_list = []
    for name, img in srcs.items():
        write_png(OUT / f"src_{name}.png", img)
        source_list.append({"name": name, "file": f"src_{name}.png", "width": img.shape[1], "height": img.shape[0]})

    resize_out = []
    for i, (src, w, h, what) in enumerate(RESIZE_CASES):
        img = srcs[src]
        out = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert out.shape == (h, w, 3), out.shape
        bgr = cv2.resize(np.ascontiguousarray(img[..., ::-1]), (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(bgr[..., ::-1], out), "resize is not per-channel?"
        file = f"resize_{i:02d}_{src}_{w}x{h}.png"
        write_png(OUT / file, out)
        resize_out.append({"source": src, "width": w, "height": h, "covers": what, "expected": file})

    letterbox_out = []
    tensor_out = []
    for src, cw, ch in LETTERBOX_CASES:
        img = srcs[src]
        lb = LetterBox(new_shape=(ch, cw), auto=False, stride=32)
        params = lb.get_params({"img": img})
        canvas = lb(image=img.copy())
        assert canvas.shape == (ch, cw, 3), canvas.shape
        canvas_bgr = LetterBox(new_shape=(ch, cw), auto=False, stride=32)(image=np.ascontiguousarray(img[..., ::-1]))
        assert np.array_equal(canvas_bgr[..., ::-1], canvas)
        file = f"lb_{src}_{cw}x{ch}.png"
        write_png(OUT / file, canvas)

        # scale_boxes(img1_shape=canvas (h, w), boxes, img0_shape=source (h, w)), float32 tensors.
        boxes = boxes_for(cw, ch)
        canvas_boxes = torch.tensor(boxes, dtype=torch.float32)
        mapped = ops.scale_boxes((ch, cw), canvas_boxes.clone(), img.shape)
        r, _ = params["ratio"]
        letterbox_out.append(
            {
                "source": src,
                "canvas_width": cw,
                "canvas_height": ch,
                "r": r,
                "new_unpad": list(params["new_unpad"]),
                "left": params["left"],
                "top": params["top"],
                "right": params["right"],
                "bottom": params["bottom"],
                "resized": bool(img.shape[1::-1] != tuple(params["new_unpad"])),
                "expected": file,
                "boxes_canvas": canvas_boxes.tolist(),
                "boxes_source": mapped.tolist(),
            }
        )

        if (src, cw, ch) in TENSOR_CASES:
            t = predictor_tensor(canvas_bgr)
            assert t.dtype == torch.float32 and tuple(t.shape) == (1, 3, ch, cw)
            tfile = f"nchw_{src}_{cw}x{ch}.f32"
            t.numpy().astype("<f4").tofile(OUT / tfile)
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
            n = (t - mean) / std
            nfile = f"nchw_imagenet_{src}_{cw}x{ch}.f32"
            n.numpy().astype("<f4").tofile(OUT / nfile)
            tensor_out.append({"source": src, "canvas_width": cw, "canvas_height": ch, "yolo": tfile, "imagenet": nfile})

    goldens = {
        "generator": "models/tools/make_letterbox_goldens.py",
        "versions": {
            "opencv": cv2.__version__,
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "letterbox_params": {"auto": False, "scaleup": True, "center": True, "stride": 32, "padding_value": 114, "interpolation": "INTER_LINEAR"},
        "imagenet_mean": IMAGENET_MEAN,
        "imagenet_std": IMAGENET_STD,
        "sources": source_list,
        "resize": resize_out,
        "letterbox": letterbox_out,
        "tensors": tensor_out,
    }
    (OUT / "goldens.json").write_text(json.dumps(goldens, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
