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
        assert_matches_reference(&f32_engine(name), name);
    }
}

/// Every layout transformers 5 reads gives the goldens' tokens: the checkpoint as
/// `save_pretrained` writes it (`minicpmv46-tiny-16x-saved`: the image processor nested in
/// processor_config.json, no preprocessor_config.json, chat_template.jinja only), the older
/// layout (preprocessor_config.json, the template inside tokenizer_config.json), and a processor
/// chat_template.json.
#[test]
fn every_checkpoint_layout_gives_the_reference_tokens() {
    let saved = f32_engine("minicpmv46-tiny-16x-saved");
    assert_matches_reference(&saved, "minicpmv46-tiny-16x");

    let legacy = copy_fixture("minicpmv46-tiny-16x", "legacy-layout");
    std::fs::remove_file(legacy.join("processor_config.json")).unwrap();
    std::fs::remove_file(legacy.join("chat_template.jinja")).unwrap();
    assert_matches_reference(&engine_at(&legacy), "minicpmv46-tiny-16x");

    let json = copy_fixture("minicpmv46-tiny-16x-saved", "json-template");
    let template = std::fs::read_to_string(json.join("chat_template.jinja")).unwrap();
    std::fs::remove_file(json.join("chat_template.jinja")).unwrap();
    let wrapped = serde_json::json!({ "chat_template": template });
    std::fs::write(json.join("chat_template.json"), wrapped.to_string()).unwrap();
    assert_matches_reference(&engine_at(&json), "minicpmv46-tiny-16x");

    // Both processor files, disagreeing: the nested settings win, as in transformers (a
    // preprocessor_config.json that slices differently would change the prompt's tokens).
    let both = copy_fixture("minicpmv46-tiny-16x-saved", "both-processor-files");
    let mut legacy_settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(both.join("processor_config.json")).unwrap())
            .unwrap();
    let mut legacy_settings = legacy_settings["image_processor"].take();
    legacy_settings["max_slice_nums"] = 1.into();
    legacy_settings["slice_mode"] = false.into();
    std::fs::write(
        both.join("preprocessor_config.json"),
        legacy_settings.to_string(),
    )
    .unwrap();
    assert_matches_reference(&engine_at(&both), "minicpmv46-tiny-16x");

    // Neither: an error naming both files.
    let neither = copy_fixture("minicpmv46-tiny-16x-saved", "no-processor-files");
    std::fs::remove_file(neither.join("processor_config.json")).unwrap();
    let err = Engine::load(&neither, &EngineOptions::default())
        .err()
        .expect("no image processor settings");
    let err = format!("{err:#}");
    assert!(
        err.contains("processor_config.json") && err.contains("preprocessor_config.json"),
        "{err}"
    );
}

fn engine_at(dir: &std::path::Path) -> Engine {
    Engine::load(
        dir,
        &EngineOptions {
            precision: lookout_models::Precision::F32,
            threads: Some(2),
            compiled_cache: None,
        },
    )
    .unwrap()
}

/// Prompt ids, first logits and greedy continuations of `engine` against the goldens of the
/// fixture `golden`.
fn assert_matches_reference(engine: &Engine, golden: &str) {
    let name = golden;
    let dir = fixture(golden);
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
            compiled_cache: None,
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
