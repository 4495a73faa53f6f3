//! The vision half of a MiniCPM-V 4.6 `config.json`: `vision_config.*` plus the top-level fields
//! that shape the vision path (`insert_layer_id`, `downsample_mode`, `merge_kernel_size`,
//! `merger_times`).
//!
//! Missing fields get the defaults of transformers' `MiniCPMV4_6VisionConfig` /
//! `MiniCPMV4_6Config`, so a sparse config means what it means to the reference. Values the
//! reference would handle differently from this port (or not at all) are rejected here, naming
//! the field, instead of producing wrong features later.

use std::path::{Path, PathBuf};

use lookout_models::{Checkpoint, LoadError};
use serde_json::Value;

use crate::image::DownsampleMode;

/// Activation of the encoder MLPs (`vision_config.hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionActivation {
    /// `gelu_pytorch_tanh` / `gelu_new`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `gelu`: the exact form, `0.5 x (1 + erf(x / sqrt 2))`.
    GeluErf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Side of the learned position grid: `image_size / patch_size`.
    pub position_grid: usize,
    pub activation: VisionActivation,
    pub layer_norm_eps: f32,
    /// Encoder layer after which the window-attention merger runs (16x mode). Taken from the
    /// top-level `insert_layer_id`: the reference copies it over `vision_config.insert_layer_id`.
    pub insert_layer_id: usize,
    pub downsample_mode: DownsampleMode,
    /// Width of the language model the merger projects into.
    pub text_hidden_size: usize,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads the vision configuration of a MiniCPM-V 4.6 checkpoint.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<VisionConfig, LoadError> {
        let path = checkpoint.dir.join("config.json");
        VisionConfig::from_json(&path, &checkpoint.config, checkpoint.text.hidden_size)
    }

    /// Parses the composite config object `config` (read from `path`, used in error messages).
    pub fn from_json(
        path: &Path,
        config: &Value,
        text_hidden_size: usize,
    ) -> Result<VisionConfig, LoadError> {
        let top = Fields {
            path: path.to_path_buf(),
            prefix: String::new(),
            obj: config,
        };
        let empty = Value::Object(Default::default());
        let vision = Fields {
            path: path.to_path_buf(),
            prefix: "vision_config.".into(),
            obj: config.get("vision_config").unwrap_or(&empty),
        };
        if !vision.obj.is_object() {
            return Err(top.err("vision_config", "must be an object"));
        }

        let hidden_size = vision.usize_or("hidden_size", 768)?;
        let num_attention_heads = vision.usize_or("num_attention_heads", 12)?;
        if hidden_size % num_attention_heads != 0 {
            return Err(vision.err(
                "num_attention_heads",
                format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
            ));
        }
        let num_hidden_layers = vision.usize_or("num_hidden_layers", 12)?;
        let patch_size = vision.square_or("patch_size", 16)?;
        let image_size = vision.square_or("image_size", 224)?;
        let position_grid = image_size / patch_size;
        if position_grid == 0 {
            return Err(vision.err(
                "image_size",
                format!("{image_size} is smaller than patch_size {patch_size}"),
            ));
        }
        vision.pair_must_be("window_kernel_size", [2, 2])?;
        top.pair_must_be("merge_kernel_size", [2, 2])?;
        let merger_times = top.usize_or("merger_times", 1)?;
        if merger_times != 1 {
            return Err(top.err(
                "merger_times",
                format!("{merger_times} is not supported (only 1, one 2x2 merge in the merger)"),
            ));
        }

        let downsample_mode = match top.str_or("downsample_mode", "16x")? {
            "16x" => DownsampleMode::X16,
            "4x" => DownsampleMode::X4,
            other => {
                return Err(top.err(
                    "downsample_mode",
                    format!("`{other}` is not supported (expected \"16x\" or \"4x\")"),
                ));
            }
        };
        let insert_layer_id = top.int_or("insert_layer_id", 6)?;
        let insert_layer_id = match usize::try_from(insert_layer_id) {
            Ok(id) if id < num_hidden_layers => id,
            _ if downsample_mode == DownsampleMode::X4 => 0, // unused in 4x mode
            _ => {
                return Err(top.err(
                    "insert_layer_id",
                    format!(
                        "{insert_layer_id} must name one of the {num_hidden_layers} vision \
                         encoder layers in 16x mode (otherwise the reference skips the window \
                         merger but still halves the grid for the final merger, which then \
                         reads the wrong tokens)"
                    ),
                ));
            }
        };

        let activation = match vision.str_or("hidden_act", "gelu_pytorch_tanh")? {
            "gelu_pytorch_tanh" | "gelu_new" => VisionActivation::GeluTanh,
            "gelu" => VisionActivation::GeluErf,
            other => {
                return Err(vision.err(
                    "hidden_act",
                    format!("`{other}` is not supported (gelu_pytorch_tanh, gelu_new or gelu)"),
                ));
            }
        };

        Ok(VisionConfig {
            hidden_size,
            intermediate_size: vision.usize_or("intermediate_size", 3072)?,
            num_hidden_layers,
            num_attention_heads,
            num_channels: vision.usize_or("num_channels", 3)?,
            patch_size,
            position_grid,
            activation,
            layer_norm_eps: vision.f64_or("layer_norm_eps", 1e-6)? as f32,
            insert_layer_id,
            downsample_mode,
            text_hidden_size,
        })
    }
}

/// Typed reads from one JSON object; errors carry the dotted field name.
struct Fields<'a> {
    path: PathBuf,
    prefix: String,
    obj: &'a Value,
}

impl Fields<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> LoadError {
        LoadError::config(&self.path, &format!("{}{key}", self.prefix), problem)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.err(key, format!("must be a positive integer, found {v}"))),
        }
    }

    fn int_or(&self, key: &str, default: i64) -> Result<i64, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.err(key, format!("must be an integer, found {v}"))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| self.err(key, format!("must be a positive number, found {v}"))),
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, LoadError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("must be a string, found {v}"))),
        }
    }

    /// A size given as an integer or as an `[h, w]` pair; only square sizes are meaningful here.
    fn square_or(&self, key: &str, default: usize) -> Result<usize, LoadError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        if v.is_array() {
            let [h, w] = self.pair(key, v)?;
            if h != w {
                return Err(self.err(key, format!("{v} is not square")));
            }
            return Ok(h);
        }
        self.usize_or(key, default)
    }

    fn pair(&self, key: &str, v: &Value) -> Result<[usize; 2], LoadError> {
        let bad = || {
            self.err(
                key,
                format!("must be a pair of positive integers, found {v}"),
            )
        };
        let items = v.as_array().ok_or_else(bad)?;
        let nums: Option<Vec<usize>> = items
            .iter()
            .map(|x| x.as_u64().filter(|&n| n > 0).map(|n| n as usize))
            .collect();
        match nums.as_deref() {
            Some(&[h, w]) => Ok([h, w]),
            _ => Err(bad()),
        }
    }

    /// Kernel sizes the reference hard-codes elsewhere (`hidden_size * 4`, `target_sizes // 2`):
    /// any other value would not run there, so it is refused here.
    fn pair_must_be(&self, key: &str, expected: [usize; 2]) -> Result<(), LoadError> {
        let Some(v) = self.get(key) else {
            return Ok(());
        };
        let pair = self.pair(key, v)?;
        if pair != expected {
            return Err(self.err(
                key,
                format!(
                    "{v} is not supported (only {expected:?}, which the model's layer sizes assume)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(config: Value) -> Result<VisionConfig, String> {
        VisionConfig::from_json(Path::new("config.json"), &config, 64).map_err(|e| e.to_string())
    }

    fn base() -> Value {
        json!({
            "downsample_mode": "16x", "insert_layer_id": 1, "merge_kernel_size": [2, 2],
            "merger_times": 1,
            "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 4,
                              "num_attention_heads": 3, "image_size": 224, "patch_size": 14}
        })
    }

    #[test]
    fn reads_fixture_like_config() {
        let c = parse(base()).unwrap();
        assert_eq!(c.position_grid, 16);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.insert_layer_id, 1);
        assert_eq!(c.activation, VisionActivation::GeluTanh);
        assert_eq!(c.layer_norm_eps, 1e-6);
    }

    #[test]
    fn top_level_insert_layer_id_wins() {
        let mut v = base();
        v["vision_config"]["insert_layer_id"] = json!(3);
        assert_eq!(parse(v).unwrap().insert_layer_id, 1);
    }

    #[test]
    fn unsupported_values_name_their_field() {
        for (field, value, needle) in [
            ("downsample_mode", json!("8x"), "downsample_mode"),
            ("merger_times", json!(2), "merger_times"),
            ("merge_kernel_size", json!([3, 3]), "merge_kernel_size"),
            ("insert_layer_id", json!(4), "insert_layer_id"),
            ("insert_layer_id", json!(-1), "insert_layer_id"),
        ] {
            let mut v = base();
            v[field] = value;
            let err = parse(v).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let mut v = base();
        v["vision_config"]["hidden_act"] = json!("relu");
        assert!(parse(v).unwrap_err().contains("vision_config.hidden_act"));
        let mut v = base();
        v["vision_config"]["window_kernel_size"] = json!([2, 3]);
        assert!(
            parse(v)
                .unwrap_err()
                .contains("vision_config.window_kernel_size")
        );
        let mut v = base();
        v["vision_config"]["num_attention_heads"] = json!(5);
        assert!(
            parse(v)
                .unwrap_err()
                .contains("vision_config.num_attention_heads")
        );
    }

    #[test]
    fn insert_layer_id_is_free_in_4x_mode() {
        let mut v = base();
        v["downsample_mode"] = json!("4x");
        v["insert_layer_id"] = json!(-1);
        assert_eq!(parse(v).unwrap().downsample_mode, DownsampleMode::X4);
    }
}
