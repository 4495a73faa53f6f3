//! tract operators lookout adds for what tract's own op set does not cover in the generality a
//! Qwen3.5 checkpoint allows.

pub mod gated_delta_rule;

pub use gated_delta_rule::GatedDeltaRule;
