//! End-to-end exports that do their own selection in the graph (YOLOv10, Ultralytics
//! `nms=True`): `[1, N, 6]` rows of `x1, y1, x2, y2, score, class` in input pixels, best first.
//! Only the score threshold and the cap are left to do, as in Ultralytics' end-to-end branch.

use super::nms::Candidate;
use super::{DetectorError, Thresholds};

pub fn decode(
    output: &[f32],
    classes: usize,
    t: &Thresholds,
) -> Result<Vec<Candidate>, DetectorError> {
    let mut candidates = Vec::new();
    for row in output.chunks_exact(6) {
        let score = row[4];
        if score.is_nan() || score <= t.min_score {
            continue;
        }
        let class = row[5];
        if !(class >= 0.0 && (class as usize) < classes && class.fract() == 0.0) {
            return Err(DetectorError::Output(format!(
                "class id {class} in an end-to-end row, but the model has {classes} class names"
            )));
        }
        candidates.push(Candidate {
            class_id: class as usize,
            score,
            bbox: [row[0], row[1], row[2], row[3]],
        });
        if candidates.len() == t.max_detections {
            break;
        }
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        min_score: 0.25,
        iou: 0.45,
        max_detections: 2,
    };

    #[test]
    fn threshold_cap_and_bad_classes() {
        let rows = [
            0.0, 0.0, 5.0, 5.0, 0.5, 1.0, //
            1.0, 1.0, 6.0, 6.0, 0.1, 0.0, //
            2.0, 2.0, 7.0, 7.0, 0.9, 0.0, //
            3.0, 3.0, 8.0, 8.0, 0.8, 0.0,
        ];
        let c = decode(&rows, 2, &T).unwrap();
        assert_eq!(c.iter().map(|c| c.score).collect::<Vec<_>>(), [0.9, 0.5]);
        let err = decode(&[0.0, 0.0, 1.0, 1.0, 0.9, 7.0], 2, &T).unwrap_err();
        assert!(err.to_string().contains("class id 7"), "{err}");
    }
}
