//! The whole model behind one call: prompt (and image) in, text out, with timings. This is what
//! the CLI and the daemon use.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use lookout_models::{Checkpoint, Precision};
use serde::Serialize;

use crate::qwen35::{LmOptions, LmState, Qwen35};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{Message, Tokenizer};

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub precision: Precision,
    /// Worker threads for matrix products; `None` uses every core.
    pub threads: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            precision: Precision::Q4_0,
            threads: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

impl Request {
    pub fn new(prompt: impl Into<String>) -> Request {
        Request {
            prompt: prompt.into(),
            max_tokens: 256,
            sampling: SamplingParams::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced one of the chat template's end tokens.
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub load_ms: f64,
    pub encode_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Description {
    pub text: String,
    /// Generated token ids, the end token included when there was one.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

pub struct Engine {
    pub tokenizer: Tokenizer,
    pub lm: Qwen35,
    load_ms: f64,
}

impl Engine {
    pub fn load(dir: &Path, options: &EngineOptions) -> anyhow::Result<Engine> {
        let start = Instant::now();
        set_threads(options.threads)?;
        let checkpoint = Checkpoint::open(dir)?;
        let tokenizer = Tokenizer::open(dir, &checkpoint.text.eos_token_ids)?;
        let lm = Qwen35::load(&checkpoint, &LmOptions::new(options.precision))
            .with_context(|| format!("loading the language model from {}", dir.display()))?;
        Ok(Engine {
            tokenizer,
            lm,
            load_ms: ms(start),
        })
    }

    /// Answers `request`, calling `on_text` with each piece of text as soon as it is complete
    /// UTF-8.
    pub fn describe(
        &self,
        request: &Request,
        on_text: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Description> {
        request.sampling.validate().map_err(anyhow::Error::msg)?;
        let rendered = self
            .tokenizer
            .render_chat(&[Message::user(request.prompt.clone())], true)?;
        let prompt_ids = self.tokenizer.encode(&rendered)?;
        let embeds = self.lm.embed(&prompt_ids)?;
        self.generate(request, &prompt_ids, embeds, 0, 0.0, on_text)
    }

    /// Prefills `embeds` (the prompt, with any image features spliced in) and decodes.
    fn generate(
        &self,
        request: &Request,
        prompt_ids: &[u32],
        embeds: Vec<f32>,
        image_tokens: usize,
        encode_ms: f64,
        on_text: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Description> {
        let max_context = self.lm.config.max_position_embeddings;
        anyhow::ensure!(
            prompt_ids.len() + request.max_tokens <= max_context,
            "the prompt ({} tokens) plus max tokens ({}) exceed the model's context of {max_context}",
            prompt_ids.len(),
            request.max_tokens
        );
        let mut state: LmState = self.lm.new_state()?;
        let mut sampler = Sampler::new(request.sampling.clone());
        let mut history: Vec<u32> = prompt_ids.to_vec();
        let mut stream = self.tokenizer.stream();
        let mut text = String::new();
        let mut tokens = Vec::new();

        let prefill_start = Instant::now();
        let mut logits = self.lm.forward(&mut state, &embeds)?;
        let prefill_ms = ms(prefill_start);

        let decode_start = Instant::now();
        let mut stop_reason = StopReason::MaxTokens;
        for step in 0..request.max_tokens {
            let token = sampler.sample(&mut logits, &history);
            tokens.push(token);
            history.push(token);
            if self.tokenizer.stop_tokens().contains(&token) {
                stop_reason = StopReason::EndOfTurn;
                break;
            }
            if let Some(piece) = stream.push(token)? {
                on_text(&piece);
                text.push_str(&piece);
            }
            if step + 1 < request.max_tokens {
                logits = self.lm.forward(&mut state, &self.lm.embed(&[token])?)?;
            }
        }
        let decode_ms = ms(decode_start);
        // Tokens decoded after the first: the first comes from the prefill logits.
        let decoded = tokens.len().saturating_sub(1);
        Ok(Description {
            text,
            tokens,
            prompt_tokens: prompt_ids.len(),
            image_tokens,
            stop_reason,
            timings: Timings {
                load_ms: self.load_ms,
                encode_ms,
                prefill_ms,
                decode_ms,
                prefill_tokens_per_s: per_second(prompt_ids.len(), prefill_ms),
                decode_tokens_per_s: per_second(decoded, decode_ms),
            },
        })
    }
}

/// Sets the worker pool used by tract's matrix products for the whole process.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    let n = match threads {
        Some(0) => anyhow::bail!("threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    use tract_linalg::multithread::{Executor, set_default_executor};
    set_default_executor(if n == 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(n)
    });
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn per_second(count: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        count as f64 * 1000.0 / ms
    } else {
        0.0
    }
}
