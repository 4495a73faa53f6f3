//! Products of a 16-row Q4_0 panel with Q8_0 activation rows, one kernel per instruction set:
//! AVX-512 VNNI and AVX2 on x86-64, NEON on aarch64, portable integer code elsewhere. All
//! compute the same integer sum per block and row; only the order of the float accumulation
//! differs.
//!
//! Each kernel is a register tile: a chunk of the panel (four bytes of each of its rows) is
//! loaded and unpacked once, then meets several tokens, each token's four activation bytes
//! broadcast to every lane. Per block and token the integer sums of all rows are scaled in one
//! vector step. The kernel is picked once, from the features of the CPU the binary runs on.

use std::ops::Range;
use std::sync::LazyLock;

use super::{BLOCK, CHUNK_BYTES, PANEL, PANEL_BLOCK_BYTES, Panel, Q8Rows};

/// Chunks per block: each holds 4 of the 16 nibble bytes of every row.
const CHUNKS: usize = BLOCK / 2 / 4;

/// `out[k * stride + i] = w[i] · x[tokens.start + k]`, for the 16 rows `i` of the panel.
///
/// # Safety
/// The CPU has the features the kernel was compiled for; the panel and the rows have the same
/// block count; `tokens` lies within `x`; `out` has room for every write.
type PanelKernel = unsafe fn(Panel, &Q8Rows, Range<usize>, *mut f32, usize);

#[derive(Clone, Copy)]
struct Kernel {
    name: &'static str,
    panel: PanelKernel,
}

/// The kernels this CPU can run, fastest first; the portable one is always last.
fn available_kernels() -> Vec<Kernel> {
    let mut kernels = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_vnni() {
            kernels.push(Kernel {
                name: "avx512-vnni",
                panel: x86::panel_vnni,
            });
        }
        if x86::has_avx2() {
            kernels.push(Kernel {
                name: "avx2",
                panel: x86::panel_avx2,
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    kernels.push(Kernel {
        name: "neon",
        panel: neon::panel,
    });
    kernels.push(Kernel {
        name: "portable",
        panel: portable::panel,
    });
    kernels
}

static KERNEL: LazyLock<Kernel> = LazyLock::new(|| available_kernels()[0]);

/// The instruction set the products use on this CPU.
pub fn kernel_name() -> &'static str {
    KERNEL.name
}

/// `out[k * stride + i] = w[i] · x[tokens.start + k]` for the 16 rows `i` of `panel`.
pub fn dot_panel(panel: Panel, x: &Q8Rows, tokens: Range<usize>, out: &mut [f32], stride: usize) {
    check(&panel, x, &tokens, out.len(), stride);
    // SAFETY: `KERNEL` was chosen for this CPU; `check` bounds every access.
    unsafe { (KERNEL.panel)(panel, x, tokens, out.as_mut_ptr(), stride) }
}

fn check(panel: &Panel, x: &Q8Rows, tokens: &Range<usize>, out_len: usize, stride: usize) {
    assert_eq!(
        panel.blocks, x.blocks,
        "panel and activations differ in width"
    );
    assert!(panel.nibbles.len() >= panel.blocks * PANEL_BLOCK_BYTES);
    assert!(panel.scales.len() >= panel.blocks * PANEL);
    assert!(tokens.end <= x.len(), "tokens {tokens:?} of {}", x.len());
    assert!(stride >= PANEL, "output rows overlap");
    if !tokens.is_empty() {
        assert!(
            out_len >= (tokens.len() - 1) * stride + PANEL,
            "output too short"
        );
    }
}

/// Raw access to one token's quantized row, for the kernels' inner loops.
#[derive(Clone, Copy)]
struct TokenRow {
    q: *const i8,
    scales: *const f32,
    sum8: *const f32,
}

impl TokenRow {
    /// # Safety
    /// `s < x.len()`.
    unsafe fn new(x: &Q8Rows, s: usize) -> TokenRow {
        // SAFETY: row `s` exists, per the caller.
        unsafe {
            TokenRow {
                q: x.q.as_ptr().add(s * x.blocks * BLOCK),
                scales: x.scales.as_ptr().add(s * x.blocks),
                sum8: x.sum8.as_ptr().add(s * x.blocks),
            }
        }
    }

    /// The four activation bytes that meet byte lane `byte` (0..16) of block `b`, as one
    /// 32-bit word: low-nibble values when `high` is false, values `16..32` otherwise.
    ///
    /// # Safety
    /// `b` is within the row.
    #[inline(always)]
    unsafe fn word(self, b: usize, byte: usize, high: bool) -> i32 {
        // SAFETY: within the row's `blocks * 32` bytes, per the caller.
        unsafe {
            let offset = b * BLOCK + byte + if high { BLOCK / 2 } else { 0 };
            std::ptr::read_unaligned(self.q.add(offset).cast::<i32>())
        }
    }

    /// # Safety
    /// `b` is within the row.
    #[inline(always)]
    unsafe fn scale(self, b: usize) -> (f32, f32) {
        // SAFETY: per the caller.
        unsafe { (*self.scales.add(b), *self.sum8.add(b)) }
    }
}

/// Runs `tile::<T>` over `tokens` in steps of `T`, then the rest one by one with `tile1`.
/// (Only the SIMD kernels tile; elsewhere the portable kernel goes row by row.)
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! tiled {
    ($tile:ident::<$t:literal>, $panel:expr, $x:expr, $tokens:expr, $out:expr, $stride:expr) => {{
        let (panel, x, tokens, mut out, stride) = ($panel, $x, $tokens, $out, $stride);
        let mut s = tokens.start;
        while tokens.end - s >= $t {
            // SAFETY: forwarded from the caller; `s + T <= tokens.end`.
            unsafe {
                $tile::<$t>(panel, x, s, out, stride);
                out = out.add($t * stride);
            }
            s += $t;
        }
        while s < tokens.end {
            // SAFETY: as above.
            unsafe {
                $tile::<1>(panel, x, s, out, stride);
                out = out.add(stride);
            }
            s += 1;
        }
    }};
}

mod portable {
    use super::*;

    pub unsafe fn panel(p: Panel, x: &Q8Rows, tokens: Range<usize>, out: *mut f32, stride: usize) {
        for (k, s) in tokens.enumerate() {
            // SAFETY: `s` is a row of `x`; `out` has room for `PANEL` values per token.
            let (row, out) = unsafe { (TokenRow::new(x, s), out.add(k * stride)) };
            for lane in 0..PANEL {
                let mut total = 0f32;
                for b in 0..p.blocks {
                    let mut sum = 0i32;
                    for c in 0..CHUNKS {
                        let bytes =
                            &p.nibbles[b * PANEL_BLOCK_BYTES + c * CHUNK_BYTES + lane * 4..];
                        // SAFETY: block `b` is within the row.
                        let (low, high) = unsafe {
                            (
                                row.word(b, 4 * c, false).to_le_bytes(),
                                row.word(b, 4 * c, true).to_le_bytes(),
                            )
                        };
                        for j in 0..4 {
                            sum += (bytes[j] & 0xF) as i32 * low[j] as i8 as i32
                                + (bytes[j] >> 4) as i32 * high[j] as i8 as i32;
                        }
                    }
                    // SAFETY: as above.
                    let (scale, sum8) = unsafe { row.scale(b) };
                    let w = p.scales[b * PANEL + lane];
                    total += w * (sum as f32 * scale - sum8);
                }
                // SAFETY: within the token's 16 outputs.
                unsafe { *out.add(lane) = total };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    pub fn has_vnni() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("fma")
    }

    pub fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub unsafe fn panel_vnni(
        p: Panel,
        x: &Q8Rows,
        tokens: Range<usize>,
        out: *mut f32,
        stride: usize,
    ) {
        tiled!(tile_vnni::<8>, p, x, tokens, out, stride)
    }

    /// Tokens `s..s + T` against the whole panel: one 512-bit lane per row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    unsafe fn tile_vnni<const T: usize>(
        p: Panel,
        x: &Q8Rows,
        s: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let mask = _mm512_set1_epi8(0x0F);
        // SAFETY: tokens `s..s + T` are rows of `x`, per the caller.
        let rows: [TokenRow; T] = std::array::from_fn(|k| unsafe { TokenRow::new(x, s + k) });
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..p.blocks {
            let mut sums = [_mm512_setzero_si512(); T];
            for c in 0..CHUNKS {
                // SAFETY: the panel has `blocks` blocks of 4 chunks of 64 bytes.
                let packed = unsafe {
                    _mm512_loadu_si512(
                        p.nibbles
                            .as_ptr()
                            .add(b * PANEL_BLOCK_BYTES + c * CHUNK_BYTES)
                            .cast(),
                    )
                };
                let low = _mm512_and_si512(packed, mask);
                let high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
                for (sum, row) in sums.iter_mut().zip(rows) {
                    // SAFETY: block `b` is within every row.
                    let (xl, xh) = unsafe { (row.word(b, 4 * c, false), row.word(b, 4 * c, true)) };
                    *sum = _mm512_dpbusd_epi32(*sum, low, _mm512_set1_epi32(xl));
                    *sum = _mm512_dpbusd_epi32(*sum, high, _mm512_set1_epi32(xh));
                }
            }
            // SAFETY: 16 scales per block.
            let ws = unsafe { _mm512_loadu_ps(p.scales.as_ptr().add(b * PANEL)) };
            for ((acc, sum), row) in acc.iter_mut().zip(sums).zip(rows) {
                // SAFETY: as above.
                let (scale, sum8) = unsafe { row.scale(b) };
                let y = _mm512_fmsub_ps(
                    _mm512_cvtepi32_ps(sum),
                    _mm512_set1_ps(scale),
                    _mm512_set1_ps(sum8),
                );
                *acc = _mm512_fmadd_ps(ws, y, *acc);
            }
        }
        for (k, acc) in acc.into_iter().enumerate() {
            // SAFETY: `out` has room for 16 values per token.
            unsafe { _mm512_storeu_ps(out.add(k * stride), acc) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn panel_avx2(
        p: Panel,
        x: &Q8Rows,
        tokens: Range<usize>,
        out: *mut f32,
        stride: usize,
    ) {
        tiled!(tile_avx2::<4>, p, x, tokens, out, stride)
    }

    /// Tokens `s..s + T` against the panel, one half of its rows at a time (eight 32-bit lanes
    /// in a 256-bit register). `maddubs` sums two products of at most 15·127 into an i16, and
    /// a block adds eight of those per lane (at most 30480), so the i16 sums cannot saturate.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const T: usize>(
        p: Panel,
        x: &Q8Rows,
        s: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // SAFETY: tokens `s..s + T` are rows of `x`, per the caller.
        let rows: [TokenRow; T] = std::array::from_fn(|k| unsafe { TokenRow::new(x, s + k) });
        for half in 0..2 {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..p.blocks {
                let mut sums = [_mm256_setzero_si256(); T];
                for c in 0..CHUNKS {
                    // SAFETY: the panel has `blocks` blocks of 4 chunks of 64 bytes.
                    let packed = unsafe {
                        let at = b * PANEL_BLOCK_BYTES + c * CHUNK_BYTES + half * CHUNK_BYTES / 2;
                        _mm256_loadu_si256(p.nibbles.as_ptr().add(at).cast())
                    };
                    let low = _mm256_and_si256(packed, mask);
                    let high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                    for (sum, row) in sums.iter_mut().zip(rows) {
                        // SAFETY: block `b` is within every row.
                        let (xl, xh) =
                            unsafe { (row.word(b, 4 * c, false), row.word(b, 4 * c, true)) };
                        let products = _mm256_add_epi16(
                            _mm256_maddubs_epi16(low, _mm256_set1_epi32(xl)),
                            _mm256_maddubs_epi16(high, _mm256_set1_epi32(xh)),
                        );
                        *sum = _mm256_add_epi16(*sum, products);
                    }
                }
                // SAFETY: 16 scales per block.
                let ws = unsafe { _mm256_loadu_ps(p.scales.as_ptr().add(b * PANEL + half * 8)) };
                for ((acc, sum), row) in acc.iter_mut().zip(sums).zip(rows) {
                    // SAFETY: as above.
                    let (scale, sum8) = unsafe { row.scale(b) };
                    let y = _mm256_fmsub_ps(
                        _mm256_cvtepi32_ps(_mm256_madd_epi16(sum, ones)),
                        _mm256_set1_ps(scale),
                        _mm256_set1_ps(sum8),
                    );
                    *acc = _mm256_fmadd_ps(ws, y, *acc);
                }
            }
            for (k, acc) in acc.into_iter().enumerate() {
                // SAFETY: `out` has room for 16 values per token.
                unsafe { _mm256_storeu_ps(out.add(k * stride + half * 8), acc) };
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::*;

    #[target_feature(enable = "neon")]
    pub unsafe fn panel(p: Panel, x: &Q8Rows, tokens: Range<usize>, out: *mut f32, stride: usize) {
        tiled!(tile::<4>, p, x, tokens, out, stride)
    }

    /// Tokens `s..s + T` against the panel, four rows at a time (four 32-bit lanes). Each
    /// widening multiply-add pairs a low-nibble and a high-nibble product in an i16 (at most
    /// 2·15·127), and the pairwise adds widen before they could overflow.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn tile<const T: usize>(p: Panel, x: &Q8Rows, s: usize, out: *mut f32, stride: usize) {
        let mask = vdupq_n_u8(0x0F);
        // SAFETY: tokens `s..s + T` are rows of `x`, per the caller.
        let rows: [TokenRow; T] = std::array::from_fn(|k| unsafe { TokenRow::new(x, s + k) });
        for quarter in 0..4 {
            let mut acc = [vdupq_n_f32(0.0); T];
            for b in 0..p.blocks {
                let mut sums = [vdupq_n_s32(0); T];
                for c in 0..CHUNKS {
                    // SAFETY: the panel has `blocks` blocks of 4 chunks of 64 bytes.
                    let packed = unsafe {
                        let at = b * PANEL_BLOCK_BYTES + c * CHUNK_BYTES + quarter * 16;
                        vld1q_u8(p.nibbles.as_ptr().add(at))
                    };
                    let low = vreinterpretq_s8_u8(vandq_u8(packed, mask));
                    let high = vreinterpretq_s8_u8(vshrq_n_u8::<4>(packed));
                    for (sum, row) in sums.iter_mut().zip(rows) {
                        // SAFETY: block `b` is within every row.
                        let (xl, xh) =
                            unsafe { (row.word(b, 4 * c, false), row.word(b, 4 * c, true)) };
                        let xl = vreinterpretq_s8_s32(vdupq_n_s32(xl));
                        let xh = vreinterpretq_s8_s32(vdupq_n_s32(xh));
                        let first = vmlal_s8(
                            vmull_s8(vget_low_s8(low), vget_low_s8(xl)),
                            vget_low_s8(high),
                            vget_low_s8(xh),
                        );
                        let second = vmlal_high_s8(vmull_high_s8(low, xl), high, xh);
                        *sum = vpadalq_s16(*sum, vpaddq_s16(first, second));
                    }
                }
                // SAFETY: 16 scales per block.
                let ws = unsafe { vld1q_f32(p.scales.as_ptr().add(b * PANEL + quarter * 4)) };
                for ((acc, sum), row) in acc.iter_mut().zip(sums).zip(rows) {
                    // SAFETY: as above.
                    let (scale, sum8) = unsafe { row.scale(b) };
                    let y = vsubq_f32(vmulq_n_f32(vcvtq_f32_s32(sum), scale), vdupq_n_f32(sum8));
                    *acc = vfmaq_f32(*acc, ws, y);
                }
            }
            for (k, acc) in acc.into_iter().enumerate() {
                // SAFETY: `out` has room for 16 values per token.
                unsafe { vst1q_f32(out.add(k * stride + quarter * 4), acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q4_0::Q4_0Matrix;
    use crate::testing::pseudo_random;

    /// Every kernel this CPU runs agrees with the portable one, with extreme nibbles (0 and 15)
    /// and activations at ±127, on whole and ragged widths, for every token count up to two
    /// full tiles plus a remainder, written with a stride.
    #[test]
    fn kernels_match_the_portable_reference() {
        let kernels = available_kernels();
        let portable = kernels.last().unwrap();
        for cols in [32, 72, 1024, 4304] {
            let rows = 2 * PANEL;
            let mut w = pseudo_random(rows * cols, cols as u32);
            w[0] = 3.0;
            w[cols + 1] = -3.0;
            let mut m = Q4_0Matrix::new(rows, cols);
            m.push_rows(&w);
            let tokens = 19;
            let mut x = pseudo_random(tokens * cols, 7);
            x[1] = -2.0;
            x[cols + 2] = 2.0;
            let q = Q8Rows::quantize(&x, tokens, cols);
            let stride = 40;
            for p in 0..2 {
                for count in [1, 3, 4, 8, 11, 19] {
                    let range = tokens - count..tokens;
                    let mut reference = vec![f32::NAN; count * stride];
                    check(&m.panel(p), &q, &range, reference.len(), stride);
                    // SAFETY: the portable kernel runs anywhere; `check` passed.
                    unsafe {
                        (portable.panel)(
                            m.panel(p),
                            &q,
                            range.clone(),
                            reference.as_mut_ptr(),
                            stride,
                        )
                    };
                    for kernel in &kernels {
                        let mut got = vec![f32::NAN; count * stride];
                        // SAFETY: `available_kernels` only lists what this CPU has.
                        unsafe {
                            (kernel.panel)(m.panel(p), &q, range.clone(), got.as_mut_ptr(), stride)
                        };
                        for k in 0..count {
                            for i in 0..PANEL {
                                let (g, r) = (got[k * stride + i], reference[k * stride + i]);
                                let tolerance = 1e-5 * cols as f32 * r.abs().max(1.0);
                                assert!(
                                    (g - r).abs() <= tolerance,
                                    "{} cols={cols} panel {p} token {k}/{count} row {i}: {g} vs {r}",
                                    kernel.name
                                );
                            }
                            assert!(
                                got[k * stride + PANEL..(k + 1) * stride]
                                    .iter()
                                    .all(|v| v.is_nan())
                            );
                        }
                    }
                }
            }
        }
    }
}
