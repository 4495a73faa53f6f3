//! u8 pixels to the normalised, patch-flattened f32 tensor the vision tower
//! reads.
//!
//! Values: the reference rescales in f64 and casts to f32
//! (`(u8 as f64 * rescale_factor) as f32`), then normalises in f32
//! (`(x - mean) / std`). There are only 256 possible inputs per channel, so
//! we precompute them with exactly those operations: the output is
//! bit-identical to the reference for identical u8 input.
//!
//! Layout (`reshape_by_patch`): a `[3, H, W]` slice becomes
//! `[3, P, (H/P) * (W/P) * P]` with `P = patch_size`, i.e.
//!
//! ```text
//! out[c][i][(ph * (W/P) + pw) * P + j] = img[c][ph * P + i][pw * P + j]
//! ```
//!
//! so the row-major sequence of `P x P` patches sits side by side along the
//! last axis. A `Conv2d(kernel = stride = P)` over this `[1, 3, P, L]` tensor
//! produces the patch embeddings in row-major patch order.

use super::{ImageProcessorConfig, RgbImage};

/// Per-channel lookup table from a byte to its normalised value.
pub(crate) struct NormalizeLut([[f32; 256]; 3]);

impl NormalizeLut {
    /// Build the table for the config's rescale / normalise settings.
    pub(crate) fn new(cfg: &ImageProcessorConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                // Without rescale the reference normalises the raw values
                // after casting to f32.
                let x = if cfg.do_rescale {
                    (v as f64 * cfg.rescale_factor) as f32
                } else {
                    v as f32
                };
                *out = if cfg.do_normalize {
                    (x - cfg.image_mean[c]) / cfg.image_std[c]
                } else {
                    x
                };
            }
        }
        Self(lut)
    }

    /// Normalised value of byte `v` in channel `c` (0..3).
    #[inline]
    pub(crate) fn get(&self, c: usize, v: u8) -> f32 {
        self.0[c][v as usize]
    }
}

/// A rectangle of an image, in pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Normalise `region` of `img` and lay it out as `[3, P, (h/P)*(w/P)*P]`
/// (see the module docs). `region` must lie inside `img` with both sides
/// multiples of `patch`; the slicing geometry guarantees that.
pub(crate) fn patchify_normalized(
    img: &RgbImage,
    region: Region,
    patch: u32,
    lut: &NormalizeLut,
) -> Vec<f32> {
    let p = patch as usize;
    let (w, h) = (region.width as usize, region.height as usize);
    debug_assert!(w % p == 0 && h % p == 0);
    debug_assert!(
        region.x + region.width <= img.width() && region.y + region.height <= img.height()
    );
    let (nh, nw) = (h / p, w / p);
    let row_len = nh * nw * p; // last axis length
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    let mut out = vec![0f32; 3 * p * row_len];
    for ph in 0..nh {
        for i in 0..p {
            let y = region.y as usize + ph * p + i;
            let row = &src[y * stride + region.x as usize * 3..][..w * 3];
            for pw in 0..nw {
                let base = (ph * nw + pw) * p;
                for j in 0..p {
                    let px = &row[(pw * p + j) * 3..][..3];
                    for c in 0..3 {
                        out[(c * p + i) * row_len + base + j] = lut.get(c, px[c]);
                    }
                }
            }
        }
    }
    out
}
