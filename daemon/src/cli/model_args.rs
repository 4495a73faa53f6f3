//! What `describe` and `ask` share: the model flags and the `--image` file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use lookout_models::Precision;
use lookout_pipeline::engine::{Engine, EngineOptions};
use lookout_pipeline::image::{RgbImage, decode_image};

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model directory (a Hugging Face checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight precision: f32, f16 or q4_0.
    #[arg(long, default_value = "q4_0")]
    pub weights: Precision,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Engine> {
        Engine::load(
            &self.model,
            &EngineOptions {
                precision: self.weights,
                threads: self.threads,
            },
        )
    }
}

/// The image file given with `--image`, decoded.
pub fn read_image(path: Option<&Path>) -> anyhow::Result<Option<RgbImage>> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        decode_image(&bytes).with_context(|| format!("decoding {}", path.display()))?,
    ))
}
