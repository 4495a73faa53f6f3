//! The whole model behind one call: prompt (and image) in, text out, with timings. This is what
//! the CLI and the daemon use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use lookout_models::{Architecture, Checkpoint, Precision};
use serde::Serialize;

use crate::image::prompt::{PlaceholderTokens, expand_image_placeholders};
use crate::image::{ImageProcessorConfig, RgbImage};
use crate::minicpmv46::{VisionEncoder, VisionOptions};
use crate::qwen35::{LmOptions, LmState, Qwen35};
use crate::sampler::{Sampler, SamplingParams};
use crate::seen::ReusePolicy;
use crate::threads::set_threads;
use crate::tokenizer::{Message, Tokenizer};

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub precision: Precision,
    /// Worker threads for matrix products; `None` uses every core.
    pub threads: Option<usize>,
    /// Directory of the compiled cache (see [`crate::compiled`]): quantized weights written at
    /// the first start and mapped at the next ones. `None` quantizes at every start.
    pub compiled_cache: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            precision: Precision::Q4_0,
            threads: None,
            compiled_cache: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    /// The picture to answer about; `None` is a text-only chat.
    pub image: Option<RgbImage>,
    /// Overrides the checkpoint's `max_slice_nums`; 0 or 1 encodes the overview image only.
    pub max_slices: Option<usize>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Ends the request early when cancelled from another thread.
    pub cancel: Cancel,
}

impl Request {
    pub fn new(prompt: impl Into<String>) -> Request {
        Request {
            prompt: prompt.into(),
            image: None,
            max_slices: None,
            max_tokens: 256,
            sampling: SamplingParams::default(),
            cancel: Cancel::default(),
        }
    }
}

/// Stops requests early from another thread (a daemon shutting down). A request checks it before
/// each image slice is encoded, before the prefill and before each decoded token, so it ends
/// within one slice or one token, with the error [`Cancelled`]. Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The error of a request stopped through [`Cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled before it finished")
    }
}

impl std::error::Error for Cancelled {}

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
    /// What was taken from the camera's previous look instead of being computed again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<crate::seen::Reuse>,
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
    /// Present for checkpoints with a vision tower.
    pub vision: Option<Vision>,
    load_ms: f64,
    /// Tokens a number answer may use ([`crate::answer`]), found on first use.
    pub(crate) number_tokens: std::sync::OnceLock<Vec<(u32, String)>>,
}

/// The image half: processor settings, the encoder, and the token its features replace.
pub struct Vision {
    pub processor: ImageProcessorConfig,
    pub encoder: VisionEncoder,
    pub image_token_id: u32,
    pub placeholders: PlaceholderTokens,
}

impl Vision {
    fn load(
        checkpoint: &Checkpoint,
        tokenizer: &Tokenizer,
        precision: Precision,
        compiled_cache: Option<PathBuf>,
    ) -> anyhow::Result<Vision> {
        let (settings, path) = checkpoint.image_processor()?;
        let processor = ImageProcessorConfig::from_json_str(&settings.to_string())
            .with_context(|| format!("in {}", path.display()))?;
        let placeholders = PlaceholderTokens::default();
        let image_token_id = match checkpoint
            .config
            .get("image_token_id")
            .and_then(|v| v.as_u64())
        {
            Some(id) => id as u32,
            None => tokenizer
                .token_id(&placeholders.image_token)
                .with_context(|| {
                    format!(
                        "the tokenizer has no `{}` token and config.json no image_token_id",
                        placeholders.image_token
                    )
                })?,
        };
        let encoder = VisionEncoder::load_with(
            checkpoint,
            &VisionOptions {
                compiled_cache,
                ..VisionOptions::new(precision)
            },
        )?;
        Ok(Vision {
            processor,
            encoder,
            image_token_id,
            placeholders,
        })
    }
}

impl Engine {
    pub fn load(dir: &Path, options: &EngineOptions) -> anyhow::Result<Engine> {
        let start = Instant::now();
        set_threads(options.threads)?;
        let checkpoint = Checkpoint::open(dir)?;
        let tokenizer = Tokenizer::open(dir, &checkpoint.text.eos_token_ids)?;
        let lm_options = LmOptions {
            compiled_cache: options.compiled_cache.clone(),
            ..LmOptions::new(options.precision)
        };
        let lm = Qwen35::load(&checkpoint, &lm_options)
            .with_context(|| format!("loading the language model from {}", dir.display()))?;
        let vision = match checkpoint.architecture {
            Architecture::MiniCpmV46 => Some(
                Vision::load(
                    &checkpoint,
                    &tokenizer,
                    options.precision,
                    options.compiled_cache.clone(),
                )
                .with_context(|| format!("loading the vision encoder from {}", dir.display()))?,
            ),
            Architecture::Qwen35Text => None,
        };
        Ok(Engine {
            tokenizer,
            lm,
            vision,
            load_ms: ms(start),
            number_tokens: std::sync::OnceLock::new(),
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
        let prompt = self.request_prompt(request)?;
        self.generate(
            request,
            &prompt.ids,
            prompt.embeds,
            prompt.image_tokens,
            prompt.encode_ms,
            on_text,
        )
    }

    /// The chat prompt of `text` alone.
    pub(crate) fn text_prompt(&self, text: &str) -> anyhow::Result<ImagePrompt> {
        let rendered = self
            .tokenizer
            .render_chat(&[Message::user(text.to_string())], true)?;
        let ids = self.tokenizer.encode(&rendered)?;
        let embeds = self.lm.embed(&ids)?;
        Ok(ImagePrompt {
            ids,
            embeds,
            image_tokens: 0,
            encode_ms: 0.0,
        })
    }

    /// The chat prompt of `request`, with its image's features in place when it has one.
    fn request_prompt(&self, request: &Request) -> anyhow::Result<ImagePrompt> {
        match &request.image {
            Some(image) => {
                self.image_prompt_until(image, &request.prompt, request.max_slices, &request.cancel)
            }
            None => self.text_prompt(&request.prompt),
        }
    }

    /// Tokenizes a prompt about `image` exactly as the reference processor does and splices the
    /// image features into its embeddings at the placeholder positions.
    pub fn image_prompt(
        &self,
        image: &RgbImage,
        text: &str,
        max_slices: Option<usize>,
    ) -> anyhow::Result<ImagePrompt> {
        self.image_prompt_until(image, text, max_slices, &Cancel::default())
    }

    fn image_prompt_until(
        &self,
        image: &RgbImage,
        text: &str,
        max_slices: Option<usize>,
        cancel: &Cancel,
    ) -> anyhow::Result<ImagePrompt> {
        let encoded = self.encode_image(image, max_slices, cancel)?;
        self.prompt_about(&encoded, text)
    }

    /// Preprocesses and encodes `image` (slice by slice), ready to be spliced into any number of
    /// prompts about it.
    pub(crate) fn encode_image(
        &self,
        image: &RgbImage,
        max_slices: Option<usize>,
        cancel: &Cancel,
    ) -> anyhow::Result<EncodedImage> {
        Ok(self
            .see(image, max_slices, None, &ReusePolicy::default(), cancel)?
            .into_encoded())
    }

    /// The image processor's settings with `max_slices` applied.
    pub(crate) fn processor(
        &self,
        max_slices: Option<usize>,
    ) -> anyhow::Result<ImageProcessorConfig> {
        let mut processor = self.vision()?.processor.clone();
        if let Some(n) = max_slices {
            processor.max_slice_nums = n as u32;
            processor.slice_mode &= n > 1;
        }
        Ok(processor)
    }

    pub(crate) fn vision(&self) -> anyhow::Result<&Vision> {
        self.vision
            .as_ref()
            .context("this checkpoint has no vision tower (a text-only Qwen3.5 model): it cannot describe images")
    }

    /// The chat prompt of `text` about an encoded image, tokenized exactly as the reference
    /// processor does, the image features in place of its placeholder tokens.
    pub(crate) fn prompt_about(
        &self,
        encoded: &EncodedImage,
        text: &str,
    ) -> anyhow::Result<ImagePrompt> {
        let ids = self.prompt_ids(encoded, text)?;
        let (embeds, image_tokens) = self.embed_prompt(encoded, &ids)?;
        Ok(ImagePrompt {
            image_tokens,
            ids,
            embeds,
            encode_ms: encoded.encode_ms,
        })
    }

    /// The token ids of the chat prompt of `text` about an encoded image, placeholders
    /// expanded for its layout.
    pub(crate) fn prompt_ids(
        &self,
        encoded: &EncodedImage,
        text: &str,
    ) -> anyhow::Result<Vec<u32>> {
        let vision = self.vision()?;
        // Multimodal templates render an image part as the image token; text-only templates
        // (Qwen's own, for one) reject non-string content, and get the token inline instead, in
        // the same place and form.
        let rendered = match self
            .tokenizer
            .render_chat(&[Message::user_with_image(text)], true)
        {
            Ok(rendered) => rendered,
            Err(_) => {
                let inline = format!("{}\n{text}", vision.placeholders.image_token);
                self.tokenizer.render_chat(&[Message::user(inline)], true)?
            }
        };
        let expanded = expand_image_placeholders(
            &rendered,
            std::slice::from_ref(&encoded.layout),
            &vision.placeholders,
            encoded.use_image_id,
        )?;
        Ok(self.tokenizer.encode(&expanded)?)
    }

    /// The embeddings of `ids`, the image's features in place of its placeholder tokens, and
    /// how many there were.
    pub(crate) fn embed_prompt(
        &self,
        encoded: &EncodedImage,
        ids: &[u32],
    ) -> anyhow::Result<(Vec<f32>, usize)> {
        let vision = self.vision()?;
        let mut embeds = self.lm.embed(ids)?;
        let width = self.lm.config.hidden_size;
        let positions: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == vision.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let feature_rows: Vec<&[f32]> = encoded
            .features
            .iter()
            .flat_map(|f| f.chunks_exact(width))
            .collect();
        anyhow::ensure!(
            positions.len() == feature_rows.len(),
            "the prompt has {} image placeholder tokens but the encoder produced {} features",
            positions.len(),
            feature_rows.len()
        );
        for (&position, row) in positions.iter().zip(feature_rows) {
            embeds[position * width..(position + 1) * width].copy_from_slice(row);
        }
        Ok((embeds, positions.len()))
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
        self.check_room(prompt_ids.len(), request.max_tokens)?;
        let mut state: LmState = self.lm.new_state()?;
        request.cancel.check()?;
        let prefill_start = Instant::now();
        let logits = self.lm.forward(&mut state, &embeds)?;
        let timings = Timings {
            encode_ms,
            prefill_ms: ms(prefill_start),
            prefill_tokens_per_s: per_second(prompt_ids.len(), ms(prefill_start)),
            ..Timings::default()
        };
        let prompt = Prompted {
            ids: prompt_ids,
            image_tokens,
            state,
            logits,
            timings,
        };
        self.decode(request, prompt, on_text)
    }

    /// Fails when `prompt_tokens` plus `max_tokens` do not fit the model's context.
    pub(crate) fn check_room(&self, prompt_tokens: usize, max_tokens: usize) -> anyhow::Result<()> {
        let max_context = self.lm.config.max_position_embeddings;
        anyhow::ensure!(
            prompt_tokens + max_tokens <= max_context,
            "the prompt ({prompt_tokens} tokens) plus max tokens ({max_tokens}) exceed the model's context of {max_context}",
        );
        Ok(())
    }

    /// Samples up to `request.max_tokens` after a prefilled prompt.
    pub(crate) fn decode(
        &self,
        request: &Request,
        prompt: Prompted<'_>,
        on_text: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Description> {
        let Prompted {
            ids: prompt_ids,
            image_tokens,
            mut state,
            mut logits,
            mut timings,
        } = prompt;
        let mut sampler = Sampler::new(request.sampling.clone());
        let mut history: Vec<u32> = prompt_ids.to_vec();
        let mut stream = self.tokenizer.stream();
        let mut text = String::new();
        let mut tokens = Vec::new();

        let decode_start = Instant::now();
        let mut stop_reason = StopReason::MaxTokens;
        for step in 0..request.max_tokens {
            request.cancel.check()?;
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
        timings.load_ms = self.load_ms;
        timings.decode_ms = decode_ms;
        timings.decode_tokens_per_s = per_second(decoded, decode_ms);
        Ok(Description {
            text,
            tokens,
            prompt_tokens: prompt_ids.len(),
            image_tokens,
            stop_reason,
            timings,
        })
    }
}

/// A prompt read into the language model, ready to decode from.
pub(crate) struct Prompted<'a> {
    pub ids: &'a [u32],
    pub image_tokens: usize,
    pub state: LmState,
    /// After the prompt's last token.
    pub logits: Vec<f32>,
    /// Encoding and prefill so far.
    pub timings: Timings,
}

/// An image's features, slice by slice, and where they go in a prompt.
pub(crate) struct EncodedImage {
    pub layout: crate::image::prompt::ImageTokenLayout,
    pub use_image_id: bool,
    /// Overview first, then the slices row by row.
    pub features: Vec<Vec<f32>>,
    pub encode_ms: f64,
}

/// A prompt about an image, ready for prefill.
pub struct ImagePrompt {
    pub ids: Vec<u32>,
    /// `[ids.len(), hidden]`, image features in place of the placeholder tokens.
    pub embeds: Vec<f32>,
    pub image_tokens: usize,
    pub encode_ms: f64,
}

pub(crate) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub(crate) fn per_second(count: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        count as f64 * 1000.0 / ms
    } else {
        0.0
    }
}
