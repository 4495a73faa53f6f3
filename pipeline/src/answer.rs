//! Typed answers to questions about one image: yes/no, one of a list, a number, short text.
//!
//! The answer is valid by construction, never parsed from free text: yes/no and choices are the
//! options scored by the model's own probabilities, a number is decoded with
//! only digits allowed. The image is encoded once and the prompt prefix the questions share (the
//! chat header and the image tokens come before the question text) is read once; each question
//! then continues a fork of that state and costs only its own tokens.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::engine::{Cancel, Engine, ImagePrompt, ms};
use crate::image::RgbImage;
use crate::qwen35::LmState;
use crate::sampler::argmax;
use crate::seen::ReusePolicy;

/// The surface forms of a yes and a no, summed per side: a chat model may start either way.
pub const YES: [&str; 2] = ["Yes", "yes"];
pub const NO: [&str; 2] = ["No", "no"];

/// Most tokens of a number answer.
pub(crate) const NUMBER_TOKENS: usize = 12;

#[derive(Clone, Debug, PartialEq)]
pub enum AnswerKind {
    YesNo,
    /// One of these options (at least two, all different).
    Choice(Vec<String>),
    /// An integer or decimal number, optionally signed.
    Number,
    /// Free text of at most this many tokens, greedy.
    Text(usize),
}

impl AnswerKind {
    pub fn name(&self) -> &'static str {
        match self {
            AnswerKind::YesNo => "yes_no",
            AnswerKind::Choice(_) => "choice",
            AnswerKind::Number => "number",
            AnswerKind::Text(_) => "text",
        }
    }
}

/// Default length of a `text` answer.
pub const TEXT_TOKENS: usize = 32;

impl FromStr for AnswerKind {
    type Err = String;

    /// `yes_no`, `number`, `text` or `choice:a,b,c`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "yes_no" => Ok(AnswerKind::YesNo),
            "number" => Ok(AnswerKind::Number),
            "text" => Ok(AnswerKind::Text(TEXT_TOKENS)),
            _ => match s.strip_prefix("choice:") {
                Some(list) => {
                    let options: Vec<String> =
                        list.split(',').map(|o| o.trim().to_string()).collect();
                    AnswerKind::choice(options)
                }
                None => Err(format!(
                    "unknown answer type {s:?}: use yes_no, number, text or choice:a,b,c"
                )),
            },
        }
    }
}

impl AnswerKind {
    /// A choice among `options`, checked: at least two, none empty, no two alike.
    pub fn choice(options: Vec<String>) -> Result<AnswerKind, String> {
        if options.len() < 2 {
            return Err(format!(
                "a choice needs at least two options (got {options:?})"
            ));
        }
        if let Some(empty) = options.iter().position(|o| o.is_empty()) {
            return Err(format!("choice option {empty} is empty"));
        }
        for (i, o) in options.iter().enumerate() {
            if options[..i].contains(o) {
                return Err(format!("choice option {o:?} is given twice"));
            }
        }
        Ok(AnswerKind::Choice(options))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// Asked verbatim: instructions such as "Answer yes or no." are the asker's to write.
    pub text: String,
    pub kind: AnswerKind,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// As a person reads it: `yes` / `no`, the number, the text.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("yes"),
            Value::Bool(false) => f.write_str("no"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AnswerTimings {
    /// Image encoding, shared by every question about the image.
    pub encode_ms: f64,
    /// Reading the prompt prefix the questions share, once for all of them.
    pub shared_prefill_ms: f64,
    /// This question's own tokens and its answer.
    pub question_ms: f64,
    pub shared_tokens: usize,
    pub question_tokens: usize,
    /// What was taken from the camera's previous look (questions about an image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<crate::seen::Reuse>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    pub question: String,
    /// The answer type's name (`yes_no`, `choice`, `number`, `text`).
    pub answer: &'static str,
    pub value: Value,
    /// The probability the model gives the value among the allowed answers (`text`: the mean
    /// per-token probability).
    pub confidence: f64,
    /// Per option, its probability among the options (yes/no and choices).
    pub scores: BTreeMap<String, f64>,
    /// Each option's total log probability after the prompt (yes/no: each surface form).
    pub logprobs: BTreeMap<String, f64>,
    pub timings: AnswerTimings,
}

/// A question's prompt, and the state and logits after it.
struct Asked {
    state: LmState,
    logits: Vec<f32>,
}

impl Engine {
    /// Answers every question about `image` (or without one): the image encoded once, the shared
    /// prompt prefix read once.
    pub fn answer(
        &self,
        image: Option<&RgbImage>,
        max_slices: Option<usize>,
        questions: &[Question],
        cancel: &Cancel,
    ) -> anyhow::Result<Vec<Answer>> {
        if let Some(image) = image {
            let mut seen = self.see(image, max_slices, None, &ReusePolicy::default(), cancel)?;
            return self.answer_seen(&mut seen, questions, cancel);
        }
        anyhow::ensure!(!questions.is_empty(), "no questions");
        let prompts: Vec<ImagePrompt> = questions
            .iter()
            .map(|q| self.text_prompt(&q.text))
            .collect::<anyhow::Result<_>>()?;
        let max_context = self.lm.config.max_position_embeddings;
        for prompt in &prompts {
            anyhow::ensure!(
                prompt.ids.len() + NUMBER_TOKENS.max(TEXT_TOKENS) <= max_context,
                "the prompt ({} tokens) leaves no room for an answer in the model's context of {max_context}",
                prompt.ids.len()
            );
        }
        let shared = shared_prefix(prompts.iter().map(|p| p.ids.as_slice()));
        let width = self.lm.config.hidden_size;
        cancel.check()?;
        let started = Instant::now();
        let mut prefix = self.lm.new_state()?;
        let prefix_logits = self
            .lm
            .forward(&mut prefix, &prompts[0].embeds[..shared * width])?;
        let shared_prefill_ms = ms(started);

        let mut answers = Vec::with_capacity(questions.len());
        for (question, prompt) in questions.iter().zip(&prompts) {
            cancel.check()?;
            let started = Instant::now();
            let mut state = self.lm.fork(&prefix)?;
            let logits = if prompt.ids.len() > shared {
                self.lm
                    .forward(&mut state, &prompt.embeds[shared * width..])?
            } else {
                prefix_logits.clone()
            };
            let mut answer = self.answer_one(question, state, logits, cancel)?;
            answer.timings = AnswerTimings {
                shared_prefill_ms,
                question_ms: ms(started),
                shared_tokens: shared,
                question_tokens: prompt.ids.len() - shared,
                ..AnswerTimings::default()
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Answers `question` from the state and logits after its whole prompt.
    pub(crate) fn answer_one(
        &self,
        question: &Question,
        state: LmState,
        logits: Vec<f32>,
        cancel: &Cancel,
    ) -> anyhow::Result<Answer> {
        let asked = Asked { state, logits };
        let answer = |value, confidence, scores, logprobs| Answer {
            question: question.text.clone(),
            answer: question.kind.name(),
            value,
            confidence,
            scores,
            logprobs,
            timings: AnswerTimings::default(),
        };
        Ok(match &question.kind {
            AnswerKind::YesNo => {
                let forms: Vec<&str> = YES.iter().chain(&NO).copied().collect();
                let logprobs = self.score(&asked, &forms)?;
                let shares = shares(&logprobs);
                let yes: f64 = shares[..YES.len()].iter().sum();
                let value = yes >= 0.5;
                answer(
                    Value::Bool(value),
                    if value { yes } else { 1.0 - yes },
                    BTreeMap::from([("yes".to_string(), yes), ("no".to_string(), 1.0 - yes)]),
                    forms.iter().map(|f| f.to_string()).zip(logprobs).collect(),
                )
            }
            AnswerKind::Choice(options) => {
                let texts: Vec<&str> = options.iter().map(String::as_str).collect();
                let logprobs = self.score(&asked, &texts)?;
                let shares = shares(&logprobs);
                let best = (0..shares.len())
                    .max_by(|&a, &b| logprobs[a].total_cmp(&logprobs[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                answer(
                    Value::Text(options[best].clone()),
                    shares[best],
                    options.iter().cloned().zip(shares).collect(),
                    options.iter().cloned().zip(logprobs).collect(),
                )
            }
            AnswerKind::Number => {
                let (text, confidence) = self.decode_number(asked, cancel)?;
                let value = text
                    .parse::<f64>()
                    .map_err(|e| anyhow::anyhow!("decoded number {text:?}: {e}"))?;
                answer(
                    Value::Number(value),
                    confidence,
                    BTreeMap::new(),
                    BTreeMap::new(),
                )
            }
            AnswerKind::Text(max_tokens) => {
                let (text, confidence) = self.decode_text(asked, *max_tokens, cancel)?;
                answer(
                    Value::Text(text),
                    confidence,
                    BTreeMap::new(),
                    BTreeMap::new(),
                )
            }
        })
    }

    /// Each option's total log probability after the prompt, its tokens fed in one by one on a
    /// fork of the state.
    fn score(&self, asked: &Asked, options: &[&str]) -> anyhow::Result<Vec<f64>> {
        options
            .iter()
            .map(|option| {
                let tokens = self.tokenizer.encode(option)?;
                anyhow::ensure!(!tokens.is_empty(), "option {option:?} has no tokens");
                let mut logprob = f64::from(log_softmax_at(&asked.logits, tokens[0]));
                if tokens.len() > 1 {
                    let mut state = self.lm.fork(&asked.state)?;
                    for pair in tokens.windows(2) {
                        let logits = self.lm.forward(&mut state, &self.lm.embed(&pair[..1])?)?;
                        logprob += f64::from(log_softmax_at(&logits, pair[1]));
                    }
                }
                Ok(logprob)
            })
            .collect()
    }

    /// Greedy decoding with only number tokens allowed: digits, then at most one `.`, a `-` only
    /// first, the end of the turn only after a digit. The confidence is the product of each
    /// chosen token's probability among the tokens allowed at its step.
    fn decode_number(&self, mut asked: Asked, cancel: &Cancel) -> anyhow::Result<(String, f64)> {
        let pieces = self.number_pieces();
        let stops = self.tokenizer.stop_tokens();
        let mut text = String::new();
        let mut logprob = 0.0f64;
        for step in 0..NUMBER_TOKENS {
            cancel.check()?;
            let has_digit = text.chars().any(|c| c.is_ascii_digit());
            let has_point = text.contains('.');
            let allowed = |piece: &str| match piece {
                "-" => step == 0,
                "." => has_digit && !has_point,
                digits => digits.chars().all(|c| c.is_ascii_digit()),
            };
            let mut candidates: Vec<(u32, &str)> = pieces
                .iter()
                .filter(|(_, p)| allowed(p))
                .map(|(id, p)| (*id, p.as_str()))
                .collect();
            if has_digit {
                candidates.extend(stops.iter().map(|&id| (id, "")));
            }
            let logits: Vec<f32> = candidates
                .iter()
                .map(|&(id, _)| asked.logits[id as usize])
                .collect();
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
                .ok_or_else(|| anyhow::anyhow!("the tokenizer has no digit tokens"))?;
            logprob += f64::from(log_softmax_at(&logits, best as u32));
            let (token, piece) = candidates[best];
            if piece.is_empty() {
                break;
            }
            text.push_str(piece);
            if step + 1 < NUMBER_TOKENS {
                asked.logits = self
                    .lm
                    .forward(&mut asked.state, &self.lm.embed(&[token])?)?;
            }
        }
        if text.ends_with('.') {
            text.pop();
        }
        Ok((text, logprob.exp()))
    }

    /// Greedy free text up to `max_tokens` or the end of the turn; the confidence is the mean
    /// per-token probability (the geometric mean).
    fn decode_text(
        &self,
        mut asked: Asked,
        max_tokens: usize,
        cancel: &Cancel,
    ) -> anyhow::Result<(String, f64)> {
        let mut stream = self.tokenizer.stream();
        let mut text = String::new();
        let (mut logprob, mut count) = (0.0f64, 0usize);
        for step in 0..max_tokens {
            cancel.check()?;
            let token = argmax(&asked.logits);
            logprob += f64::from(log_softmax_at(&asked.logits, token));
            count += 1;
            if self.tokenizer.stop_tokens().contains(&token) {
                break;
            }
            if let Some(piece) = stream.push(token)? {
                text.push_str(&piece);
            }
            if step + 1 < max_tokens {
                asked.logits = self
                    .lm
                    .forward(&mut asked.state, &self.lm.embed(&[token])?)?;
            }
        }
        let confidence = if count > 0 {
            (logprob / count as f64).exp()
        } else {
            1.0
        };
        Ok((text.trim().to_string(), confidence))
    }

    /// Every token that decodes to digits alone, `.` or `-`, found once per engine.
    fn number_pieces(&self) -> &[(u32, String)] {
        self.number_tokens.get_or_init(|| {
            (0..self.tokenizer.vocab_size() as u32)
                .filter_map(|id| {
                    let piece = self.tokenizer.decode(&[id]).ok()?;
                    let number = !piece.is_empty()
                        && (piece == "."
                            || piece == "-"
                            || piece.chars().all(|c| c.is_ascii_digit()));
                    number.then_some((id, piece))
                })
                .collect()
        })
    }
}

/// How many leading tokens every prompt has in common (at least one token is left to each
/// prompt only when they differ).
fn shared_prefix<'a>(mut prompts: impl Iterator<Item = &'a [u32]>) -> usize {
    let Some(first) = prompts.next() else {
        return 0;
    };
    prompts.fold(first.len(), |n, p| {
        first[..n].iter().zip(p).take_while(|(a, b)| a == b).count()
    })
}

/// `exp(logprob)` normalised over the options.
fn shares(logprobs: &[f64]) -> Vec<f64> {
    let top = logprobs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logprobs.iter().map(|l| (l - top).exp()).sum();
    logprobs.iter().map(|l| (l - top).exp() / total).collect()
}

/// `log softmax(logits)[token]`, computed stably in f64.
pub fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    (f64::from(logits[token as usize] - max) - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let logits = [1.0f32, 2.0, 3.0, -1.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let expected = (f64::from(l).exp() / z).ln();
            assert!((f64::from(log_softmax_at(&logits, i as u32)) - expected).abs() < 1e-6);
        }
        // Large logits do not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) - 0.5f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn answer_types_parse_and_bad_ones_say_why() {
        assert_eq!("yes_no".parse(), Ok(AnswerKind::YesNo));
        assert_eq!("number".parse(), Ok(AnswerKind::Number));
        assert_eq!(
            "choice:none, green,blue".parse(),
            Ok(AnswerKind::Choice(vec![
                "none".into(),
                "green".into(),
                "blue".into()
            ]))
        );
        let err = |s: &str| s.parse::<AnswerKind>().unwrap_err();
        assert!(err("boolean").contains("unknown answer type"));
        assert!(err("choice:one").contains("at least two"));
        assert!(err("choice:a,,b").contains("empty"));
        assert!(err("choice:a,b,a").contains("twice"));
    }

    #[test]
    fn the_shared_prefix_is_the_longest_common_one() {
        let a = [1, 2, 3, 4];
        let b = [1, 2, 5];
        assert_eq!(shared_prefix([&a[..], &b[..]].into_iter()), 2);
        assert_eq!(shared_prefix([&a[..]].into_iter()), 4);
        assert_eq!(shared_prefix([&a[..], &a[..]].into_iter()), 4);
    }
}
