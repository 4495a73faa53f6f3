//! 4-bit weights times 8-bit activations: the matrix products of a Q4_0 model.
//!
//! Weights are quantized as GGML's Q4_0 does it: blocks of 32 values along a row, one scale
//! each, `value = (nibble - 8) * scale`, where element `j` of a block sits in the low nibble of
//! its byte `j` and element `j + 16` in the high one. At run time each activation row is
//! quantized to 8 bits per block of 32 as well, so a block's dot product is a sum of integer
//! products: one multiply-add instruction per 16 to 64 pairs instead of unpacking every weight
//! to f32. This is what llama.cpp does, and why its Q4_0 decode outruns a float kernel.
//!
//! The layout is chosen for the SIMD kernels rather than for the file format: a row keeps its
//! nibble bytes together (four blocks, 64 bytes, fill one 512-bit register) and its scales
//! apart, as f32. The activations are stored to match: per group of four blocks, the first 16
//! values of each block (which meet the low nibbles), then the last 16 of each.
//!
//! Rows are padded with zero weights (and, at run time, zero activations) to whole groups, so
//! every width quantizes.

mod dot;

pub use dot::{dot_row, dot_row_x4, kernel_name};

/// Values per block, in both formats.
pub const BLOCK: usize = 32;
/// Blocks that the kernels take at a time.
pub const GROUP_BLOCKS: usize = 4;
/// Values per group.
pub const GROUP: usize = BLOCK * GROUP_BLOCKS;
/// Nibble bytes per group.
const GROUP_BYTES: usize = GROUP / 2;

/// Groups in a row of `cols` values.
pub fn groups_per_row(cols: usize) -> usize {
    cols.div_ceil(GROUP)
}

/// One weight row: `groups * 64` nibble bytes and `groups * 4` scales.
#[derive(Clone, Copy)]
pub struct WeightRow<'a> {
    pub nibbles: &'a [u8],
    pub scales: &'a [f32],
}

/// One activation row: `groups * 128` values and, per block, its scale and `8 * scale * Σq`
/// (the term that turns a product with the unsigned nibbles into one with the signed weights).
#[derive(Clone, Copy)]
pub struct ActivationRow<'a> {
    pub q: &'a [i8],
    pub scales: &'a [f32],
    pub sum8: &'a [f32],
}

/// A `[rows, cols]` weight matrix quantized row by row.
pub struct Q4_0Matrix {
    pub rows: usize,
    pub cols: usize,
    nibbles: Vec<u8>,
    scales: Vec<f32>,
}

impl std::fmt::Debug for Q4_0Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q4_0Matrix({}x{})", self.rows, self.cols)
    }
}

impl Q4_0Matrix {
    /// An empty matrix to be filled with [`Q4_0Matrix::push_rows`].
    pub fn with_capacity(rows: usize, cols: usize) -> Q4_0Matrix {
        let groups = groups_per_row(cols);
        Q4_0Matrix {
            rows: 0,
            cols,
            nibbles: Vec::with_capacity(rows * groups * GROUP_BYTES),
            scales: Vec::with_capacity(rows * groups * GROUP_BLOCKS),
        }
    }

    /// Quantizes whole rows (`values.len()` a multiple of `cols`) and appends them.
    pub fn push_rows(&mut self, values: &[f32]) {
        debug_assert!(values.len().is_multiple_of(self.cols));
        let padded_cols = groups_per_row(self.cols) * GROUP;
        let mut padded = vec![0f32; padded_cols];
        for row in values.chunks_exact(self.cols) {
            padded[..self.cols].copy_from_slice(row);
            for block in padded.chunks_exact(BLOCK) {
                let (scale, nibbles) = quantize_q4_0(block);
                self.scales.push(scale);
                self.nibbles.extend_from_slice(&nibbles);
            }
            self.rows += 1;
        }
    }

    pub fn row(&self, r: usize) -> WeightRow<'_> {
        let groups = groups_per_row(self.cols);
        WeightRow {
            nibbles: &self.nibbles[r * groups * GROUP_BYTES..(r + 1) * groups * GROUP_BYTES],
            scales: &self.scales[r * groups * GROUP_BLOCKS..(r + 1) * groups * GROUP_BLOCKS],
        }
    }

    /// The values the quantized matrix stands for, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let row = self.row(r);
            let values = row
                .nibbles
                .chunks_exact(BLOCK / 2)
                .zip(row.scales)
                .flat_map(|(bytes, &scale)| {
                    let low = bytes.iter().map(|b| (b & 0xF) as i32);
                    let high = bytes.iter().map(|b| (b >> 4) as i32);
                    low.chain(high).map(move |n| (n - 8) as f32 * scale)
                });
            out.extend(values.take(self.cols));
        }
        out
    }

    /// Resident bytes of the quantized weights.
    pub fn bytes(&self) -> usize {
        self.nibbles.len() + self.scales.len() * std::mem::size_of::<f32>()
    }
}

/// GGML's reference Q4_0 rounding: the value of largest magnitude maps to -8 exactly. The scale
/// is rounded to f16 as in a GGUF file, so results match llama.cpp's Q4_0.
fn quantize_q4_0(values: &[f32]) -> (f32, [u8; BLOCK / 2]) {
    let extreme = values
        .iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    let scale = half::f16::from_f32(extreme / -8.0).to_f32();
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let level = |v: f32| ((v * inverse + 8.5) as u8).min(15);
    let mut nibbles = [0u8; BLOCK / 2];
    for (j, byte) in nibbles.iter_mut().enumerate() {
        *byte = level(values[j]) | (level(values[j + BLOCK / 2]) << 4);
    }
    (scale, nibbles)
}

/// Quantizes one activation row into the kernels' layout: per block, its first 16 values go
/// to the group's low half (next to the other blocks' first 16), the last 16 to its high half.
fn quantize_row(values: &[f32], q: &mut [i8], scales: &mut [f32], sum8: &mut [f32]) {
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        // Round half away from zero, as llama.cpp does, without a libm call.
        let level = |v: &f32| {
            let scaled = v * inverse;
            (scaled + 0.5f32.copysign(scaled)) as i8
        };
        let (group, slot) = (b / GROUP_BLOCKS, b % GROUP_BLOCKS);
        let (first, last) = block.split_at(block.len().min(BLOCK / 2));
        let low = &mut q[group * GROUP + slot * (BLOCK / 2)..][..first.len()];
        low.iter_mut().zip(first).for_each(|(q, v)| *q = level(v));
        let high = &mut q[group * GROUP + GROUP / 2 + slot * (BLOCK / 2)..][..last.len()];
        high.iter_mut().zip(last).for_each(|(q, v)| *q = level(v));
        let sum: i32 = q[group * GROUP + slot * (BLOCK / 2)..][..BLOCK / 2]
            .iter()
            .chain(&q[group * GROUP + GROUP / 2 + slot * (BLOCK / 2)..][..BLOCK / 2])
            .map(|&q| q as i32)
            .sum();
        scales[b] = scale;
        sum8[b] = 8.0 * scale * sum as f32;
    }
}

/// Activation rows quantized to 8 bits, in the kernels' layout.
pub struct Q8Rows {
    groups: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    sum8: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `m` rows of `cols` values; with `parallel`, rows are shared out over the
    /// current rayon pool.
    pub fn quantize(x: &[f32], m: usize, cols: usize, parallel: bool) -> Q8Rows {
        use rayon::prelude::*;
        debug_assert_eq!(x.len(), m * cols);
        let groups = groups_per_row(cols);
        let blocks = groups * GROUP_BLOCKS;
        let mut rows = Q8Rows {
            groups,
            q: vec![0; m * groups * GROUP],
            scales: vec![0.0; m * blocks],
            sum8: vec![0.0; m * blocks],
        };
        let quantize = |(((q, scales), sum8), values)| quantize_row(values, q, scales, sum8);
        let (row_values, row_blocks) = (groups * GROUP, blocks);
        if parallel {
            rows.q
                .par_chunks_exact_mut(row_values)
                .zip(rows.scales.par_chunks_exact_mut(row_blocks))
                .zip(rows.sum8.par_chunks_exact_mut(row_blocks))
                .zip(x.par_chunks_exact(cols))
                .for_each(quantize);
        } else {
            rows.q
                .chunks_exact_mut(row_values)
                .zip(rows.scales.chunks_exact_mut(row_blocks))
                .zip(rows.sum8.chunks_exact_mut(row_blocks))
                .zip(x.chunks_exact(cols))
                .for_each(quantize);
        }
        rows
    }

    pub fn row(&self, s: usize) -> ActivationRow<'_> {
        let (values, blocks) = (self.groups * GROUP, self.groups * GROUP_BLOCKS);
        ActivationRow {
            q: &self.q[s * values..(s + 1) * values],
            scales: &self.scales[s * blocks..(s + 1) * blocks],
            sum8: &self.sum8[s * blocks..(s + 1) * blocks],
        }
    }

    /// The values row `s` stands for (its first `cols`).
    pub fn dequantize_row(&self, s: usize, cols: usize) -> Vec<f32> {
        let row = self.row(s);
        let mut out = vec![0f32; self.groups * GROUP];
        for (b, value) in out.iter_mut().enumerate() {
            let (block, j) = (b / BLOCK, b % BLOCK);
            let (group, slot) = (block / GROUP_BLOCKS, block % GROUP_BLOCKS);
            let (half, k) = (j / (BLOCK / 2), j % (BLOCK / 2));
            let q = row.q[group * GROUP + half * (GROUP / 2) + slot * (BLOCK / 2) + k];
            *value = q as f32 * row.scales[block];
        }
        out.truncate(cols);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_follows_ggml_rounding() {
        let values: Vec<f32> = (0..BLOCK).map(|i| (i as f32 - 20.0) / 4.0).collect();
        // The extreme is -5.0 at i = 0, so the scale is 0.625 and -5.0 maps to nibble 0.
        let (scale, nibbles) = quantize_q4_0(&values);
        assert_eq!(scale, 0.625);
        assert_eq!(nibbles[0] & 0xF, 0);
        let mut m = Q4_0Matrix::with_capacity(1, BLOCK);
        m.push_rows(&values);
        for (v, d) in values.iter().zip(m.dequantize()) {
            assert!((v - d).abs() <= 0.625 / 2.0 + 1e-6, "{v} -> {d}");
        }
    }

    #[test]
    fn ragged_rows_are_zero_padded() {
        let values: Vec<f32> = (0..2 * 40).map(|i| i as f32 - 40.0).collect();
        let mut m = Q4_0Matrix::with_capacity(2, 40);
        m.push_rows(&values);
        assert_eq!(m.rows, 2);
        assert_eq!(m.row(1).scales.len(), GROUP_BLOCKS);
        assert!(m.row(1).scales[2..].iter().all(|&s| s == 0.0));
        let back = m.dequantize();
        assert_eq!(back.len(), 80);
        for (v, d) in values.iter().zip(&back) {
            assert!((v - d).abs() <= 40.0 / 16.0 + 1e-3, "{v} -> {d}");
        }
    }

    #[test]
    fn activation_blocks_carry_their_sum() {
        let values: Vec<f32> = (0..2 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows = Q8Rows::quantize(&values, 2, 40, false);
        for s in 0..2 {
            let back = rows.dequantize_row(s, 40);
            let row = rows.row(s);
            for (b, chunk) in values[s * 40..(s + 1) * 40].chunks(BLOCK).enumerate() {
                let scale = row.scales[b];
                let sum: f32 = back[b * BLOCK..(b * BLOCK + chunk.len())]
                    .iter()
                    .map(|v| (v / scale).round())
                    .sum();
                assert!((row.sum8[b] - 8.0 * scale * sum).abs() < 1e-4);
                for (v, d) in chunk.iter().zip(&back[b * BLOCK..]) {
                    assert!((v - d).abs() <= scale / 2.0 + 1e-7, "{v} -> {d}");
                }
            }
            assert!(row.scales[2..].iter().all(|&s| s == 0.0));
        }
    }
}
