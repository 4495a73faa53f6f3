//! Typed answers against transformers: every option's total log probability after the prompt
//! (`golden_answers.json`, from `models/tools/make_answer_goldens.py`), the winner, and answers
//! from the shared, forked prompt state equal to answers computed one question at a time.
//! The goldens are whole-prompt computations; lookout continues a fork of the state after the
//! image for every question, so they also prove the fork.

mod support;

use lookout_pipeline::answer::{Answer, AnswerKind, NO, Question, Value, YES};
use lookout_pipeline::engine::{Cancel, Engine};
use lookout_pipeline::image::{RgbImage, decode_image};
use support::*;

const LOGPROB_TOLERANCE: f64 = 2e-3;

struct Case {
    image: Option<RgbImage>,
    /// Question text, options (as the golden scores them), each option's log probability.
    questions: Vec<(String, Vec<(String, f64)>)>,
}

fn golden(name: &str) -> Case {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("golden_answers.json")).unwrap(),
    )
    .unwrap();
    let image = meta["image"]
        .as_str()
        .map(|file| decode_image(&std::fs::read(fixture("images").join(file)).unwrap()).unwrap());
    let questions = meta["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let options = q["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["text"].as_str().unwrap().to_string(),
                        o["logprob"].as_f64().unwrap(),
                    )
                })
                .collect();
            (q["text"].as_str().unwrap().to_string(), options)
        })
        .collect();
    Case { image, questions }
}

/// The golden's questions as lookout asks them: the four yes/no forms as `yes_no`, the rest as
/// choices.
fn questions(case: &Case) -> Vec<Question> {
    case.questions
        .iter()
        .map(|(text, options)| {
            let texts: Vec<String> = options.iter().map(|(t, _)| t.clone()).collect();
            let forms: Vec<String> = YES.iter().chain(&NO).map(|s| s.to_string()).collect();
            Question {
                text: text.clone(),
                kind: if texts == forms {
                    AnswerKind::YesNo
                } else {
                    AnswerKind::choice(texts).unwrap()
                },
            }
        })
        .collect()
}

fn ask(engine: &Engine, case: &Case, questions: &[Question]) -> Vec<Answer> {
    engine
        .answer(case.image.as_ref(), None, questions, &Cancel::default())
        .unwrap()
}

#[test]
fn option_scores_and_winners_match_the_reference() {
    for name in ["minicpmv46-tiny-16x", "minicpmv46-tiny-4x", "qwen35-tiny-a"] {
        let engine = f32_engine(name);
        let case = golden(name);
        let questions = questions(&case);
        let answers = ask(&engine, &case, &questions);
        for ((text, options), answer) in case.questions.iter().zip(&answers) {
            for (option, expected) in options {
                let got = answer.logprobs[option];
                assert!(
                    (got - expected).abs() < LOGPROB_TOLERANCE,
                    "{name}: {text:?} / {option:?}: {got} against the reference's {expected}"
                );
            }
            let (best, _) = options.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
            match &answer.value {
                Value::Bool(yes) => {
                    assert_eq!(*yes, YES.contains(&best.as_str()), "{name}: {text:?}")
                }
                Value::Text(choice) => assert_eq!(choice, best, "{name}: {text:?}"),
                other => panic!("{other:?}"),
            }
            let total: f64 = answer.scores.values().sum();
            assert!((total - 1.0).abs() < 1e-9, "{answer:?}");
            assert!(answer.confidence >= 1.0 / answer.scores.len() as f64);
        }
        // The image's tokens and the chat header are read once for all the questions.
        let t = &answers[0].timings;
        assert!(t.shared_tokens > 0 && t.question_tokens > 0, "{t:?}");
        if case.image.is_some() {
            assert!(t.shared_tokens > 16, "the image tokens are shared: {t:?}");
        }
    }
}

#[test]
fn answers_from_the_shared_state_equal_answers_one_at_a_time() {
    let name = "minicpmv46-tiny-16x";
    let engine = f32_engine(name);
    let case = golden(name);
    let mut questions = questions(&case);
    questions.push(Question {
        text: "How many cars are in the driveway?".into(),
        kind: AnswerKind::Number,
    });
    questions.push(Question {
        text: "What is in the image?".into(),
        kind: AnswerKind::Text(6),
    });
    let together = ask(&engine, &case, &questions);
    for (question, shared) in questions.iter().zip(&together) {
        let alone = ask(&engine, &case, std::slice::from_ref(question)).remove(0);
        assert_eq!(alone.value, shared.value, "{:?}", question.text);
        for (option, lp) in &alone.logprobs {
            assert!(
                (lp - shared.logprobs[option]).abs() < 1e-4,
                "{:?} / {option:?}",
                question.text
            );
        }
        assert!((alone.confidence - shared.confidence).abs() < 1e-4);
        // Alone or together, the question continues the state after the image.
        assert_eq!(alone.timings.shared_tokens, shared.timings.shared_tokens);
    }
    let number = &together[together.len() - 2];
    match number.value {
        Value::Number(n) => assert!(n.is_finite(), "{number:?}"),
        ref other => panic!("a number answer gave {other:?}"),
    }
    assert!(number.confidence > 0.0 && number.confidence <= 1.0);
}
