//! What the model last saw of a camera, kept so that the next look costs only what changed.
//!
//! A camera's frames mostly repeat. Two things carry over from one look to the next:
//! - per image slice (the overview and each grid slice), the vision features and the
//!   preprocessed pixels they were computed from. A slice whose pixels have not changed (bit
//!   for bit, or within [`ReusePolicy::threshold`]) keeps its features, so only the changed
//!   slices go through the vision encoder. Exact reuse is exact: the same input gives the same
//!   features.
//! - the language model's state after the prompt prefix that every question about the image
//!   shares (the chat header and the image tokens, which come before the question). When every
//!   slice was reused the image tokens are the same, and so is that state: a question then
//!   costs only its own tokens.
//!
//! A reused slice keeps the pixels its features were computed from, not the newest ones, so
//! that slow drift (dusk, a shadow moving) adds up to a re-encode instead of going unnoticed
//! for ever.

use std::time::Instant;

use serde::Serialize;

use crate::answer::{Answer, AnswerTimings, NUMBER_TOKENS, Question, TEXT_TOKENS};
use crate::engine::{
    Cancel, Description, EncodedImage, Engine, Prompted, Request, Timings, ms, per_second,
};
use crate::image::{RgbImage, Slice, preprocess};
use crate::qwen35::LmState;

/// When a slice counts as unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReusePolicy {
    /// The largest mean absolute difference, in 0–255 pixel levels, between a slice's
    /// preprocessed pixels and the cached slice's that still reuses the cached features.
    /// 0 reuses bit-identical slices only.
    pub threshold: f32,
}

/// What one look took from the previous one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reuse {
    /// Slices (the overview counts as one) run through the vision encoder.
    pub slices_encoded: usize,
    /// Slices whose features were kept.
    pub slices_reused: usize,
    /// The language model's state after the image came from an earlier look or question
    /// instead of being computed for this one.
    pub prefix_reused: bool,
}

/// An encoded image, what its features were computed from, and (once asked about) the
/// language model's state after the prompt prefix about it.
pub struct Seen {
    image: EncodedImage,
    /// Per slice, overview first: the preprocessed pixels and patch grid of its features.
    slices: Vec<(Vec<f32>, (usize, usize))>,
    /// Normalised units per pixel level, per channel.
    level: [f32; 3],
    prefix: Option<Prefix>,
    reuse: Reuse,
}

/// The language model after the shared prompt prefix.
struct Prefix {
    ids: Vec<u32>,
    state: LmState,
    logits: Vec<f32>,
}

impl Seen {
    /// What this look reused.
    pub fn reuse(&self) -> Reuse {
        self.reuse
    }

    /// Image tokens in a prompt about this image.
    pub fn image_tokens(&self) -> usize {
        self.image.layout.total_tokens()
    }

    pub(crate) fn into_encoded(self) -> EncodedImage {
        self.image
    }

    /// Whether `pixels` are close enough to slice `i`'s cached ones to keep its features.
    fn unchanged(&self, i: usize, pixels: &[f32], grid: (usize, usize), threshold: f32) -> bool {
        let Some((cached, cached_grid)) = self.slices.get(i) else {
            return false;
        };
        if *cached_grid != grid || cached.len() != pixels.len() {
            return false;
        }
        if threshold <= 0.0 {
            return cached == pixels;
        }
        // `[3, P, N * P]`: each channel is one contiguous third.
        let per_channel = pixels.len() / 3;
        let budget = f64::from(threshold) * pixels.len() as f64;
        let mut total = 0.0f64;
        for c in 0..3 {
            let range = c * per_channel..(c + 1) * per_channel;
            let sum: f32 = cached[range.clone()]
                .iter()
                .zip(&pixels[range])
                .map(|(a, b)| (a - b).abs())
                .sum();
            total += f64::from(sum / self.level[c]);
            if total > budget {
                return false;
            }
        }
        true
    }
}

impl Engine {
    /// Preprocesses `image` and encodes the slices that changed since `previous` (all of them
    /// without one). The result carries `previous`'s prompt state over when nothing changed.
    pub fn see(
        &self,
        image: &RgbImage,
        max_slices: Option<usize>,
        previous: Option<Seen>,
        policy: &ReusePolicy,
        cancel: &Cancel,
    ) -> anyhow::Result<Seen> {
        let vision = self.vision()?;
        let start = Instant::now();
        let processor = self.processor(max_slices)?;
        let preprocessed = preprocess(image, &processor)?;
        let layout = preprocessed.token_layout(vision.encoder.downsample_mode());
        let level = std::array::from_fn(|c| {
            let rescale = if processor.do_rescale {
                processor.rescale_factor as f32
            } else {
                1.0
            };
            let std = if processor.do_normalize {
                processor.image_std[c]
            } else {
                1.0
            };
            rescale / std
        });
        let mut previous = previous.filter(|p| p.level == level);
        let mut reuse = Reuse::default();
        let mut slices = Vec::new();
        let mut features = Vec::new();
        let all = std::iter::once(preprocessed.overview).chain(preprocessed.slices);
        for (
            i,
            Slice {
                pixel_values,
                patches,
                ..
            },
        ) in all.enumerate()
        {
            let grid = (patches.rows as usize, patches.cols as usize);
            let kept = previous.as_mut().and_then(|p| {
                p.unchanged(i, &pixel_values, grid, policy.threshold)
                    .then(|| {
                        (
                            std::mem::take(&mut p.slices[i].0),
                            std::mem::take(&mut p.image.features[i]),
                        )
                    })
            });
            match kept {
                Some((pixels, kept_features)) => {
                    reuse.slices_reused += 1;
                    slices.push((pixels, grid));
                    features.push(kept_features);
                }
                None => {
                    cancel.check()?;
                    reuse.slices_encoded += 1;
                    features.push(vision.encoder.encode(&pixel_values, grid)?);
                    slices.push((pixel_values, grid));
                }
            }
        }
        // The prompt prefix is a function of the layout and the features alone.
        let prefix = previous
            .filter(|p| reuse.slices_encoded == 0 && p.image.layout == layout)
            .and_then(|p| p.prefix);
        Ok(Seen {
            image: EncodedImage {
                layout,
                use_image_id: processor.use_image_id,
                features,
                encode_ms: ms(start),
            },
            slices,
            level,
            prefix,
            reuse,
        })
    }

    /// Answers every question about the image `seen` holds; the prompt prefix about it is read
    /// once, here or by an earlier call, and each question costs only its own tokens.
    pub fn answer_seen(
        &self,
        seen: &mut Seen,
        questions: &[Question],
        cancel: &Cancel,
    ) -> anyhow::Result<Vec<Answer>> {
        anyhow::ensure!(!questions.is_empty(), "no questions");
        let prompts: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| self.prompt_ids(&seen.image, &q.text))
            .collect::<anyhow::Result<_>>()?;
        for ids in &prompts {
            let max_context = self.lm.config.max_position_embeddings;
            anyhow::ensure!(
                ids.len() + NUMBER_TOKENS.max(TEXT_TOKENS) <= max_context,
                "the prompt ({} tokens) leaves no room for an answer in the model's context of {max_context}",
                ids.len()
            );
        }
        let (shared_prefill_ms, reuse) = self.read_prefix(seen, cancel)?;
        let mut answers = Vec::with_capacity(questions.len());
        for (question, ids) in questions.iter().zip(&prompts) {
            cancel.check()?;
            let started = Instant::now();
            let (state, logits, shared) = self.continue_prompt(seen, ids)?;
            let mut answer = self.answer_one(question, state, logits, cancel)?;
            answer.timings = AnswerTimings {
                encode_ms: seen.image.encode_ms,
                shared_prefill_ms,
                question_ms: ms(started),
                shared_tokens: shared,
                question_tokens: ids.len() - shared,
                reuse: Some(reuse),
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Describes (or answers in free text) about the image `seen` holds, continuing from its
    /// prompt prefix.
    pub fn describe_seen(
        &self,
        seen: &mut Seen,
        request: &Request,
        on_text: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Description> {
        request.sampling.validate().map_err(anyhow::Error::msg)?;
        let ids = self.prompt_ids(&seen.image, &request.prompt)?;
        self.check_room(ids.len(), request.max_tokens)?;
        request.cancel.check()?;
        let started = Instant::now();
        let (_, reuse) = self.read_prefix(seen, &request.cancel)?;
        let (state, logits, shared) = self.continue_prompt(seen, &ids)?;
        let prefill_ms = ms(started);
        let prefilled = if reuse.prefix_reused {
            ids.len() - shared
        } else {
            ids.len()
        };
        let prompt = Prompted {
            ids: &ids,
            image_tokens: seen.image_tokens(),
            state,
            logits,
            timings: Timings {
                encode_ms: seen.image.encode_ms,
                prefill_ms,
                prefill_tokens_per_s: per_second(prefilled, prefill_ms),
                reuse: Some(reuse),
                ..Timings::default()
            },
        };
        self.decode(request, prompt, on_text)
    }

    /// Reads the prompt prefix about `seen`'s image into the language model unless an earlier
    /// look or question did: the time it took and what this look reused.
    fn read_prefix(&self, seen: &mut Seen, cancel: &Cancel) -> anyhow::Result<(f64, Reuse)> {
        let mut reuse = seen.reuse;
        if seen.prefix.is_some() {
            reuse.prefix_reused = true;
            return Ok((0.0, reuse));
        }
        // The prefix is what any two prompts about the image have in common; it must hold
        // every image token, or it would not be worth keeping.
        let a = self.prompt_ids(&seen.image, "a")?;
        let b = self.prompt_ids(&seen.image, "b")?;
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let image_token = self.vision()?.image_token_id;
        let last_image = a.iter().rposition(|&id| id == image_token);
        if last_image.is_some_and(|last| last >= shared) {
            return Ok((0.0, reuse));
        }
        cancel.check()?;
        let started = Instant::now();
        let ids = a[..shared].to_vec();
        let (embeds, _) = self.embed_prompt(&seen.image, &a)?;
        let width = self.lm.config.hidden_size;
        let mut state = self.lm.new_state()?;
        let logits = self.lm.forward(&mut state, &embeds[..shared * width])?;
        seen.prefix = Some(Prefix { ids, state, logits });
        Ok((ms(started), reuse))
    }

    /// The language model after the whole prompt `ids`: a fork of the saved prefix plus the
    /// prompt's own tokens, or all of it read afresh when it does not start with the prefix.
    /// Also returns how many tokens came from the prefix.
    fn continue_prompt(
        &self,
        seen: &Seen,
        ids: &[u32],
    ) -> anyhow::Result<(LmState, Vec<f32>, usize)> {
        if let Some(prefix) = &seen.prefix
            && ids.len() > prefix.ids.len()
            && ids.starts_with(&prefix.ids)
        {
            let mut state = self.lm.fork(&prefix.state)?;
            let rest = &ids[prefix.ids.len()..];
            let logits = self.lm.forward(&mut state, &self.lm.embed(rest)?)?;
            return Ok((state, logits, prefix.ids.len()));
        }
        if let Some(prefix) = &seen.prefix
            && ids == prefix.ids.as_slice()
        {
            return Ok((
                self.lm.fork(&prefix.state)?,
                prefix.logits.clone(),
                ids.len(),
            ));
        }
        let (embeds, _) = self.embed_prompt(&seen.image, ids)?;
        let mut state = self.lm.new_state()?;
        let logits = self.lm.forward(&mut state, &embeds)?;
        Ok((state, logits, 0))
    }
}
