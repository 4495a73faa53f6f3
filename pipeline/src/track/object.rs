//! What the tracker publishes about each object.

use serde::Serialize;

/// One tracked object, shaped like a Frigate event's `before`/`after`.
///
/// Times are unix seconds on the tracker's clock, which never runs backwards
/// (see [`Tracker::update`](super::Tracker::update)).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackedObject {
    /// `"{start_time:.6}-{suffix}"`, the suffix six lowercase letters and
    /// digits, as Frigate forms its event ids.
    pub id: String,
    /// 1, 2, 3… in the order objects were confirmed by this tracker.
    pub track_id: u64,
    /// The label with the highest summed score over all matched detections.
    pub label: String,
    /// The detector's class id for [`label`](Self::label).
    pub class_id: usize,
    /// Score of the latest matched detection.
    pub score: f32,
    /// Highest score of any matched detection.
    pub top_score: f32,
    /// The latest matched detection's box in frame pixels (while lost, the
    /// last one seen).
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Area of [`bbox`](Self::bbox) in pixels.
    pub area: f32,
    /// Zones the object is in now, in configuration order.
    pub current_zones: Vec<String>,
    /// Every zone the object has been in, in order of first entry.
    pub entered_zones: Vec<String>,
    pub stationary: bool,
    /// When the object was first detected.
    pub start_time: f64,
    /// Set when the object ends: the last time it was seen.
    pub end_time: Option<f64>,
    /// The last time the object was seen.
    pub frame_time: f64,
    /// Whether the object was missed in the latest frame.
    pub lost: bool,
    /// How many detections were matched to it.
    pub hits: u32,
}
