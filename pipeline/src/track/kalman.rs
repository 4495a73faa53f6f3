//! Constant-velocity Kalman filter on a box's centre and size: where a track
//! should be in the next frame, so that association compares a detection
//! with where the object has moved to rather than where it was.
//!
//! The model is SORT's and ByteTrack's (Bewley et al. 2016; Zhang et al.
//! 2022), with time in seconds instead of frames, because an embedded camera
//! pipeline drops and delays frames: the state is the centre `(cx, cy)` and
//! size `(w, h)` in pixels plus their velocities in pixels per second, and
//! process noise is the continuous white-noise-acceleration model integrated
//! over the actual interval `dt` (Bar-Shalom, Li & Kirubarajan, *Estimation
//! with Applications to Tracking and Navigation*, 2001, §6.2), so uncertainty
//! grows as `dt³` for position and `dt` for velocity whatever the frame rate.
//!
//! The transition, observation and both noise matrices are block-diagonal
//! per coordinate, so the 8-state filter separates exactly into four
//! independent 2-state filters ([`Axis`]); that is what is implemented, with
//! no matrix library and no 8×8 inversion.
//!
//! As in DeepSORT and ByteTrack, noise scales with the box (a detector's
//! error is a fraction of the box it draws); here each coordinate scales with
//! its own side: `cx` and `w` with the width, `cy` and `h` with the height.

use super::geometry::Rect;

/// Standard deviation of a detector's box coordinates, as a fraction of the
/// box side (DeepSORT's 1/20).
const MEASUREMENT_STD: f64 = 0.05;

/// Standard deviation of a new track's unknown velocity, in box sides per
/// second: a walking person covers two to four of their own widths a second.
const INITIAL_VELOCITY_STD: f64 = 2.0;

/// Strength of the white-noise acceleration, in box sides per second² per
/// √second: how fast velocity may drift from constant. Close to what
/// DeepSORT's per-frame velocity noise amounts to at 30 fps.
const ACCELERATION_STD: f64 = 1.0;

/// Smallest box side, in pixels, used to scale noise, so a box predicted to
/// shrink to nothing still has a positive, finite variance.
const MIN_SIDE: f64 = 1.0;

/// One coordinate and its velocity, with their covariance.
#[derive(Clone, Copy, Debug)]
struct Axis {
    value: f64,
    velocity: f64,
    value_variance: f64,
    covariance: f64,
    velocity_variance: f64,
}

impl Axis {
    fn new(value: f64, side: f64) -> Self {
        Self {
            value,
            velocity: 0.0,
            value_variance: (MEASUREMENT_STD * side).powi(2),
            covariance: 0.0,
            velocity_variance: (INITIAL_VELOCITY_STD * side).powi(2),
        }
    }

    /// `x ← F x`, `P ← F P Fᵀ + Q(dt)` with `F = [[1, dt], [0, 1]]` and
    /// `Q = q [[dt³/3, dt²/2], [dt²/2, dt]]`.
    fn predict(&mut self, dt: f64, side: f64) {
        let q = (ACCELERATION_STD * side).powi(2);
        self.value += self.velocity * dt;
        self.value_variance +=
            dt * (2.0 * self.covariance + dt * self.velocity_variance) + q * dt.powi(3) / 3.0;
        self.covariance += dt * self.velocity_variance + q * dt.powi(2) / 2.0;
        self.velocity_variance += q * dt;
    }

    /// Standard update with a direct measurement of the value (`H = [1, 0]`).
    fn correct(&mut self, measured: f64, side: f64) {
        let innovation_variance = self.value_variance + (MEASUREMENT_STD * side).powi(2);
        let value_gain = self.value_variance / innovation_variance;
        let velocity_gain = self.covariance / innovation_variance;
        let innovation = measured - self.value;
        self.value += value_gain * innovation;
        self.velocity += velocity_gain * innovation;
        self.velocity_variance -= velocity_gain * self.covariance;
        self.covariance *= 1.0 - value_gain;
        self.value_variance *= 1.0 - value_gain;
    }
}

/// The motion model of one track.
#[derive(Clone, Debug)]
pub(super) struct BoxFilter {
    centre_x: Axis,
    centre_y: Axis,
    width: Axis,
    height: Axis,
}

impl BoxFilter {
    /// A filter at `bbox`, at rest but with a wide velocity uncertainty.
    /// The box must have positive, finite sides (the detection filter
    /// guarantees it).
    pub(super) fn new(bbox: Rect) -> Self {
        let [cx, cy, w, h] = centre_size(bbox);
        Self {
            centre_x: Axis::new(cx, w),
            centre_y: Axis::new(cy, h),
            width: Axis::new(w, w),
            height: Axis::new(h, h),
        }
    }

    /// Moves the state `dt` seconds forward. `dt = 0` changes nothing.
    pub(super) fn predict(&mut self, dt: f64) {
        let width = self.width.value.max(MIN_SIDE);
        let height = self.height.value.max(MIN_SIDE);
        self.centre_x.predict(dt, width);
        self.centre_y.predict(dt, height);
        self.width.predict(dt, width);
        self.height.predict(dt, height);
    }

    /// Folds in a detected box.
    pub(super) fn correct(&mut self, bbox: Rect) {
        let [cx, cy, w, h] = centre_size(bbox);
        let width = w.max(MIN_SIDE);
        let height = h.max(MIN_SIDE);
        self.centre_x.correct(cx, width);
        self.centre_y.correct(cy, height);
        self.width.correct(w, width);
        self.height.correct(h, height);
    }

    /// Stops the size from changing while the object is unseen: an occluded
    /// object's box rarely keeps growing or shrinking at the rate it had, and
    /// extrapolating size over seconds collapses or balloons it (ByteTrack
    /// zeroes the height velocity of lost tracks for the same reason).
    pub(super) fn hold_size(&mut self) {
        self.width.velocity = 0.0;
        self.height.velocity = 0.0;
    }

    /// The box the state describes; sides below zero are clamped to zero.
    pub(super) fn predicted_box(&self) -> Rect {
        let half_width = self.width.value.max(0.0) / 2.0;
        let half_height = self.height.value.max(0.0) / 2.0;
        let (cx, cy) = (self.centre_x.value, self.centre_y.value);
        [
            cx - half_width,
            cy - half_height,
            cx + half_width,
            cy + half_height,
        ]
    }
}

fn centre_size([x1, y1, x2, y2]: Rect) -> [f64; 4] {
    [x1.midpoint(x2), y1.midpoint(y2), x2 - x1, y2 - y1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shifted(bbox: Rect, dx: f64) -> Rect {
        [bbox[0] + dx, bbox[1], bbox[2] + dx, bbox[3]]
    }

    fn assert_close(a: Rect, b: Rect, tolerance: f64) {
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst <= tolerance, "{a:?} vs {b:?}");
    }

    #[test]
    fn learns_a_constant_velocity_and_predicts_ahead() {
        let start = [100.0, 100.0, 140.0, 180.0];
        let mut filter = BoxFilter::new(start);
        // 150 px/s to the right, frames every 0.1 s.
        for frame in 1..=10 {
            filter.predict(0.1);
            filter.correct(shifted(start, 15.0 * f64::from(frame)));
        }
        filter.predict(0.1);
        assert_close(filter.predicted_box(), shifted(start, 165.0), 1.0);
    }

    #[test]
    fn prediction_scales_with_the_time_step() {
        let start = [100.0, 100.0, 140.0, 180.0];
        let mut filter = BoxFilter::new(start);
        for frame in 1..=10 {
            filter.predict(0.1);
            filter.correct(shifted(start, 15.0 * f64::from(frame)));
        }
        // Half a second without a frame: 75 px further.
        filter.predict(0.5);
        assert_close(filter.predicted_box(), shifted(start, 225.0), 3.0);
    }

    #[test]
    fn zero_time_step_changes_nothing() {
        let mut filter = BoxFilter::new([0.0, 0.0, 10.0, 10.0]);
        filter.predict(0.1);
        filter.correct([5.0, 0.0, 15.0, 10.0]);
        let before = filter.predicted_box();
        filter.predict(0.0);
        assert_eq!(filter.predicted_box(), before);
    }

    #[test]
    fn held_size_stays_put_while_the_centre_moves_on() {
        let start = [100.0, 100.0, 140.0, 180.0];
        let mut filter = BoxFilter::new(start);
        for frame in 1..=10 {
            let growth = 2.0 * f64::from(frame);
            let moved = shifted(start, 10.0 * f64::from(frame));
            filter.predict(0.1);
            filter.correct([moved[0], moved[1], moved[2] + growth, moved[3] + growth]);
        }
        let [x1, y1, x2, y2] = filter.predicted_box();
        filter.hold_size();
        filter.predict(1.0);
        let [a1, b1, a2, b2] = filter.predicted_box();
        assert!(((a2 - a1) - (x2 - x1)).abs() < 1e-9 && ((b2 - b1) - (y2 - y1)).abs() < 1e-9);
        assert!(a1 > x1 + 50.0, "centre kept moving: {x1} -> {a1}");
    }
}
