//! The causal depthwise convolution in front of Qwen3.5's Gated DeltaNet, tokens first.
//!
//! tract-transformers has this op (`CausalConv1dUpdate`), channels first (`[1, C, S]`), walking
//! one channel at a time over its tokens; measured with `lookout bench --profile` it took 70 %
//! of a full-size prefill and 38 % of a decode step. Here the input stays as the projection
//! leaves it, `[S, C]`, and every tap is one pass over a contiguous row of channels, which the
//! compiler vectorizes; no transposes are needed around it. The SiLU that follows is tract's.
//!
//! Semantics are those of the reference `torch_causal_conv1d_update`, before its SiLU: with
//! `full = concat(window, x)` along time (`k + S` rows), `y[t, c] = sum_tap w[tap, c] *
//! full[t + 1 + tap, c]`, and the new window is the last `k` rows of `full`.

use tract_core::internal::*;

/// Inputs: `x [S, C]`, `weight [k, C]` (tap-major), `window [k, C]` (the last `k` inputs,
/// oldest first). Outputs: `y [S, C]` and the new window (all f32).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CausalConv {
    pub channels: usize,
    pub kernel: usize,
}

impl CausalConv {
    /// Row `j` of `full`: the window's rows, then the input's.
    fn row<'a>(&self, window: &'a [f32], x: &'a [f32], j: usize) -> &'a [f32] {
        let c = self.channels;
        if j < self.kernel {
            &window[j * c..(j + 1) * c]
        } else {
            &x[(j - self.kernel) * c..(j - self.kernel + 1) * c]
        }
    }

    /// `y` and the new window, row-major.
    fn run(
        &self,
        tokens: usize,
        x: &[f32],
        weight: &[f32],
        window: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let (c, k) = (self.channels, self.kernel);
        let mut y = vec![0f32; tokens * c];
        for (t, out) in y.chunks_exact_mut(c).enumerate() {
            for tap in 0..k {
                let w = &weight[tap * c..(tap + 1) * c];
                let input = self.row(window, x, t + 1 + tap);
                for ((o, &w), &v) in out.iter_mut().zip(w).zip(input) {
                    *o += w * v;
                }
            }
        }
        let mut next = Vec::with_capacity(k * c);
        for j in tokens..tokens + k {
            next.extend_from_slice(self.row(window, x, j));
        }
        (y, next)
    }
}

impl Op for CausalConv {
    fn name(&self) -> StaticName {
        "CausalConv".into()
    }
    op_as_typed_op!();
}

impl EvalOp for CausalConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "CausalConv expects x, weight, window");
        let (c, k) = (self.channels, self.kernel);
        let tokens = inputs[0].shape().first().copied().unwrap_or(0);
        for (i, expected) in [[tokens, c], [k, c], [k, c]].iter().enumerate() {
            ensure!(
                inputs[i].shape() == expected,
                "CausalConv input {i} has shape {:?}, expected {expected:?}",
                inputs[i].shape()
            );
        }
        let slice = |i: usize| inputs[i].try_as_plain_ram()?.as_slice::<f32>();
        let (y, window) = self.run(tokens, slice(0)?, slice(1)?, slice(2)?);
        Ok(tvec![
            Tensor::from_shape(&[tokens, c], &y)?.into_tvalue(),
            Tensor::from_shape(&[k, c], &window)?.into_tvalue(),
        ])
    }
}

impl TypedOp for CausalConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "CausalConv computes in f32"
        );
        Ok(tvec![inputs[0].without_value(), inputs[2].without_value()])
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's loop, channels first, straight from its definition.
    fn reference(x: &[f32], w: &[f32], window: &[f32], s: usize, c: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; s * c];
        for ch in 0..c {
            let full: Vec<f32> = (0..k)
                .map(|j| window[j * c + ch])
                .chain((0..s).map(|t| x[t * c + ch]))
                .collect();
            for t in 0..s {
                y[t * c + ch] = (0..k).map(|tap| w[tap * c + ch] * full[t + 1 + tap]).sum();
            }
        }
        y
    }

    #[test]
    fn matches_the_reference_and_carries_the_window() {
        let (c, k) = (5, 4);
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i + seed) * 7919 % 101) as f32 - 50.0) / 25.0)
                .collect()
        };
        let op = CausalConv {
            channels: c,
            kernel: k,
        };
        let w = values(k * c, 1);
        for s in [1, 3, 9] {
            let x = values(s * c, 2 + s);
            let window = values(k * c, 3);
            let (y, next) = op.run(s, &x, &w, &window);
            let expected = reference(&x, &w, &window, s, c, k);
            for (a, b) in y.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "{s} tokens: {a} vs {b}");
            }
            // The new window is the last k rows of concat(window, x).
            let full: Vec<f32> = window.iter().chain(&x).copied().collect();
            assert_eq!(next, &full[s * c..]);
        }
        // Token by token equals all at once.
        let x = values(6 * c, 4);
        let window = values(k * c, 5);
        let (all, all_next) = op.run(6, &x, &w, &window);
        let mut state = window.clone();
        let mut stepped = Vec::new();
        for t in 0..6 {
            let (y, next) = op.run(1, &x[t * c..(t + 1) * c], &w, &state);
            stepped.extend_from_slice(&y);
            state = next;
        }
        assert_eq!(all, stepped);
        assert_eq!(all_next, state);
    }
}
