//! Anchor-based YOLO heads without NMS in the graph: Ultralytics YOLOv8 / YOLO11 / YOLOv9
//! (`[1, 4 + classes, anchors]`, class scores already through a sigmoid) and YOLOv5 / YOLOX
//! with objectness (`[1, anchors, 5 + classes]`). Boxes are `cx, cy, w, h` in input pixels.
//! Thresholds and candidate selection follow each project's `non_max_suppression`.

use super::Thresholds;
use super::nms::{Candidate, suppress, xywh_to_xyxy};

/// Ultralytics' `max_nms`: at most this many candidates enter suppression.
const MAX_NMS: usize = 30_000;

/// YOLOv8 layout: `output` is `[4 + classes, anchors]` (batch 1), channels first.
pub fn decode_v8(output: &[f32], classes: usize, t: &Thresholds) -> Vec<Candidate> {
    let anchors = output.len() / (4 + classes);
    let at = |row: usize, a: usize| output[row * anchors + a];
    let mut candidates = Vec::new();
    for a in 0..anchors {
        // The best class; `>` keeps the first of equal scores, like `max`.
        let (mut class_id, mut score) = (0, f32::NEG_INFINITY);
        for c in 0..classes {
            let s = at(4 + c, a);
            if s > score {
                (class_id, score) = (c, s);
            }
        }
        if score > t.min_score {
            let bbox = xywh_to_xyxy([at(0, a), at(1, a), at(2, a), at(3, a)]);
            candidates.push(Candidate {
                class_id,
                score,
                bbox,
            });
        }
    }
    select(candidates, t)
}

/// YOLOv5 layout: `output` is `[anchors, 5 + classes]` (batch 1): box, objectness, classes. An
/// anchor is a candidate when its objectness passes; its score is objectness × class score.
pub fn decode_v5(output: &[f32], classes: usize, t: &Thresholds) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for row in output.chunks_exact(5 + classes) {
        let objectness = row[4];
        if objectness.is_nan() || objectness <= t.min_score {
            continue;
        }
        let (mut class_id, mut score) = (0, f32::NEG_INFINITY);
        for (c, &s) in row[5..].iter().enumerate() {
            let s = s * objectness;
            if s > score {
                (class_id, score) = (c, s);
            }
        }
        if score > t.min_score {
            let bbox = xywh_to_xyxy([row[0], row[1], row[2], row[3]]);
            candidates.push(Candidate {
                class_id,
                score,
                bbox,
            });
        }
    }
    select(candidates, t)
}

fn select(mut candidates: Vec<Candidate>, t: &Thresholds) -> Vec<Candidate> {
    if candidates.len() > MAX_NMS {
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        candidates.truncate(MAX_NMS);
    }
    suppress(candidates, t.iou, t.max_detections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        min_score: 0.25,
        iou: 0.45,
        max_detections: 300,
    };

    #[test]
    fn v8_reads_channels_first() {
        // Two anchors, two classes: rows cx, cy, w, h, class 0, class 1.
        let out = [
            10.0, 50.0, //
            10.0, 50.0, //
            4.0, 8.0, //
            4.0, 8.0, //
            0.1, 0.9, //
            0.3, 0.2,
        ];
        let c = decode_v8(&out, 2, &T);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].class_id, c[0].score, c[0].bbox),
            (0, 0.9, [46.0, 46.0, 54.0, 54.0])
        );
        assert_eq!(
            (c[1].class_id, c[1].score, c[1].bbox),
            (1, 0.3, [8.0, 8.0, 12.0, 12.0])
        );
    }

    #[test]
    fn v5_needs_objectness() {
        let out = [
            10.0, 10.0, 4.0, 4.0, 0.2, 0.9, // objectness below the threshold
            50.0, 50.0, 8.0, 8.0, 0.8, 0.5, // 0.8 * 0.5 = 0.4
        ];
        let c = decode_v5(&out, 1, &T);
        assert_eq!(c.len(), 1);
        assert!((c[0].score - 0.4).abs() < 1e-6);
    }
}
