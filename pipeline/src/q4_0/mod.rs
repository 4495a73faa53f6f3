//! 4-bit weights times 8-bit activations: the matrix products of a Q4_0 model.
//!
//! Weights are quantized as GGML's Q4_0 does it: blocks of 32 values along a row, one scale
//! each, `value = (nibble - 8) * scale`, where element `j` of a block sits in the low nibble of
//! its byte `j` and element `j + 16` in the high one. At run time each activation row is
//! quantized to 8 bits per block of 32 as well, so a block's dot product is a sum of integer
//! products: one multiply-add instruction per 16 to 64 pairs instead of unpacking every weight
//! to f32. This is what llama.cpp does, and why its Q4_0 decode outruns a float kernel.
//!
//! The layout is chosen for the SIMD kernels rather than for the file format. Rows are stored
//! in panels of 16 ([`PANEL`]), interleaved block by block: for each block, four 64-byte
//! chunks, chunk `c` holding bytes `4c..4c + 4` of each of the 16 rows. One 512-bit register
//! then holds four bytes of sixteen rows, and a single multiply-add against four broadcast
//! activation bytes advances sixteen dot products at once; the unpacked weights are reused for
//! several tokens before the next load (see `dot`). Scales stay apart, as f32, sixteen per
//! block of a panel.
//!
//! Rows are padded with zero weights to whole blocks (and, at run time, activations with
//! zeros), and the matrix with zero rows to whole panels, so every shape quantizes.

mod dot;

pub use dot::{dot_panel, kernel_name};

use lookout_models::compiled::MappedBlob;

/// Values per block, in both formats.
pub const BLOCK: usize = 32;
/// Weight rows stored together and computed together.
pub const PANEL: usize = 16;
/// Nibble bytes of one block of one panel.
const PANEL_BLOCK_BYTES: usize = PANEL * BLOCK / 2;
/// Bytes of one row that a chunk holds (one 32-bit lane).
const CHUNK_ROW_BYTES: usize = 4;
/// Bytes of one chunk: four bytes of each row of a panel.
const CHUNK_BYTES: usize = PANEL * CHUNK_ROW_BYTES;

/// One panel of 16 weight rows: `blocks * 256` nibble bytes and `blocks * 16` scales.
#[derive(Clone, Copy)]
pub struct Panel<'a> {
    pub nibbles: &'a [u8],
    pub scales: &'a [f32],
    pub blocks: usize,
}

/// A `[rows, cols]` weight matrix quantized into panels of 16 rows.
pub struct Q4_0Matrix {
    pub rows: usize,
    pub cols: usize,
    blocks: usize,
    /// Rows quantized so far by [`Q4_0Matrix::push_rows`].
    filled: usize,
    storage: Storage,
}

/// Where the packed weights live: quantized in this process, or mapped from the compiled
/// cache (see `crate::compiled`) in exactly the layout [`Q4_0Matrix::push_rows`] writes.
enum Storage {
    Owned {
        nibbles: Vec<u8>,
        scales: Vec<f32>,
    },
    Mapped {
        nibbles: MappedBlob,
        scales: MappedBlob,
    },
}

impl std::fmt::Debug for Q4_0Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q4_0Matrix({}x{})", self.rows, self.cols)
    }
}

impl Q4_0Matrix {
    /// A matrix of zeros, to be filled in order with [`Q4_0Matrix::push_rows`]. The storage
    /// is allocated zeroed, so pages become resident only as rows are written.
    pub fn new(rows: usize, cols: usize) -> Q4_0Matrix {
        let blocks = cols.div_ceil(BLOCK);
        let panels = rows.div_ceil(PANEL);
        Q4_0Matrix {
            rows,
            cols,
            blocks,
            filled: 0,
            storage: Storage::Owned {
                nibbles: vec![0; panels * blocks * PANEL_BLOCK_BYTES],
                scales: vec![0.0; panels * blocks * PANEL],
            },
        }
    }

    /// A matrix whose packed bytes were written by [`Q4_0Matrix::packed`] into a compiled
    /// cache file: used in place, never copied. Fails when a blob's size is not the one
    /// `rows x cols` needs.
    pub fn mapped(
        rows: usize,
        cols: usize,
        nibbles: MappedBlob,
        scales: MappedBlob,
    ) -> Result<Q4_0Matrix, String> {
        let blocks = cols.div_ceil(BLOCK);
        let panels = rows.div_ceil(PANEL);
        let (want_nibbles, want_scales) = (
            panels * blocks * PANEL_BLOCK_BYTES,
            panels * blocks * PANEL * std::mem::size_of::<f32>(),
        );
        let (got_nibbles, got_scales) = (nibbles.bytes().len(), scales.bytes().len());
        if (got_nibbles, got_scales) != (want_nibbles, want_scales) {
            return Err(format!(
                "{got_nibbles} weight bytes and {got_scales} scale bytes, but a {rows}x{cols} \
                 matrix needs {want_nibbles} and {want_scales}"
            ));
        }
        if bytemuck::try_cast_slice::<u8, f32>(scales.bytes()).is_err() {
            return Err("the scales are not aligned for f32".into());
        }
        Ok(Q4_0Matrix {
            rows,
            cols,
            blocks,
            filled: rows,
            storage: Storage::Mapped { nibbles, scales },
        })
    }

    /// The packed weight bytes and the scales' bytes, as [`Q4_0Matrix::mapped`] takes them.
    pub fn packed(&self) -> (&[u8], &[u8]) {
        (self.nibbles(), bytemuck::cast_slice(self.scales()))
    }

    /// Whether the weights are mapped from a cache file rather than quantized here.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    fn nibbles(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned { nibbles, .. } => nibbles,
            Storage::Mapped { nibbles, .. } => nibbles.bytes(),
        }
    }

    fn scales(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned { scales, .. } => scales,
            // Alignment and length were checked in `mapped`.
            Storage::Mapped { scales, .. } => bytemuck::cast_slice(scales.bytes()),
        }
    }

    /// Quantizes the next whole rows (`values.len()` a multiple of `cols`).
    pub fn push_rows(&mut self, values: &[f32]) {
        assert!(values.len().is_multiple_of(self.cols));
        assert!(
            self.filled + values.len() / self.cols <= self.rows,
            "more rows than the {}x{} matrix holds",
            self.rows,
            self.cols
        );
        let Storage::Owned { nibbles, scales } = &mut self.storage else {
            panic!("a mapped matrix is read-only");
        };
        let mut padded = vec![0f32; self.blocks * BLOCK];
        for row in values.chunks_exact(self.cols) {
            let (panel, lane) = (self.filled / PANEL, self.filled % PANEL);
            padded[..self.cols].copy_from_slice(row);
            for (b, block) in padded.chunks_exact(BLOCK).enumerate() {
                let (scale, bytes) = quantize_q4_0(block);
                let at = panel * self.blocks + b;
                scales[at * PANEL + lane] = scale;
                let chunks = &mut nibbles[at * PANEL_BLOCK_BYTES..][..PANEL_BLOCK_BYTES];
                for (chunk, bytes) in chunks
                    .chunks_exact_mut(CHUNK_BYTES)
                    .zip(bytes.chunks_exact(CHUNK_ROW_BYTES))
                {
                    chunk[lane * CHUNK_ROW_BYTES..][..CHUNK_ROW_BYTES].copy_from_slice(bytes);
                }
            }
            self.filled += 1;
        }
    }

    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }

    /// Blocks per row (the padded width over [`BLOCK`]).
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    pub fn panel(&self, p: usize) -> Panel<'_> {
        let blocks = self.blocks;
        Panel {
            nibbles: &self.nibbles()[p * blocks * PANEL_BLOCK_BYTES..]
                [..blocks * PANEL_BLOCK_BYTES],
            scales: &self.scales()[p * blocks * PANEL..][..blocks * PANEL],
            blocks,
        }
    }

    /// The values the quantized matrix stands for, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let (panel, lane) = (self.panel(r / PANEL), r % PANEL);
            let values = (0..self.blocks * BLOCK).map(|j| {
                let (b, j) = (j / BLOCK, j % BLOCK);
                let k = j % (BLOCK / 2);
                let byte = panel.nibbles[b * PANEL_BLOCK_BYTES
                    + (k / CHUNK_ROW_BYTES) * CHUNK_BYTES
                    + lane * CHUNK_ROW_BYTES
                    + k % CHUNK_ROW_BYTES];
                let nibble = if j < BLOCK / 2 { byte & 0xF } else { byte >> 4 };
                (nibble as i32 - 8) as f32 * panel.scales[b * PANEL + lane]
            });
            out.extend(values.take(self.cols));
        }
        out
    }

    /// Resident bytes of the quantized weights.
    pub fn bytes(&self) -> usize {
        self.nibbles().len() + std::mem::size_of_val(self.scales())
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

/// Quantizes one activation row to 8 bits per block, padding the last block with zeros.
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
        let q = &mut q[b * BLOCK..][..BLOCK];
        q.iter_mut().zip(block).for_each(|(q, v)| *q = level(v));
        let sum: i32 = q.iter().map(|&q| q as i32).sum();
        scales[b] = scale;
        sum8[b] = 8.0 * scale * sum as f32;
    }
}

/// Activation rows quantized to 8 bits: per row, `blocks * 32` values in order, and per
/// block its scale and `8 * scale * Σq` (the term that turns a product with the unsigned
/// nibbles into one with the signed weights).
pub struct Q8Rows {
    blocks: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    sum8: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `m` rows of `cols` values.
    pub fn quantize(x: &[f32], m: usize, cols: usize) -> Q8Rows {
        debug_assert_eq!(x.len(), m * cols);
        let blocks = cols.div_ceil(BLOCK);
        let mut rows = Q8Rows {
            blocks,
            q: vec![0; m * blocks * BLOCK],
            scales: vec![0.0; m * blocks],
            sum8: vec![0.0; m * blocks],
        };
        rows.q
            .chunks_exact_mut(blocks * BLOCK)
            .zip(rows.scales.chunks_exact_mut(blocks))
            .zip(rows.sum8.chunks_exact_mut(blocks))
            .zip(x.chunks_exact(cols))
            .for_each(|(((q, scales), sum8), values)| quantize_row(values, q, scales, sum8));
        rows
    }

    pub fn len(&self) -> usize {
        self.scales.len() / self.blocks.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The values row `s` stands for (its first `cols`).
    pub fn dequantize_row(&self, s: usize, cols: usize) -> Vec<f32> {
        let q = &self.q[s * self.blocks * BLOCK..][..cols];
        let scales = &self.scales[s * self.blocks..];
        q.iter()
            .enumerate()
            .map(|(j, &q)| q as f32 * scales[j / BLOCK])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pseudo_random;

    #[test]
    fn quantization_follows_ggml_rounding() {
        let values: Vec<f32> = (0..BLOCK).map(|i| (i as f32 - 20.0) / 4.0).collect();
        // The extreme is -5.0 at i = 0, so the scale is 0.625 and -5.0 maps to nibble 0.
        let (scale, nibbles) = quantize_q4_0(&values);
        assert_eq!(scale, 0.625);
        assert_eq!(nibbles[0] & 0xF, 0);
        let mut m = Q4_0Matrix::new(1, BLOCK);
        m.push_rows(&values);
        for (v, d) in values.iter().zip(m.dequantize()) {
            assert!((v - d).abs() <= 0.625 / 2.0 + 1e-6, "{v} -> {d}");
        }
    }

    /// Rows land in their panel lanes: dequantizing gives back each row, in order, across
    /// panel boundaries and with a ragged last panel and block.
    #[test]
    fn panels_interleave_rows_losslessly() {
        let (rows, cols) = (37, 72);
        let values = pseudo_random(rows * cols, 5);
        let mut m = Q4_0Matrix::new(rows, cols);
        // Pushed in uneven pieces, as the loader does.
        m.push_rows(&values[..5 * cols]);
        m.push_rows(&values[5 * cols..]);
        assert_eq!((m.panels(), m.blocks()), (3, 3));
        let back = m.dequantize();
        assert_eq!(back.len(), rows * cols);
        for (r, (row, back)) in values.chunks(cols).zip(back.chunks(cols)).enumerate() {
            let mut alone = Q4_0Matrix::new(1, cols);
            alone.push_rows(row);
            assert_eq!(alone.dequantize(), back, "row {r}");
        }
        // The padding rows of the last panel are zero.
        let last = m.panel(2);
        for b in 0..m.blocks() {
            assert!(
                last.scales[b * PANEL + 5..(b + 1) * PANEL]
                    .iter()
                    .all(|&s| s == 0.0)
            );
        }
    }

    #[test]
    fn ragged_rows_are_zero_padded() {
        let values: Vec<f32> = (0..2 * 40).map(|i| i as f32 - 40.0).collect();
        let mut m = Q4_0Matrix::new(2, 40);
        m.push_rows(&values);
        let back = m.dequantize();
        assert_eq!(back.len(), 80);
        for (v, d) in values.iter().zip(&back) {
            assert!((v - d).abs() <= 40.0 / 16.0 + 1e-3, "{v} -> {d}");
        }
    }

    #[test]
    fn activation_blocks_carry_their_sum() {
        let values: Vec<f32> = (0..2 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows = Q8Rows::quantize(&values, 2, 40);
        assert_eq!((rows.len(), rows.blocks()), (2, 2));
        for s in 0..2 {
            let back = rows.dequantize_row(s, 40);
            for (b, chunk) in values[s * 40..(s + 1) * 40].chunks(BLOCK).enumerate() {
                let scale = rows.scales[s * 2 + b];
                let q = &rows.q[(s * 2 + b) * BLOCK..][..BLOCK];
                assert!(q[chunk.len()..].iter().all(|&q| q == 0), "padding is zero");
                let sum: i32 = q.iter().map(|&q| q as i32).sum();
                assert!((rows.sum8[s * 2 + b] - 8.0 * scale * sum as f32).abs() < 1e-4);
                for (v, d) in chunk.iter().zip(&back[b * BLOCK..]) {
                    assert!((v - d).abs() <= scale / 2.0 + 1e-7, "{v} -> {d}");
                }
            }
        }
    }
}
