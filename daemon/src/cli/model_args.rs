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
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where the compiled cache is, for every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Cache directory, as the daemon's `model.cache_dir` (default: $CACHE_DIRECTORY, else
    /// $XDG_CACHE_HOME/lookout, else ~/.cache/lookout). Quantized weights are kept in its
    /// `compiled` directory after the first load and mapped by the next ones.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Quantize at every load instead of using the compiled cache.
    #[arg(long)]
    pub no_compiled_cache: bool,
}

impl CacheArgs {
    /// The compiled cache's directory, `None` when it is off.
    pub fn compiled_dir(&self) -> Option<PathBuf> {
        if self.no_compiled_cache {
            return None;
        }
        let dir = match &self.cache_dir {
            Some(d) => d.clone(),
            None => match lookout::config::default_cache_dir() {
                Ok(d) => d,
                Err(e) => {
                    log::warn!("compiled cache off: {e:#}");
                    return None;
                }
            },
        };
        Some(dir.join(lookout::config::COMPILED_CACHE))
    }
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Engine> {
        Engine::load(
            &self.model,
            &EngineOptions {
                precision: self.weights,
                threads: self.threads,
                compiled_cache: self.cache.compiled_dir(),
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
