//! Frames in, text and detections out: image preprocessing, the vision encoder, the language
//! model, sampling, tokenizer and chat template. Pure compute, no I/O beyond reading a model.

pub mod embedding;
pub mod graph;
pub mod image;
pub mod ops;
pub mod qwen35;
pub mod sampler;
pub mod tokenizer;
