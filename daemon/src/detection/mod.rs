//! Detection in the daemon: a detector thread per camera ([`worker`]) fed with the newest frame
//! ([`slot`]), the messages it publishes ([`payloads`]), and what has been published so far
//! ([`book`]).
//!
//! The detector thread runs the ONNX detector and the tracker at its own rate, apart from the
//! language model, so an alert never waits for a description; it hands the model first-sight
//! descriptions through the job queue like any other trigger.

pub mod book;
pub mod payloads;
pub mod slot;
pub mod worker;

use lookout_pipeline::track::TrackEvent;

use payloads::Detection2DArray;

/// What the detector thread tells the MQTT session.
#[derive(Debug)]
pub enum DetectionMsg {
    Frame(FrameReport),
    /// The detector's state, for `<camera>/detector` (retained).
    Status {
        camera: String,
        payload: String,
    },
}

/// The outcome of one processed frame.
#[derive(Debug)]
pub struct FrameReport {
    pub camera: String,
    pub frame_size: (u32, u32),
    pub events: Vec<TrackEvent>,
    /// Count topics (`<label>`, `<zone>/<label>`) whose value changed.
    pub counts: Vec<(String, usize)>,
    /// The tracked objects, when a `detections` message is due.
    pub detections: Option<Detection2DArray>,
    /// Snapshots to publish first (a new best view of an object).
    pub snapshots: Vec<Snapshot>,
}

impl FrameReport {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.counts.is_empty()
            && self.detections.is_none()
            && self.snapshots.is_empty()
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub object_id: String,
    pub label: String,
    pub jpeg: Vec<u8>,
}
