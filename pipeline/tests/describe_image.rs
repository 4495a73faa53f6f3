//! The whole image path against transformers: decoded image file -> prompt token ids (exact),
//! image features spliced into the embeddings -> first-step logits and a greedy continuation.

mod support;

use lookout_models::Precision;
use lookout_pipeline::engine::{Cancelled, Engine, EngineOptions, Request};
use lookout_pipeline::image::decode_image;
use support::*;

const LOGIT_TOLERANCE: f32 = 2e-3;

#[test]
fn image_prompts_and_continuations_match_reference() {
    for name in ["minicpmv46-tiny-16x", "minicpmv46-tiny-4x"] {
        let engine = f32_engine(name);
        let dir = fixture(name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden_vision.json")).unwrap())
                .unwrap();
        let g = goldens(dir.join("golden_vision.safetensors"));
        let question = meta["messages"][0]["content"][1]["text"].as_str().unwrap();
        for entry in meta["images"].as_array().unwrap() {
            let key = entry["key"].as_str().unwrap();
            let file = entry["file"].as_str().unwrap();
            let bytes = std::fs::read(fixture("images").join(file)).unwrap();
            let image = decode_image(&bytes).unwrap();
            let prompt = engine.image_prompt(&image, question, None).unwrap();
            let expected_ids = g[&format!("{key}.input_ids")].ids();
            assert_eq!(prompt.ids, expected_ids, "{name}/{key}: prompt token ids");
            // JPEG decoders differ by a few levels from libjpeg-turbo, so the pixels (and what
            // follows from them) are compared exactly only for lossless inputs.
            if file.ends_with(".jpg") {
                continue;
            }
            let mut state = engine.lm.new_state().unwrap();
            let mut logits = engine.lm.forward(&mut state, &prompt.embeds).unwrap();
            let first = g[&format!("{key}.first_logits")].f32();
            let err = max_abs_diff(&logits, &first);
            assert!(
                err < LOGIT_TOLERANCE,
                "{name}/{key}: first-step logits differ by {err}"
            );
            let expected = g[&format!("{key}.generated_ids")].ids();
            let mut generated = vec![];
            for _ in 0..expected.len() {
                let token = argmax(&logits);
                generated.push(token);
                logits = engine
                    .lm
                    .forward(&mut state, &engine.lm.embed(&[token]).unwrap())
                    .unwrap();
            }
            assert_eq!(generated, expected, "{name}/{key}: greedy continuation");
            eprintln!(
                "{name}/{key}: {} prompt tokens, first-logit error {err:.1e}",
                prompt.ids.len()
            );
        }
    }
}

#[test]
fn describe_reports_image_tokens_and_max_slices_limits_them() {
    let engine = f32_engine("minicpmv46-tiny-16x");
    let bytes = std::fs::read(fixture("images").join("wide_1000x100.png")).unwrap();
    let mut request = Request::new("What is in the image?");
    request.image = Some(decode_image(&bytes).unwrap());
    request.max_tokens = 4;
    let sliced = engine.describe(&request, &mut |_| {}).unwrap();
    request.max_slices = Some(1);
    let overview_only = engine.describe(&request, &mut |_| {}).unwrap();
    assert!(sliced.image_tokens > overview_only.image_tokens);
    assert!(overview_only.image_tokens > 0);
    assert!(sliced.timings.encode_ms > 0.0);
}

#[test]
fn a_cancelled_request_stops_at_the_next_token() {
    let engine = f32_engine("minicpmv46-tiny-16x");
    let bytes = std::fs::read(fixture("images").join("tiny_40x30.png")).unwrap();
    let mut request = Request::new("What is in the image?");
    request.image = Some(decode_image(&bytes).unwrap());
    request.max_tokens = 16;
    let mut pieces = 0;
    let full = engine
        .describe(&request, &mut |_| pieces += 1)
        .expect("uncancelled");
    assert!(pieces > 2, "{full:?}");

    // Cancelled while the first piece of text is handed out: no second piece.
    let cancel = request.cancel.clone();
    let mut pieces = 0;
    let err = engine
        .describe(&request, &mut |_| {
            pieces += 1;
            cancel.cancel();
        })
        .unwrap_err();
    assert_eq!(err.downcast_ref::<Cancelled>(), Some(&Cancelled), "{err:#}");
    assert_eq!(pieces, 1);

    // Already cancelled: it ends before anything is encoded or decoded.
    let mut pieces = 0;
    let err = engine.describe(&request, &mut |_| pieces += 1).unwrap_err();
    assert_eq!(err.downcast_ref::<Cancelled>(), Some(&Cancelled), "{err:#}");
    assert_eq!(pieces, 0);
}

#[test]
fn text_only_checkpoint_refuses_images_clearly() {
    let engine = f32_engine("qwen35-tiny-a");
    let mut request = Request::new("hi");
    request.image = Some(
        decode_image(&std::fs::read(fixture("images").join("tiny_40x30.png")).unwrap()).unwrap(),
    );
    let err = engine.describe(&request, &mut |_| {}).unwrap_err();
    assert!(format!("{err:#}").contains("no vision tower"), "{err:#}");
}

#[test]
fn text_only_chat_template_gets_the_image_token_inline() {
    // A template that only accepts string content, as Qwen's own text template does.
    let dir = copy_fixture("minicpmv46-tiny-16x", "string-template");
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{%- for message in messages %}{%- if message.content.startswith('<tool') %}{%- endif %}\
         {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}\
         {%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
    )
    .unwrap();
    let engine = Engine::load(
        &dir,
        &EngineOptions {
            precision: Precision::F32,
            threads: Some(1),
        },
    )
    .unwrap();
    let g = goldens(fixture("minicpmv46-tiny-16x").join("golden_vision.safetensors"));
    let image = decode_image(&std::fs::read(fixture("images").join("square_300x300.png")).unwrap())
        .unwrap();
    let prompt = engine
        .image_prompt(&image, "What is in the image?", None)
        .unwrap();
    assert_eq!(prompt.ids, g["square_300x300.input_ids"].ids());
}
