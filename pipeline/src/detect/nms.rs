//! Non-maximum suppression the way Ultralytics and YOLOv5 call it: boxes of each class are moved
//! apart by `class * MAX_WH` and then suppressed together with torchvision's greedy `nms`, so
//! boxes of different classes never suppress each other. The offsets are applied in f32 exactly
//! as the reference does, so the IoU of two boxes near the threshold rounds the same way.

/// Ultralytics' and YOLOv5's class offset (`max_wh`): larger than any input image side.
const MAX_WH: f32 = 7680.0;

/// A box that survived the score threshold, before suppression. Coordinates are
/// `[x1, y1, x2, y2]` in model-input pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub class_id: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Keeps the best-scoring box of every cluster of same-class boxes whose IoU exceeds `iou`, at
/// most `max_detections` of them, best first. Candidates with equal scores keep their order.
pub fn suppress(mut candidates: Vec<Candidate>, iou: f32, max_detections: usize) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let shifted: Vec<[f32; 4]> = candidates
        .iter()
        .map(|c| {
            let offset = c.class_id as f32 * MAX_WH;
            c.bbox.map(|v| v + offset)
        })
        .collect();
    let areas: Vec<f32> = shifted
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; candidates.len()];
    let mut kept = Vec::new();
    for i in 0..candidates.len() {
        if suppressed[i] {
            continue;
        }
        kept.push(candidates[i]);
        if kept.len() == max_detections {
            break;
        }
        let a = shifted[i];
        for j in i + 1..candidates.len() {
            if suppressed[j] {
                continue;
            }
            let b = shifted[j];
            let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = w * h;
            if inter / (areas[i] + areas[j] - inter) > iou {
                suppressed[j] = true;
            }
        }
    }
    kept
}

/// `[cx, cy, w, h]` to `[x1, y1, x2, y2]`, rounding as Ultralytics' `xywh2xyxy` does.
pub fn xywh_to_xyxy([cx, cy, w, h]: [f32; 4]) -> [f32; 4] {
    let (hw, hh) = (w / 2.0, h / 2.0);
    [cx - hw, cy - hh, cx + hw, cy + hh]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(class_id: usize, score: f32, bbox: [f32; 4]) -> Candidate {
        Candidate {
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn suppresses_within_a_class_only() {
        let kept = suppress(
            vec![
                c(0, 0.6, [0.0, 0.0, 10.0, 10.0]),
                c(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
                c(1, 0.8, [1.0, 1.0, 11.0, 11.0]),
                c(0, 0.7, [20.0, 20.0, 30.0, 30.0]),
            ],
            0.45,
            300,
        );
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, [0.9, 0.8, 0.7]);
    }

    #[test]
    fn threshold_is_strict_and_the_cap_holds() {
        // IoU exactly 0.5: kept at threshold 0.5, suppressed at 0.45.
        let pair = vec![
            c(0, 0.9, [0.0, 0.0, 2.0, 1.0]),
            c(0, 0.8, [0.0, 0.0, 1.0, 1.0]),
        ];
        assert_eq!(suppress(pair.clone(), 0.5, 300).len(), 2);
        assert_eq!(suppress(pair, 0.45, 300).len(), 1);
        let many = (0..10)
            .map(|i| {
                c(
                    0,
                    i as f32 / 10.0,
                    [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0],
                )
            })
            .collect();
        let kept = suppress(many, 0.45, 3);
        assert_eq!(
            kept.iter().map(|k| k.score).collect::<Vec<_>>(),
            [0.9, 0.8, 0.7]
        );
    }

    #[test]
    fn degenerate_boxes_do_not_poison_the_rest() {
        let kept = suppress(
            vec![
                c(0, 0.9, [5.0, 5.0, 5.0, 5.0]),
                c(0, 0.8, [0.0, 0.0, 10.0, 10.0]),
            ],
            0.45,
            300,
        );
        assert_eq!(kept.len(), 2);
    }
}
