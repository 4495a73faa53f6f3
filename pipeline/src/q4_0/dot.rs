//! Dot products of a Q4_0 weight row with Q8_0 activation rows, one kernel per instruction set:
//! AVX-512 VNNI and AVX2 on x86-64, NEON on aarch64, portable integer code elsewhere. All compute
//! the same integer sum per block; only the order of the float accumulation differs.
//!
//! The kernel is picked once, from the features of the CPU the binary runs on.

use std::sync::LazyLock;

use super::{ActivationRow, GROUP, GROUP_BLOCKS, WeightRow};

#[derive(Clone, Copy)]
struct Kernel {
    name: &'static str,
    /// # Safety
    /// The CPU has the features the kernel was compiled for, and the rows have equal group counts.
    dot: unsafe fn(WeightRow, ActivationRow) -> f32,
    /// # Safety
    /// As for `dot`.
    dot_x4: unsafe fn(WeightRow, [ActivationRow; 4]) -> [f32; 4],
}

/// The kernels this CPU can run, fastest first; the portable one is always last.
fn available_kernels() -> Vec<Kernel> {
    let mut kernels = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_vnni() {
            kernels.push(Kernel {
                name: "avx512-vnni",
                dot: x86::dot_row_vnni,
                dot_x4: x86::dot_row_x4_vnni,
            });
        }
        if x86::has_avx2() {
            kernels.push(Kernel {
                name: "avx2",
                dot: x86::dot_row_avx2,
                dot_x4: x86::dot_row_x4_avx2,
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    kernels.push(Kernel {
        name: "neon",
        dot: neon::dot_row,
        dot_x4: neon::dot_row_x4,
    });
    kernels.push(Kernel {
        name: "portable",
        dot: portable::dot_row,
        dot_x4: portable::dot_row_x4,
    });
    kernels
}

static KERNEL: LazyLock<Kernel> = LazyLock::new(|| available_kernels()[0]);

/// The instruction set the products use on this CPU.
pub fn kernel_name() -> &'static str {
    KERNEL.name
}

/// `Σ w·x` over one row.
pub fn dot_row(w: WeightRow, x: ActivationRow) -> f32 {
    assert_eq!(w.scales.len(), x.scales.len());
    // SAFETY: `KERNEL` was chosen for this CPU; the lengths match.
    unsafe { (KERNEL.dot)(w, x) }
}

/// One weight row against four activation rows: the weights are unpacked once for all four.
pub fn dot_row_x4(w: WeightRow, x: [ActivationRow; 4]) -> [f32; 4] {
    assert!(x.iter().all(|x| x.scales.len() == w.scales.len()));
    // SAFETY: `KERNEL` was chosen for this CPU; the lengths match.
    unsafe { (KERNEL.dot_x4)(w, x) }
}

mod portable {
    use super::*;

    /// `Σ nibble·q` for block `slot` of group `g`.
    fn block_sum(w: WeightRow, x: ActivationRow, g: usize, slot: usize) -> i32 {
        let bytes = &w.nibbles[g * GROUP / 2 + slot * 16..][..16];
        let low = &x.q[g * GROUP + slot * 16..][..16];
        let high = &x.q[g * GROUP + GROUP / 2 + slot * 16..][..16];
        (0..16)
            .map(|k| {
                (bytes[k] & 0xF) as i32 * low[k] as i32 + (bytes[k] >> 4) as i32 * high[k] as i32
            })
            .sum()
    }

    pub unsafe fn dot_row(w: WeightRow, x: ActivationRow) -> f32 {
        let mut total = 0f32;
        for b in 0..w.scales.len() {
            let sum = block_sum(w, x, b / GROUP_BLOCKS, b % GROUP_BLOCKS);
            total += sum as f32 * w.scales[b] * x.scales[b] - w.scales[b] * x.sum8[b];
        }
        total
    }

    pub unsafe fn dot_row_x4(w: WeightRow, x: [ActivationRow; 4]) -> [f32; 4] {
        // SAFETY: forwarded.
        x.map(|x| unsafe { dot_row(w, x) })
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

    #[inline]
    #[target_feature(enable = "sse3")]
    fn sum4(v: __m128) -> f32 {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// The four per-block scales of group `g` (`w · x`) and its offset term.
    #[inline]
    #[target_feature(enable = "fma")]
    unsafe fn group_scales(
        w: WeightRow,
        x: ActivationRow,
        g: usize,
        offset: &mut __m128,
    ) -> __m128 {
        unsafe {
            let ws = _mm_loadu_ps(w.scales.as_ptr().add(g * 4));
            *offset = _mm_fmadd_ps(ws, _mm_loadu_ps(x.sum8.as_ptr().add(g * 4)), *offset);
            _mm_mul_ps(ws, _mm_loadu_ps(x.scales.as_ptr().add(g * 4)))
        }
    }

    /// One group in one 512-bit register: four lanes per block, each block's scale broadcast
    /// over its lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub unsafe fn dot_row_vnni(w: WeightRow, x: ActivationRow) -> f32 {
        let mask = _mm512_set1_epi8(0x0F);
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = _mm512_setzero_ps();
        let mut offset = _mm_setzero_ps();
        for g in 0..w.scales.len() / GROUP_BLOCKS {
            // SAFETY: every group has 64 nibble bytes, 128 activations and 4 scales.
            unsafe {
                let packed = _mm512_loadu_si512(w.nibbles.as_ptr().add(g * 64).cast());
                let low = _mm512_and_si512(packed, mask);
                let high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
                let q = x.q.as_ptr().add(g * GROUP);
                let sums =
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), low, _mm512_loadu_si512(q.cast()));
                let sums = _mm512_dpbusd_epi32(sums, high, _mm512_loadu_si512(q.add(64).cast()));
                let scale = group_scales(w, x, g, &mut offset);
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(scale));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc);
            }
        }
        _mm512_reduce_add_ps(acc) - sum4(offset)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub unsafe fn dot_row_x4_vnni(w: WeightRow, x: [ActivationRow; 4]) -> [f32; 4] {
        let mask = _mm512_set1_epi8(0x0F);
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut offset = [_mm_setzero_ps(); 4];
        for g in 0..w.scales.len() / GROUP_BLOCKS {
            // SAFETY: as in `dot_row_vnni`.
            unsafe {
                let packed = _mm512_loadu_si512(w.nibbles.as_ptr().add(g * 64).cast());
                let low = _mm512_and_si512(packed, mask);
                let high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
                for r in 0..4 {
                    let q = x[r].q.as_ptr().add(g * GROUP);
                    let sums = _mm512_dpbusd_epi32(
                        _mm512_setzero_si512(),
                        low,
                        _mm512_loadu_si512(q.cast()),
                    );
                    let sums =
                        _mm512_dpbusd_epi32(sums, high, _mm512_loadu_si512(q.add(64).cast()));
                    let scale = group_scales(w, x[r], g, &mut offset[r]);
                    let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(scale));
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[r]);
                }
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) - sum4(offset[r]))
    }

    /// `Σ nibble·q` of two blocks (half `h` of group `g`) in eight i32 lanes, four per block.
    /// Each i16 from `maddubs` sums two products of at most 15·127, so it cannot saturate.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn half_group_sums(w: WeightRow, x: ActivationRow, g: usize, h: usize) -> __m256i {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // SAFETY: every group has 64 nibble bytes and 128 activations.
        unsafe {
            let packed = _mm256_loadu_si256(w.nibbles.as_ptr().add(g * 64 + h * 32).cast());
            let low = _mm256_and_si256(packed, mask);
            let high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
            let q = x.q.as_ptr().add(g * GROUP + h * 32);
            let low = _mm256_maddubs_epi16(low, _mm256_loadu_si256(q.cast()));
            let high = _mm256_maddubs_epi16(high, _mm256_loadu_si256(q.add(64).cast()));
            _mm256_madd_epi16(_mm256_add_epi16(low, high), ones)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_row_avx2(w: WeightRow, x: ActivationRow) -> f32 {
        let spread = [
            _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0),
            _mm256_set_epi32(3, 3, 3, 3, 2, 2, 2, 2),
        ];
        let mut acc = _mm256_setzero_ps();
        let mut offset = _mm_setzero_ps();
        for g in 0..w.scales.len() / GROUP_BLOCKS {
            // SAFETY: as in `half_group_sums` and `group_scales`.
            unsafe {
                let scale = _mm256_castps128_ps256(group_scales(w, x, g, &mut offset));
                for (h, &spread) in spread.iter().enumerate() {
                    let sums = _mm256_cvtepi32_ps(half_group_sums(w, x, g, h));
                    let scale = _mm256_permutevar8x32_ps(scale, spread);
                    acc = _mm256_fmadd_ps(sums, scale, acc);
                }
            }
        }
        let acc = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        sum4(acc) - sum4(offset)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_row_x4_avx2(w: WeightRow, x: [ActivationRow; 4]) -> [f32; 4] {
        // SAFETY: forwarded; AVX2 has no spare registers to share the unpacking across rows.
        x.map(|x| unsafe { dot_row_avx2(w, x) })
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::*;

    /// `Σ nibble·q` for the four blocks of group `g`, one i32 lane per block. Each i16 lane
    /// sums four products of at most 15·127, so it cannot overflow.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn group_sums(w: WeightRow, x: ActivationRow, g: usize) -> int32x4_t {
        let mask = vdupq_n_u8(0x0F);
        let mut lanes = [vdupq_n_s32(0); 4];
        for (slot, lane) in lanes.iter_mut().enumerate() {
            // SAFETY: every group has 64 nibble bytes and 128 activations.
            unsafe {
                let packed = vld1q_u8(w.nibbles.as_ptr().add(g * 64 + slot * 16));
                let low = vreinterpretq_s8_u8(vandq_u8(packed, mask));
                let high = vreinterpretq_s8_u8(vshrq_n_u8::<4>(packed));
                let q = x.q.as_ptr().add(g * GROUP + slot * 16);
                let (q0, q1) = (vld1q_s8(q), vld1q_s8(q.add(64)));
                let mut p = vmull_s8(vget_low_s8(low), vget_low_s8(q0));
                p = vmlal_s8(p, vget_high_s8(low), vget_high_s8(q0));
                p = vmlal_s8(p, vget_low_s8(high), vget_low_s8(q1));
                p = vmlal_s8(p, vget_high_s8(high), vget_high_s8(q1));
                *lane = vpaddlq_s16(p);
            }
        }
        vpaddq_s32(
            vpaddq_s32(lanes[0], lanes[1]),
            vpaddq_s32(lanes[2], lanes[3]),
        )
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_row(w: WeightRow, x: ActivationRow) -> f32 {
        let mut acc = vdupq_n_f32(0.0);
        let mut offset = vdupq_n_f32(0.0);
        for g in 0..w.scales.len() / GROUP_BLOCKS {
            // SAFETY: every group has 4 scales.
            unsafe {
                let ws = vld1q_f32(w.scales.as_ptr().add(g * 4));
                let scale = vmulq_f32(ws, vld1q_f32(x.scales.as_ptr().add(g * 4)));
                offset = vfmaq_f32(offset, ws, vld1q_f32(x.sum8.as_ptr().add(g * 4)));
                acc = vfmaq_f32(acc, vcvtq_f32_s32(group_sums(w, x, g)), scale);
            }
        }
        vaddvq_f32(acc) - vaddvq_f32(offset)
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_row_x4(w: WeightRow, x: [ActivationRow; 4]) -> [f32; 4] {
        // SAFETY: forwarded.
        x.map(|x| unsafe { dot_row(w, x) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q4_0::{Q4_0Matrix, Q8Rows};
    use crate::testing::pseudo_random;

    /// Every kernel this CPU runs agrees with the portable one, with extreme nibbles (0 and 15)
    /// and activations at ±127, on whole and ragged widths.
    #[test]
    fn kernels_match_the_portable_reference() {
        let kernels = available_kernels();
        let portable = kernels.last().unwrap();
        for cols in [32, 72, 1024, 4304] {
            let mut w = pseudo_random(2 * cols, cols as u32);
            w[0] = 3.0;
            w[cols + 1] = -3.0;
            let mut m = Q4_0Matrix::with_capacity(2, cols);
            m.push_rows(&w);
            let mut x = pseudo_random(4 * cols, 7);
            x[1] = -2.0;
            x[cols + 2] = 2.0;
            let q = Q8Rows::quantize(&x, 4, cols, false);
            let rows = [q.row(0), q.row(1), q.row(2), q.row(3)];
            for r in 0..2 {
                // SAFETY: the portable kernel runs anywhere.
                let reference = unsafe { (portable.dot_x4)(m.row(r), rows) };
                for kernel in &kernels {
                    // SAFETY: `available_kernels` only lists what this CPU has.
                    let (x4, single) = unsafe {
                        (
                            (kernel.dot_x4)(m.row(r), rows),
                            (kernel.dot)(m.row(r), rows[2]),
                        )
                    };
                    for s in 0..4 {
                        let tolerance = 1e-5 * cols as f32 * reference[s].abs().max(1.0);
                        assert!(
                            (x4[s] - reference[s]).abs() <= tolerance,
                            "{}: {x4:?} vs {reference:?}",
                            kernel.name
                        );
                    }
                    assert!(
                        (single - reference[2]).abs() <= 1e-5 * cols as f32,
                        "{}",
                        kernel.name
                    );
                }
            }
        }
    }
}
