//! Which detections the tracker takes into account, and how far it trusts
//! each one.
//!
//! Everything that makes a detection unusable is decided here, once, so the
//! association stages only ever see finite boxes with area: garbage from a
//! detector (NaN or infinite numbers, inverted boxes) is dropped rather than
//! allowed to poison the motion model.

use super::config::TrackerConfig;
use super::geometry::FrameSize;
use crate::detect::Detection;

/// How a usable detection may be used (ByteTrack, Zhang et al. 2022).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Confidence {
    /// At or above its label's minimum score: can start and confirm tracks.
    High,
    /// Between `low_score` and its label's minimum: can only continue a
    /// confirmed track, since on its own it is as likely noise as an object.
    Low,
}

/// A detection that passed the filter.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate<'a> {
    pub(super) detection: &'a Detection,
    pub(super) confidence: Confidence,
    /// The box's bottom centre, normalised: the point masks and zones test.
    pub(super) anchor: [f64; 2],
}

/// Sorts one detection into high, low, or ignored (`None`).
///
/// Ignored are: every detection in a frame without pixels (its position
/// cannot be normalised); non-finite scores or coordinates; boxes without
/// positive width and height (including inverted ones, which
/// [`Detection::area`] already treats as empty); labels not tracked; scores
/// below both `low_score` and the label's minimum; areas outside
/// `[min_area, max_area]` of the frame; bottom centres inside a mask.
pub(super) fn classify<'a>(
    detection: &'a Detection,
    config: &TrackerConfig,
    frame: FrameSize,
) -> Option<Candidate<'a>> {
    if frame.is_empty() || !is_usable_box(detection) {
        return None;
    }
    if !config.labels.is_empty() && !config.labels.contains(&detection.label) {
        return None;
    }
    let confidence = if detection.score >= config.min_score_for(&detection.label) {
        Confidence::High
    } else if detection.score >= config.low_score {
        Confidence::Low
    } else {
        return None;
    };
    let [x1, y1, x2, y2] = detection.bbox.map(f64::from);
    let area_fraction = (x2 - x1) * (y2 - y1) / frame.area();
    let allowed_area = f64::from(config.min_area)..=f64::from(config.max_area);
    if !allowed_area.contains(&area_fraction) {
        return None;
    }
    let anchor = frame.anchor(detection.bbox);
    if config
        .masks
        .iter()
        .any(|mask| mask.contains(anchor[0], anchor[1]))
    {
        return None;
    }
    Some(Candidate {
        detection,
        confidence,
        anchor,
    })
}

fn is_usable_box(detection: &Detection) -> bool {
    let [x1, y1, x2, y2] = detection.bbox;
    detection.score.is_finite()
        && detection.bbox.iter().all(|v| v.is_finite())
        && x2 > x1
        && y2 > y1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::zones::Polygon;

    fn detection(label: &str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            class_id: 0,
            label: label.into(),
            score,
            bbox,
        }
    }

    fn confidence(detection: &Detection, config: &TrackerConfig) -> Option<Confidence> {
        classify(detection, config, FrameSize::new(100, 100)).map(|c| c.confidence)
    }

    const BOX: [f32; 4] = [10.0, 10.0, 30.0, 50.0];

    #[test]
    fn scores_split_into_high_low_and_ignored() {
        let config = TrackerConfig::default();
        assert_eq!(
            confidence(&detection("person", 0.5, BOX), &config),
            Some(Confidence::High)
        );
        assert_eq!(
            confidence(&detection("person", 0.3, BOX), &config),
            Some(Confidence::Low)
        );
        assert_eq!(
            confidence(&detection("person", 0.1, BOX), &config),
            Some(Confidence::Low)
        );
        assert_eq!(confidence(&detection("person", 0.09, BOX), &config), None);
    }

    #[test]
    fn per_label_minimum_overrides_the_default() {
        let mut config = TrackerConfig::default();
        config.min_scores.insert("car".into(), 0.7);
        config.min_scores.insert("cat".into(), 0.05);
        assert_eq!(
            confidence(&detection("car", 0.6, BOX), &config),
            Some(Confidence::Low)
        );
        assert_eq!(
            confidence(&detection("person", 0.6, BOX), &config),
            Some(Confidence::High)
        );
        // At or above its own minimum is high even below `low_score`.
        assert_eq!(
            confidence(&detection("cat", 0.06, BOX), &config),
            Some(Confidence::High)
        );
    }

    #[test]
    fn untracked_labels_are_ignored() {
        let config = TrackerConfig {
            labels: vec!["person".into()],
            ..TrackerConfig::default()
        };
        assert!(confidence(&detection("person", 0.9, BOX), &config).is_some());
        assert_eq!(confidence(&detection("car", 0.9, BOX), &config), None);
    }

    #[test]
    fn garbage_boxes_and_scores_are_ignored() {
        let config = TrackerConfig::default();
        for bad in [
            detection("person", f32::NAN, BOX),
            detection("person", f32::INFINITY, BOX),
            detection("person", 0.9, [f32::NAN, 10.0, 30.0, 50.0]),
            detection("person", 0.9, [10.0, 10.0, f32::INFINITY, 50.0]),
            detection("person", 0.9, [30.0, 10.0, 10.0, 50.0]),
            detection("person", 0.9, [10.0, 10.0, 10.0, 50.0]),
        ] {
            assert_eq!(confidence(&bad, &config), None, "{bad:?}");
        }
        let good = detection("person", 0.9, BOX);
        assert!(classify(&good, &config, FrameSize::new(0, 100)).is_none());
    }

    #[test]
    fn area_bounds_are_fractions_of_the_frame() {
        let config = TrackerConfig {
            min_area: 0.01,
            max_area: 0.5,
            ..TrackerConfig::default()
        };
        // In a 100x100 frame: 9 px² is too small, 100 px² is exactly the
        // minimum, 5000 px² exactly the maximum, 5100 px² too large.
        assert_eq!(
            confidence(&detection("person", 0.9, [0.0, 0.0, 3.0, 3.0]), &config),
            None
        );
        assert!(confidence(&detection("person", 0.9, [0.0, 0.0, 10.0, 10.0]), &config).is_some());
        assert!(confidence(&detection("person", 0.9, [0.0, 0.0, 50.0, 100.0]), &config).is_some());
        assert_eq!(
            confidence(&detection("person", 0.9, [0.0, 0.0, 51.0, 100.0]), &config),
            None
        );
    }

    #[test]
    fn masks_test_the_bottom_centre() {
        // The left 30% of the frame.
        let config = TrackerConfig {
            masks: vec![
                Polygon::new(vec![[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]).unwrap(),
            ],
            ..TrackerConfig::default()
        };
        // Overlaps the mask, but its bottom centre (x = 0.35) is outside.
        assert!(confidence(&detection("person", 0.9, [10.0, 10.0, 60.0, 50.0]), &config).is_some());
        // Bottom centre at x = 0.2.
        assert_eq!(
            confidence(&detection("person", 0.9, [0.0, 10.0, 40.0, 50.0]), &config),
            None
        );
    }
}
