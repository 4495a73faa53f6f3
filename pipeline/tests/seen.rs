//! Looks that reuse what the last one saw: unchanged slices keep their features, an unchanged
//! image keeps the language model's state after it, and either way the answers and the text are
//! the ones computed from scratch.

mod support;

use lookout_pipeline::answer::{Answer, AnswerKind, Question};
use lookout_pipeline::engine::{Cancel, Engine, Request};
use lookout_pipeline::image::{RgbImage, decode_image};
use lookout_pipeline::sampler::SamplingParams;
use lookout_pipeline::seen::{Reuse, ReusePolicy, Seen};
use support::*;

fn photo() -> RgbImage {
    decode_image(&std::fs::read(fixture("images").join("photo_640x480.jpg")).unwrap()).unwrap()
}

/// `image` with a square painted white: inside the top-left slice only.
fn with_square(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let mut rgb = image.as_raw().to_vec();
    for y in 40..80 {
        for x in 40..80 {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
        }
    }
    RgbImage::from_raw_rgb(w, h, rgb).unwrap()
}

/// `image` with every channel of every pixel moved by one level, up or down in a fixed pattern.
fn with_noise(image: &RgbImage) -> RgbImage {
    let rgb = image
        .as_raw()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (i * 7919) % 3 == 0 {
                v.saturating_add(1)
            } else {
                v.saturating_sub(1)
            }
        })
        .collect();
    RgbImage::from_raw_rgb(image.width(), image.height(), rgb).unwrap()
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            text: "Is there a person? Answer yes or no.".into(),
            kind: AnswerKind::YesNo,
        },
        Question {
            text: "Which colour is the car?".into(),
            kind: AnswerKind::choice(vec!["red".into(), "blue".into(), "green".into()]).unwrap(),
        },
    ]
}

fn look(engine: &Engine, image: &RgbImage, previous: Option<Seen>, threshold: f32) -> Seen {
    engine
        .see(
            image,
            None,
            previous,
            &ReusePolicy { threshold },
            &Cancel::default(),
        )
        .unwrap()
}

fn answers(engine: &Engine, seen: &mut Seen) -> Vec<Answer> {
    engine
        .answer_seen(seen, &questions(), &Cancel::default())
        .unwrap()
}

/// Answers agree exactly, timings and reuse aside.
fn assert_same(a: &[Answer], b: &[Answer]) {
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a.value, b.value, "{}", a.question);
        assert_eq!(a.logprobs, b.logprobs, "{}", a.question);
    }
}

fn reuse(answers: &[Answer]) -> Reuse {
    answers[0]
        .timings
        .reuse
        .expect("answers about an image report reuse")
}

#[test]
fn an_unchanged_image_is_neither_encoded_nor_read_again() {
    let engine = f32_engine("minicpmv46-tiny-16x");
    let image = photo();
    let mut first = look(&engine, &image, None, 0.0);
    let slices = first.reuse().slices_encoded;
    assert!(slices > 2, "the photo is sliced: {:?}", first.reuse());
    let from_scratch = answers(&engine, &mut first);
    assert!(!reuse(&from_scratch).prefix_reused);

    // The same frame again: every slice and the state after the image carry over.
    let mut again = look(&engine, &image, Some(first), 0.0);
    assert_eq!(
        again.reuse(),
        Reuse {
            slices_encoded: 0,
            slices_reused: slices,
            prefix_reused: false
        }
    );
    let follow_up = answers(&engine, &mut again);
    assert!(reuse(&follow_up).prefix_reused);
    assert_eq!(follow_up[0].timings.shared_prefill_ms, 0.0);
    assert_same(&from_scratch, &follow_up);
    // And a further question on the same look reuses it too.
    assert!(reuse(&answers(&engine, &mut again)).prefix_reused);

    // A description from the saved state: the same tokens as a description from scratch.
    let request = Request {
        max_tokens: 12,
        sampling: SamplingParams::default(),
        ..Request::new("Describe the image.")
    };
    let described = engine
        .describe_seen(&mut again, &request, &mut |_| {})
        .unwrap();
    assert!(described.timings.reuse.unwrap().prefix_reused);
    let scratch = engine
        .describe(
            &Request {
                image: Some(image),
                ..request
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(described.tokens, scratch.tokens);
}

#[test]
fn a_change_in_one_slice_encodes_that_slice_and_the_overview_only() {
    let engine = f32_engine("minicpmv46-tiny-16x");
    let before = look(&engine, &photo(), None, 0.0);
    let slices = before.reuse().slices_encoded;
    let changed = with_square(&photo());
    let mut after = look(&engine, &changed, Some(before), 0.0);
    assert_eq!(
        after.reuse(),
        Reuse {
            slices_encoded: 2,
            slices_reused: slices - 2,
            prefix_reused: false
        }
    );
    // Reused features are exact: the answers are those of a fresh look at the changed frame.
    let partly_reused = answers(&engine, &mut after);
    assert!(!reuse(&partly_reused).prefix_reused);
    let fresh = answers(&engine, &mut look(&engine, &changed, None, 0.0));
    assert_same(&fresh, &partly_reused);
}

#[test]
fn sensor_noise_is_reused_only_under_a_threshold() {
    let engine = f32_engine("minicpmv46-tiny-16x");
    let image = photo();
    let slices = look(&engine, &image, None, 0.0).reuse().slices_encoded;
    let noisy = with_noise(&image);

    let exact = look(&engine, &noisy, Some(look(&engine, &image, None, 0.0)), 0.0);
    assert_eq!(exact.reuse().slices_encoded, slices, "no pixel is equal");

    let tolerant = look(&engine, &noisy, Some(look(&engine, &image, None, 0.0)), 2.0);
    assert_eq!(tolerant.reuse().slices_reused, slices);
    // A real change is still seen through the threshold.
    let moved = look(&engine, &with_square(&image), Some(tolerant), 2.0);
    assert!(moved.reuse().slices_encoded >= 1, "{:?}", moved.reuse());
}
