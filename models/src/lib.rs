//! What a model is and where it comes from: Hugging Face checkpoint directories (config.json,
//! safetensors shards, tokenizer files) read into typed configurations and weight stores.

pub mod checkpoint;
pub mod compiled;
pub mod error;
pub mod hub;
pub mod text_config;
pub mod weights;

pub use checkpoint::{Architecture, Checkpoint};
pub use error::LoadError;
pub use text_config::{LayerType, TextConfig};
pub use weights::{Precision, WeightStore};
