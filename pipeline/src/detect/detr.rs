//! DETR-family exports (RF-DETR, D-FINE, RT-DETR): a fixed set of queries, each with a box
//! (`[1, Q, 4]`, normalised `cx, cy, w, h`) and class logits (`[1, Q, classes]`). Scores are the
//! sigmoid of the logits (these models are trained with a sigmoid focal loss); each query keeps
//! its best class. Queries do not overlap by construction, so there is no NMS.

use super::Thresholds;
use super::nms::{Candidate, xywh_to_xyxy};

/// Candidates with boxes in *source* pixels (`width` x `height`): the input was a plain resize,
/// so normalised coordinates map straight onto the frame.
pub fn decode(
    boxes: &[f32],
    logits: &[f32],
    classes: usize,
    width: u32,
    height: u32,
    t: &Thresholds,
) -> Vec<Candidate> {
    let (w, h) = (width as f32, height as f32);
    let mut candidates: Vec<Candidate> = boxes
        .chunks_exact(4)
        .zip(logits.chunks_exact(classes))
        .filter_map(|(b, l)| {
            let (class_id, logit) =
                l.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (c, &v)| {
                        if v > best.1 { (c, v) } else { best }
                    });
            let score = 1.0 / (1.0 + (-logit).exp());
            if score.is_nan() || score <= t.min_score {
                return None;
            }
            let [x1, y1, x2, y2] = xywh_to_xyxy([b[0], b[1], b[2], b[3]]);
            let bbox = [
                (x1 * w).clamp(0.0, w),
                (y1 * h).clamp(0.0, h),
                (x2 * w).clamp(0.0, w),
                (y2 * h).clamp(0.0, h),
            ];
            Some(Candidate {
                class_id,
                score,
                bbox,
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(t.max_detections);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_best_class_and_frame_pixels() {
        let t = Thresholds {
            min_score: 0.5,
            iou: 0.45,
            max_detections: 300,
        };
        let boxes = [0.5, 0.5, 0.2, 0.4, 0.9, 0.9, 0.4, 0.4];
        let logits = [-3.0, 2.0, 5.0, -5.0];
        let c = decode(&boxes, &logits, 2, 200, 100, &t);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].class_id, 0);
        assert_eq!(c[0].bbox, [140.0, 70.0, 200.0, 100.0]);
        assert_eq!(c[1].class_id, 1);
        let expected = [80.0, 30.0, 120.0, 70.0];
        assert!(
            c[1].bbox
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-3),
            "{:?}",
            c[1].bbox
        );
    }
}
