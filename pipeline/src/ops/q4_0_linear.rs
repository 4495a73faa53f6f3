//! `x @ w.T` with Q4_0 weights, computed with 8-bit activations (see [`crate::q4_0`]).
//!
//! tract's own Q4_0 path unpacks every weight to f32 inside a matrix-vector kernel, and on x86 it
//! has no matrix-matrix kernel at all, so a prefill of S tokens streams the weights S times.
//! This op quantizes the S activation rows once, then walks the weights row by row, each row
//! meeting every activation row while it sits in L1. The rows of `w` are split across the
//! compute pool.

use std::sync::Arc;

use rayon::prelude::*;
use tract_core::internal::*;

use crate::q4_0::{Q4_0Matrix, Q8Rows, dot_row, dot_row_x4};

/// Inputs: `x [..., cols]` (f32). Output: `[..., rows]` (f32).
#[derive(Clone, Debug)]
pub struct Q4_0Linear {
    pub weights: Arc<Q4_0Matrix>,
}

impl PartialEq for Q4_0Linear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
    }
}

impl Eq for Q4_0Linear {}

/// Activation rows handled together while their quantized blocks stay in L2.
const ROW_TILE: usize = 64;

/// Below this many multiply-adds a product runs on the calling thread alone.
const PARALLEL_MACS: usize = 1 << 18;

impl Q4_0Linear {
    /// `out_t[r * m + s] = w[r] · x[s]` for the weight rows `rows`, with `out_t` holding
    /// exactly those rows (transposed output: one contiguous run per weight row).
    fn rows_into(&self, rows: std::ops::Range<usize>, x: &Q8Rows, m: usize, out_t: &mut [f32]) {
        let x_row = |s: usize| x.row(s);
        for tile in (0..m).step_by(ROW_TILE) {
            let tile_end = (tile + ROW_TILE).min(m);
            for (r, out) in rows.clone().zip(out_t.chunks_exact_mut(m)) {
                let w = self.weights.row(r);
                let mut s = tile;
                while s + 4 <= tile_end {
                    let y = dot_row_x4(w, [x_row(s), x_row(s + 1), x_row(s + 2), x_row(s + 3)]);
                    out[s..s + 4].copy_from_slice(&y);
                    s += 4;
                }
                for (s, y) in out.iter_mut().enumerate().take(tile_end).skip(s) {
                    *y = dot_row(w, x_row(s));
                }
            }
        }
    }

    /// `x [m, cols] @ w.T`, row-major `[m, rows]`.
    pub fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (rows, cols) = (self.weights.rows, self.weights.cols);
        // Split only inside the compute pool (see `threads::run`): elsewhere, as on the vision
        // encoder's one-slice-per-thread workers, the caller has already shared out the cores.
        let in_pool = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1;
        let parallel = in_pool && rows * cols * m >= PARALLEL_MACS;
        let xq = Q8Rows::quantize(x, m, cols, parallel && m > 1);
        let mut out_t = vec![0f32; rows * m];
        if !parallel {
            self.rows_into(0..rows, &xq, m, &mut out_t);
        } else {
            // Enough chunks for the pool to balance, each a few hundred KB of weights or more.
            let chunk_rows = rows.div_ceil(8 * rayon::current_num_threads()).max(16);
            out_t
                .par_chunks_mut(chunk_rows * m)
                .enumerate()
                .for_each(|(i, out)| {
                    let start = i * chunk_rows;
                    self.rows_into(start..start + out.len() / m, &xq, m, out)
                });
        }
        if m == 1 {
            return out_t;
        }
        let mut out = vec![0f32; m * rows];
        let transpose = |(s, row): (usize, &mut [f32])| {
            for (r, y) in row.iter_mut().enumerate() {
                *y = out_t[r * m + s];
            }
        };
        if parallel {
            out.par_chunks_mut(rows).enumerate().for_each(transpose);
        } else {
            out.chunks_mut(rows).enumerate().for_each(transpose);
        }
        out
    }
}

impl Op for Q4_0Linear {
    fn name(&self) -> StaticName {
        "Q4_0Linear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.weights)])
    }

    op_as_typed_op!();
}

impl EvalOp for Q4_0Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        let cols = self.weights.cols;
        ensure!(
            shape.last() == Some(&cols),
            "Q4_0Linear input has shape {shape:?}, expected a last axis of {cols}"
        );
        let m = shape[..shape.len() - 1].iter().product::<usize>();
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let y = self.product(x, m);
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().unwrap() = self.weights.rows;
        let y = tract_ndarray::ArrayD::from_shape_vec(&*out_shape, y)?;
        Ok(tvec![y.into_tvalue()])
    }
}

impl TypedOp for Q4_0Linear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        ensure!(
            x.datum_type == f32::datum_type(),
            "Q4_0Linear computes in f32"
        );
        ensure!(
            x.shape.last() == Some(&self.weights.cols.to_dim()),
            "Q4_0Linear input {x:?} does not end in {}",
            self.weights.cols
        );
        let mut shape: TVec<TDim> = x.shape.iter().cloned().collect();
        *shape.last_mut().unwrap() = self.weights.rows.to_dim();
        Ok(tvec![f32::fact(shape)])
    }

    as_op!();
}
