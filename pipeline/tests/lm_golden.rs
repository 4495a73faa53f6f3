//! The Qwen3.5 language model against transformers' own outputs on the tiny fixtures.
//!
//! With f32 weights every step's logits must match within `F32_TOLERANCE` and the greedy tokens
//! must be identical. f16 and Q4_0 are lossy: their logit error is bounded and the share of greedy
//! steps that agree with the reference is checked.

mod support;

use lookout_models::{Checkpoint, Precision};
use lookout_pipeline::qwen35::{LmOptions, Qwen35};
use support::*;

/// Max absolute logit difference allowed with f32 weights (logits have std ~2).
const F32_TOLERANCE: f32 = 2e-3;

const LM_FIXTURES: [&str; 4] = [
    "qwen35-tiny-a",
    "qwen35-tiny-b",
    "minicpmv46-tiny-16x",
    "minicpmv46-tiny-4x",
];

fn load(name: &str, options: LmOptions) -> (Qwen35, std::collections::HashMap<String, Golden>) {
    let ckpt = Checkpoint::open(&fixture(name)).unwrap();
    let lm = Qwen35::load(&ckpt, &options).unwrap();
    (lm, goldens(fixture(name).join("golden_lm.safetensors")))
}

/// Greedy continuation fed with the reference's tokens; returns the max logit error and how many
/// steps picked the reference's token.
fn greedy_steps(lm: &Qwen35, g: &std::collections::HashMap<String, Golden>) -> (f32, usize) {
    let prompt = g["prompt_ids"].ids();
    let expected_tokens = g["generated_ids"].ids();
    let step_logits = &g["step_logits"];
    let mut state = lm.new_state().unwrap();
    let mut logits = lm.forward(&mut state, &lm.embed(&prompt).unwrap()).unwrap();
    let mut worst = 0f32;
    let mut agree = 0;
    for (step, &expected) in expected_tokens.iter().enumerate() {
        worst = worst.max(max_abs_diff(&logits, &step_logits.row(step)));
        if argmax(&logits) == expected {
            agree += 1;
        }
        logits = lm
            .forward(&mut state, &lm.embed(&[expected]).unwrap())
            .unwrap();
    }
    worst = worst.max(max_abs_diff(
        &logits,
        &step_logits.row(expected_tokens.len()),
    ));
    (worst, agree)
}

#[test]
fn f32_greedy_continuation_matches_reference() {
    for name in LM_FIXTURES {
        let (lm, g) = load(name, LmOptions::new(Precision::F32));
        let (worst, agree) = greedy_steps(&lm, &g);
        let steps = g["generated_ids"].values.len();
        eprintln!("{name}: f32 max logit error {worst:.2e}, greedy agreement {agree}/{steps}");
        assert!(worst < F32_TOLERANCE, "{name}: logits differ by {worst}");
        assert_eq!(agree, steps, "{name}: greedy tokens differ");
    }
}

#[test]
fn f32_prefill_logits_match_at_every_position() {
    for name in LM_FIXTURES {
        let mut options = LmOptions::new(Precision::F32);
        options.all_logits = true;
        let (lm, g) = load(name, options);
        let ids = g["prefill_ids"].ids();
        let mut state = lm.new_state().unwrap();
        let logits = lm.forward(&mut state, &lm.embed(&ids).unwrap()).unwrap();
        let worst = max_abs_diff(&logits, &g["prefill_logits"].f32());
        eprintln!(
            "{name}: prefill of {} tokens, max logit error {worst:.2e}",
            ids.len()
        );
        assert!(
            worst < F32_TOLERANCE,
            "{name}: prefill logits differ by {worst}"
        );
    }
}

#[test]
fn inputs_embeds_entry_point_matches_reference() {
    for name in LM_FIXTURES {
        let mut options = LmOptions::new(Precision::F32);
        options.all_logits = true;
        let (lm, g) = load(name, options);
        let mut state = lm.new_state().unwrap();
        let logits = lm.forward(&mut state, &g["embeds_input"].f32()).unwrap();
        let worst = max_abs_diff(&logits, &g["embeds_logits"].f32());
        assert!(
            worst < F32_TOLERANCE,
            "{name}: logits from embeddings differ by {worst}"
        );
    }
}

#[test]
fn prefill_in_pieces_equals_prefill_at_once() {
    // Caches carried across calls must give the same result as one long call.
    let (lm, g) = load("qwen35-tiny-b", LmOptions::new(Precision::F32));
    let ids = g["prefill_ids"].ids();
    let mut whole = lm.new_state().unwrap();
    let once = lm.forward(&mut whole, &lm.embed(&ids).unwrap()).unwrap();
    let mut pieces = lm.new_state().unwrap();
    let mut last = vec![];
    for chunk in ids.chunks(17) {
        last = lm.forward(&mut pieces, &lm.embed(chunk).unwrap()).unwrap();
    }
    assert!(max_abs_diff(&once, &last) < 1e-4);
    assert_eq!(pieces.position, ids.len());
}

/// Lossy precisions: bounded logit error and greedy agreement, at bounds a little above what was
/// measured, so a regression shows. Measured (max logit error, agreement over 32 teacher-forced
/// steps): f16 0.020 / 32 on tiny-a (tiny-16x stores f16 weights, so its f16 error is 0); Q4_0
/// 5.8 / 10 on tiny-a and 4.2 / 17 on tiny-16x. Q4_0 is harsh on these random checkpoints:
/// 64-wide rows are two blocks, so one outlier sets the scale of half a row. That the Q4_0
/// product itself is exact (8-bit activations included) is checked separately
/// (`graph::tests`), against f32 matmuls on the dequantized operands.
#[test]
fn f16_and_q4_0_error_is_bounded() {
    for (precision, max_error, min_agreement) in
        [(Precision::F16, 0.05, 1.0), (Precision::Q4_0, 8.0, 0.25)]
    {
        for name in ["qwen35-tiny-a", "minicpmv46-tiny-16x"] {
            let (lm, g) = load(name, LmOptions::new(precision));
            let (worst, agree) = greedy_steps(&lm, &g);
            let steps = g["generated_ids"].values.len();
            eprintln!(
                "{name}: {precision} max logit error {worst:.3}, greedy agreement {agree}/{steps}"
            );
            assert!(
                worst < max_error,
                "{name} {precision}: logit error {worst} above {max_error}"
            );
            assert!(
                agree as f32 >= min_agreement * steps as f32,
                "{name} {precision}: only {agree}/{steps} agree"
            );
        }
    }
}
