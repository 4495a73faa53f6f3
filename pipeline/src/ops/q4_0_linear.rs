//! `x @ w.T` with Q4_0 weights, computed with 8-bit activations (see [`crate::q4_0`]).
//!
//! tract's own Q4_0 path unpacks every weight to f32 inside a matrix-vector kernel, and on x86 it
//! has no matrix-matrix kernel at all, so a prefill of S tokens streams the weights S times.
//! This op quantizes the activation rows once and walks the weights a panel of 16 rows at a
//! time, each panel meeting a tile of tokens while it sits in L1. Many tokens (prefill, image
//! slices) are shared out over the compute pool by token tiles, so each task writes whole
//! output rows; few tokens (decode) by panels.

use std::sync::Arc;

use rayon::prelude::*;
use tract_core::internal::*;

use crate::q4_0::{PANEL, Q4_0Matrix, Q8Rows, dot_panel};

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

/// Most tokens a task takes, so that their quantized rows stay in L2 while the weights stream.
const TOKEN_TILE: usize = 64;

/// Below this many multiply-adds a product runs on the calling thread alone.
const PARALLEL_MACS: usize = 1 << 18;

impl Q4_0Linear {
    /// `x [m, cols] @ w.T` into `out [m, stride]` (the first `panels * 16` columns).
    fn tokens_into(&self, x: &[f32], m: usize, out: &mut [f32], stride: usize) {
        let w = &self.weights;
        let xq = Q8Rows::quantize(x, m, w.cols);
        for p in 0..w.panels() {
            dot_panel(w.panel(p), &xq, 0..m, &mut out[p * PANEL..], stride);
        }
    }

    /// `x [m, cols] @ w.T`, row-major `[m, rows]`.
    pub fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let w = &self.weights;
        let (rows, cols) = (w.rows, w.cols);
        let padded = w.panels() * PANEL;
        // Split only inside the compute pool (see `threads::run`): elsewhere the caller has
        // already shared out the cores.
        let threads = match rayon::current_thread_index() {
            Some(_) => rayon::current_num_threads(),
            None => 1,
        };
        let parallel = threads > 1 && rows * cols * m >= PARALLEL_MACS;
        let mut out = vec![0f32; m * padded];
        if !parallel || m >= 8 * threads {
            // Token tiles, as even as the pool allows: each quantizes its own rows.
            let tile = if parallel {
                m.div_ceil(threads).next_multiple_of(8).min(TOKEN_TILE)
            } else {
                TOKEN_TILE
            };
            let run_tile = |(i, out): (usize, &mut [f32])| {
                let (start, len) = (i * tile, out.len() / padded);
                self.tokens_into(&x[start * cols..(start + len) * cols], len, out, padded);
            };
            if parallel {
                out.par_chunks_mut(tile * padded)
                    .enumerate()
                    .for_each(run_tile);
            } else {
                out.chunks_mut(tile * padded).enumerate().for_each(run_tile);
            }
        } else {
            // Few tokens: share out the panels, each task filling its own columns.
            let xq = Q8Rows::quantize(x, m, cols);
            let chunk = w.panels().div_ceil(2 * threads);
            let parts: Vec<Vec<f32>> = (0..w.panels().div_ceil(chunk))
                .into_par_iter()
                .map(|i| {
                    let panels = i * chunk..((i + 1) * chunk).min(w.panels());
                    let width = panels.len() * PANEL;
                    let mut part = vec![0f32; m * width];
                    for (k, p) in panels.enumerate() {
                        dot_panel(w.panel(p), &xq, 0..m, &mut part[k * PANEL..], width);
                    }
                    part
                })
                .collect();
            for (i, part) in parts.iter().enumerate() {
                let width = part.len() / m;
                for (s, part_row) in part.chunks_exact(width).enumerate() {
                    out[s * padded + i * chunk * PANEL..][..width].copy_from_slice(part_row);
                }
            }
        }
        if padded != rows {
            for s in 1..m {
                out.copy_within(s * padded..s * padded + rows, s * rows);
            }
            out.truncate(m * rows);
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
