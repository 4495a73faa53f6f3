//! Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling with a
//! repetition penalty, from a seedable generator so that a seeded run repeats exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 1.0 disables the penalty.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy decoding: deterministic, and what the faithfulness tests compare against.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// The sampling recommended for MiniCPM-V 4.6 instruct checkpoints.
    pub fn recommended() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_k: 100,
            top_p: 0.8,
            repetition_penalty: 1.05,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Scratch buffer of (token, logit) candidates, reused across steps.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            candidates: Vec::new(),
        }
    }

    /// Picks the next token. `history` is every token seen so far (prompt and generated), which the
    /// repetition penalty discourages, as transformers' `RepetitionPenaltyLogitsProcessor` does.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let penalty = self.params.repetition_penalty;
        if penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let l = &mut logits[t as usize];
                    *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                }
            }
        }
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }

        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let k = self.params.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(by_logit_desc);

        // Softmax over the survivors, then keep the smallest prefix whose mass reaches top-p.
        let max = self.candidates[0].1;
        let mut total = 0.0f32;
        for c in self.candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1;
        }
        let mut kept_mass = 0.0f32;
        let mut kept = self.candidates.len();
        for (i, c) in self.candidates.iter().enumerate() {
            kept_mass += c.1 / total;
            if kept_mass >= self.params.top_p {
                kept = i + 1;
                break;
            }
        }
        self.candidates.truncate(kept);
        let mass: f32 = self.candidates.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for &(token, p) in &self.candidates {
            if r < p {
                return token;
            }
            r -= p;
        }
        self.candidates[self.candidates.len() - 1].0
    }
}

/// Index of the largest logit; the first one on ties, as torch's argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_choice() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params);
        // Token 0 wins unpenalized (4 > 3), loses once seen (4 / 2 = 2 < 3).
        assert_eq!(s.sample(&mut [4.0, 3.0], &[]), 0);
        assert_eq!(s.sample(&mut [4.0, 3.0], &[0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.2], &[]), 1);
        }
    }

    #[test]
    fn top_p_excludes_the_tail_and_seed_repeats() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
            ..SamplingParams::default()
        };
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.5 keeps only the first.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(params.clone());
        for _ in 0..50 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 0);
        }
        let wide = SamplingParams {
            top_p: 1.0,
            ..params
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..64)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&wide);
        assert_eq!(a, draw(&wide), "same seed, same draws");
        assert!(
            a.iter().any(|&t| t != 0),
            "full distribution samples beyond the top token"
        );
    }
}
