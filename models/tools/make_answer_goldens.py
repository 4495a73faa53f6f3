#!/usr/bin/env python3
"""Goldens for answers scored by the model's own probabilities (`Engine::answer`, `lookout ask`).

For each fixture below and each question, every option's total log-probability after the prompt,
computed by transformers on the committed tiny checkpoint (float32, eager attention, the pure-torch
Gated DeltaNet path):

  prompt    the question verbatim in the chat layout `describe` uses: for a MiniCPM-V fixture the
            image first, then the text, then the generation prompt (the processor's chat template and
            `MiniCPMV4_6Processor` with the PIL image backend); for a text-only fixture the
            tokenizer's chat template
  option    the tokenizer's encoding of the option text alone (no special tokens), appended after the
            prompt, no end token
  logprob   the sum over the option's tokens of log_softmax(logits at the position before it)

Writes golden_answers.json into each fixture directory (small; committed). Nothing else changes.

Run:   /work/venv/bin/python models/tools/make_answer_goldens.py
Needs: torch, transformers>=5.23, torchvision (--no-deps; the processor imports it), pillow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from PIL import Image
from transformers import AutoTokenizer, Qwen3_5ForCausalLM
from transformers.models.minicpmv4_6 import (
    MiniCPMV4_6ForConditionalGeneration,
    MiniCPMV4_6ImageProcessorPil,
    MiniCPMV4_6Processor,
)
from transformers.models.minicpmv4_6.video_processing_minicpmv4_6 import MiniCPMV4_6VideoProcessor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# Questions a camera owner would ask, with the answers a sensor allows. Yes/no is scored as its four
# surface forms (lookout sums "Yes"+"yes" against "No"+"no"); a choice as its options, some of them
# several tokens long.
QUESTIONS = [
    ("Is the garage door open? Answer yes or no.", ["Yes", "yes", "No", "no"]),
    ("Which bin is out: none, green or blue?", ["none", "green", "blue"]),
    ("What colour is the square?", ["red", "dark grey", "a bright yellow-green"]),
]
CASES = [
    ("minicpmv46-tiny-16x", "square_300x300.png"),
    ("minicpmv46-tiny-4x", "wide_1000x100.png"),
    ("qwen35-tiny-a", None),
]


def option_logprob(model, prompt_ids: list[int], option_ids: list[int], **image_kwargs) -> float:
    full = torch.tensor([prompt_ids + option_ids])
    with torch.no_grad():
        logits = model(input_ids=full, use_cache=False, **image_kwargs).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return float(sum(logp[start + i, t] for i, t in enumerate(option_ids)))


def main() -> None:
    for mod in ("fla", "causal_conv1d", "kernels"):  # as make_fixtures.py: the pure-torch paths only
        if importlib.util.find_spec(mod) is not None:
            sys.exit(f"`{mod}` is installed: the goldens must come from the pure-torch paths; uninstall it or use a venv")
    for name, image_file in CASES:
        d = FIXTURES / name
        tok = AutoTokenizer.from_pretrained(d)
        if image_file is None:
            model = Qwen3_5ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager", use_kernels=False).eval()
            processor = None
        else:
            model = MiniCPMV4_6ForConditionalGeneration.from_pretrained(
                d, dtype=torch.float32, attn_implementation="eager", use_kernels=False
            ).eval()
            proc_kw = json.loads((d / "preprocessor_config.json").read_text())
            proc_kw = {k: v for k, v in proc_kw.items() if k not in ("image_processor_type", "processor_class")}
            ip = MiniCPMV4_6ImageProcessorPil(**proc_kw)
            processor = MiniCPMV4_6Processor(
                image_processor=ip,
                video_processor=MiniCPMV4_6VideoProcessor(**proc_kw),
                tokenizer=tok,
                chat_template=(d / "chat_template.jinja").read_text(),
            )
            with Image.open(FIXTURES / "images" / image_file) as im:
                im.load()
                image = im.convert("RGB")
        questions = []
        for text, options in QUESTIONS:
            if processor is None:
                messages = [{"role": "user", "content": text}]
                prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
                    prompt_ids = prompt_ids["input_ids"]
                image_kwargs = {}
            else:
                messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                templated = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                if isinstance(templated, list):
                    templated = templated[0]
                inputs = processor(text=templated, images=[image], return_tensors="pt")
                prompt_ids = inputs["input_ids"][0].tolist()
                image_kwargs = {"pixel_values": inputs["pixel_values"], "target_sizes": inputs["target_sizes"]}
            scored = []
            for option in options:
                ids = tok(option, add_special_tokens=False)["input_ids"]
                scored.append({"text": option, "tokens": ids, "logprob": option_logprob(model, prompt_ids, ids, **image_kwargs)})
            questions.append({"text": text, "prompt_tokens": len(prompt_ids), "options": scored})
            best = max(scored, key=lambda o: o["logprob"])
            print(f"{name:22} {text[:40]:40} best {best['text']!r} ({best['logprob']:.4f})")
        golden = {
            "what": "each option's total log-probability after the prompt (make_answer_goldens.py)",
            "image": image_file,
            "reference": {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "image_processor": "MiniCPMV4_6ImageProcessorPil" if processor else None,
                "dtype": "float32",
            },
            "questions": questions,
        }
        (d / "golden_answers.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
