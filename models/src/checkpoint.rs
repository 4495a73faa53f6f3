//! A Hugging Face checkpoint directory: which architecture it holds, its text configuration, where
//! the language model's tensors live, and the weights themselves.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::LoadError;
use crate::text_config::TextConfig;
use crate::weights::WeightStore;

/// Where transformers 5 writes a processor's settings, the image processor's nested inside.
pub const PROCESSOR_CONFIG: &str = "processor_config.json";
/// Where older checkpoints keep the image processor's settings.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `MiniCPMV4_6ForConditionalGeneration`: SigLIP2 vision tower, merger and a Qwen3.5 text model.
    MiniCpmV46,
    /// `Qwen3_5ForCausalLM`: the text model alone.
    Qwen35Text,
}

#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub architecture: Architecture,
    /// The whole config.json, for the parts other modules read (vision, processor).
    pub config: Value,
    pub text: TextConfig,
    /// Prefix of the text model's tensors (`model.language_model.` or `model.`).
    pub text_prefix: String,
    pub weights: WeightStore,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint, LoadError> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::config(&config_path, "model_type", "is required"))?;
        let tie_field = |v: &Value| v.get("tie_word_embeddings").and_then(Value::as_bool);
        let (architecture, text, text_prefix) = match model_type {
            "minicpmv4_6" => {
                let text_obj = config
                    .get("text_config")
                    .ok_or_else(|| LoadError::config(&config_path, "text_config", "is required"))?;
                check_text_model_type(&config_path, "text_config.model_type", text_obj)?;
                let tie = Some(tie_field(&config).unwrap_or(false));
                let text = TextConfig::from_json(&config_path, "text_config.", text_obj, tie)?;
                (Architecture::MiniCpmV46, text, "model.language_model.")
            }
            "qwen3_5_text" => {
                let text = TextConfig::from_json(&config_path, "", &config, None)?;
                (Architecture::Qwen35Text, text, "model.")
            }
            other => {
                return Err(LoadError::config(
                    &config_path,
                    "model_type",
                    format!("`{other}` is not supported (expected minicpmv4_6 or qwen3_5_text)"),
                ));
            }
        };
        let weights = WeightStore::open_dir(dir)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            architecture,
            config,
            text,
            text_prefix: text_prefix.to_string(),
            weights,
        })
    }

    /// The image processor's settings, where transformers 5 looks for them: nested as
    /// `image_processor` in `processor_config.json` (what `save_pretrained` writes), else
    /// `preprocessor_config.json` (older checkpoints). Returns the settings and the file they
    /// came from. When both files hold settings that differ, the nested ones win, as in
    /// transformers, and a log line says so.
    pub fn image_processor(&self) -> Result<(Value, PathBuf), LoadError> {
        let processor_path = self.dir.join(PROCESSOR_CONFIG);
        let legacy_path = self.dir.join(PREPROCESSOR_CONFIG);
        let nested = match processor_path.is_file() {
            true => read_json(&processor_path)?.get("image_processor").cloned(),
            false => None,
        };
        let legacy = match legacy_path.is_file() {
            true => Some(read_json(&legacy_path)?),
            false => None,
        };
        match (nested, legacy) {
            (Some(nested), legacy) => {
                if legacy.as_ref().is_some_and(|l| *l != nested) {
                    log::info!(
                        "{} and {} disagree on the image processor; using {}'s `image_processor`, as transformers does",
                        processor_path.display(),
                        legacy_path.display(),
                        PROCESSOR_CONFIG
                    );
                }
                Ok((nested, processor_path))
            }
            (None, Some(legacy)) => Ok((legacy, legacy_path)),
            (None, None) => Err(LoadError::config(
                &self.dir,
                "image_processor",
                format!(
                    "no image processor settings: neither {PROCESSOR_CONFIG} with an `image_processor` nor {PREPROCESSOR_CONFIG}"
                ),
            )),
        }
    }

    /// Full name of a text-model tensor, e.g. `layers.0.mlp.up_proj.weight`.
    pub fn text_tensor(&self, name: &str) -> String {
        format!("{}{}", self.text_prefix, name)
    }

    /// Name of the output head's weight: the token embedding when the embeddings are tied.
    pub fn lm_head_tensor(&self) -> String {
        if self.text.tie_word_embeddings {
            self.text_tensor("embed_tokens.weight")
        } else {
            "lm_head.weight".to_string()
        }
    }
}

fn check_text_model_type(path: &Path, field: &str, obj: &Value) -> Result<(), LoadError> {
    match obj.get("model_type").and_then(Value::as_str) {
        None | Some("qwen3_5_text") | Some("qwen3_5") => Ok(()),
        Some(other) => Err(LoadError::config(
            path,
            field,
            format!("`{other}` is not supported (expected qwen3_5_text)"),
        )),
    }
}

pub fn read_json(path: &Path) -> Result<Value, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}
