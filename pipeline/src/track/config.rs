//! What the tracker is told: which detections count, where the zones are,
//! and how long objects take to appear, settle and disappear.
//!
//! A plain struct with public fields and Frigate-like defaults, so the
//! daemon can fill it from its own configuration format. Out-of-range values
//! do not panic; each field says what they do.

use std::collections::BTreeMap;

use super::zones::Polygon;

/// Tracking settings for one camera.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Labels to track; detections with other labels are ignored. Empty
    /// tracks every label.
    pub labels: Vec<String>,
    /// The score a detection needs to start or confirm a track, unless
    /// [`min_scores`](Self::min_scores) names its label.
    pub min_score: f32,
    /// Per-label overrides of [`min_score`](Self::min_score).
    pub min_scores: BTreeMap<String, f32>,
    /// Detections scoring at least this but below their label's minimum may
    /// only continue an existing confirmed track (ByteTrack's second stage);
    /// weaker ones are ignored.
    pub low_score: f32,
    /// Smallest box to consider, as a fraction of the frame area (inclusive).
    pub min_area: f32,
    /// Largest box to consider, as a fraction of the frame area (inclusive).
    pub max_area: f32,
    /// A detection whose box's bottom centre lies in any of these is ignored.
    pub masks: Vec<Polygon>,
    pub zones: Vec<ZoneConfig>,
    /// Seconds an object's box must hold still before it is stationary.
    pub stationary_after: f64,
    /// Seconds an object may go unseen before it ends. NaN or negative ends
    /// an object on the first frame it is missed.
    pub max_lost: f64,
    /// Consecutive frames a new track must be matched before it is published
    /// as an object (0 behaves as 1).
    pub confirm_hits: u32,
    /// Minimum IoU between a track's predicted box and a detection for them
    /// to be associated. NaN matches nothing.
    pub match_iou: f32,
    /// How much an object's top score must rise over its last published
    /// value to be published again.
    pub top_score_step: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            labels: Vec::new(),
            min_score: 0.5,
            min_scores: BTreeMap::new(),
            low_score: 0.1,
            min_area: 0.0,
            max_area: 1.0,
            masks: Vec::new(),
            zones: Vec::new(),
            stationary_after: 10.0,
            max_lost: 2.0,
            confirm_hits: 2,
            match_iou: 0.2,
            top_score_step: 0.05,
        }
    }
}

impl TrackerConfig {
    /// The score a detection labelled `label` needs to start or confirm a track.
    pub fn min_score_for(&self, label: &str) -> f32 {
        self.min_scores
            .get(label)
            .copied()
            .unwrap_or(self.min_score)
    }
}

/// The default [`ZoneConfig::inertia`].
pub const DEFAULT_ZONE_INERTIA: u32 = 3;

/// A named region objects enter and leave.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneConfig {
    pub name: String,
    pub polygon: Polygon,
    /// Consecutive frames an object's bottom centre must be inside (or
    /// outside) before it enters (or leaves); 0 behaves as 1.
    pub inertia: u32,
    /// Labels that can be in this zone; empty admits every label.
    pub labels: Vec<String>,
}

impl ZoneConfig {
    /// A zone admitting every label, with the default inertia.
    pub fn new(name: impl Into<String>, polygon: Polygon) -> Self {
        Self {
            name: name.into(),
            polygon,
            inertia: DEFAULT_ZONE_INERTIA,
            labels: Vec::new(),
        }
    }

    pub fn admits(&self, label: &str) -> bool {
        self.labels.is_empty() || self.labels.iter().any(|l| l == label)
    }
}
