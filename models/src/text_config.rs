//! The Qwen3.5 text-model configuration, read from config.json with the same defaults and
//! derivations as the reference (`Qwen3_5TextConfig`). Every field the model graph depends on is
//! validated here, so an unsupported checkpoint fails at load time with the field's name.

use std::path::Path;

use serde_json::Value;

use crate::error::LoadError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// Gated DeltaNet linear attention with a causal conv1d in front.
    LinearAttention,
    /// Softmax attention with q/k norms, partial rotary embedding and a sigmoid output gate.
    FullAttention,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub layer_types: Vec<LayerType>,
    pub rms_norm_eps: f32,
    // Full attention.
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    /// Number of leading dimensions of each head that are rotated (head_dim * partial_rotary_factor).
    pub rotary_dim: usize,
    // Gated DeltaNet.
    pub linear_conv_kernel_dim: usize,
    pub linear_num_key_heads: usize,
    pub linear_num_value_heads: usize,
    pub linear_key_head_dim: usize,
    pub linear_value_head_dim: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub eos_token_ids: Vec<u32>,
}

/// Reads typed fields from one JSON object and reports problems with the field's dotted name.
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    pub prefix: String,
    pub obj: &'a Value,
}

impl Fields<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn err(&self, key: &str, problem: impl Into<String>) -> LoadError {
        LoadError::config(self.path, &self.name(key), problem)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("must be a positive integer, found {v}"))),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("must be a number, found {v}"))),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("must be true or false, found {v}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("must be a string, found {v}"))),
        }
    }

    pub fn sub(&self, key: &str) -> Option<Fields<'_>> {
        let obj = self.get(key).filter(|v| v.is_object())?;
        Some(Fields {
            path: self.path,
            prefix: format!("{}{}.", self.prefix, key),
            obj,
        })
    }
}

impl TextConfig {
    /// Parses a text configuration object. `path` and `prefix` locate it for error messages
    /// (`prefix` is e.g. `"text_config."` inside a MiniCPM-V config). `tie_override` is the
    /// composite model's own `tie_word_embeddings`, which is what decides tying there.
    pub fn from_json(
        path: &Path,
        prefix: &str,
        obj: &Value,
        tie_override: Option<bool>,
    ) -> Result<TextConfig, LoadError> {
        let f = Fields {
            path,
            prefix: prefix.to_string(),
            obj,
        };
        let hidden_size = f.usize("hidden_size")?;
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(256);

        if let Some(act) = f.opt_str("hidden_act")?
            && act != "silu"
        {
            return Err(f.err(
                "hidden_act",
                format!("`{act}` is not supported (only silu)"),
            ));
        }
        if f.opt_bool("attention_bias")? == Some(true) {
            return Err(f.err(
                "attention_bias",
                "true is not supported by Qwen3.5 checkpoints",
            ));
        }

        let layer_types = parse_layer_types(&f, num_hidden_layers)?;

        // Rope: transformers 5 keeps these in `rope_parameters`; older files have them top-level.
        let rope = f.sub("rope_parameters");
        if let Some(rope) = &rope
            && let Some(kind) = rope.opt_str("rope_type")?
            && kind != "default"
        {
            return Err(rope.err(
                "rope_type",
                format!("`{kind}` is not supported (only default)"),
            ));
        }
        let rope_theta = match rope
            .as_ref()
            .map(|r| r.opt_f64("rope_theta"))
            .transpose()?
            .flatten()
        {
            Some(t) => t,
            None => f
                .opt_f64("rope_theta")?
                .ok_or_else(|| f.err("rope_parameters.rope_theta", "is required"))?,
        };
        let partial = match rope
            .as_ref()
            .map(|r| r.opt_f64("partial_rotary_factor"))
            .transpose()?
            .flatten()
        {
            Some(p) => p,
            None => f.opt_f64("partial_rotary_factor")?.unwrap_or(0.25),
        };
        let rotary_dim = (head_dim as f64 * partial) as usize;
        let valid =
            partial > 0.0 && partial <= 1.0 && rotary_dim > 0 && rotary_dim.is_multiple_of(2);
        if !valid {
            return Err(f.err(
                "partial_rotary_factor",
                format!("{partial} gives a rotary width of {rotary_dim} on head_dim {head_dim}; it must be even and positive"),
            ));
        }

        let linear_num_key_heads = f.opt_usize("linear_num_key_heads")?.unwrap_or(16);
        let linear_num_value_heads = f.opt_usize("linear_num_value_heads")?.unwrap_or(32);
        if linear_num_value_heads % linear_num_key_heads != 0 {
            return Err(f.err(
                "linear_num_value_heads",
                format!("{linear_num_value_heads} is not a multiple of linear_num_key_heads {linear_num_key_heads}"),
            ));
        }

        let rms_norm_eps = f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32;
        let eos_token_ids = match f.get("eos_token_id") {
            None => vec![],
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|v| v.as_u64().map(|n| n as u32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| f.err("eos_token_id", "must be an integer or a list of integers"))?,
            Some(v) => vec![
                v.as_u64()
                    .ok_or_else(|| f.err("eos_token_id", "must be an integer"))?
                    as u32,
            ],
        };
        let tie_word_embeddings = match tie_override {
            Some(t) => t,
            None => f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        };

        Ok(TextConfig {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers,
            layer_types,
            rms_norm_eps,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope_theta,
            rotary_dim,
            linear_conv_kernel_dim: f.opt_usize("linear_conv_kernel_dim")?.unwrap_or(4),
            linear_num_key_heads,
            linear_num_value_heads,
            linear_key_head_dim: f.opt_usize("linear_key_head_dim")?.unwrap_or(128),
            linear_value_head_dim: f.opt_usize("linear_value_head_dim")?.unwrap_or(128),
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(32768),
            tie_word_embeddings,
            eos_token_ids,
        })
    }

    /// Width of the concatenated q, k, v channels that go through the causal conv1d.
    pub fn linear_conv_dim(&self) -> usize {
        2 * self.linear_key_dim() + self.linear_value_dim()
    }

    pub fn linear_key_dim(&self) -> usize {
        self.linear_num_key_heads * self.linear_key_head_dim
    }

    pub fn linear_value_dim(&self) -> usize {
        self.linear_num_value_heads * self.linear_value_head_dim
    }
}

fn parse_layer_types(f: &Fields, layers: usize) -> Result<Vec<LayerType>, LoadError> {
    match f.get("layer_types") {
        Some(Value::Array(items)) => {
            if items.len() != layers {
                return Err(f.err(
                    "layer_types",
                    format!(
                        "has {} entries but num_hidden_layers is {layers}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_str() {
                    Some("linear_attention") => Ok(LayerType::LinearAttention),
                    Some("full_attention") => Ok(LayerType::FullAttention),
                    _ => Err(f.err(
                        &format!("layer_types[{i}]"),
                        format!("{v} is not `linear_attention` or `full_attention`"),
                    )),
                })
                .collect()
        }
        Some(v) => Err(f.err("layer_types", format!("must be a list, found {v}"))),
        None => {
            // Same derivation as the reference: every `interval`-th layer is full attention.
            let interval = f.opt_usize("full_attention_interval")?.unwrap_or(4);
            Ok((0..layers)
                .map(|i| {
                    if (i + 1) % interval == 0 {
                        LayerType::FullAttention
                    } else {
                        LayerType::LinearAttention
                    }
                })
                .collect())
        }
    }
}
