//! Object detection: ONNX detectors run with tract-onnx, from frame pixels to boxes in frame
//! pixels.
//!
//! A detector is recognised by its outputs ([`layout`]), one file per family ([`yolo`],
//! [`end_to_end`], [`detr`]), each preprocessed and post-processed the way its exporter's own
//! predictor does it ([`letterbox`], [`nms`]), so that a model gives the boxes here that it gives
//! in Python.

mod detector;
pub mod detr;
pub mod end_to_end;
mod error;
pub mod labels;
pub mod layout;
pub mod letterbox;
pub mod nms;
mod rewrite;
pub mod yolo;

pub use detector::{Detections, Detector, DetectorOptions, Preprocess, Timings};
pub use error::DetectorError;
pub use labels::LabelSource;
pub use layout::{Layout, LayoutKind};

use serde::Serialize;

/// One detected object, in the pixels of the frame it was found in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// Index into the detector's class list.
    pub class_id: usize,
    /// The class name (from the model's metadata, a labels file, or COCO).
    pub label: String,
    /// Confidence in [0, 1].
    pub score: f32,
    /// `[x1, y1, x2, y2]`: left, top, right, bottom, in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

impl Detection {
    pub fn width(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
}

/// Post-processing thresholds, Ultralytics' names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// `conf`: a box needs a score above this.
    pub min_score: f32,
    /// `iou`: a box overlapping a better one of its class by more than this is suppressed.
    pub iou: f32,
    /// `max_det`.
    pub max_detections: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_score: 0.25,
            iou: 0.45,
            max_detections: 300,
        }
    }
}
