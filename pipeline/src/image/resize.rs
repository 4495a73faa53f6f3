//! Pillow-exact BICUBIC resize of 8-bit RGB images.
//!
//! This is a transcription of Pillow's `ImagingResample` for 8-bit images
//! (`src/libImaging/Resample.c`, Pillow 13): a separable convolution, one
//! pass per axis, each rounding to u8; normally horizontal first (only over
//! the rows the vertical pass will read), vertical first when the height
//! shrinks much more than the width (see `vertical_first`). The filter is
//! the Keys cubic with `a = -0.5`; when shrinking, its support is
//! stretched by the scale factor, which is what gives Pillow's resize its
//! antialiasing. Weights are normalised to sum to one, then quantised to
//! fixed point with 22 fractional bits (`PRECISION_BITS = 32 - 8 - 2`).
//! Every floating-point expression keeps Pillow's evaluation order so the
//! integer weights, and hence the output bytes, are identical.
//!
//! Pillow <= 12 always ran the horizontal pass first; for the sizes where
//! Pillow 13 switches order the two versions differ by at most one level on
//! some pixels.

use super::{ImageError, RgbImage};

const PRECISION_BITS: u32 = 32 - 8 - 2;
const CHANNELS: usize = 3;
/// BICUBIC support radius at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;
/// Refuse to produce more than this many output pixels (64 Mpx), so absurd
/// geometry becomes an error instead of a huge allocation. Real MiniCPM-V
/// targets are ~`scale_resolution² * max_slice_nums`, far below it.
const MAX_OUTPUT_PIXELS: u64 = 1 << 26;

/// Keys cubic convolution kernel, `a = -0.5`, written exactly like Pillow's
/// `bicubic_filter` (the macro `a` expands to the literal `-0.5`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights for one axis: output pixel `i` reads `count[i]`
/// input pixels starting at `first[i]`, weights at `k[i * ksize..]`.
struct Coeffs {
    ksize: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    k: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the
/// whole-image box `[0, in_size)`.
fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;

    let mut first = Vec::with_capacity(out_size);
    let mut count = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // C casts truncate toward zero; `as` does the same.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let xmin = xmin as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = bicubic(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        let row = &mut k[xx * ksize..(xx + 1) * ksize];
        for (x, kx) in row.iter_mut().enumerate().take(n) {
            let mut v = w[x];
            if ww != 0.0 {
                v /= ww;
            }
            *kx = if v < 0.0 {
                (-0.5 + v * f64::from(1u32 << PRECISION_BITS)) as i32
            } else {
                (0.5 + v * f64::from(1u32 << PRECISION_BITS)) as i32
            };
        }
        first.push(xmin);
        count.push(n);
    }
    Coeffs {
        ksize,
        first,
        count,
        k,
    }
}

/// Pillow's `clip8`: drop the fraction and clamp to a byte.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding bias added to each accumulator (`1 << (PRECISION_BITS - 1)`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resize `src` to `dst_w` x `dst_h` with Pillow's BICUBIC filter
/// (`Image.resize((w, h), Image.BICUBIC)` on an RGB image).
///
/// Overflow note: weights are normalised, and the cubic's negative lobes keep
/// `sum |k| < 1.5`, so `|acc| < 255 * 1.5 * 2^22 + 2^21 < 2^31`.
pub fn resize_bicubic(src: &RgbImage, dst_w: u32, dst_h: u32) -> Result<RgbImage, ImageError> {
    if dst_w == 0 || dst_h == 0 {
        return Err(ImageError::InvalidSize {
            width: dst_w.into(),
            height: dst_h.into(),
            reason: "resize target has a zero dimension",
        });
    }
    if u64::from(dst_w) * u64::from(dst_h) > MAX_OUTPUT_PIXELS {
        return Err(ImageError::InvalidSize {
            width: dst_w.into(),
            height: dst_h.into(),
            reason: "resize target is too large",
        });
    }
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (dst_w as usize, dst_h as usize);
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let src_px = src.as_raw();

    let out = if vertical_first(in_w, in_h, out_w, out_h) {
        // Shrink the height first so the horizontal pass has fewer rows.
        let vert = precompute_coeffs(in_h, out_h);
        let mid = resample_vertical(src_px, in_w, out_h, &vert);
        if need_horizontal {
            let hc = precompute_coeffs(in_w, out_w);
            resample_horizontal(&mid, in_w, 0..out_h, out_w, &hc)
        } else {
            mid
        }
    } else {
        let mut vert = precompute_coeffs(in_h, out_h);
        // Rows of the source the vertical pass will touch.
        let ybox_first = vert.first[0];
        let ybox_last = vert.first[out_h - 1] + vert.count[out_h - 1];
        let horizontal;
        let (mid, mid_w): (&[u8], usize) = if need_horizontal {
            let hc = precompute_coeffs(in_w, out_w);
            for f in &mut vert.first {
                *f -= ybox_first;
            }
            horizontal = resample_horizontal(src_px, in_w, ybox_first..ybox_last, out_w, &hc);
            (&horizontal, out_w)
        } else {
            (src_px, in_w)
        };
        if need_vertical {
            resample_vertical(mid, mid_w, out_h, &vert)
        } else {
            mid.to_vec()
        }
    };
    Ok(RgbImage::from_parts_unchecked(dst_w, dst_h, out))
}

/// Pass order of Pillow >= 13 (`ImagingResampleInner`): the vertical pass
/// runs first when the height shrinks by more than twice as many pixels as
/// the width does; otherwise horizontal first (the only order in Pillow
/// <= 12). The order matters because each pass rounds to u8. Determined
/// against Pillow 13.0.0 on random sizes (see the resize goldens).
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let (in_w, in_h, out_w, out_h) = (in_w as i64, in_h as i64, out_w as i64, out_h as i64);
    out_h < in_h && (in_h - out_h) > 2 * (in_w - out_w)
}

fn resample_horizontal(
    src: &[u8],
    in_w: usize,
    rows: std::ops::Range<usize>,
    out_w: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * out_w * CHANNELS];
    let in_stride = in_w * CHANNELS;
    for (row_out, y) in out.chunks_exact_mut(out_w * CHANNELS).zip(rows) {
        let row_in = &src[y * in_stride..(y + 1) * in_stride];
        for (xx, px) in row_out.chunks_exact_mut(CHANNELS).enumerate() {
            let k = &c.k[xx * c.ksize..xx * c.ksize + c.count[xx]];
            let taps = &row_in[c.first[xx] * CHANNELS..(c.first[xx] + k.len()) * CHANNELS];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (&kx, p) in k.iter().zip(taps.chunks_exact(CHANNELS)) {
                s0 += i32::from(p[0]) * kx;
                s1 += i32::from(p[1]) * kx;
                s2 += i32::from(p[2]) * kx;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
    out
}

fn resample_vertical(src: &[u8], w: usize, out_h: usize, c: &Coeffs) -> Vec<u8> {
    let stride = w * CHANNELS;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (yy, row_out) in out.chunks_exact_mut(stride).enumerate() {
        let k = &c.k[yy * c.ksize..yy * c.ksize + c.count[yy]];
        acc.fill(HALF);
        // Row-by-row accumulation: same sums as Pillow's per-pixel loop
        // (integer addition is associative) but cache friendly.
        for (y, &ky) in k.iter().enumerate() {
            let row_in = &src[(c.first[yy] + y) * stride..(c.first[yy] + y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row_in) {
                *a += i32::from(p) * ky;
            }
        }
        for (o, &a) in row_out.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 37), (37, 100), (5, 5), (1, 56), (1000, 3)] {
            let c = precompute_coeffs(i, o);
            for xx in 0..o {
                let s: i64 = c.k[xx * c.ksize..xx * c.ksize + c.count[xx]]
                    .iter()
                    .map(|&v| i64::from(v))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn identity_is_a_copy() {
        let data: Vec<u8> = (0..5 * 4 * 3).map(|v| (v * 7 % 256) as u8).collect();
        let img = RgbImage::from_raw_rgb(5, 4, data.clone()).unwrap();
        assert_eq!(resize_bicubic(&img, 5, 4).unwrap().as_raw(), &data[..]);
    }
}
