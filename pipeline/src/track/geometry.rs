//! Box and frame arithmetic shared by the tracker's stages.
//!
//! Boxes are `[x1, y1, x2, y2]`. The tracker computes with them in `f64`: a
//! box predicted seconds ahead, or a huge but finite detector output, then
//! cannot overflow, and every function here returns a finite number for any
//! input.

/// A box in frame pixels, `[x1, y1, x2, y2]`, in `f64`.
pub(super) type Rect = [f64; 4];

/// A detector box, widened to `f64`.
pub(super) fn rect(bbox: [f32; 4]) -> Rect {
    bbox.map(f64::from)
}

/// Area of a box; zero for an inverted or degenerate one.
fn area(r: Rect) -> f64 {
    (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0)
}

/// Intersection over union, in `[0, 1]`.
///
/// Zero whenever the ratio is undefined (boxes without area, non-finite
/// coordinates), so a degenerate box never matches anything.
pub(super) fn iou(a: Rect, b: Rect) -> f64 {
    let overlap = [
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ];
    let intersection = area(overlap);
    let ratio = intersection / (area(a) + area(b) - intersection);
    if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The size of the frame the detections came from; converts pixels to the
/// normalised `0..1` coordinates that masks and zones are drawn in.
#[derive(Clone, Copy, Debug)]
pub(super) struct FrameSize {
    width: f64,
    height: f64,
}

impl FrameSize {
    pub(super) fn new(width: u32, height: u32) -> Self {
        Self {
            width: f64::from(width),
            height: f64::from(height),
        }
    }

    pub(super) fn area(self) -> f64 {
        self.width * self.height
    }

    /// A frame without pixels: no detection can be placed in it.
    pub(super) fn is_empty(self) -> bool {
        self.area() == 0.0
    }

    /// Where an object stands: the bottom centre of its box, normalised.
    /// Frigate uses the same point, so zones drawn for Frigate mean the same
    /// here. Only meaningful for a frame that is not [empty](Self::is_empty).
    pub(super) fn anchor(self, bbox: [f32; 4]) -> [f64; 2] {
        let [x1, _, x2, y2] = rect(bbox);
        [x1.midpoint(x2) / self.width, y2 / self.height]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(a, a), 1.0);
        assert_eq!(iou(a, [20.0, 0.0, 30.0, 10.0]), 0.0);
        // Overlap 5x10 = 50, union 150.
        assert!((iou(a, [5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn iou_is_zero_for_degenerate_and_non_finite_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou([5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]), 0.0);
        assert_eq!(iou(a, [10.0, 10.0, 0.0, 0.0]), 0.0);
        assert_eq!(iou(a, [f64::NAN, 0.0, 10.0, 10.0]), 0.0);
        assert_eq!(iou(a, [f64::NEG_INFINITY, 0.0, f64::INFINITY, 10.0]), 0.0);
    }

    #[test]
    fn anchor_is_the_normalised_bottom_centre() {
        let frame = FrameSize::new(200, 100);
        assert_eq!(frame.anchor([20.0, 10.0, 60.0, 50.0]), [0.2, 0.5]);
        assert!(FrameSize::new(0, 100).is_empty());
        assert!(!frame.is_empty());
    }
}
