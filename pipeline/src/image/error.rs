//! The one error type of the image module.

use thiserror::Error;

/// Everything that can go wrong between encoded bytes and vision-tower input.
///
/// Each variant names the problem precisely enough for a daemon to answer a
/// client ("image too large", "not an image") without leaking internals.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The input buffer is empty.
    #[error("image data is empty")]
    Empty,

    /// The bytes are not a JPEG, PNG or WebP file (or any image at all).
    #[error("unsupported or unrecognised image format{}", .0.as_deref().map(|f| format!(" ({f})")).unwrap_or_default())]
    UnsupportedFormat(Option<String>),

    /// The file was recognised but could not be decoded: corrupt, truncated,
    /// or using a codec feature the decoder does not support.
    #[error("cannot decode image: {0}")]
    Decode(#[source] image::ImageError),

    /// Width or height is zero.
    #[error("image has zero size ({width}x{height})")]
    ZeroSize { width: u32, height: u32 },

    /// The image announces more pixels than the configured cap allows; it is
    /// rejected before any pixel buffer is allocated.
    #[error("image is too large: {width}x{height} exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },

    /// A raw pixel buffer does not match the dimensions it was given.
    #[error("raw RGB buffer has {actual} bytes, expected {expected} for {width}x{height}x3")]
    RawBufferSize {
        width: u32,
        height: u32,
        expected: u64,
        actual: usize,
    },

    /// A requested resize / slice geometry is degenerate or absurdly large.
    #[error("invalid target size {width}x{height}: {reason}")]
    InvalidSize {
        width: u64,
        height: u64,
        reason: &'static str,
    },

    /// The preprocessor configuration is invalid or asks for something this
    /// implementation does not do.
    #[error("invalid image processor config: {0}")]
    Config(String),

    /// The number of image placeholders in a prompt does not match the
    /// number of images supplied.
    #[error("prompt has {placeholders} image placeholder(s) but {images} image(s) were given")]
    PlaceholderMismatch { placeholders: usize, images: usize },
}
