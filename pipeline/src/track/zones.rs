//! Regions of the frame: polygons for masks and zones, and zone membership
//! with inertia.
//!
//! Polygons are drawn in normalised coordinates (`0..1` across and down the
//! frame), so one configuration fits every resolution the camera streams at.
//! A box's bottom centre flickers across a zone's edge as the detector's box
//! jitters; [`ZonePresence`] turns that flicker into clean enter/leave
//! transitions by requiring several consecutive frames on the new side.

use thiserror::Error;

/// How far from an edge a point still counts as on it, in normalised units.
/// A millionth of the frame is far below a pixel at any real resolution, yet
/// absorbs the rounding of points computed on slanted edges.
const EDGE_TOLERANCE: f64 = 1e-6;

/// A closed polygon in normalised frame coordinates.
///
/// [`contains`](Self::contains) uses the even-odd rule, so a self-crossing
/// outline alternates between inside and outside; points on the outline
/// itself are inside (a box touching the bottom of the frame stands at
/// `y = 1.0` and must be inside a zone that covers the whole frame).
#[derive(Clone, Debug, PartialEq)]
pub struct Polygon {
    points: Vec<[f64; 2]>,
}

/// Why a list of points is not a usable [`Polygon`].
#[derive(Clone, Debug, PartialEq, Error)]
pub enum PolygonError {
    #[error("a polygon needs at least 3 points, got {count}")]
    TooFewPoints { count: usize },

    /// `index` counts from 0.
    #[error("point {index} ({x}, {y}) is not a finite number")]
    NotFinite { index: usize, x: f64, y: f64 },

    /// `index` counts from 0.
    #[error("point {index} ({x}, {y}) is outside [0, 1]: coordinates are fractions of the frame")]
    OutsideFrame { index: usize, x: f64, y: f64 },
}

impl Polygon {
    /// A polygon through `points` (`[x, y]`, each in `[0, 1]`), closed from
    /// the last point back to the first.
    pub fn new(points: Vec<[f64; 2]>) -> Result<Self, PolygonError> {
        if points.len() < 3 {
            return Err(PolygonError::TooFewPoints {
                count: points.len(),
            });
        }
        for (index, &[x, y]) in points.iter().enumerate() {
            if !(x.is_finite() && y.is_finite()) {
                return Err(PolygonError::NotFinite { index, x, y });
            }
            if !((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)) {
                return Err(PolygonError::OutsideFrame { index, x, y });
            }
        }
        Ok(Self { points })
    }

    pub fn points(&self) -> &[[f64; 2]] {
        &self.points
    }

    /// Whether the normalised point `(x, y)` is inside or on the outline.
    /// Non-finite points are outside.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        if !(x.is_finite() && y.is_finite()) {
            return false;
        }
        let mut inside = false;
        for (a, b) in self.edges() {
            if distance_to_segment([x, y], a, b) <= EDGE_TOLERANCE {
                return true;
            }
            // Even-odd rule: count crossings of a ray going right from the
            // point. The half-open test on y counts a vertex on the ray once.
            if (a[1] > y) != (b[1] > y) {
                let crossing_x = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if x < crossing_x {
                    inside = !inside;
                }
            }
        }
        inside
    }

    fn edges(&self) -> impl Iterator<Item = ([f64; 2], [f64; 2])> + '_ {
        let next = self.points.iter().cycle().skip(1);
        self.points.iter().copied().zip(next.copied())
    }
}

fn distance_to_segment(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let along = [b[0] - a[0], b[1] - a[1]];
    let to_p = [p[0] - a[0], p[1] - a[1]];
    let length_squared = along[0] * along[0] + along[1] * along[1];
    let t = if length_squared > 0.0 {
        ((to_p[0] * along[0] + to_p[1] * along[1]) / length_squared).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (to_p[0] - t * along[0]).hypot(to_p[1] - t * along[1])
}

/// Whether one object is in one zone, debounced: the answer flips only after
/// `inertia` consecutive observations on the other side.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ZonePresence {
    inside: bool,
    /// Consecutive observations that disagree with `inside`.
    disagreeing: u32,
}

impl ZonePresence {
    pub(super) fn is_inside(self) -> bool {
        self.inside
    }

    /// Records one observation; returns whether the presence flipped.
    /// An inertia of 0 behaves as 1: the first disagreeing frame flips it.
    pub(super) fn observe(&mut self, inside_now: bool, inertia: u32) -> bool {
        if inside_now == self.inside {
            self.disagreeing = 0;
            return false;
        }
        self.disagreeing += 1;
        if self.disagreeing < inertia.max(1) {
            return false;
        }
        self.inside = inside_now;
        self.disagreeing = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(lo: f64, hi: f64) -> Polygon {
        Polygon::new(vec![[lo, lo], [hi, lo], [hi, hi], [lo, hi]]).unwrap()
    }

    #[test]
    fn rejects_bad_polygons_naming_the_point() {
        assert_eq!(
            Polygon::new(vec![[0.0, 0.0], [1.0, 1.0]]),
            Err(PolygonError::TooFewPoints { count: 2 })
        );
        let err = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [f64::NAN, 1.0]]).unwrap_err();
        assert!(matches!(err, PolygonError::NotFinite { index: 2, .. }));
        let err = Polygon::new(vec![[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]]).unwrap_err();
        assert_eq!(
            err,
            PolygonError::OutsideFrame {
                index: 1,
                x: 1.5,
                y: 0.0
            }
        );
        assert!(err.to_string().contains("point 1 (1.5, 0)"), "{err}");
    }

    #[test]
    fn contains_inside_points_and_not_outside_ones() {
        let zone = square(0.25, 0.75);
        assert!(zone.contains(0.5, 0.5));
        assert!(!zone.contains(0.1, 0.5));
        assert!(!zone.contains(0.5, 0.9));
        assert!(!zone.contains(f64::NAN, 0.5));
    }

    #[test]
    fn points_on_the_outline_are_inside() {
        let frame = square(0.0, 1.0);
        assert!(frame.contains(0.5, 1.0), "bottom edge");
        assert!(frame.contains(1.0, 0.3), "right edge");
        assert!(frame.contains(1.0, 1.0), "corner");
        let triangle = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).unwrap();
        assert!(triangle.contains(0.3, 0.7), "slanted edge");
        assert!(!triangle.contains(0.3, 0.71));
    }

    #[test]
    fn self_crossing_outline_follows_even_odd() {
        // A bow tie: two triangles meeting at the centre.
        let bow_tie = Polygon::new(vec![[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]).unwrap();
        assert!(bow_tie.contains(0.1, 0.5));
        assert!(bow_tie.contains(0.9, 0.5));
        assert!(!bow_tie.contains(0.5, 0.1));
    }

    #[test]
    fn presence_flips_after_inertia_consecutive_frames() {
        let mut presence = ZonePresence::default();
        assert!(!presence.observe(true, 3));
        assert!(!presence.observe(true, 3));
        assert!(
            !presence.observe(false, 3),
            "a frame outside resets the count"
        );
        assert!(!presence.observe(true, 3));
        assert!(!presence.observe(true, 3));
        assert!(presence.observe(true, 3));
        assert!(presence.is_inside());
        assert!(!presence.observe(true, 3));
    }

    #[test]
    fn zero_inertia_flips_at_once() {
        let mut presence = ZonePresence::default();
        assert!(presence.observe(true, 0));
        assert!(presence.observe(false, 0));
    }
}
