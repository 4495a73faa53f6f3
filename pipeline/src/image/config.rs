//! The image-processor configuration (`preprocessor_config.json`).
//!
//! Field names and defaults are those of transformers'
//! `MiniCPMV4_6ImageProcessorPil` class attributes, so a config file that
//! omits a field gets the same value the reference would use.

use serde::Deserialize;

use super::ImageError;

/// How many vision tokens one 2x2 / 4x4 block of patches collapses into.
///
/// The reference treats "4x" as one 2x2 merge and anything else as two
/// merges ("16x"); we only accept the two documented spellings so that a typo
/// in a config is reported instead of silently meaning "16x".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum DownsampleMode {
    /// ViT insert merger + downsample MLP: 16 patches per token.
    #[default]
    #[serde(rename = "16x")]
    X16,
    /// One 2x2 merge: 4 patches per token.
    #[serde(rename = "4x")]
    X4,
}

impl DownsampleMode {
    /// Side of the square block of patches merged into one token group; slice
    /// sizes are aligned to `patch_size * merge_factor` so the merges tile.
    pub fn merge_factor(self) -> u32 {
        match self {
            DownsampleMode::X16 => 4,
            DownsampleMode::X4 => 2,
        }
    }

    /// Patches per vision token (`image_token_divisor` in the processor).
    pub fn token_divisor(self) -> u32 {
        match self {
            DownsampleMode::X16 => 16,
            DownsampleMode::X4 => 4,
        }
    }
}

/// Pillow's BICUBIC resampling id, the only filter the processor uses.
pub const PIL_BICUBIC: u32 = 3;

/// MiniCPM-V 4.6 image-processor settings.
///
/// Unknown JSON fields (e.g. `image_processor_type`, `processor_class`) are
/// ignored. `image_mean` / `image_std` accept a number or a 3-list, like the
/// reference.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ImageProcessorConfig {
    /// Upper bound on the number of slices of one image.
    pub max_slice_nums: u32,
    /// Side of the square area (in pixels) one slice should roughly cover.
    pub scale_resolution: u32,
    /// ViT patch side in pixels.
    pub patch_size: u32,
    /// Whether large images are cut into a grid of slices.
    pub slice_mode: bool,
    /// Whether the prompt gets `<image_id>k</image_id>` before each image.
    pub use_image_id: bool,
    /// Token merge mode (also decides the slice alignment).
    pub downsample_mode: DownsampleMode,
    /// Per-channel mean subtracted after rescaling.
    #[serde(deserialize_with = "de_triplet")]
    pub image_mean: [f32; 3],
    /// Per-channel std divided by after mean subtraction.
    #[serde(deserialize_with = "de_triplet")]
    pub image_std: [f32; 3],
    /// Factor that maps u8 to [0, 1] (1/255).
    pub rescale_factor: f64,
    /// Must be true: the slicing geometry only makes sense with resizing.
    pub do_resize: bool,
    /// Multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Apply `(x - mean) / std`.
    pub do_normalize: bool,
    /// Convert to RGB (always done by our decoder; kept for completeness).
    pub do_convert_rgb: bool,
    /// PIL resampling filter id; only BICUBIC (3) is implemented.
    pub resample: u32,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            max_slice_nums: 9,
            scale_resolution: 448,
            patch_size: 14,
            slice_mode: true,
            use_image_id: true,
            downsample_mode: DownsampleMode::X16,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            do_convert_rgb: true,
            resample: PIL_BICUBIC,
        }
    }
}

impl ImageProcessorConfig {
    /// Parse `preprocessor_config.json`, or a `processor_config.json` that
    /// nests it under `"image_processor"`, and validate it.
    pub fn from_json_str(json: &str) -> Result<Self, ImageError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ImageError::Config(e.to_string()))?;
        let inner = match value.get("image_processor") {
            Some(nested) if nested.is_object() => nested.clone(),
            _ => value,
        };
        let cfg: Self =
            serde_json::from_value(inner).map_err(|e| ImageError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject settings that would make the geometry degenerate or that this
    /// implementation deliberately does not support.
    pub fn validate(&self) -> Result<(), ImageError> {
        let bad = |msg: String| Err(ImageError::Config(msg));
        if self.patch_size == 0 || self.patch_size > 1024 {
            return bad(format!("patch_size {} out of range", self.patch_size));
        }
        if self.scale_resolution == 0 || self.scale_resolution > 16384 {
            return bad(format!(
                "scale_resolution {} out of range",
                self.scale_resolution
            ));
        }
        if self.max_slice_nums > 1024 {
            return bad(format!(
                "max_slice_nums {} out of range",
                self.max_slice_nums
            ));
        }
        if !self.do_resize {
            return bad(
                "do_resize=false is not supported (slices would not be patch aligned)".into(),
            );
        }
        if self.resample != PIL_BICUBIC {
            return bad(format!(
                "resample={} is not supported, only PIL BICUBIC (3)",
                self.resample
            ));
        }
        if self.do_normalize && self.image_std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return bad("image_std must be finite and non-zero".into());
        }
        if !self.rescale_factor.is_finite() {
            return bad("rescale_factor must be finite".into());
        }
        Ok(())
    }
}

fn de_triplet<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f32; 3], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Triplet {
        One(f32),
        Many(Vec<f32>),
    }
    match Triplet::deserialize(d)? {
        Triplet::One(v) => Ok([v; 3]),
        Triplet::Many(v) => <[f32; 3]>::try_from(v.as_slice()).map_err(|_| {
            serde::de::Error::custom(format!("expected 3 channel values, got {}", v.len()))
        }),
    }
}
