pub mod answer;
pub mod compiled;
pub mod detect;
pub mod embedding;
pub mod engine;
pub mod graph;
pub mod image;
pub mod memory;
pub mod minicpmv46;
pub mod ops;
pub mod q4_0;
pub mod qwen35;
pub mod sampler;
pub mod seen;
#[cfg(test)]
mod testing;
pub mod threads;
pub mod tokenizer;
pub mod track;
