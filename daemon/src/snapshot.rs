//! JPEG snapshots of described frames, scaled down for MQTT and Home Assistant's image entity.

use anyhow::Context;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{FilterType, resize};

use crate::camera::Frame;

/// Encodes `frame`, scaled to `width` (0 keeps the size; never scaled up).
pub fn jpeg(frame: &Frame, width: u32, quality: u8) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.to_vec())
        .context("frame size does not match its data")?;
    let img = if width > 0 && width < frame.width {
        let height = ((frame.height as u64 * width as u64) / frame.width as u64).max(1) as u32;
        resize(&img, width, height, FilterType::Triangle)
    } else {
        img
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(&img)
        .context("encoding JPEG")?;
    Ok(out)
}
