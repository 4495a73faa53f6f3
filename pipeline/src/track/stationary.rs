//! Whether an object has stopped moving.
//!
//! A detector's box jitters by a few pixels even on a parked car, so "not
//! moving" means "its box keeps overlapping one reference box almost
//! entirely". Any larger movement starts a new reference, so an object must
//! hold still for the whole period again before it is stationary.

use super::geometry::{iou, rect};

/// The overlap with the reference box below which an object counts as
/// having moved. At 0.9, a 100-pixel-wide box may drift about 5 pixels.
pub(super) const STATIONARY_IOU: f64 = 0.9;

#[derive(Clone, Copy, Debug)]
pub(super) struct Stillness {
    reference: [f32; 4],
    /// When the object was first seen at `reference`.
    still_since: f64,
}

impl Stillness {
    pub(super) fn new(bbox: [f32; 4], time: f64) -> Self {
        Self {
            reference: bbox,
            still_since: time,
        }
    }

    /// Records the object's box at `time`; returns whether it is stationary,
    /// i.e. it has stayed at the reference for at least `stationary_after`
    /// seconds.
    pub(super) fn observe(&mut self, bbox: [f32; 4], time: f64, stationary_after: f64) -> bool {
        if iou(rect(bbox), rect(self.reference)) < STATIONARY_IOU {
            *self = Self::new(bbox, time);
        }
        time - self.still_since >= stationary_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn becomes_stationary_after_holding_still_and_resets_on_movement() {
        let parked = [100.0, 100.0, 200.0, 150.0];
        let jittered = [102.0, 101.0, 201.0, 151.0];
        let mut stillness = Stillness::new(parked, 0.0);
        assert!(!stillness.observe(parked, 0.0, 10.0));
        assert!(!stillness.observe(jittered, 9.9, 10.0));
        assert!(stillness.observe(jittered, 10.0, 10.0));
        let moved = [130.0, 100.0, 230.0, 150.0];
        assert!(!stillness.observe(moved, 11.0, 10.0));
        assert!(!stillness.observe(moved, 20.9, 10.0));
        assert!(stillness.observe(moved, 21.0, 10.0));
    }
}
