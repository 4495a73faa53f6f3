//! Answers picked from a fixed set by the model's own probabilities: yes or no, a number, one of
//! a few states. Reading the distribution instead of sampling text gives the same answer every
//! time, a confidence to threshold on, and no free text to parse.

use serde::Serialize;

use crate::engine::Timings;

/// One option and how likely the model finds it as the whole answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoredOption {
    pub text: String,
    /// The option's token ids, as they were fed to the model.
    pub tokens: Vec<u32>,
    /// Natural-log probability of all of the option's tokens, each given the ones before it.
    pub logprob: f64,
    /// `exp(logprob)` normalised over the options, so that they sum to 1.
    pub share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    /// In the order they were given.
    pub options: Vec<ScoredOption>,
    /// Index of the most likely option (the first of equals).
    pub best: usize,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    /// `decode_ms` is the time spent feeding the options after the prompt.
    pub timings: Timings,
}

impl Choice {
    pub(crate) fn new(
        scored: Vec<(String, Vec<u32>, f64)>,
        prompt_tokens: usize,
        image_tokens: usize,
        timings: Timings,
    ) -> Choice {
        let top = scored
            .iter()
            .map(|(_, _, lp)| *lp)
            .fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scored.iter().map(|(_, _, lp)| (lp - top).exp()).sum();
        let options: Vec<ScoredOption> = scored
            .into_iter()
            .map(|(text, tokens, logprob)| ScoredOption {
                text,
                tokens,
                logprob,
                share: (logprob - top).exp() / total,
            })
            .collect();
        let best = options.iter().position(|o| o.logprob == top).unwrap_or(0);
        Choice {
            options,
            best,
            prompt_tokens,
            image_tokens,
            timings,
        }
    }

    pub fn best(&self) -> &ScoredOption {
        &self.options[self.best]
    }
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
    fn shares_sum_to_one_and_the_best_is_the_most_likely() {
        let choice = Choice::new(
            vec![
                ("no".into(), vec![1], -3.0),
                ("yes".into(), vec![2], -0.5),
                ("maybe".into(), vec![3, 4], -0.5 - 1e-3),
            ],
            10,
            0,
            Timings::default(),
        );
        assert_eq!(choice.best().text, "yes");
        let total: f64 = choice.options.iter().map(|o| o.share).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let expected = 1.0 / (1.0 + (-2.5f64).exp() + (-1e-3f64).exp());
        assert!((choice.options[1].share - expected).abs() < 1e-12);
    }
}
