//! MiniCPM-V 4.6: the vision encoder (SigLIP2 tower with the in-ViT window merger, then the
//! downsample MLP into the language model's width), faithful to transformers 5.23
//! `modeling_minicpmv4_6.py`. The language model is [`crate::qwen35`].

pub mod config;
pub mod positions;
pub mod vision;

pub use config::{VisionActivation, VisionConfig};
pub use vision::{PlanStrategy, VisionEncoder, VisionOptions};
