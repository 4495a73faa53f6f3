//! The messages detection publishes, one type each, shaped like what their consumers already
//! read: Frigate's `events` and `tracked_object_update` (so a Frigate blueprint reads them
//! unchanged), and ROS 2 `vision_msgs/Detection2DArray` in JSON (so a ROS–MQTT bridge in JSON
//! mode turns them into real messages).

use std::time::{SystemTime, UNIX_EPOCH};

use lookout_pipeline::track::{EventKind, TrackedObject};
use serde::Serialize;

/// `<prefix>/events`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub before: EventObject,
    pub after: EventObject,
}

impl Event {
    pub fn kind_name(kind: EventKind) -> &'static str {
        match kind {
            EventKind::New => "new",
            EventKind::Update => "update",
            EventKind::End => "end",
        }
    }
}

/// One tracked object as Frigate describes it, plus lookout's `description`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventObject {
    pub id: String,
    pub camera: String,
    pub label: String,
    pub sub_label: Option<String>,
    pub score: f32,
    pub top_score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels, rounded to whole pixels as Frigate's are.
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    pub area: i64,
    /// Width over height.
    pub ratio: f32,
    /// The region the detector looked at: the whole frame.
    pub region: [i64; 4],
    pub current_zones: Vec<String>,
    pub entered_zones: Vec<String>,
    pub stationary: bool,
    pub active: bool,
    pub false_positive: bool,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub frame_time: f64,
    pub has_snapshot: bool,
    pub has_clip: bool,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub description: Option<String>,
}

impl EventObject {
    pub fn new(
        camera: &str,
        object: &TrackedObject,
        frame: (u32, u32),
        has_snapshot: bool,
        description: Option<String>,
    ) -> EventObject {
        let [x1, y1, x2, y2] = object.bbox.map(|v| v.round() as i64);
        let (w, h) = (
            object.bbox[2] - object.bbox[0],
            object.bbox[3] - object.bbox[1],
        );
        EventObject {
            id: object.id.clone(),
            camera: camera.to_string(),
            label: object.label.clone(),
            sub_label: None,
            score: object.score,
            top_score: object.top_score,
            bbox: [x1, y1, x2, y2],
            area: object.area.round() as i64,
            ratio: if h > 0.0 { w / h } else { 0.0 },
            region: [0, 0, i64::from(frame.0), i64::from(frame.1)],
            current_zones: object.current_zones.clone(),
            entered_zones: object.entered_zones.clone(),
            stationary: object.stationary,
            active: !object.stationary,
            false_positive: false,
            start_time: object.start_time,
            end_time: object.end_time,
            frame_time: object.frame_time,
            has_snapshot,
            has_clip: false,
            attributes: serde_json::Map::new(),
            description,
        }
    }
}

/// `<prefix>/tracked_object_update`: Frigate's GenAI description message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackedObjectUpdate {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub camera: String,
    pub description: String,
}

impl TrackedObjectUpdate {
    pub fn description(id: &str, camera: &str, description: &str) -> TrackedObjectUpdate {
        TrackedObjectUpdate {
            kind: "description",
            id: id.to_string(),
            camera: camera.to_string(),
            description: description.to_string(),
        }
    }
}

/// `<prefix>/<camera>/detections`: `vision_msgs/msg/Detection2DArray`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection2DArray {
    pub header: Header,
    pub detections: Vec<Detection2D>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Header {
    pub stamp: Time,
    /// The camera's name: the frame the pixel coordinates are in.
    pub frame_id: String,
}

/// `builtin_interfaces/Time`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    pub fn of(t: SystemTime) -> Time {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Time {
            sec: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
            nanosec: d.subsec_nanos(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection2D {
    pub header: Header,
    pub results: Vec<ObjectHypothesisWithPose>,
    pub bbox: BoundingBox2D,
    /// The tracked object's id (the same as in `events`).
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectHypothesisWithPose {
    pub hypothesis: ObjectHypothesis,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectHypothesis {
    pub class_id: String,
    pub score: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BoundingBox2D {
    pub center: Pose2D,
    pub size_x: f64,
    pub size_y: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Pose2D {
    pub position: Point2D,
    pub theta: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point2D {
    pub x: f64,
    pub y: f64,
}

impl Detection2DArray {
    /// The objects tracked in a frame: centre and size in pixels, the label as `class_id`.
    pub fn of<'a>(
        camera: &str,
        captured: SystemTime,
        objects: impl IntoIterator<Item = &'a TrackedObject>,
    ) -> Detection2DArray {
        let header = Header {
            stamp: Time::of(captured),
            frame_id: camera.to_string(),
        };
        let detections = objects
            .into_iter()
            .map(|o| {
                let [x1, y1, x2, y2] = o.bbox.map(f64::from);
                Detection2D {
                    header: header.clone(),
                    results: vec![ObjectHypothesisWithPose {
                        hypothesis: ObjectHypothesis {
                            class_id: o.label.clone(),
                            score: f64::from(o.score),
                        },
                    }],
                    bbox: BoundingBox2D {
                        center: Pose2D {
                            position: Point2D {
                                x: (x1 + x2) / 2.0,
                                y: (y1 + y2) / 2.0,
                            },
                            theta: 0.0,
                        },
                        size_x: x2 - x1,
                        size_y: y2 - y1,
                    },
                    id: o.id.clone(),
                }
            })
            .collect();
        Detection2DArray { header, detections }
    }
}
