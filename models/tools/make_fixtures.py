#!/usr/bin/env python3
"""Build lookout's tiny random-weight model fixtures and their golden outputs.

What it makes (under models/fixtures/, see models/tools/README.md for the file formats):

  images/                      deterministic synthetic test images (PNG / JPEG) + images.json
  qwen35-tiny-a/               Qwen3_5ForCausalLM, 4 layers (3 linear + 1 full), tied embeddings, f32
  qwen35-tiny-b/               Qwen3_5ForCausalLM, 6 layers (explicit mixed layer_types), untied,
                               bf16, split into 2 shards + model.safetensors.index.json
  minicpmv46-tiny-16x/         MiniCPMV4_6ForConditionalGeneration, downsample_mode "16x", f16, untied
  minicpmv46-tiny-4x/          MiniCPMV4_6ForConditionalGeneration, downsample_mode "4x", bf16, tied

Every fixture directory holds config.json, generation_config.json, the safetensors weights (written
by `save_pretrained`, so tensor names are the real checkpoints' names), tokenizer.json +
tokenizer_config.json + chat_template.jinja (a synthetic ~400-token byte-level BPE built here with
the `tokenizers` package), and golden_lm.{json,safetensors}. The two MiniCPM-V fixtures also hold
processor_config.json + preprocessor_config.json and golden_vision.{json,safetensors}.

Every parameter is re-initialised with seeded noise (norm weights around 1 +- noise, nonzero biases,
A_log / dt_bias / conv1d spread out) because the library's default init hides bugs (zero-centred
RMSNorm weights, zero biases, tiny recurrent states). Weights are rounded to their storage dtype
first and the goldens are computed from the stored weights, upcast to float32, in float32 with the
eager attention and the pure-torch Gated-DeltaNet / causal-conv1d fallbacks (fla, causal_conv1d
and `kernels` must NOT be installed; the script checks).

Run (from the repository root; a few minutes on CPU):

    python3 models/tools/make_fixtures.py            # everything
    python3 models/tools/make_fixtures.py --out /tmp/fx  # somewhere else

Needs: torch, transformers>=5.23 (qwen3_5 + minicpmv4_6), tokenizers, safetensors, numpy, pillow,
and torchvision (only because MiniCPMV4_6Processor needs the torchvision video processor; the
image goldens use the PIL image-processor backend). No network access: everything is built here.
The output is deterministic (seeded); rerunning overwrites the fixture directories it owns.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw

import torch
from torch import nn

import tokenizers
import transformers
from safetensors.torch import save_file, load_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Qwen3_5ForCausalLM,
    Qwen3_5TextConfig,
    TokenizersBackend,
)
from transformers.models.minicpmv4_6 import (
    MiniCPMV4_6Config,
    MiniCPMV4_6ForConditionalGeneration,
    MiniCPMV4_6ImageProcessorPil,
    MiniCPMV4_6Processor,
)
from transformers.models.minicpmv4_6.video_processing_minicpmv4_6 import MiniCPMV4_6VideoProcessor
from transformers.models.qwen3_5 import modeling_qwen3_5

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "models" / "fixtures"
OWNED_DIRS = ["images", "qwen35-tiny-a", "qwen35-tiny-b", "minicpmv46-tiny-16x", "minicpmv46-tiny-4x"]

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

# Same pre-tokenizer pipeline as the Qwen3.5 tokenizer (transformers' tokenization_qwen3_5.py):
# NFC normalizer, regex Split (isolated) then ByteLevel(add_prefix_space=False, use_regex=False),
# ByteLevel decoder, BPE without unk / byte fallback.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. Describe the scene in one sentence. What is in the image? ",
    "A red circle, a blue square and a green triangle on a gradient background. The image shows a cat on a sofa. ",
    "There is a person walking near the door, and a car is parked outside the house in the evening light. ",
    "The camera sees a kitchen with a table, two chairs, a window and some plants. Nothing unusual happens. ",
    "Ça va? Très bien, merci. Café crème à la française, déjà vu, résumé, naïve, élève, garçon. ",
    "日本 日本語 東京 こんにちは 世界 日本の景色 ",
    "🙂 😀 🚀 🎉 👍 ",
    "Hello world! This is a test of the tokenizer, with numbers 12345 and 67890 and punctuation: (a), [b], {c}; "
    "\"quotes\" and 'apostrophes' it's we're they'll. \n\nNew lines\n\ttabs and   spaces.",
]
TRAINED_VOCAB = 384  # 256 byte symbols + 128 merges

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|image_pad|>",  # MiniCPM-V 4.6 image placeholder (tokenizer.image_token)
    "<|video_pad|>",  # MiniCPM-V 4.6 video placeholder (tokenizer.video_token)
    "<image>",
    "</image>",
    "<slice>",
    "</slice>",
    "<image_id>",
    "</image_id>",
    "<unk>",  # older MiniCPM-V placeholder; unused by the 4.6 processor, kept for completeness
]
ADDED_NON_SPECIAL = ["<think>", "</think>"]

MM_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}

# ChatML as Qwen uses it. A message's content is a string or a list of {"type": "text"|"image"|"video"}
# items; an image item renders as the image placeholder token followed by "\n" (the processor then
# expands the placeholder into <image_id>..</image_id><image>..</image><slice>..</slice>...).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|image_pad|>\\n' }}"
    "{%- elif item['type'] == 'video' %}{{- '<|video_pad|>\\n' }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer() -> TokenizersBackend:
    tok = Tokenizer(
        models.BPE(
            unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in ADDED_NON_SPECIAL])
    return TokenizersBackend(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=dict(MM_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def special_ids(tok) -> dict:
    vocab = tok.get_vocab()
    return {s: vocab[s] for s in SPECIAL_TOKENS + ADDED_NON_SPECIAL}


def save_tokenizer(tok, out_dir: Path):
    # chat_template both inline in tokenizer_config.json (older convention) and as chat_template.jinja
    # (what transformers v5 writes by default); the two are identical.
    tok.save_pretrained(out_dir, save_jinja_files=False)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    assert json.loads((out_dir / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    # Sanity: the raw tokenizers-library file (what the Rust side loads) round-trips identically.
    raw = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    probe = "<|im_start|>user\nCa va? Ça va? 日本 🙂<|image_pad|><image_id>0</image_id><|im_end|>\n"
    assert raw.encode(probe, add_special_tokens=False).ids == tok(probe, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _base_rgb(w: int, h: int) -> np.ndarray:
    """Gradients + a high-frequency checker band + shapes, all integer maths (deterministic)."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = ((x + y) * 255) // max(w + h - 2, 1)
    arr = np.stack([r, g, 255 - b], axis=-1).astype(np.uint8)
    # checkerboard band (period 4 px) in the middle third of the rows: makes the resampling filter matter
    band = (y >= h // 3) & (y < h // 3 + max(h // 8, 2))
    checker = ((x // 2 + y // 2) % 2 == 0) & band
    arr[checker] = [240, 240, 240]
    arr[band & ~checker] = [16, 16, 16]
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    s = min(w, h)
    d.ellipse([w * 0.10, h * 0.55, w * 0.10 + s * 0.35, h * 0.55 + s * 0.35], fill=(220, 30, 40), outline=(0, 0, 0))
    d.rectangle([w * 0.55, h * 0.08, w * 0.55 + s * 0.30, h * 0.08 + s * 0.25], fill=(30, 60, 200))
    d.polygon([(w * 0.7, h * 0.9), (w * 0.95, h * 0.9), (w * 0.82, h * 0.55)], fill=(40, 180, 60))
    d.line([(0, 0), (w - 1, h - 1)], fill=(255, 255, 0), width=max(1, s // 60))
    return np.asarray(img)


def make_images(out_dir: Path) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = []

    def add(name, img, fmt, note, **save_kw):
        path = out_dir / name
        img.save(path, format=fmt, **save_kw)
        specs.append({"file": name, "mode": img.mode, "width": img.width, "height": img.height, "format": fmt,
                      "note": note, "save_kwargs": {k: v for k, v in save_kw.items()}})

    add("tiny_40x30.png", Image.fromarray(_base_rgb(40, 30)), "PNG", "tiny RGB, upscaled, no slices; vision debug image")
    add("square_300x300.png", Image.fromarray(_base_rgb(300, 300)), "PNG", "square RGB, sliced")
    add("photo_640x480.jpg", Image.fromarray(_base_rgb(640, 480)), "JPEG", "4:3 JPEG, 4:2:0 chroma subsampling",
        quality=90, subsampling=2)
    add("wide16x9_1280x720.jpg", Image.fromarray(_base_rgb(1280, 720)), "JPEG", "16:9 JPEG, 4:4:4, many slices",
        quality=90, subsampling=0)
    add("tall_120x900.png", Image.fromarray(_base_rgb(120, 900)), "PNG", "very tall RGB")
    add("wide_1000x100.png", Image.fromarray(_base_rgb(1000, 100)), "PNG", "very wide RGB")
    add("grey_200x150.png", Image.fromarray(_base_rgb(200, 150)).convert("L"), "PNG", "greyscale (mode L)")
    rgba = Image.fromarray(_base_rgb(256, 192)).convert("RGBA")
    a = np.asarray(rgba).copy()
    yy, xx = np.mgrid[0:192, 0:256]
    a[..., 3] = (xx * 255 // 255).astype(np.uint8)  # alpha ramps 0..255 left to right
    a[60:100, 100:160, 3] = 0  # fully transparent hole
    add("rgba_256x192.png", Image.fromarray(a, "RGBA"), "PNG",
        "RGBA with an alpha ramp and a transparent hole (the reference composites onto white)")
    pal = Image.fromarray(_base_rgb(320, 240)).quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    add("palette_320x240.png", pal, "PNG", "palette (mode P), 32 colours, no transparency")

    for s in specs:
        with Image.open(out_dir / s["file"]) as im:
            im.load()
            s["decoded_mode"] = im.mode
            rgb = np.asarray(im.convert("RGB"))
            s["decoded_rgb_sha256"] = hashlib.sha256(rgb.tobytes()).hexdigest()
    return specs


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def reinit_(model: nn.Module, seed: int, embed_std: float = 0.6, head_gain: float = 2.0):
    """Overwrite EVERY parameter with seeded noise. Asserts that nothing was left untouched."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo

    done = set()

    def put(p: nn.Parameter, value: torch.Tensor):
        if id(p) in done:
            return
        assert value.shape == p.shape, (value.shape, p.shape)
        with torch.no_grad():
            p.copy_(value.to(p.dtype))
        done.add(id(p))

    for name, mod in sorted(model.named_modules(), key=lambda kv: kv[0]):
        cls = type(mod).__name__
        own = dict(mod.named_parameters(recurse=False))
        if not own:
            continue
        if cls == "Qwen3_5RMSNorm":  # y = x_hat * (1 + w): zero-centred weight
            put(own["weight"], normal(own["weight"].shape, 0.15))
        elif cls == "Qwen3_5RMSNormGated":  # y = w * x_hat * silu(z): weight used directly
            put(own["weight"], normal(own["weight"].shape, 0.15, 1.0))
        elif isinstance(mod, nn.LayerNorm):
            put(own["weight"], normal(own["weight"].shape, 0.15, 1.0))
            put(own["bias"], normal(own["bias"].shape, 0.1))
        elif isinstance(mod, nn.Embedding):
            std = embed_std if name.endswith("embed_tokens") else 0.3
            put(own["weight"], normal(own["weight"].shape, std))
        elif isinstance(mod, nn.Conv1d):  # depthwise causal conv of Gated DeltaNet: [C, 1, K]
            put(own["weight"], normal(own["weight"].shape, 0.45))
            if "bias" in own:
                put(own["bias"], normal(own["bias"].shape, 0.1))
        elif isinstance(mod, nn.Conv2d):  # patch embedding [D, 3, P, P]
            w = own["weight"]
            put(w, normal(w.shape, 1.0 / math.sqrt(w[0].numel())))
            put(own["bias"], normal(own["bias"].shape, 0.1))
        elif isinstance(mod, nn.Linear):
            w = own["weight"]
            gain = head_gain if name.endswith("lm_head") else 1.0
            put(w, normal(w.shape, gain / math.sqrt(w.shape[1])))
            if "bias" in own and own["bias"] is not None:
                put(own["bias"], normal(own["bias"].shape, 0.1))
        elif cls == "Qwen3_5GatedDeltaNet":
            # decay per step = exp(-exp(A_log) * softplus(a + dt_bias)); keep A in [0.05, 1] so the state
            # remembers over many tokens instead of resetting every step.
            put(own["A_log"], torch.log(uniform(own["A_log"].shape, 0.05, 1.0)))
            put(own["dt_bias"], normal(own["dt_bias"].shape, 0.5, -0.5))
        else:
            raise RuntimeError(f"no init rule for {name} ({cls}): {list(own)}")

    missing = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not missing, f"parameters left at default init: {missing}"


def storage_dtype_name(dt: torch.dtype) -> str:
    return {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[dt]


def save_model(model, out_dir: Path, dtype: torch.dtype, shards: int = 1):
    model = model.to(dtype)
    if shards == 1:
        model.save_pretrained(out_dir, max_shard_size="1GB")
    else:
        total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        model.save_pretrained(out_dir, max_shard_size=int(total / shards * 1.15))
    files = sorted(p.name for p in out_dir.glob("*.safetensors"))
    if shards > 1:
        assert len(files) == shards, files
        assert (out_dir / "model.safetensors.index.json").exists()
    else:
        assert files == ["model.safetensors"], files
    model.to(torch.float32)
    return files


def load_f32(cls, out_dir: Path):
    m = cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def check_weights_roundtrip(m_loaded, out_dir: Path):
    """The loaded float32 model holds exactly the stored (rounded) values."""
    stored = {}
    for f in out_dir.glob("*.safetensors"):
        stored.update(load_file(f))
    sd = m_loaded.state_dict()
    for k, v in stored.items():
        assert k in sd, f"stored tensor {k} not in model"
        assert torch.equal(sd[k], v.float()), k
    return sorted(stored.keys())


# --------------------------------------------------------------------------------------------
# Language-model goldens
# --------------------------------------------------------------------------------------------

LM_USER_MESSAGE = "Describe the scene in one sentence. Ça va? 日本"
# Long enough (> 64 tokens) to cross a chunk boundary of the reference's chunked delta rule.
PREFILL_TEXT = (
    "A person walks near the door, then a red car is parked outside the house. Ça va? Très bien. "
    "日本の景色 🙂 12345, the lazy dog."
)
GREEDY_STEPS = 32
VISION_GREEDY_STEPS = 16


def lm_core(model):
    """The Qwen3_5TextModel inside either wrapper."""
    return model.model.language_model if hasattr(model.model, "language_model") else model.model


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, steps: int, **first_kwargs):
    """Pure greedy argmax with the KV/recurrent cache, never stopping at eos.

    Returns (generated ids [steps], step_logits [steps + 1, V], cache after the prompt forward).
    step_logits[k] are the logits that predict position len(prompt) + k, so
    argmax(step_logits[k]) == generated[k] for k < steps; the last row is the prediction after the
    last generated token has been fed."""
    out = model(input_ids=input_ids, use_cache=True, **first_kwargs)
    cache = out.past_key_values
    prompt_cache = snapshot_cache(cache)
    rows = [out.logits[0, -1].clone()]
    gen = []
    for _ in range(steps):
        nxt = int(torch.argmax(rows[-1]))
        gen.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True)
        rows.append(out.logits[0, -1].clone())
    return gen, torch.stack(rows), prompt_cache


def snapshot_cache(cache) -> dict:
    snap = {}
    for i, layer in enumerate(cache.layers):
        if hasattr(layer, "conv_states") and layer.conv_states:
            snap[f"layer{i}.conv_state"] = layer.conv_states[0][0].clone()
            snap[f"layer{i}.recurrent_state"] = layer.recurrent_states[0][0].clone()
        if getattr(layer, "keys", None) is not None and torch.is_tensor(layer.keys):
            snap[f"layer{i}.key"] = layer.keys[0].clone()
            snap[f"layer{i}.value"] = layer.values[0].clone()
    return snap


@torch.no_grad()
def forward_with_layer_outputs(model, **kwargs):
    core = lm_core(model)
    captured = []
    hooks = [layer.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for layer in core.layers]
    hooks.append(core.norm.register_forward_hook(lambda m, i, o: captured.append(o)))
    try:
        out = model(**kwargs)
    finally:
        for h in hooks:
            h.remove()
    layers = torch.stack([c[0] for c in captured[:-1]])
    return out.logits[0], layers, captured[-1][0]


def distinct(xs):
    return len(set(xs))


def margins(step_logits: torch.Tensor) -> list[float]:
    """top-1 minus top-2 logit per greedy step: small values mark argmax choices that float noise could flip."""
    top2 = torch.topk(step_logits, 2, dim=-1).values
    return [round(float(x), 5) for x in (top2[:, 0] - top2[:, 1])]


def lm_goldens(model, tok, out_dir: Path, meta: dict, seed: int):
    cfg = lm_core(model).config
    messages = [{"role": "user", "content": LM_USER_MESSAGE}]
    prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    via_template = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    via_template = via_template["input_ids"] if isinstance(via_template, dict) or hasattr(via_template, "keys") else via_template
    assert list(via_template) == prompt_ids
    ids = torch.tensor([prompt_ids])

    gen, step_logits, prompt_cache = greedy(model, ids, GREEDY_STEPS)

    # Cross-check: one full no-cache forward over prompt + generated gives the same logits.
    full_ids = torch.tensor([prompt_ids + gen])
    with torch.no_grad():
        full_logits = model(input_ids=full_ids, use_cache=False).logits[0]
    P = len(prompt_ids)
    cache_vs_full = float((full_logits[P - 1:] - step_logits).abs().max())
    assert cache_vs_full < 1e-3, cache_vs_full
    # ...and transformers' own generate() agrees when eos is not involved.
    eos_ids = set(cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id])
    gen_check = None
    if not eos_ids & set(gen):
        with torch.no_grad():
            g = model.generate(input_ids=ids, max_new_tokens=GREEDY_STEPS, min_new_tokens=GREEDY_STEPS,
                               do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        gen_check = g[0, P:].tolist() == gen
        assert gen_check, (g[0, P:].tolist(), gen)

    # Prefill: plain text (no template), longer than the 64-token delta-rule chunk.
    prefill_ids = tok(PREFILL_TEXT, add_special_tokens=False)["input_ids"]
    assert len(prefill_ids) > 64, len(prefill_ids)
    with torch.no_grad():
        prefill_logits = model(input_ids=torch.tensor([prefill_ids]), use_cache=False).logits[0]

    # Chat prompt: per-layer residual-stream outputs too.
    prompt_logits, prompt_layers, prompt_final = forward_with_layer_outputs(
        model, input_ids=ids, use_cache=False)

    # inputs_embeds entry point: embed_tokens(prompt) + seeded noise.
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        emb = lm_core(model).embed_tokens(ids)[0]
        noise = torch.randn(emb.shape, generator=g) * 0.3
        embeds = (emb + noise).contiguous()
        embeds_logits = model(inputs_embeds=embeds[None], use_cache=False).logits[0]

    tensors = {
        "prompt_ids": torch.tensor(prompt_ids, dtype=torch.int64),
        "generated_ids": torch.tensor(gen, dtype=torch.int64),
        "step_logits": step_logits,
        "prompt_layer_outputs": prompt_layers,
        "prompt_final_norm": prompt_final,
        "prefill_ids": torch.tensor(prefill_ids, dtype=torch.int64),
        "prefill_logits": prefill_logits,
        "embeds_input": embeds,
        "embeds_logits": embeds_logits,
    }
    for k, v in prompt_cache.items():
        tensors[f"prompt_cache.{k}"] = v
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out_dir / "golden_lm.safetensors"), metadata={"format": "pt"})

    vocab = tok.get_vocab()
    inv = {v: k for k, v in vocab.items()}
    doc = {
        **meta,
        "messages": messages,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "prompt_tokens": [inv.get(i) for i in prompt_ids],
        "greedy_steps": GREEDY_STEPS,
        "generated_ids": gen,
        "generated_tokens": [inv.get(i) for i in gen],
        "generated_text": tok.decode(gen, skip_special_tokens=False),
        "generated_distinct": distinct(gen),
        "step_margins": margins(step_logits[:GREEDY_STEPS]),
        "prefill_text": PREFILL_TEXT,
        "prefill_ids": prefill_ids,
        "embeds_noise": "embeds_input = embed_tokens(prompt_ids) + 0.3 * randn (torch.Generator seed %d)" % (seed + 7),
        "checks": {
            "cache_vs_full_forward_max_abs_diff": cache_vs_full,
            "hf_generate_matches": gen_check,
            "prompt_logits_vs_step0_max_abs_diff": float((prompt_logits[-1] - step_logits[0]).abs().max()),
            "step_logits_std": float(step_logits.std()),
        },
        "tensors": describe(tensors),
    }
    (out_dir / "golden_lm.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc


def describe(tensors: dict) -> dict:
    return {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in sorted(tensors.items())}


# --------------------------------------------------------------------------------------------
# MiniCPM-V goldens
# --------------------------------------------------------------------------------------------

VISION_QUESTION = "What is in the image?"
DEBUG_IMAGE = "tiny_40x30.png"


def pixel_u8(pv: np.ndarray) -> np.ndarray:
    """Recover the resized uint8 pixels from pixel_values and prove the reconstruction is bit-exact."""
    u8 = np.clip(np.rint((pv.astype(np.float64) * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8)
    back = ((u8.astype(np.float64) * (1.0 / 255.0)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    assert np.array_equal(back, pv), float(np.abs(back - pv).max())
    return u8


@torch.no_grad()
def vision_debug_tensors(model, pixel_values, target_sizes) -> dict:
    """Intermediate activations of the vision tower for one image (hooks, no reimplementation)."""
    vt = model.model.vision_tower
    cap = {}
    hooks = [vt.embeddings.register_forward_hook(lambda m, i, o: cap.__setitem__("embeddings", o[0]))]
    for li, layer in enumerate(vt.encoder.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, li=li: cap.__setitem__(f"encoder_layer{li}", (o[0] if isinstance(o, tuple) else o)[0])))
    hooks.append(vt.vit_merger.register_forward_hook(lambda m, i, o: cap.__setitem__("vit_merger", o[0])))
    hooks.append(vt.post_layernorm.register_forward_hook(lambda m, i, o: cap.__setitem__("post_layernorm", o[0])))
    try:
        model.get_image_features(pixel_values, target_sizes)
    finally:
        for h in hooks:
            h.remove()
    return cap


def autoprocessor_cross_check(fixture_dir, images_dir, image_specs, templated, tensors) -> dict:
    """Reload the saved processor with AutoProcessor (default backend) and with the other image backend,
    and compare with the goldens (which came from the PIL backend)."""
    out = {}
    default = AutoProcessor.from_pretrained(fixture_dir)
    out["autoprocessor_default_image_processor_class"] = type(default.image_processor).__name__
    for backend in ("pil", "torchvision"):
        ip = AutoImageProcessor.from_pretrained(fixture_dir, backend=backend)
        proc = MiniCPMV4_6Processor(image_processor=ip, video_processor=default.video_processor,
                                    tokenizer=default.tokenizer, chat_template=default.chat_template)
        ids_equal, max_diff = True, 0.0
        for spec in image_specs:
            key = Path(spec["file"]).stem
            with Image.open(images_dir / spec["file"]) as im:
                im.load()
                img = im.copy()
            inp = proc(text=templated, images=[img], return_tensors="pt")
            ids_equal &= torch.equal(inp["input_ids"][0], tensors[f"{key}.input_ids"])
            png = np.asarray(Image.open(fixture_dir / f"vision_inputs/{key}.png")).astype(np.float64)
            ref = ((png * (1.0 / 255.0)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
            got = inp["pixel_values"][0].numpy().reshape(ref.shape)
            max_diff = max(max_diff, float(np.abs(got - ref).max()))
        out[backend] = {"image_processor_class": type(proc.image_processor).__name__,
                        "input_ids_equal": bool(ids_equal), "pixel_values_max_abs_diff_vs_golden": max_diff}
    return out


def vision_goldens(model, processor, tok, fixture_dir: Path, images_dir: Path, image_specs: list[dict], meta: dict):
    cfg = model.config
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VISION_QUESTION}]}]
    templated = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(templated, list):
        templated = templated[0]
    tensors = {}
    entries = []
    ip = processor.image_processor
    for spec in image_specs:
        key = Path(spec["file"]).stem
        with Image.open(images_dir / spec["file"]) as im:
            im.load()
            img = im.copy()
        raw = ip(img, return_tensors="np")
        inputs = processor(text=templated, images=[img], return_tensors="pt")
        pv = inputs["pixel_values"]
        ts = inputs["target_sizes"]
        assert np.array_equal(raw["pixel_values"], pv.numpy())
        grid = [int(x) for x in raw["grids"][0]]
        input_ids = inputs["input_ids"][0].tolist()
        n_img_tokens = input_ids.count(cfg.image_token_id)

        with torch.no_grad():
            feats = model.get_image_features(pv, ts).pooler_output
        per_slice_tokens = [int(f.shape[0]) for f in feats]
        assert sum(per_slice_tokens) == n_img_tokens, (per_slice_tokens, n_img_tokens)
        gen, step_logits, _ = greedy(model, inputs["input_ids"], VISION_GREEDY_STEPS, pixel_values=pv,
                                     target_sizes=ts)

        # The embeddings route the Rust side will take: splice features into embed_tokens(input_ids).
        with torch.no_grad():
            emb = lm_core(model).embed_tokens(inputs["input_ids"])
            mask = inputs["input_ids"][0] == cfg.image_token_id
            emb[0, mask] = torch.cat(feats, 0)
            logits_embeds = model(inputs_embeds=emb, use_cache=False).logits[0, -1]
        splice_diff = float((logits_embeds - step_logits[0]).abs().max())
        assert splice_diff < 1e-4, splice_diff

        # pixel_values as a lossless greyscale PNG of the packed [3 * patch, L] u8 layout (5x smaller
        # than raw u8): row c * patch + r, column l  <->  pixel_values[0, c, r, l].
        u8 = pixel_u8(pv.numpy())[0]
        png_rel = f"vision_inputs/{key}.png"
        (fixture_dir / "vision_inputs").mkdir(exist_ok=True)
        Image.fromarray(u8.reshape(u8.shape[0] * u8.shape[1], u8.shape[2]), "L").save(
            fixture_dir / png_rel, format="PNG", optimize=True)
        tensors[f"{key}.target_sizes"] = ts.to(torch.int64)
        tensors[f"{key}.input_ids"] = inputs["input_ids"][0].to(torch.int64)
        tensors[f"{key}.features"] = torch.cat(feats, 0)
        tensors[f"{key}.first_logits"] = step_logits[0]
        tensors[f"{key}.generated_ids"] = torch.tensor(gen, dtype=torch.int64)
        if spec["file"] == DEBUG_IMAGE:
            tensors[f"{key}.pixel_values"] = pv[0]
            for name, t in vision_debug_tensors(model, pv, ts).items():
                tensors[f"{key}.debug.{name}"] = t

        slice_sizes = [[int(h) * ip.patch_size, int(w) * ip.patch_size] for h, w in ts.tolist()]
        entries.append({
            "key": key,
            "file": spec["file"],
            "image_size_hw": [spec["height"], spec["width"]],
            "mode": spec["mode"],
            "grid_rows_cols": grid,
            "num_slices": len(slice_sizes) - 1,
            "target_sizes_patches_hw": ts.tolist(),
            "slice_sizes_px_hw": slice_sizes,
            "slice_sizes_note": "entry 0 is the whole (resized) source image, then the slices row-major",
            "tokens_per_slice": per_slice_tokens,
            "pixel_values_shape": list(pv.shape),
            "pixel_values_png": png_rel,
            "input_ids": input_ids,
            "prompt_text_expanded": processor.tokenizer.decode(input_ids, skip_special_tokens=False),
            "num_image_tokens": n_img_tokens,
            "generated_ids": gen,
            "generated_distinct": distinct(gen),
            "step_margins": margins(step_logits[:VISION_GREEDY_STEPS]),
            "embeds_splice_vs_model_max_abs_diff": splice_diff,
        })

    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(fixture_dir / "golden_vision.safetensors"), metadata={"format": "pt"})
    doc = {
        **meta,
        "messages": messages,
        "templated_prompt": templated,
        "image_processor": {
            "class": type(ip).__name__,
            "backend": "pil (transformers image_processing_pil_minicpmv4_6.py: PIL bicubic resize, numpy normalise)",
            "scale_resolution": ip.scale_resolution,
            "max_slice_nums": ip.max_slice_nums,
            "patch_size": ip.patch_size,
            "slice_mode": ip.slice_mode,
            "use_image_id": ip.use_image_id,
            "downsample_mode": ip.downsample_mode,
            "resample": int(ip.resample),
            "image_mean": list(ip.image_mean),
            "image_std": list(ip.image_std),
        },
        "pixel_values_from_png": "u8 = PNG (mode L, height 3*patch, width L) reshaped to [1, 3, patch, L]; "
                                 "pixel_values = f32(f64(u8) * (1/255)); pixel_values = (pixel_values - 0.5f32) / 0.5f32 "
                                 "(bit-exact vs the processor, checked). Layout is NaViT-packed: see README",
        "greedy_steps": VISION_GREEDY_STEPS,
        "debug_image": Path(DEBUG_IMAGE).stem,
        "images": entries,
        "tensors": describe(tensors),
    }
    doc["checks"] = autoprocessor_cross_check(fixture_dir, images_dir, image_specs, templated, tensors)
    (fixture_dir / "golden_vision.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc


# --------------------------------------------------------------------------------------------
# Fixture definitions
# --------------------------------------------------------------------------------------------


def text_config_kwargs(tok, **kw) -> dict:
    ids = special_ids(tok)
    base = dict(
        hidden_act="silu",
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        attention_bias=False,
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=None,
    )
    base.update(kw)
    return base


def write_generation_config(out_dir: Path, tok):
    ids = special_ids(tok)
    GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    ).save_pretrained(out_dir)


def reference_meta(model, weights_dtype, files, extra=None) -> dict:
    meta = {
        "reference": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "compute_dtype": "float32",
            "attn_implementation": "eager",
            "linear_attention_path": (
                "pure torch: torch_chunk_gated_delta_rule (chunk_size 64) for prompt/prefill forwards, "
                "torch_recurrent_gated_delta_rule for 1-token cached decode steps; causal_conv1d_fn / "
                "causal_conv1d_update torch fallbacks (no fla, no causal_conv1d, no kernels hub)"
            ),
        },
        "weights": {"storage_dtype": storage_dtype_name(weights_dtype), "files": files,
                    "note": "goldens computed from the stored (rounded) weights upcast to float32"},
    }
    if extra:
        meta.update(extra)
    return meta


def build_lm_fixture(name, out_root, tok, seed, weights_dtype, shards, vocab_size, **cfg_kw):
    out_dir = out_root / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    torch.manual_seed(seed)
    cfg = Qwen3_5TextConfig(**text_config_kwargs(tok, vocab_size=vocab_size, **cfg_kw))
    cfg.architectures = ["Qwen3_5ForCausalLM"]
    model = Qwen3_5ForCausalLM(cfg)
    reinit_(model, seed)
    files = save_model(model, out_dir, weights_dtype, shards)
    save_tokenizer(tok, out_dir)
    write_generation_config(out_dir, tok)
    model = load_f32(Qwen3_5ForCausalLM, out_dir)
    names = check_weights_roundtrip(model, out_dir)
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in names
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    meta = reference_meta(model, weights_dtype, files, {"fixture": name, "model_class": "Qwen3_5ForCausalLM",
                                                        "special_token_ids": special_ids(tok)})
    doc = lm_goldens(model, tok, out_dir, meta, seed)
    return {"name": name, "tensor_names": names, "lm": doc, "config": json.loads((out_dir / "config.json").read_text())}


def build_vlm_fixture(name, out_root, tok, seed, weights_dtype, text_kw, vision_kw, top_kw, proc_kw, image_specs):
    out_dir = out_root / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    torch.manual_seed(seed)
    ids = special_ids(tok)
    tc = text_config_kwargs(tok, **text_kw)
    tc["model_type"] = "qwen3_5_text"
    cfg = MiniCPMV4_6Config(text_config=tc, vision_config=vision_kw, image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"], **top_kw)
    cfg.architectures = ["MiniCPMV4_6ForConditionalGeneration"]
    model = MiniCPMV4_6ForConditionalGeneration(cfg)
    reinit_(model, seed)
    files = save_model(model, out_dir, weights_dtype, 1)
    save_tokenizer(tok, out_dir)
    write_generation_config(out_dir, tok)

    ip = MiniCPMV4_6ImageProcessorPil(**proc_kw)
    vp = MiniCPMV4_6VideoProcessor(**proc_kw)
    processor = MiniCPMV4_6Processor(image_processor=ip, video_processor=vp, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out_dir)  # processor_config.json (+ tokenizer files, chat_template.jinja)
    ip.save_pretrained(out_dir)  # preprocessor_config.json (flat image-processor fields)
    save_tokenizer(tok, out_dir)  # rewrite a clean tokenizer_config.json (processor save adds local-path keys)

    model = load_f32(MiniCPMV4_6ForConditionalGeneration, out_dir)
    names = check_weights_roundtrip(model, out_dir)
    tied = cfg.text_config.tie_word_embeddings
    if tied:
        assert "lm_head.weight" not in names
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    else:
        assert "lm_head.weight" in names
    meta = reference_meta(model, weights_dtype, files, {"fixture": name,
                                                        "model_class": "MiniCPMV4_6ForConditionalGeneration",
                                                        "special_token_ids": ids})
    lm_doc = lm_goldens(model, tok, out_dir, meta, seed)
    v_doc = vision_goldens(model, processor, tok, out_dir, out_root / "images", image_specs, meta)
    return {"name": name, "tensor_names": names, "lm": lm_doc, "vision": v_doc,
            "config": json.loads((out_dir / "config.json").read_text())}


def check_environment():
    for mod in ("fla", "causal_conv1d", "kernels"):
        if importlib.util.find_spec(mod) is not None:
            sys.exit(f"`{mod}` is installed: the goldens must come from the pure-torch paths; uninstall it or use a venv")
    # The module-level functions must be the torch implementations.
    assert modeling_qwen3_5.torch_chunk_gated_delta_rule.__module__ == modeling_qwen3_5.__name__


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    out_root: Path = args.out
    out_root.mkdir(parents=True, exist_ok=True)
    check_environment()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    tok = build_tokenizer()
    n_tok = len(tok)
    print(f"tokenizer: {n_tok} tokens, specials {special_ids(tok)}")

    shutil.rmtree(out_root / "images", ignore_errors=True)
    image_specs = make_images(out_root / "images")
    (out_root / "images" / "images.json").write_text(json.dumps(image_specs, indent=1) + "\n")

    results = []
    # (a) 4 layers = 3 linear + 1 full (full_attention_interval 4), tied, f32.
    results.append(build_lm_fixture(
        "qwen35-tiny-a", out_root, tok, seed=1001, weights_dtype=torch.float32, shards=1, vocab_size=n_tok,
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, full_attention_interval=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
        linear_conv_kernel_dim=4, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    ))
    # (b) 6 layers with an explicit irregular layer_types, GQA 3, linear k/v dims differ, kernel 3,
    #     untied, bf16 in 2 shards, model vocab padded past the tokenizer (like the real 248320).
    results.append(build_lm_fixture(
        "qwen35-tiny-b", out_root, tok, seed=2002, weights_dtype=torch.bfloat16, shards=2,
        vocab_size=int(math.ceil((n_tok + 8) / 32) * 32),
        hidden_size=48, intermediate_size=96, num_hidden_layers=6,
        layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention",
                     "linear_attention", "full_attention"],
        num_attention_heads=6, num_key_value_heads=2, head_dim=16,
        linear_num_key_heads=2, linear_num_value_heads=6, linear_key_head_dim=16, linear_value_head_dim=24,
        linear_conv_kernel_dim=3, tie_word_embeddings=False, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [1, 1, 0], "mrope_interleaved": True},
    ))
    text_small = dict(
        vocab_size=n_tok, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
    )
    results.append(build_vlm_fixture(
        "minicpmv46-tiny-16x", out_root, tok, seed=3003, weights_dtype=torch.float16,
        text_kw=dict(text_small, tie_word_embeddings=False),
        vision_kw=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=3,
                       image_size=224, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
        top_kw=dict(insert_layer_id=1, downsample_mode="16x", image_size=112, tie_word_embeddings=False),
        proc_kw=dict(scale_resolution=112, max_slice_nums=9, patch_size=14, slice_mode=True,
                     use_image_id=True, downsample_mode="16x"),
        image_specs=image_specs,
    ))
    results.append(build_vlm_fixture(
        "minicpmv46-tiny-4x", out_root, tok, seed=4004, weights_dtype=torch.bfloat16,
        text_kw=dict(text_small, tie_word_embeddings=True,
                     layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"]),
        vision_kw=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=2,
                       image_size=140, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
        top_kw=dict(insert_layer_id=2, downsample_mode="4x", image_size=56, tie_word_embeddings=True),
        proc_kw=dict(scale_resolution=56, max_slice_nums=9, patch_size=14, slice_mode=True,
                     use_image_id=True, downsample_mode="4x"),
        image_specs=image_specs,
    ))

    for d in OWNED_DIRS:  # safetensors are written 0600; make everything plainly readable
        for f in (out_root / d).rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)

    # ---- summary
    print()
    for r in results:
        lm = r["lm"]
        print(f"{r['name']}: prompt {len(lm['prompt_ids'])} tok, generated {lm['generated_ids'][:12]}... "
              f"distinct {lm['generated_distinct']}/{GREEDY_STEPS}, checks {lm['checks']}")
        if "vision" in r:
            for e in r["vision"]["images"]:
                print(f"   {e['key']:<20} grid {e['grid_rows_cols']} slices {e['num_slices']} "
                      f"tokens {e['num_image_tokens']:>4} ids {len(e['input_ids']):>4} distinct {e['generated_distinct']}")
    print("\nsizes:")
    total = 0
    for d in OWNED_DIRS:
        p = out_root / d
        sz = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        total += sz
        print(f"  {d:<24} {sz / 1024:8.1f} KiB")
    print(f"  {'total (this script)':<24} {total / 1024:8.1f} KiB")
    allsz = sum(f.stat().st_size for f in out_root.rglob("*") if f.is_file())
    print(f"  {'models/fixtures (all)':<24} {allsz / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
