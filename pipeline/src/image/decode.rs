//! Encoded bytes (JPEG / PNG / WebP) to an upright 8-bit RGB image.
//!
//! The reference path is what transformers does with an image file:
//! `PIL.Image.open` + `ImageOps.exif_transpose` (as in `load_image`), then the
//! PIL backend's `convert_to_rgb`, which composites any alpha channel (or
//! palette / colour-key transparency) over opaque white with Pillow's integer
//! `alpha_composite`. [`AlphaMode::Drop`] instead gives PIL's plain
//! `convert("RGB")`, which is what `load_image` (URL / path inputs of
//! `apply_chat_template`) applies before the processor ever sees the alpha.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::ImageError;

/// Default cap on decoded pixels (64 Mpx, e.g. 8000 x 8000).
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// A tightly packed 8-bit RGB image, row-major, `data.len() == w * h * 3`.
///
/// Fields are private so the size invariant always holds; construct it with
/// [`RgbImage::from_raw_rgb`] or [`decode_image`].
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl RgbImage {
    /// Wrap an in-memory RGB frame (e.g. from a camera or video decoder).
    ///
    /// Fails on a zero dimension or when `data` is not exactly
    /// `width * height * 3` bytes.
    pub fn from_raw_rgb(width: u32, height: u32, data: Vec<u8>) -> Result<Self, ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize { width, height });
        }
        let expected = u64::from(width) * u64::from(height) * 3;
        if data.len() as u64 != expected {
            return Err(ImageError::RawBufferSize {
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels (always > 0).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels (always > 0).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Interleaved RGB bytes, row-major.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Take the pixel buffer.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// Internal constructor for buffers whose size is known to be right.
    pub(crate) fn from_parts_unchecked(width: u32, height: u32, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), width as usize * height as usize * 3);
        Self {
            width,
            height,
            data,
        }
    }
}

/// What to do with transparency when flattening to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    /// Composite over opaque white exactly like Pillow's `alpha_composite`
    /// (the image processor's `convert_to_rgb` on a PIL image).
    #[default]
    CompositeOnWhite,
    /// Drop alpha and keep the stored colour (PIL `convert("RGB")`, i.e.
    /// transformers' `load_image`).
    Drop,
}

/// Decoder knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Images announcing more than this many pixels are rejected before
    /// allocation.
    pub max_pixels: u64,
    /// Apply the EXIF orientation tag (as `ImageOps.exif_transpose`).
    pub apply_exif_orientation: bool,
    /// Transparency handling.
    pub alpha: AlphaMode,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            apply_exif_orientation: true,
            alpha: AlphaMode::CompositeOnWhite,
        }
    }
}

/// Decode a JPEG, PNG or WebP file with [`DecodeOptions::default`].
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_image_with(bytes, &DecodeOptions::default())
}

/// Decode a JPEG, PNG or WebP file: sniff the format from the content, check
/// the announced size against `opts.max_pixels`, decode, apply the EXIF
/// orientation and flatten to RGB.
pub fn decode_image_with(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnsupportedFormat(None))?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
    ) {
        return Err(ImageError::UnsupportedFormat(Some(format!("{format:?}"))));
    }
    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        // Pillow refuses truncated JPEGs ("image file is truncated"); the
        // Rust decoder would pad them with grey instead.
        return Err(ImageError::Decode(truncated_error(format)));
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // Worst case decoded layout is 16-bit RGBA (8 bytes/px); leave headroom
    // for decoder scratch space. The explicit pixel check below is the real cap.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = match reader.into_decoder() {
        Ok(decoder) => decoder,
        // On 32-bit targets the PNG decoder refuses a huge image while sizing its buffers,
        // before we can ask it the dimensions: read them from the header to say why.
        Err(e @ image::ImageError::Limits(_)) => {
            return Err(match png_dimensions(bytes) {
                Some((width, height)) if u64::from(width) * u64::from(height) > opts.max_pixels => {
                    ImageError::TooLarge {
                        width,
                        height,
                        max_pixels: opts.max_pixels,
                    }
                }
                _ => map_decode_error(e),
            });
        }
        Err(e) => return Err(map_decode_error(e)),
    };

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { width, height });
    }
    if u64::from(width) * u64::from(height) > opts.max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_pixels: opts.max_pixels,
        });
    }
    // A malformed EXIF block must not make an otherwise fine image fail
    // (PIL's exif_transpose also just skips what it cannot read).
    let orientation = if opts.apply_exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };

    let mut img = DynamicImage::from_decoder(decoder).map_err(map_decode_error)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb(img, opts.alpha))
}

/// Whether a JPEG's marker structure reaches its EOI marker.
///
/// The Rust JPEG decoder pads a truncated file with grey instead of failing,
/// while Pillow raises "image file is truncated", so we walk the segments
/// ourselves: length-prefixed segments are skipped (so an EOI inside an
/// EXIF thumbnail does not count), entropy-coded data after each SOS is
/// scanned for the next real marker (`FF 00` stuffing and `RSTn` are part of
/// the data), and data after EOI (phone trailers, motion-photo videos) is
/// ignored. Only "ran out of bytes" is reported as truncation; structural
/// oddities are left for the decoder to judge.
fn jpeg_is_truncated(b: &[u8]) -> bool {
    let n = b.len();
    let mut i = 2; // after SOI
    loop {
        if i >= n {
            return true;
        }
        if b[i] != 0xFF {
            return false; // not a marker: let the decoder decide
        }
        while i < n && b[i] == 0xFF {
            i += 1; // fill bytes
        }
        if i >= n {
            return true;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return false,           // EOI
            0x01 | 0xD0..=0xD8 => continue, // TEM, RSTn, SOI: no payload
            _ => {}
        }
        if i + 2 > n {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
        if len < 2 {
            return false;
        }
        i += len;
        if i > n {
            return true;
        }
        if marker == 0xDA {
            // Entropy-coded segment: runs until a marker other than RSTn.
            loop {
                if i + 1 >= n {
                    return true;
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
        }
    }
}

fn truncated_error(format: ImageFormat) -> image::ImageError {
    image::ImageError::Decoding(image::error::DecodingError::new(
        format.into(),
        "image file is truncated (no end-of-image marker)",
    ))
}

/// A PNG's announced width and height: its first chunk is always IHDR, right after the
/// 8-byte signature and the chunk's length and type.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let header = bytes.get(8..24)?;
    if &header[4..8] != b"IHDR" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    Some((word(8), word(12)))
}

fn map_decode_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::UnsupportedFormat(Some(u.to_string())),
        other => ImageError::Decode(other),
    }
}

/// Flatten any decoded layout to 8-bit RGB the way Pillow would.
///
/// 16-bit samples keep their high byte: that is what Pillow's PNG unpackers
/// (`RGB;16B`, `RGBA;16B`, `LA;16B`) do. One deliberate divergence: Pillow
/// opens 16-bit greyscale as mode `I;16` and its `convert("RGB")` *clips*
/// every value above 255 to white, destroying the image; we keep the high
/// byte there too.
fn to_rgb(img: DynamicImage, alpha: AlphaMode) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let n = width as usize * height as usize;
    let mut out = Vec::with_capacity(n * 3);
    match img {
        DynamicImage::ImageRgb8(buf) => out = buf.into_raw(),
        DynamicImage::ImageLuma8(buf) => {
            for &l in buf.as_raw() {
                out.extend_from_slice(&[l, l, l]);
            }
        }
        DynamicImage::ImageLumaA8(buf) => {
            for px in buf.as_raw().chunks_exact(2) {
                let l = flatten(px[0], px[1], alpha);
                out.extend_from_slice(&[l, l, l]);
            }
        }
        DynamicImage::ImageRgba8(buf) => {
            for px in buf.as_raw().chunks_exact(4) {
                push_rgba(&mut out, [px[0], px[1], px[2], px[3]], alpha);
            }
        }
        DynamicImage::ImageLuma16(buf) => {
            for &l in buf.as_raw() {
                let l = hi(l);
                out.extend_from_slice(&[l, l, l]);
            }
        }
        DynamicImage::ImageLumaA16(buf) => {
            for px in buf.as_raw().chunks_exact(2) {
                let l = flatten(hi(px[0]), hi(px[1]), alpha);
                out.extend_from_slice(&[l, l, l]);
            }
        }
        DynamicImage::ImageRgb16(buf) => {
            out.extend(buf.as_raw().iter().map(|&v| hi(v)));
        }
        DynamicImage::ImageRgba16(buf) => {
            for px in buf.as_raw().chunks_exact(4) {
                push_rgba(
                    &mut out,
                    [hi(px[0]), hi(px[1]), hi(px[2]), hi(px[3])],
                    alpha,
                );
            }
        }
        other => {
            // Float layouts never come out of JPEG/PNG/WebP; convert generically.
            let rgba = other.to_rgba8();
            for px in rgba.as_raw().chunks_exact(4) {
                push_rgba(&mut out, [px[0], px[1], px[2], px[3]], alpha);
            }
        }
    }
    RgbImage::from_parts_unchecked(width, height, out)
}

fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

fn push_rgba(out: &mut Vec<u8>, [r, g, b, a]: [u8; 4], alpha: AlphaMode) {
    out.extend_from_slice(&[
        flatten(r, a, alpha),
        flatten(g, a, alpha),
        flatten(b, a, alpha),
    ]);
}

fn flatten(v: u8, a: u8, alpha: AlphaMode) -> u8 {
    match alpha {
        AlphaMode::Drop => v,
        AlphaMode::CompositeOnWhite => composite_on_white(v, a),
    }
}

/// Pillow's `ImagingAlphaComposite` (AlphaComposite.c, scalar path) for a
/// source pixel over an opaque white destination, bit for bit.
///
/// With `dst = (255, 255, 255, 255)` the general formula's `outa255` is
/// `255 * 255`, so `coef1 = a << 7` and `coef2 = (255 - a) << 7` exactly.
pub(crate) fn composite_on_white(v: u8, a: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    if a == 0 {
        return 255;
    }
    let (v, a) = (u32::from(v), u32::from(a));
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / (a * 255 + 255 * (255 - a));
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = v * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    // SHIFTFORDIV255(x) = ((x >> 8) + x) >> 8
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}
