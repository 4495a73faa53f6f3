//! The gated delta rule: the recurrent core of Qwen3.5's Gated DeltaNet layers.
//!
//! tract-transformers ships a recurrent op for this rule, but it requires key and value heads of
//! the same width and walks the state column-wise. Checkpoints may use any widths, so this op takes
//! them independently and keeps the state row-major (`[key, value]`), which lets the inner loops run
//! over contiguous value columns and vectorize.
//!
//! One call processes a whole sequence: the projections around it are batched matmuls over all
//! tokens, and the per-token recurrence here is O(heads * dk * dv) per token, a few percent of the
//! layer's matmul work. Prefill therefore pays the sequential cost only where it is inherent:
//! along the tokens of one head; the heads themselves run in parallel.
//!
//! Semantics are those of the reference `torch_recurrent_gated_delta_rule` with
//! `use_qk_l2norm_in_kernel=True`:
//! for each token and value head `h` (reading key head `h / (hv / hk)`):
//! `q, k = l2norm(q) / sqrt(dk), l2norm(k)`; `S *= exp(g)`; `delta = (v - k·S) * beta`;
//! `S += k ⊗ delta`; `out = q·S`.

use tract_core::internal::*;

/// Inputs: `query [S, hk, dk]`, `key [S, hk, dk]`, `value [S, hv, dv]`, `log_decay [S, hv]`,
/// `beta [S, hv]`, `state [hv, dk, dv]` (all f32). Outputs: `[S, hv, dv]` and the final state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatedDeltaRule {
    pub key_heads: usize,
    pub value_heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
}

/// The reference's l2norm epsilon (added to the sum of squares, inside the square root).
const L2_EPS: f32 = 1e-6;

impl GatedDeltaRule {
    fn check_shapes(&self, shapes: [&[usize]; 6]) -> TractResult<usize> {
        let (hk, hv, dk, dv) = (
            self.key_heads,
            self.value_heads,
            self.key_dim,
            self.value_dim,
        );
        let s = shapes[0].first().copied().unwrap_or(0);
        let expected: [Vec<usize>; 6] = [
            vec![s, hk, dk],
            vec![s, hk, dk],
            vec![s, hv, dv],
            vec![s, hv],
            vec![s, hv],
            vec![hv, dk, dv],
        ];
        for (i, (actual, expected)) in shapes.iter().zip(expected.iter()).enumerate() {
            ensure!(
                *actual == expected.as_slice(),
                "GatedDeltaRule input {i} has shape {actual:?}, expected {expected:?}"
            );
        }
        Ok(s)
    }

    /// Runs the recurrence over `tokens` tokens, updating `state` in place. Value heads are
    /// independent (each has its own state), so inside the compute pool they run in parallel,
    /// each over every token into a buffer of its own, scattered into `out` at the end.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        tokens: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        log_decay: &[f32],
        beta: &[f32],
        state: &mut [f32],
        out: &mut [f32],
    ) {
        use rayon::prelude::*;
        let (hv, dk, dv) = (self.value_heads, self.key_dim, self.value_dim);
        let mut per_head = vec![0f32; hv * tokens * dv];
        let head = |(h, (s, o)): (usize, (&mut [f32], &mut [f32]))| {
            self.run_head(h, tokens, q, k, v, log_decay, beta, s, o)
        };
        // Split only inside the compute pool (see `threads::run`): elsewhere the caller has
        // already shared out the cores.
        if rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1 {
            state
                .par_chunks_mut(dk * dv)
                .zip(per_head.par_chunks_mut(tokens * dv))
                .enumerate()
                .for_each(head);
        } else {
            state
                .chunks_mut(dk * dv)
                .zip(per_head.chunks_mut(tokens * dv))
                .enumerate()
                .for_each(head);
        }
        for (h, head) in per_head.chunks_exact(tokens * dv).enumerate() {
            for (t, row) in head.chunks_exact(dv).enumerate() {
                out[(t * hv + h) * dv..(t * hv + h + 1) * dv].copy_from_slice(row);
            }
        }
    }

    /// Value head `h` over every token: its state `s` (`[dk, dv]`) updated, its outputs written
    /// to `o` (`[tokens, dv]`).
    #[allow(clippy::too_many_arguments)]
    fn run_head(
        &self,
        h: usize,
        tokens: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        log_decay: &[f32],
        beta: &[f32],
        s: &mut [f32],
        o: &mut [f32],
    ) {
        let (hk, hv, dk, dv) = (
            self.key_heads,
            self.value_heads,
            self.key_dim,
            self.value_dim,
        );
        let group = hv / hk;
        let scale = 1.0 / (dk as f32).sqrt();
        let mut qn = vec![0f32; dk];
        let mut kn = vec![0f32; dk];
        let mut delta = vec![0f32; dv];
        for (t, o) in o.chunks_exact_mut(dv).enumerate().take(tokens) {
            let qk_base = (t * hk + h / group) * dk;
            l2_normalize(&q[qk_base..qk_base + dk], scale, &mut qn);
            l2_normalize(&k[qk_base..qk_base + dk], 1.0, &mut kn);
            let decay = log_decay[t * hv + h].exp();
            let b = beta[t * hv + h];
            let v_t = &v[(t * hv + h) * dv..(t * hv + h + 1) * dv];

            // delta = (v - k·(decay S)) * beta
            delta.copy_from_slice(v_t);
            for (row, &kr) in s.chunks_exact(dv).zip(kn.iter()) {
                let w = kr * decay;
                for (d, &x) in delta.iter_mut().zip(row) {
                    *d -= w * x;
                }
            }
            for d in delta.iter_mut() {
                *d *= b;
            }
            // S = decay S + k ⊗ delta; out = q·S
            o.fill(0.0);
            for ((row, &kr), &qr) in s.chunks_exact_mut(dv).zip(kn.iter()).zip(qn.iter()) {
                for ((x, &d), o) in row.iter_mut().zip(delta.iter()).zip(o.iter_mut()) {
                    *x = *x * decay + kr * d;
                    *o += qr * *x;
                }
            }
        }
    }
}

fn l2_normalize(x: &[f32], scale: f32, out: &mut [f32]) {
    let inv = scale / (x.iter().map(|v| v * v).sum::<f32>() + L2_EPS).sqrt();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * inv;
    }
}

impl Op for GatedDeltaRule {
    fn name(&self) -> StaticName {
        "GatedDeltaRule".into()
    }
    op_as_typed_op!();
}

impl EvalOp for GatedDeltaRule {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 6,
            "GatedDeltaRule expects q, k, v, log_decay, beta, state"
        );
        let tokens = self.check_shapes([
            inputs[0].shape(),
            inputs[1].shape(),
            inputs[2].shape(),
            inputs[3].shape(),
            inputs[4].shape(),
            inputs[5].shape(),
        ])?;
        // Taken, not cloned: when the plan holds no other reference the state is updated in
        // place instead of copied (a megabyte per layer per token at full size).
        let mut state = inputs.pop().context("state input")?.into_tensor();
        let slice = |i: usize| inputs[i].try_as_plain_ram()?.as_slice::<f32>();
        let mut out = Tensor::zero::<f32>(inputs[2].shape())?;
        self.run(
            tokens,
            slice(0)?,
            slice(1)?,
            slice(2)?,
            slice(3)?,
            slice(4)?,
            state.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec![out.into_tvalue(), state.into_tvalue()])
    }
}

impl TypedOp for GatedDeltaRule {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 6);
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "GatedDeltaRule computes in f32"
        );
        Ok(tvec![inputs[2].without_value(), inputs[5].without_value()])
    }
    as_op!();
}
