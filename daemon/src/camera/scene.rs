//! A cheap scene-change score: a 32x24 grayscale thumbnail per sampled frame, compared by mean
//! absolute difference with the thumbnail of the last frame sent to the model. Sub-sampling keeps
//! this at a few thousand pixel reads per frame, so a static scene costs next to no CPU.

use super::Frame;

const W: usize = 32;
const H: usize = 24;
/// Pixels read per thumbnail cell along each axis.
const SAMPLES: usize = 4;

#[derive(Clone, Debug)]
pub struct Thumbnail(Vec<u8>);

impl Thumbnail {
    pub fn of(frame: &Frame) -> Thumbnail {
        Thumbnail::of_region(frame, (0, 0, frame.width, frame.height))
    }

    /// The thumbnail of the `(left, top, width, height)` rectangle of `frame`.
    pub fn of_region(frame: &Frame, (left, top, width, height): super::Rect) -> Thumbnail {
        let stride = frame.width as usize;
        let (left, top) = (left as usize, top as usize);
        let (fw, fh) = (width as usize, height as usize);
        let mut out = vec![0u8; W * H];
        if fw == 0 || fh == 0 || left + fw > stride || frame.rgb.len() < (top + fh) * stride * 3 {
            return Thumbnail(out);
        }
        for ty in 0..H {
            for tx in 0..W {
                let mut sum = 0u32;
                for sy in 0..SAMPLES {
                    for sx in 0..SAMPLES {
                        let x = left + ((tx * SAMPLES + sx) * fw / (W * SAMPLES)).min(fw - 1);
                        let y = top + ((ty * SAMPLES + sy) * fh / (H * SAMPLES)).min(fh - 1);
                        let i = (y * stride + x) * 3;
                        let p = &frame.rgb[i..i + 3];
                        // Integer luma (BT.601).
                        sum += (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8;
                    }
                }
                out[ty * W + tx] = (sum / (SAMPLES * SAMPLES) as u32) as u8;
            }
        }
        Thumbnail(out)
    }

    /// 0 for identical thumbnails, 1 for black against white.
    pub fn difference(&self, other: &Thumbnail) -> f64 {
        let total: u64 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.abs_diff(*b) as u64)
            .sum();
        total as f64 / (self.0.len() as f64 * 255.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn solid(v: u8) -> Frame {
        Frame {
            width: 64,
            height: 48,
            rgb: Arc::new(vec![v; 64 * 48 * 3]),
            captured: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn scores() {
        let black = Thumbnail::of(&solid(0));
        let white = Thumbnail::of(&solid(255));
        assert_eq!(black.difference(&black), 0.0);
        assert!(black.difference(&white) > 0.99);
    }
}
