#!/usr/bin/env python3
"""Generate the goldens for lookout's Rust image preprocessing (pipeline/src/image).

Every expected value is produced by the reference code itself: Pillow for
decoding / resizing and HF transformers' `MiniCPMV4_6ImageProcessorPil` (the
PIL backend) for slicing, normalisation and patch layout; the placeholder text
comes from `MiniCPMV4_6Processor.replace_image_token` / `_prepend_local_ids`
called on a stand-in `self` that only carries the token strings (the real
processor needs the 248k-token tokenizer and torchvision, which we do not have).

Output: models/fixtures/image-preproc/
  goldens.json            versions, resize / pipeline / decode / prompt cases
  geometry.json           grid + target sizes for many image sizes and configs
  inputs/*.{png,jpg,webp} small encoded inputs for the decoder tests
  expected/*.png          expected u8 pixels (PNG = lossless, compact)

Synthetic images ("synth") are generated procedurally with integer maths that
the Rust test reproduces exactly (see `synth` below and `synth` in
pipeline/tests/image_preprocess.rs), so big inputs never need to be stored.

Run:  python3 models/tools/make_image_goldens.py
Needs: transformers (>= 5.23, with minicpmv4_6), pillow, numpy.
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps

import transformers
from transformers import MiniCPMV4_6ImageProcessorPil, MiniCPMV4_6Processor

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "image-preproc"
INPUTS = ROOT / "inputs"
EXPECTED = ROOT / "expected"

# Token strings of the MiniCPM-V 4.6 tokenizer (tokenizer_config.json
# extra_special_tokens); only used to render placeholder text.
TOKENS = dict(
    image_token="<|image_pad|>",
    image_start_token="<image>",
    image_end_token="</image>",
    slice_start_token="<slice>",
    slice_end_token="</slice>",
    image_id_start_token="<image_id>",
    image_id_end_token="</image_id>",
)


def synth(w: int, h: int, seed: int) -> np.ndarray:
    """Deterministic RGB test pattern (H, W, 3) uint8: gradients, hard 0/255
    stripes (to exercise bicubic overshoot + clipping), a checkerboard and a
    small multiplicative texture. Mirrored exactly in the Rust tests."""
    x = np.arange(w, dtype=np.int64)[None, :]
    y = np.arange(h, dtype=np.int64)[:, None]
    r = np.broadcast_to(x * 255 // max(w - 1, 1), (h, w)).copy()
    r[:, (np.arange(w) % 11) == 5] = 0
    r[:, (np.arange(w) % 11) == 6] = 255
    g = np.broadcast_to((y * 255 // max(h - 1, 1) + seed * 37) % 256, (h, w))
    b = np.where(((x // 7) + (y // 5)) % 2 == 0, 200, 30) + (x * y + seed) % 17
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", optimize=True)


def tensor_to_u8(pv: np.ndarray) -> np.ndarray:
    """Invert rescale+normalise (mean=std=0.5) and check it is exact, so the
    float tensor can be stored losslessly as u8."""
    u8 = np.rint((pv.astype(np.float64) * 0.5 + 0.5) * 255.0)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    rescaled = (u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    back = (rescaled - np.float32(0.5)) / np.float32(0.5)
    assert np.array_equal(back, pv), "normalisation is not the expected affine map"
    return u8


def make_processor(**kw) -> MiniCPMV4_6ImageProcessorPil:
    return MiniCPMV4_6ImageProcessorPil(**kw)


def run_processor(proc, image, **kw):
    return proc(image, return_tensors="np", **kw)


# --------------------------------------------------------------------------
# Resize (Pillow BICUBIC) goldens


RESIZE_CASES = [
    # (src_w, src_h, dst_w, dst_h, seed)
    (64, 48, 32, 24, 1),  # exact 2x down
    (97, 61, 40, 150, 2),  # down x, up y
    (50, 50, 123, 77, 3),  # upscale, odd ratios
    (300, 200, 112, 56, 4),  # strong downscale
    (17, 13, 56, 56, 5),  # tiny -> min size
    (1, 1, 56, 56, 6),  # single pixel
    (2, 3, 56, 112, 7),
    (320, 240, 224, 168, 8),
    (1000, 10, 56, 56, 9),  # extreme aspect
    (333, 777, 168, 392, 10),
    (200, 100, 200, 57, 11),  # vertical pass only
    (100, 200, 37, 200, 12),  # horizontal pass only
    (640, 480, 97, 31, 13),  # large factor (support > 20 taps)
    (45, 45, 45, 45, 14),  # identity
    # Pillow >= 13 runs the vertical pass first when the height shrinks by
    # more than twice as many pixels as the width; these straddle that rule.
    (60, 400, 50, 100, 15),  # vertical first
    (120, 100, 100, 50, 16),  # vertical first, wide input
    (100, 200, 50, 100, 17),  # 100 == 2 * 50: not "more than", horizontal first
    (100, 300, 50, 150, 18),  # vertical first
    (333, 777, 168, 392, 19),  # vertical first, equal scale factors
]


def random_resize_cases(n: int = 40):
    """Random small size pairs (fixed seed) to cover both pass orders and
    up/down mixes; sources are synth images."""
    rng = np.random.default_rng(1234)
    cases = []
    for i in range(n):
        sw, sh = (int(v) for v in rng.integers(1, 160, 2))
        dw, dh = (int(v) for v in rng.integers(1, 64, 2))
        cases.append((sw, sh, dw, dh, 100 + i))
    return cases


def resize_goldens():
    out = []
    for i, (sw, sh, dw, dh, seed) in enumerate(RESIZE_CASES + random_resize_cases()):
        src = Image.fromarray(synth(sw, sh, seed))
        dst = np.array(src.resize((dw, dh), resample=Image.Resampling.BICUBIC))
        name = f"resize_{i:02d}.png"
        save_png(EXPECTED / name, dst)
        out.append(dict(src_w=sw, src_h=sh, dst_w=dw, dst_h=dh, seed=seed, expected=f"expected/{name}"))
    return out


# --------------------------------------------------------------------------
# Full processor goldens (pixels)


PIPELINE_CASES = [
    # name, synth (w, h, seed), processor kwargs
    ("slices_112", (300, 200, 21), dict(scale_resolution=112, max_slice_nums=9)),
    ("tall_112_4x", (90, 400, 22), dict(scale_resolution=112, max_slice_nums=9, downsample_mode="4x")),
    ("upscale_default", (120, 90, 23), dict()),
    ("slices_224", (700, 500, 24), dict(scale_resolution=224, max_slice_nums=9)),
    ("noslice_mode", (500, 260, 25), dict(scale_resolution=112, slice_mode=False)),
    ("tiny_default", (20, 11, 26), dict()),
]


def pipeline_goldens():
    cases = []
    for name, (w, h, seed), kw in PIPELINE_CASES:
        proc = make_processor(**kw)
        img = Image.fromarray(synth(w, h, seed))
        res = run_processor(proc, img)
        pv = res["pixel_values"]  # (1, 3, patch, L)
        assert pv.dtype == np.float32 and pv.ndim == 4 and pv.shape[0] == 1
        u8 = tensor_to_u8(pv[0])  # (3, patch, L)
        c, p, length = u8.shape
        file = f"pipeline_{name}.png"
        save_png(EXPECTED / file, u8.reshape(c * p, length))  # grey image, rows = (channel, patch row)
        cases.append(
            dict(
                name=name,
                synth=dict(w=w, h=h, seed=seed),
                processor_kwargs=kw,
                pixel_values_shape=list(pv.shape),
                target_sizes=res["target_sizes"].tolist(),
                grid=[int(v) for v in res["grids"][0]],
                num_patches=int(res["num_patches_per_image"][0]),
                expected=f"expected/{file}",
            )
        )
    return cases


# --------------------------------------------------------------------------
# Geometry goldens (no pixels stored)


GEOMETRY_SIZES = [
    (1, 1), (10, 10), (20, 11), (55, 55), (56, 56), (57, 30), (100, 100),
    (447, 448), (448, 448), (449, 449), (500, 500), (896, 896), (1000, 1000), (1344, 1344),
    (640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720), (1920, 1080), (1080, 1920),
    (3840, 2160), (4000, 3000), (3000, 4000), (2048, 1536),
    (100, 2000), (300, 5000), (20, 4000), (60, 1200), (2000, 100), (5000, 300), (4000, 20),
    (1200, 60), (1001, 999), (333, 777), (1500, 1499), (10000, 10), (2, 3000), (900, 1700), (2560, 1080),
]

GEOMETRY_CONFIGS = [
    dict(max_slice_nums=1),
    dict(max_slice_nums=2),
    dict(max_slice_nums=4),
    dict(max_slice_nums=9),
    dict(max_slice_nums=16),
    dict(max_slice_nums=36),
    dict(max_slice_nums=9, downsample_mode="4x"),
    dict(max_slice_nums=36, downsample_mode="4x"),
    dict(max_slice_nums=9, scale_resolution=224),
    dict(max_slice_nums=9, slice_mode=False),
]


def geometry_goldens():
    procs = [make_processor(**cfg) for cfg in GEOMETRY_CONFIGS]
    cases = []
    for w, h in GEOMETRY_SIZES:
        img = Image.new("RGB", (w, h), (0, 0, 0))
        for cfg, proc in zip(GEOMETRY_CONFIGS, procs):
            res = run_processor(proc, img)
            ts = res["target_sizes"].tolist()
            cases.append(
                dict(
                    w=w,
                    h=h,
                    config=cfg,
                    grid=[int(v) for v in res["grids"][0]],
                    target_sizes=ts,
                    pixel_values_len=int(res["pixel_values"].shape[-1]),
                )
            )
    return cases


# --------------------------------------------------------------------------
# Placeholder prompt goldens


def _fake_processor_self(slice_mode: bool):
    return types.SimpleNamespace(slice_mode=slice_mode, **TOKENS)


def placeholder_text(processor_kwargs, images, text, use_image_id):
    """Exactly what MiniCPMV4_6Processor.__call__ does to the text, minus
    tokenisation: replace_image_token per image, _prepend_local_ids, then the
    in-order substitution of get_text_with_replacements."""
    proc = make_processor(**processor_kwargs)
    res = run_processor(proc, images)
    fake = _fake_processor_self(proc.slice_mode)
    divisor = 4 if proc.downsample_mode == "4x" else 16
    reps = [
        MiniCPMV4_6Processor.replace_image_token(fake, res, image_idx=i, image_token_divisor=divisor)
        for i in range(len(images))
    ]
    if use_image_id:
        reps = MiniCPMV4_6Processor._prepend_local_ids(fake, [text], reps, TOKENS["image_token"])
    parts = text.split(TOKENS["image_token"])
    assert len(parts) == len(reps) + 1
    expanded = parts[0] + "".join(r + p for r, p in zip(reps, parts[1:]))
    return expanded, res


PROMPT_CASES = [
    ("single_sliced_112", dict(scale_resolution=112, max_slice_nums=9), [(300, 200)], True),
    ("single_sliced_112_no_id", dict(scale_resolution=112, max_slice_nums=9), [(300, 200)], False),
    ("two_images_4x", dict(scale_resolution=112, max_slice_nums=4, downsample_mode="4x"), [(300, 200), (60, 90)], True),
    ("no_slices", dict(scale_resolution=112, max_slice_nums=1), [(300, 200)], True),
    ("default_1920x1080", dict(), [(1920, 1080)], True),
    ("tall_default", dict(), [(400, 1500)], True),
]


def prompt_goldens():
    cases = []
    for name, kw, sizes, use_id in PROMPT_CASES:
        imgs = [Image.new("RGB", s) for s in sizes]
        text = "Look: " + " and ".join(TOKENS["image_token"] for _ in sizes) + "\nWhat differs?"
        expanded, res = placeholder_text(kw, imgs, text, use_id)
        cases.append(
            dict(
                name=name,
                processor_kwargs=kw,
                sizes=[list(s) for s in sizes],
                use_image_id=use_id,
                text=text,
                expected=expanded,
                target_sizes=res["target_sizes"].tolist(),
            )
        )
    return cases


# --------------------------------------------------------------------------
# Decoder goldens


def pil_reference_rgb(data: bytes) -> np.ndarray:
    """What HF sees for an encoded image: PIL.Image.open + exif_transpose
    (as transformers.image_utils.load_image) and then the PIL backend's
    convert_to_rgb (alpha composited over white)."""
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    return transformers.image_transforms.convert_to_rgb(im, return_numpy=True)


def exif_with_orientation(o: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def orient_pattern() -> np.ndarray:
    """12x8 image with a distinct colour per quadrant + a marker pixel, so any
    wrong flip / rotation is visible."""
    a = np.zeros((8, 12, 3), dtype=np.uint8)
    a[:4, :6] = (255, 0, 0)
    a[:4, 6:] = (0, 255, 0)
    a[4:, :6] = (0, 0, 255)
    a[4:, 6:] = (255, 255, 0)
    a[0, 0] = (255, 255, 255)
    return a


def encode(arr_or_img, fmt: str, **kw) -> bytes:
    im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    b = io.BytesIO()
    im.save(b, format=fmt, **kw)
    return b.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(w: int, h: int) -> bytes:
    """A syntactically valid PNG header announcing w x h and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_with_dims(data: bytes, w: int, h: int) -> bytes:
    """Patch the SOF0 frame size of a baseline JPEG."""
    b = bytearray(data)
    i = 2
    while i < len(b):
        assert b[i] == 0xFF
        marker = b[i + 1]
        seg_len = struct.unpack(">H", b[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            b[i + 5 : i + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        i += 2 + seg_len
    raise ValueError("no SOF")


def decode_goldens():
    INPUTS.mkdir(parents=True, exist_ok=True)
    cases = []
    rng = np.random.default_rng(7)

    def add(name, data, kind="pixels", note="", tolerance_hint=0):
        path = INPUTS / name
        path.write_bytes(data)
        entry = dict(name=name, input=f"inputs/{name}", kind=kind, note=note)
        if kind == "pixels":
            ref = pil_reference_rgb(data)
            exp_name = name.replace(".", "_") + "_rgb.png"
            save_png(EXPECTED / exp_name, ref)
            entry.update(expected=f"expected/{exp_name}", width=int(ref.shape[1]), height=int(ref.shape[0]))
        else:
            try:
                pil_reference_rgb(data)
                entry["pil_result"] = "ok"
            except Exception as e:  # noqa: BLE001 - we record what PIL says
                # Drop object addresses so reruns are byte-identical.
                entry["pil_result"] = re.sub(r" at 0x[0-9a-f]+", "", f"{type(e).__name__}: {e}")
        cases.append(entry)

    base = synth(40, 30, 31)
    add("rgb.png", encode(base, "PNG"), note="8-bit RGB PNG")
    grey = (base[..., 0] // 2 + base[..., 1] // 2).astype(np.uint8)
    add("grey.png", encode(Image.fromarray(grey, "L"), "PNG"), note="L")
    la = np.stack([grey, (np.arange(40)[None, :] * 6 + np.arange(30)[:, None]).astype(np.uint8)], -1)
    add("grey_alpha.png", encode(Image.fromarray(la, "LA"), "PNG"), note="LA, composited over white")
    # RGBA with every (value, alpha) combination: checks the exact compositing arithmetic.
    v = np.arange(256, dtype=np.uint8)
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[..., 0] = v[None, :]
    rgba[..., 1] = 255 - v[None, :]
    rgba[..., 2] = (v[None, :].astype(np.int32) * 7 % 256).astype(np.uint8)
    rgba[..., 3] = v[:, None]
    add("rgba_all_alpha.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"), note="RGBA, all value x alpha pairs")
    pal = Image.fromarray(base).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    add("palette.png", encode(pal, "PNG"), note="P without transparency")
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    add("palette_trns.png", encode(pal_t, "PNG", transparency=3), note="P with tRNS index 3 -> white")
    one_bit = Image.fromarray((grey > 100).astype(np.uint8) * 255, "L").convert("1")
    add("bilevel.png", encode(one_bit, "PNG"), note="1-bit")
    rgb16 = (synth(16, 12, 32).astype(np.uint16) * 257 + rng.integers(0, 256, (12, 16, 3))).astype(">u2")
    # 16-bit RGB PNG via raw writer (Pillow cannot write RGB;16).
    raw = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(12))
    png16 = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 12, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )
    add("rgb16.png", png16, note="16-bit RGB: Pillow keeps the high byte")

    add("q95_444.jpg", encode(base, "JPEG", quality=95, subsampling=0), note="JPEG 4:4:4")
    add("q85_420.jpg", encode(synth(64, 48, 33), "JPEG", quality=85, subsampling=2), note="JPEG 4:2:0")
    add("odd_420.jpg", encode(synth(37, 23, 34), "JPEG", quality=90, subsampling=2), note="JPEG 4:2:0 odd size")
    add("grey.jpg", encode(Image.fromarray(grey, "L"), "JPEG", quality=90), note="grey JPEG")
    add("progressive.jpg", encode(synth(48, 32, 35), "JPEG", quality=90, progressive=True), note="progressive")

    add("lossless.webp", encode(base, "WEBP", lossless=True), note="lossless WebP")
    add("lossless_alpha.webp", encode(Image.fromarray(rgba[::8, ::8].copy(), "RGBA"), "WEBP", lossless=True), note="lossless WebP with alpha")
    add("lossy.webp", encode(synth(48, 32, 36), "WEBP", quality=90), note="lossy WebP (VP8)")

    pat = orient_pattern()
    for o in range(1, 9):
        add(f"orient_{o}.png", encode(pat, "PNG", exif=exif_with_orientation(o)), note=f"PNG eXIf orientation {o}")
    for o in (3, 6, 8):
        add(f"orient_{o}.jpg", encode(pat, "JPEG", quality=95, subsampling=0, exif=exif_with_orientation(o)), note=f"JPEG EXIF orientation {o}")
    add("orient_6.webp", encode(pat, "WEBP", lossless=True, exif=exif_with_orientation(6)), note="WebP EXIF orientation 6")

    # Error cases (kind="error"): PIL's own behaviour recorded for information.
    jpg = encode(synth(64, 48, 37), "JPEG", quality=90)
    add("truncated.jpg", jpg[: len(jpg) // 2], kind="error", note="JPEG cut in half")
    png = encode(synth(64, 48, 38), "PNG")
    add("truncated.png", png[: len(png) // 2], kind="error", note="PNG cut in half")
    webp = encode(synth(64, 48, 39), "WEBP", quality=80)
    add("truncated.webp", webp[: len(webp) // 2], kind="error", note="WebP cut in half")
    add("garbage.bin", bytes(rng.integers(0, 256, 300, dtype=np.uint8)), kind="error", note="random bytes")
    corrupt = bytearray(png)
    corrupt[40:60] = b"\xff" * 20
    add("corrupt.png", bytes(corrupt), kind="error", note="PNG with clobbered chunk data")
    add("huge_dims.png", png_header_only(100_000, 100_000), kind="error", note="10 Gpx announced")
    add("zero_width.png", png_header_only(0, 10), kind="error", note="width 0")
    add("huge_dims.jpg", jpeg_with_dims(jpg, 60000, 60000), kind="error", note="3.6 Gpx announced")
    add("empty.bin", b"", kind="error", note="no bytes")
    return cases


def main() -> int:
    ROOT.mkdir(parents=True, exist_ok=True)
    for d in (INPUTS, EXPECTED):
        if d.exists():
            for f in d.iterdir():
                f.unlink()
    goldens = dict(
        generator="models/tools/make_image_goldens.py",
        backend="pil",
        image_processor_class="MiniCPMV4_6ImageProcessorPil",
        versions=dict(
            transformers=transformers.__version__,
            pillow=PIL.__version__,
            numpy=np.__version__,
            python=sys.version.split()[0],
        ),
        default_processor_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in make_processor().to_dict().items() if k != "resample"},
        tokens=TOKENS,
        resize=resize_goldens(),
        pipeline=pipeline_goldens(),
        prompt=prompt_goldens(),
        decode=decode_goldens(),
    )
    (ROOT / "goldens.json").write_text(json.dumps(goldens, indent=1) + "\n")
    geometry = dict(
        generator="models/tools/make_image_goldens.py",
        backend="pil",
        versions=goldens["versions"],
        cases=geometry_goldens(),
    )
    (ROOT / "geometry.json").write_text(json.dumps(geometry, separators=(",", ":")) + "\n")
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    print(f"wrote {ROOT} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
