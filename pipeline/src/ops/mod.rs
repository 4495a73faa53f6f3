//! tract operators lookout adds for what tract's own op set does not cover in the generality a
//! Qwen3.5 checkpoint allows.

pub mod cached_attention;
pub mod causal_conv;
pub mod gated_delta_rule;
pub mod q4_0_linear;

pub use cached_attention::CachedAttention;
pub use causal_conv::CausalConv;
pub use gated_delta_rule::GatedDeltaRule;
pub use q4_0_linear::Q4_0Linear;
