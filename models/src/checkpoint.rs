//! A Hugging Face checkpoint directory: which architecture it holds, its text configuration, where
//! the language model's tensors live, and the weights themselves.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::LoadError;
use crate::text_config::TextConfig;
use crate::weights::WeightStore;

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
