#!/usr/bin/env python3
"""Re-save the tiny MiniCPM-V 4.6 fixture the way transformers 5 saves a checkpoint.

`model.save_pretrained(d); processor.save_pretrained(d)` (what a user who fine-tunes the model
runs) writes the image processor's settings nested in processor_config.json and no
preprocessor_config.json, and the chat template as chat_template.jinja only. lookout must load
that layout and give the goldens' tokens (pipeline/tests/describe_image.rs).

Needs torch, transformers (5.23+) and torchvision (the processor imports its video processor):

  HF_HUB_OFFLINE=1 python models/tools/make_saved_layout.py
"""
import json
import pathlib
import shutil
import warnings

warnings.filterwarnings("ignore")

import transformers
from transformers import AutoProcessor, MiniCPMV4_6ForConditionalGeneration

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
SOURCE = FIXTURES / "minicpmv46-tiny-16x"
OUT = FIXTURES / "minicpmv46-tiny-16x-saved"


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    model = MiniCPMV4_6ForConditionalGeneration.from_pretrained(SOURCE)
    model.save_pretrained(OUT)
    AutoProcessor.from_pretrained(SOURCE).save_pretrained(OUT)
    files = sorted(p.name for p in OUT.iterdir())
    assert "preprocessor_config.json" not in files, files
    assert "image_processor" in json.loads((OUT / "processor_config.json").read_text())
    print(f"transformers {transformers.__version__} wrote {OUT.name}: {files}")


if __name__ == "__main__":
    main()
