//! YOLO input preprocessing, pixel-exact with Ultralytics' predictor.
//!
//! A YOLO model's boxes only match the ones it gives in Python when it sees the same input
//! tensor, and Ultralytics builds that tensor with OpenCV: `LetterBox` (`ultralytics/data/
//! augment.py`) scales the frame by `r = min(H / h, W / w)` with `cv2.resize(...,
//! interpolation=cv2.INTER_LINEAR)` and pads it to the `W x H` canvas with grey 114 using
//! `cv2.copyMakeBorder`; `BasePredictor.preprocess` then turns the canvas into `float32 / 255`
//! NCHW. Another bilinear (Pillow's, `image`'s, even OpenCV's own `INTER_LINEAR_EXACT`) puts
//! many pixels one level or more off, which is enough to flip borderline detections, so this
//! module re-implements OpenCV's exact integer arithmetic instead of calling a generic
//! resampler. The daemon has no Python or OpenCV at run time;
//! `models/tools/make_letterbox_goldens.py` records what the reference code produces and the
//! tests below compare every pixel.
//!
//! What `cv2.resize(src, (w, h), interpolation=INTER_LINEAR)` does for 8-bit images (OpenCV 4.x /
//! 5.x `modules/imgproc/src/resize.cpp`, `cv::resize` and `cv::hal::resize`; checked against
//! cv2 5.1.0 on x86-64, see the goldens; a build whose HAL replaces `cv_hal_resize` may differ):
//!
//! * Same size: a copy.
//! * Exactly half in both axes: the `INTER_AREA` fast path (`resizeAreaFast_` with
//!   `ResizeAreaFastVec`): every output is `(a + b + c + d + 2) >> 2` of its 2x2 block.
//! * Otherwise the generic separable path `resizeGeneric_<HResizeLinear<uchar, int, short, 2048>,
//!   VResizeLinear<uchar, int, short, FixedPtCast<int, uchar, 22>>>`. This is *not* the
//!   `INTER_LINEAR_EXACT` "bit-exact" path (`resize_bitExact`, 8-bit `ufixedpoint16` weights),
//!   which rounds differently (one level off on ~15% of the values in our checks):
//!   - source coordinate `f = (float)((d + 0.5) * scale - 0.5)` with `scale = 1 / (dst / src)` in
//!     double, `s = floor(f)`, `f -= s` in float; weights `round_half_even((1 - f) * 2048)` and
//!     `round_half_even(f * 2048)` (11 fractional bits, `saturate_cast<short>`);
//!   - horizontally, columns that fall outside the source (`s < 0` or `s >= src - 1`) are clamped
//!     to the edge pixel with weights `(2048, 0)`; each row becomes `int` sums `S[s] * a0 +
//!     S[s + 1] * a1`;
//!   - vertically the weights are *not* clamped: rows `s` and `s + 1` are clipped into the image
//!     and blended as `(((b0 * (H0 >> 4)) >> 16) + ((b1 * (H1 >> 4)) >> 16) + 2) >> 2`, the
//!     formula of OpenCV's SIMD kernel (`VResizeLinearVec_32s8u`), which its scalar tail
//!     (`VResizeLinear<uchar, ...>` specialisation) repeats, so the result does not depend on the
//!     vector width.
//!
//! Everything here is integer arithmetic over per-call tables (column offsets and weights, row
//! weights) and two cached horizontal rows, with no per-pixel allocation; rows of weight 0 are
//! skipped and exact decimations sample instead of blending (same integers, less work); the
//! resize writes straight into the padded canvas. A 1080p frame into 640x640 takes ~0.4 ms, and
//! its tensor another ~0.4 ms, on one x86-64 server core (release build).

/// Channels of the packed RGB8 images handled here.
const CHANNELS: usize = 3;
/// Ultralytics' `LetterBox(padding_value=114)`.
const PAD_VALUE: u8 = 114;
/// OpenCV's `INTER_RESIZE_COEF_BITS` (11): interpolation weights are in units of 1/2048.
const COEF_ONE: f32 = 2048.0;

/// Where the resized image sits inside the letterboxed canvas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LetterboxGeometry {
    /// Ultralytics' `r = min(dst_height / src_height, dst_width / src_width)` (computed in f64).
    pub scale: f32,
    /// `max(round(src_width * r), 1)`, Python's round-half-to-even.
    pub resized_width: u32,
    /// `max(round(src_height * r), 1)`.
    pub resized_height: u32,
    /// `round((dst_width - resized_width) / 2 - 0.1)`: the left padding; the right one is the rest.
    pub pad_left: u32,
    /// `round((dst_height - resized_height) / 2 - 0.1)`.
    pub pad_top: u32,
}

impl LetterboxGeometry {
    /// Ultralytics' `LetterBox.get_params` for `new_shape = (dst_height, dst_width)`,
    /// `auto=False`, `scaleup=True`, `center=True` (what its predictor uses for ONNX models).
    ///
    /// Each resized side is kept at least one pixel (so a 1000x1 frame in a 320x320 canvas
    /// becomes 320x1, not 320x0) and at most the canvas side. A zero-sized source or canvas gives
    /// `scale` 0 and an empty 0x0 resized area (a canvas of pure padding).
    pub fn new(
        src_width: u32,
        src_height: u32,
        dst_width: u32,
        dst_height: u32,
    ) -> LetterboxGeometry {
        if src_width == 0 || src_height == 0 || dst_width == 0 || dst_height == 0 {
            return LetterboxGeometry {
                scale: 0.0,
                resized_width: 0,
                resized_height: 0,
                pad_left: centre_pad(dst_width, 0),
                pad_top: centre_pad(dst_height, 0),
            };
        }
        let r = f64::min(
            f64::from(dst_height) / f64::from(src_height),
            f64::from(dst_width) / f64::from(src_width),
        );
        let side = |src: u32, dst: u32| -> u32 {
            let n = (f64::from(src) * r).round_ties_even().max(1.0);
            // `n` is in [1, dst + 0.5) because r <= dst / src; the cast saturates anyway.
            (n as u32).min(dst)
        };
        let resized_width = side(src_width, dst_width);
        let resized_height = side(src_height, dst_height);
        LetterboxGeometry {
            scale: r as f32,
            resized_width,
            resized_height,
            pad_left: centre_pad(dst_width, resized_width),
            pad_top: centre_pad(dst_height, resized_height),
        }
    }

    /// Maps a box `[x1, y1, x2, y2]` in canvas pixels back to source pixels, clipped to the
    /// source: Ultralytics' `ops.scale_boxes(canvas_shape, boxes, src_shape)` followed by its
    /// `clip_boxes`, in float32 like the torch tensors it works on.
    ///
    /// Ultralytics 8.4 recomputes the geometry from the two shapes and divides by the per-axis
    /// gains of the *rounded* resize (`resized_width / src_width`, `resized_height /
    /// src_height`), not by `r`; the paddings are the ones stored here. Older releases divided
    /// both axes by `r`, which differs by well under a pixel. A degenerate geometry (zero-sized
    /// source) maps every box to `[0, 0, 0, 0]`.
    pub fn to_source(&self, bbox: [f32; 4], src_width: u32, src_height: u32) -> [f32; 4] {
        if self.resized_width == 0 || self.resized_height == 0 || src_width == 0 || src_height == 0
        {
            return [0.0; 4];
        }
        let gain_x = (f64::from(self.resized_width) / f64::from(src_width)) as f32;
        let gain_y = (f64::from(self.resized_height) / f64::from(src_height)) as f32;
        let (pad_x, pad_y) = (self.pad_left as f32, self.pad_top as f32);
        let (w, h) = (src_width as f32, src_height as f32);
        let x = |v: f32| ((v - pad_x) / gain_x).clamp(0.0, w);
        let y = |v: f32| ((v - pad_y) / gain_y).clamp(0.0, h);
        [x(bbox[0]), y(bbox[1]), x(bbox[2]), y(bbox[3])]
    }
}

/// `round(pad / 2 - 0.1)` with Python's `round`: the smaller half of the padding goes first.
fn centre_pad(canvas: u32, inner: u32) -> u32 {
    let half = f64::from(canvas.saturating_sub(inner)) / 2.0;
    (half - 0.1).round_ties_even().max(0.0) as u32
}

/// `cv2.resize(img, (new_width, new_height), interpolation=cv2.INTER_LINEAR)` for packed RGB8,
/// pixel-exact (see the module docs for the OpenCV code paths it reproduces).
///
/// A zero `new_width` or `new_height` gives an empty vector; a zero-sized source gives a black
/// image of the requested size (OpenCV refuses both).
///
/// # Panics
/// If `rgb.len() != width * height * 3`.
pub fn resize_linear(
    rgb: &[u8],
    width: u32,
    height: u32,
    new_width: u32,
    new_height: u32,
) -> Vec<u8> {
    check_len(rgb, width, height);
    let (nw, nh) = (new_width as usize, new_height as usize);
    let mut out = vec![0u8; nw * nh * CHANNELS];
    if nw == 0 || nh == 0 || width == 0 || height == 0 {
        return out;
    }
    let stride = nw * CHANNELS;
    resize_into(
        rgb,
        width as usize,
        height as usize,
        &mut out,
        stride,
        nw,
        nh,
    );
    out
}

/// Ultralytics' `LetterBox` (predictor settings, see [`LetterboxGeometry::new`]): the image
/// resized with [`resize_linear`] (only when the size changes), centred on a packed RGB8 canvas
/// of `dst_width x dst_height` filled with grey 114.
///
/// # Panics
/// If `rgb.len() != width * height * 3`.
pub fn letterbox(
    rgb: &[u8],
    width: u32,
    height: u32,
    dst_width: u32,
    dst_height: u32,
) -> (Vec<u8>, LetterboxGeometry) {
    check_len(rgb, width, height);
    let geometry = LetterboxGeometry::new(width, height, dst_width, dst_height);
    let stride = dst_width as usize * CHANNELS;
    let mut canvas = vec![PAD_VALUE; stride * dst_height as usize];
    let (rw, rh) = (
        geometry.resized_width as usize,
        geometry.resized_height as usize,
    );
    if rw > 0 && rh > 0 {
        let offset = geometry.pad_top as usize * stride + geometry.pad_left as usize * CHANNELS;
        resize_into(
            rgb,
            width as usize,
            height as usize,
            &mut canvas[offset..],
            stride,
            rw,
            rh,
        );
    }
    (canvas, geometry)
}

/// Packed RGB8 (HWC) to planar NCHW (`1 x 3 x height x width`) float32:
/// `(v / 255 - mean[c]) / std[c]`, each step rounded to f32 as torch does.
///
/// With `mean = [0.0; 3]` and `std = [1.0; 3]` (YOLO) this is bit-identical to Ultralytics'
/// `torch.from_numpy(im).permute(...).float().div_(255)` (a true f32 division, not a multiply by
/// 1/255). It goes through a 256-entry table per channel, so it costs one lookup per value.
///
/// # Panics
/// If `rgb.len() != width * height * 3`.
pub fn to_nchw(rgb: &[u8], width: u32, height: u32, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    check_len(rgb, width, height);
    let mut lut = [[0f32; 256]; CHANNELS];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let plane = width as usize * height as usize;
    // One pass per output plane; `extend` over an exact-size iterator skips zero-filling.
    let mut out = Vec::with_capacity(plane * CHANNELS);
    for (c, table) in lut.iter().enumerate() {
        out.extend(
            rgb.chunks_exact(CHANNELS)
                .map(|px| table[usize::from(px[c])]),
        );
    }
    out
}

fn check_len(rgb: &[u8], width: u32, height: u32) {
    let expected = width as usize * height as usize * CHANNELS;
    assert_eq!(
        rgb.len(),
        expected,
        "packed RGB8 of {width}x{height} must be {expected} bytes"
    );
}

/// Resizes `src` (`w x h`, packed) into the `nw x nh` area of `dst` whose rows start at
/// `y * stride`. All sizes are non-zero.
fn resize_into(
    src: &[u8],
    w: usize,
    h: usize,
    dst: &mut [u8],
    stride: usize,
    nw: usize,
    nh: usize,
) {
    let row = nw * CHANNELS;
    if (w, h) == (nw, nh) {
        // cv::resize: "Source and destination are of same size. Use simple copy."
        for (y, s) in src.chunks_exact(w * CHANNELS).enumerate() {
            dst[y * stride..y * stride + row].copy_from_slice(s);
        }
    } else if w == 2 * nw && h == 2 * nh {
        // cv::hal::resize switches INTER_LINEAR to INTER_AREA when both scales are exactly 2.
        area_half(src, w, dst, stride, nw, nh);
    } else {
        linear(src, w, h, dst, stride, nw, nh);
    }
}

/// OpenCV's `resizeAreaFast_` for a 2x2 decimation (`ResizeAreaFastVec`, cn = 3): the rounded
/// mean `(a + b + c + d + 2) >> 2` of each block. The two rows are summed first (a loop that
/// vectorises), then pairs of pixels.
fn area_half(src: &[u8], w: usize, dst: &mut [u8], stride: usize, nw: usize, nh: usize) {
    let src_row = w * CHANNELS;
    let mut sums = vec![0u16; src_row];
    for y in 0..nh {
        let top = &src[2 * y * src_row..][..src_row];
        let bottom = &src[(2 * y + 1) * src_row..][..src_row];
        for ((s, &t), &b) in sums.iter_mut().zip(top).zip(bottom) {
            *s = u16::from(t) + u16::from(b);
        }
        let out = &mut dst[y * stride..][..nw * CHANNELS];
        for (o, pair) in out
            .chunks_exact_mut(CHANNELS)
            .zip(sums.chunks_exact(2 * CHANNELS))
        {
            for c in 0..CHANNELS {
                o[c] = ((pair[c] + pair[c + CHANNELS] + 2) >> 2) as u8;
            }
        }
    }
}

/// Source position of output index `d` along one axis, as OpenCV's `cv::hal::resize` computes it
/// for `INTER_LINEAR`: `(floor(f), f - floor(f))` with `f = (float)((d + 0.5) * scale - 0.5)`.
fn source_position(d: usize, scale: f64) -> (i64, f32) {
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    (s as i64, f - s)
}

/// `saturate_cast<short>((1 - f) * 2048)`, `saturate_cast<short>(f * 2048)`: cvRound, i.e.
/// round half to even.
fn weights(f: f32) -> (i32, i32) {
    (
        ((1.0 - f) * COEF_ONE).round_ties_even() as i32,
        (f * COEF_ONE).round_ties_even() as i32,
    )
}

/// `scale = 1. / inv_scale` with `inv_scale = (double)dst / src`, both roundings kept.
fn axis_scale(src: usize, dst: usize) -> f64 {
    1.0 / (dst as f64 / src as f64)
}

/// One output column: the byte offset of a two-pixel source window and the weights of its
/// pixels.
#[derive(Clone, Copy)]
struct Tap {
    at: usize,
    a0: i32,
    a1: i32,
}

/// How each output column is made from a source row.
enum Columns {
    /// One-pixel-wide source: every column is `S[0] * 2048`.
    Single,
    /// Every column has one weight of 2048 (e.g. an exact 3x downscale): byte offsets of the
    /// pixels taken, `S[x] * 2048` without the multiply-add.
    Sampled(Vec<usize>),
    /// The general case.
    Blend(Vec<Tap>),
}

/// Column taps of `HResizeLinear` for a `w`-pixel-wide source.
///
/// OpenCV clamps columns left of the image (`s < 0`) to pixel 0 with weights `(2048, 0)`, and
/// columns on or past the last pixel to `S[w - 1] * 2048`; the latter is written here as the
/// window `(w - 2, w - 1)` with weights `(0, 2048)`, the same integer, so that every tap reads
/// one in-bounds 6-byte window.
fn columns(w: usize, nw: usize) -> Columns {
    if w < 2 {
        return Columns::Single;
    }
    let scale = axis_scale(w, nw);
    let taps: Vec<Tap> = (0..nw)
        .map(|dx| {
            let (s, f) = source_position(dx, scale);
            if s >= w as i64 - 1 {
                Tap {
                    at: (w - 2) * CHANNELS,
                    a0: 0,
                    a1: 2048,
                }
            } else if s < 0 {
                Tap {
                    at: 0,
                    a0: 2048,
                    a1: 0,
                }
            } else {
                let (a0, a1) = weights(f);
                Tap {
                    at: s as usize * CHANNELS,
                    a0,
                    a1,
                }
            }
        })
        .collect();
    if taps.iter().all(|t| t.a0 == 0 || t.a1 == 0) {
        let at = |t: &Tap| if t.a1 == 0 { t.at } else { t.at + CHANNELS };
        Columns::Sampled(taps.iter().map(at).collect())
    } else {
        Columns::Blend(taps)
    }
}

/// OpenCV's `resizeGeneric_` with `HResizeLinear` / `VResizeLinear` for 8-bit, 3 channels.
fn linear(src: &[u8], w: usize, h: usize, dst: &mut [u8], stride: usize, nw: usize, nh: usize) {
    let taps = columns(w, nw);
    let scale_y = axis_scale(h, nh);
    let src_row = w * CHANNELS;
    let row = nw * CHANNELS;
    let mut cache = RowCache {
        rows: [usize::MAX; 2],
        values: [vec![0; row], vec![0; row]],
    };
    for dy in 0..nh {
        let (s, f) = source_position(dy, scale_y);
        // `clip(sy, 0, h)` of resizeGeneric_Invoker; the weights keep the unclamped fraction.
        let r0 = s.clamp(0, h as i64 - 1) as usize;
        let r1 = (s + 1).clamp(0, h as i64 - 1) as usize;
        let (b0, b1) = weights(f);
        let (b0, b1) = (b0 as i16, b1 as i16);
        // A row with weight 0 contributes exactly 0, so it is not computed (integer downscales
        // need one source row per output row, not two).
        let (i0, i1) = if b1 == 0 {
            let i = cache.fetch(r0, r0, &src[r0 * src_row..][..src_row], &taps);
            (i, i)
        } else if b0 == 0 {
            let i = cache.fetch(r1, r1, &src[r1 * src_row..][..src_row], &taps);
            (i, i)
        } else {
            let i0 = cache.fetch(r0, r1, &src[r0 * src_row..][..src_row], &taps);
            let i1 = cache.fetch(r1, r0, &src[r1 * src_row..][..src_row], &taps);
            (i0, i1)
        };
        let out = &mut dst[dy * stride..][..row];
        vertical(&cache.values[i0], &cache.values[i1], b0, b1, out);
    }
}

/// The two most recent horizontally resized source rows (already `>> 4`) and their indices.
struct RowCache {
    rows: [usize; 2],
    values: [Vec<i16>; 2],
}

impl RowCache {
    /// Slot holding source row `want` (whose pixels are `src`), computing it when it is not
    /// cached, into the slot that does not hold `keep` (the other row this output needs) and
    /// otherwise the older one. Rows are requested in non-decreasing order.
    fn fetch(&mut self, want: usize, keep: usize, src: &[u8], taps: &Columns) -> usize {
        if let Some(i) = self.rows.iter().position(|&r| r == want) {
            return i;
        }
        let slot = if self.rows[0] == keep && keep != want {
            1
        } else if self.rows[1] == keep && keep != want {
            0
        } else {
            // usize::MAX marks an empty slot: fill it first, then evict the lower row.
            usize::from(
                self.rows[0] != usize::MAX
                    && (self.rows[1] == usize::MAX || self.rows[1] < self.rows[0]),
            )
        };
        self.rows[slot] = want;
        horizontal(src, taps, &mut self.values[slot]);
        slot
    }
}

/// `HResizeLinear<uchar, int, short, 2048>`: `S[s] * a0 + S[s + 1] * a1` per channel, stored
/// `>> 4` (at most 255 * 2048 >> 4 = 32640, an i16) since that is all the vertical pass reads.
fn horizontal(src: &[u8], columns: &Columns, out: &mut [i16]) {
    match columns {
        Columns::Single => {
            for o in out.chunks_exact_mut(CHANNELS) {
                for c in 0..CHANNELS {
                    o[c] = i16::from(src[c]) << 7;
                }
            }
        }
        Columns::Sampled(offsets) => {
            for (o, &at) in out.chunks_exact_mut(CHANNELS).zip(offsets) {
                let p = &src[at..at + CHANNELS];
                for c in 0..CHANNELS {
                    o[c] = i16::from(p[c]) << 7;
                }
            }
        }
        Columns::Blend(taps) => {
            for (o, t) in out.chunks_exact_mut(CHANNELS).zip(taps) {
                let p = &src[t.at..t.at + 2 * CHANNELS];
                for c in 0..CHANNELS {
                    let v = i32::from(p[c]) * t.a0 + i32::from(p[c + CHANNELS]) * t.a1;
                    o[c] = (v >> 4) as i16;
                }
            }
        }
    }
}

/// `VResizeLinear<uchar, int, short, FixedPtCast<int, uchar, 22>>` as OpenCV evaluates it
/// (`VResizeLinearVec_32s8u` and its scalar tail): rows pre-shifted by 4 (done by
/// [`horizontal`]), a 16-bit high-half multiply by each weight, then a rounding shift by 2. The
/// sum is at most 1022, so nothing saturates. Kept out of line: inlined into [`linear`], LLVM
/// stopped vectorising it (`pmulhw` on x86).
#[inline(never)]
fn vertical(h0: &[i16], h1: &[i16], b0: i16, b1: i16, out: &mut [u8]) {
    // Equal lengths up front: no bounds checks in the loop, so it vectorises.
    let n = out.len().min(h0.len()).min(h1.len());
    let (out, h0, h1) = (&mut out[..n], &h0[..n], &h1[..n]);
    let (b0, b1) = (i32::from(b0), i32::from(b1));
    for i in 0..n {
        let v = ((b0 * i32::from(h0[i])) >> 16) + ((b1 * i32::from(h1[i])) >> 16);
        out[i] = ((v + 2) >> 2) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fixtures/letterbox");

    fn fixture(name: &str) -> PathBuf {
        Path::new(FIXTURES).join(name)
    }

    fn goldens() -> Value {
        let text = std::fs::read_to_string(fixture("goldens.json")).expect("goldens.json");
        serde_json::from_str(&text).expect("goldens.json parses")
    }

    /// (pixels, width, height) of a fixture PNG.
    fn png(name: &str) -> (Vec<u8>, u32, u32) {
        let img = image::open(fixture(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_rgb8();
        let (w, h) = img.dimensions();
        (img.into_raw(), w, h)
    }

    fn source(name: &str) -> (Vec<u8>, u32, u32) {
        png(&format!("src_{name}.png"))
    }

    fn u32_of(v: &Value) -> u32 {
        v.as_u64().expect("integer") as u32
    }

    fn f32s(path: &str) -> Vec<f32> {
        let bytes = std::fs::read(fixture(path)).expect(path);
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Panics with the number and the first position of differing bytes.
    fn assert_pixels_eq(what: &str, got: &[u8], want: &[u8], width: u32) {
        assert_eq!(got.len(), want.len(), "{what}: size");
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
        if let Some(&i) = bad.first() {
            let px = i / CHANNELS;
            panic!(
                "{what}: {} of {} bytes differ; first at x={} y={} c={}: got {} want {}",
                bad.len(),
                got.len(),
                px % width as usize,
                px / width as usize,
                i % CHANNELS,
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn resize_matches_cv2_on_every_pixel() {
        let g = goldens();
        let cases = g["resize"].as_array().unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let (src, sw, sh) = source(case["source"].as_str().unwrap());
            let (w, h) = (u32_of(&case["width"]), u32_of(&case["height"]));
            let (want, ew, eh) = png(case["expected"].as_str().unwrap());
            assert_eq!((ew, eh), (w, h));
            let got = resize_linear(&src, sw, sh, w, h);
            let what = format!(
                "{} {sw}x{sh} -> {w}x{h} ({})",
                case["source"], case["covers"]
            );
            assert_pixels_eq(&what, &got, &want, w);
        }
    }

    #[test]
    fn letterbox_matches_ultralytics_on_every_pixel() {
        let g = goldens();
        let cases = g["letterbox"].as_array().unwrap();
        assert!(cases.len() >= 15);
        for case in cases {
            let (src, sw, sh) = source(case["source"].as_str().unwrap());
            let (cw, ch) = (
                u32_of(&case["canvas_width"]),
                u32_of(&case["canvas_height"]),
            );
            let what = format!("{} {sw}x{sh} in {cw}x{ch}", case["source"]);
            let (canvas, geo) = letterbox(&src, sw, sh, cw, ch);

            let unpad = case["new_unpad"].as_array().unwrap();
            let want_geo = LetterboxGeometry {
                scale: case["r"].as_f64().unwrap() as f32,
                resized_width: u32_of(&unpad[0]),
                resized_height: u32_of(&unpad[1]),
                pad_left: u32_of(&case["left"]),
                pad_top: u32_of(&case["top"]),
            };
            assert_eq!(geo, want_geo, "{what}: geometry");
            assert_eq!(
                cw - geo.pad_left - geo.resized_width,
                u32_of(&case["right"]),
                "{what}: right"
            );
            assert_eq!(
                ch - geo.pad_top - geo.resized_height,
                u32_of(&case["bottom"]),
                "{what}: bottom"
            );
            assert_eq!(LetterboxGeometry::new(sw, sh, cw, ch), geo);

            let (want, ew, eh) = png(case["expected"].as_str().unwrap());
            assert_eq!((ew, eh), (cw, ch));
            assert_pixels_eq(&what, &canvas, &want, cw);
        }
    }

    #[test]
    fn to_source_matches_scale_boxes() {
        let g = goldens();
        for case in g["letterbox"].as_array().unwrap() {
            let (sw, sh) = source_dims(&g, case["source"].as_str().unwrap());
            let (cw, ch) = (
                u32_of(&case["canvas_width"]),
                u32_of(&case["canvas_height"]),
            );
            let geo = LetterboxGeometry::new(sw, sh, cw, ch);
            let canvas_boxes = case["boxes_canvas"].as_array().unwrap();
            let source_boxes = case["boxes_source"].as_array().unwrap();
            for (cb, sb) in canvas_boxes.iter().zip(source_boxes) {
                let cb: Vec<f32> = cb
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                let sb: Vec<f32> = sb
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                let got = geo.to_source([cb[0], cb[1], cb[2], cb[3]], sw, sh);
                assert_eq!(
                    got.to_vec(),
                    sb,
                    "{} in {cw}x{ch}: box {cb:?}",
                    case["source"]
                );
            }
        }
    }

    fn source_dims(g: &Value, name: &str) -> (u32, u32) {
        let s = g["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .expect(name);
        (u32_of(&s["width"]), u32_of(&s["height"]))
    }

    #[test]
    fn to_source_inverts_the_forward_mapping() {
        for &(sw, sh, cw, ch) in &[
            (640, 480, 640, 640),
            (1920, 1080, 640, 640),
            (333, 217, 384, 640),
            (41, 29, 640, 640),
        ] {
            let geo = LetterboxGeometry::new(sw, sh, cw, ch);
            let gx = geo.resized_width as f32 / sw as f32;
            let gy = geo.resized_height as f32 / sh as f32;
            let forward =
                |x: f32, y: f32| (x * gx + geo.pad_left as f32, y * gy + geo.pad_top as f32);
            for i in 0..=20 {
                let (x1, y1) = (sw as f32 * i as f32 / 25.0, sh as f32 * i as f32 / 31.0);
                let (x2, y2) = (x1 + sw as f32 * 0.2, y1 + sh as f32 * 0.3);
                let (cx1, cy1) = forward(x1, y1);
                let (cx2, cy2) = forward(x2, y2);
                let back = geo.to_source([cx1, cy1, cx2, cy2], sw, sh);
                for (b, v) in back.iter().zip([x1, y1, x2, y2]) {
                    assert!(
                        (b - v).abs() < 1e-3,
                        "{sw}x{sh} in {cw}x{ch}: {back:?} vs {:?}",
                        [x1, y1, x2, y2]
                    );
                }
            }
            // Boxes in the padding clip to the source edges.
            let outside = geo.to_source([-50.0, -50.0, cw as f32 + 50.0, ch as f32 + 50.0], sw, sh);
            assert_eq!(outside, [0.0, 0.0, sw as f32, sh as f32]);
        }
    }

    #[test]
    fn nchw_matches_the_predictor_tensor() {
        let g = goldens();
        let mean: Vec<f32> = g["imagenet_mean"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let std: Vec<f32> = g["imagenet_std"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let tensors = g["tensors"].as_array().unwrap();
        assert!(!tensors.is_empty());
        for case in tensors {
            let (src, sw, sh) = source(case["source"].as_str().unwrap());
            let (cw, ch) = (
                u32_of(&case["canvas_width"]),
                u32_of(&case["canvas_height"]),
            );
            let (canvas, _) = letterbox(&src, sw, sh, cw, ch);

            let want = f32s(case["yolo"].as_str().unwrap());
            let got = to_nchw(&canvas, cw, ch, [0.0; 3], [1.0; 3]);
            assert_eq!(got.len(), want.len());
            let bits_differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(bits_differ, 0, "YOLO tensor must be bit-identical");

            let want = f32s(case["imagenet"].as_str().unwrap());
            let got = to_nchw(
                &canvas,
                cw,
                ch,
                [mean[0], mean[1], mean[2]],
                [std[0], std[1], std[2]],
            );
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "ImageNet tensor off by {worst}");
        }
    }

    #[test]
    fn nchw_layout_is_planar_rgb() {
        let rgb = [0u8, 51, 255, 255, 0, 102];
        let t = to_nchw(&rgb, 2, 1, [0.0; 3], [1.0; 3]);
        assert_eq!(t, vec![0.0, 1.0, 0.2, 0.0, 1.0, 0.4]);
    }

    #[test]
    fn same_size_is_a_copy_and_canvas_of_the_same_size_has_no_padding() {
        let (src, w, h) = source("tiny_7x5");
        assert_eq!(resize_linear(&src, w, h, w, h), src);
        let (canvas, geo) = letterbox(&src, w, h, w, h);
        assert_eq!(canvas, src);
        assert_eq!((geo.pad_left, geo.pad_top, geo.scale), (0, 0, 1.0));
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let cases: &[(u32, u32, u32, u32)] = &[
            (1, 1, 640, 640),
            (1, 1, 1, 1),
            (1000, 1, 640, 640),
            (1, 1000, 640, 640),
            (100_000, 1, 64, 64),
            (1, 100_000, 64, 96),
            (3, 3000, 320, 320),
            (2, 1, 1, 1),
            (640, 480, 1, 1),
            (1, 1, 3, 1),
        ];
        for &(w, h, cw, ch) in cases {
            let src: Vec<u8> = (0..w as usize * h as usize * 3)
                .map(|i| (i * 37 % 251) as u8)
                .collect();
            let (canvas, geo) = letterbox(&src, w, h, cw, ch);
            assert_eq!(canvas.len(), cw as usize * ch as usize * 3);
            assert!(
                geo.resized_width >= 1 && geo.resized_height >= 1,
                "{w}x{h}: {geo:?}"
            );
            assert!(
                geo.pad_left + geo.resized_width <= cw && geo.pad_top + geo.resized_height <= ch,
                "{geo:?}"
            );
            let b = geo.to_source([0.0, 0.0, cw as f32, ch as f32], w, h);
            // The whole canvas maps to the whole source (up to f32 rounding of 1 / gain, e.g.
            // 479.99997 for 640x480 in 1x1, which is also what torch gives).
            let full = [0.0, 0.0, w as f32, h as f32];
            for (v, want) in b.iter().zip(full) {
                assert!(
                    (v - want).abs() <= want * 1e-6,
                    "{w}x{h} in {cw}x{ch}: {b:?}"
                );
            }
            // Plain resizes to extreme shapes, both ways.
            assert_eq!(resize_linear(&src, w, h, cw, 1).len(), cw as usize * 3);
            assert_eq!(resize_linear(&src, w, h, 1, ch).len(), ch as usize * 3);
        }
        // A single pixel spreads everywhere; the padding is exact grey.
        let (canvas, geo) = letterbox(&[10, 20, 30], 1, 1, 64, 96);
        assert_eq!(
            (geo.resized_width, geo.resized_height, geo.pad_top),
            (64, 64, 16)
        );
        let row = |y: usize| &canvas[y * 64 * 3..(y + 1) * 64 * 3];
        assert!(row(0).iter().all(|&v| v == PAD_VALUE));
        assert!(row(16).chunks_exact(3).all(|p| p == [10, 20, 30]));
        // Degenerate sizes: empty outputs, pure padding, no division by zero.
        assert!(resize_linear(&[1, 2, 3], 1, 1, 0, 5).is_empty());
        assert_eq!(resize_linear(&[], 0, 0, 2, 2), vec![0; 12]);
        let (canvas, geo) = letterbox(&[], 0, 7, 4, 4);
        assert!(canvas.iter().all(|&v| v == PAD_VALUE));
        assert_eq!(geo.to_source([1.0, 1.0, 2.0, 2.0], 0, 7), [0.0; 4]);
        assert!(letterbox(&[1, 2, 3], 1, 1, 0, 0).0.is_empty());
    }

    #[test]
    fn geometry_rounds_like_python() {
        // Half-way cases: Python's round goes to even (2.5 -> 2, 3.5 -> 4).
        assert_eq!(LetterboxGeometry::new(5, 10, 5, 5).resized_width, 2);
        assert_eq!(LetterboxGeometry::new(7, 10, 5, 5).resized_width, 4);
        // Odd padding: the smaller half on the left / top.
        let g = LetterboxGeometry::new(41, 29, 64, 96);
        assert_eq!((g.resized_width, g.resized_height, g.pad_top), (64, 45, 25));
    }

    /// Timing of a 1080p frame into a 640x640 canvas. Run with
    /// `cargo test -p lookout-pipeline --lib detect::letterbox -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_letterbox_1080p() {
        let (src, w, h) = source("scene_1920x1080");
        let runs = 50;
        let mut best = std::time::Duration::MAX;
        for _ in 0..runs {
            let t = std::time::Instant::now();
            let (canvas, _) = letterbox(&src, w, h, 640, 640);
            let tensor = to_nchw(&canvas, 640, 640, [0.0; 3], [1.0; 3]);
            std::hint::black_box(&tensor);
            best = best.min(t.elapsed());
        }
        let t = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(letterbox(&src, w, h, 640, 640));
        }
        println!(
            "letterbox 1920x1080 -> 640x640: {:?} mean; + to_nchw: {best:?} best",
            t.elapsed() / runs
        );
    }
}
