//! Scenario tests of the whole tracker on synthetic detections.
//!
//! Frames are 1/8 s apart so that frame times are exact in binary and
//! thresholds such as `max_lost` fall exactly on a frame.

use super::assignment::assign;
use super::geometry::{iou, rect};
use super::*;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const START: f64 = 1_700_000_000.0;
const STEP: f64 = 0.125;

fn at(frame: u32) -> f64 {
    START + f64::from(frame) * STEP
}

fn detection(label: &str, score: f32, bbox: [f32; 4]) -> Detection {
    let class_id = match label {
        "person" => 0,
        "car" => 2,
        "dog" => 16,
        _ => 99,
    };
    Detection {
        class_id,
        label: label.into(),
        score,
        bbox,
    }
}

fn person(bbox: [f32; 4]) -> Detection {
    detection("person", 0.9, bbox)
}

/// A 60×120 person walking right at 10 px per frame (80 px/s).
fn walker(frame: u32) -> [f32; 4] {
    let x = 300.0 + 10.0 * frame as f32;
    [x, 300.0, x + 60.0, 420.0]
}

/// Feeds `frames` (frame number and its detections) and returns every
/// event with the frame it came from.
fn run(
    tracker: &mut Tracker,
    frames: impl IntoIterator<Item = (u32, Vec<Detection>)>,
) -> Vec<(u32, TrackEvent)> {
    let mut log = Vec::new();
    for (frame, detections) in frames {
        let events = tracker.update(&detections, at(frame), WIDTH, HEIGHT);
        log.extend(events.into_iter().map(|event| (frame, event)));
    }
    log
}

/// `(frame, kind, track_id)` of each event.
fn summary(log: &[(u32, TrackEvent)]) -> Vec<(u32, EventKind, u64)> {
    log.iter()
        .map(|(frame, event)| (*frame, event.kind, event.after.track_id))
        .collect()
}

fn only_object(tracker: &Tracker) -> &TrackedObject {
    let objects: Vec<_> = tracker.objects().collect();
    assert_eq!(objects.len(), 1, "{objects:#?}");
    objects[0]
}

#[test]
fn steady_walk_is_one_object_published_once_and_ended_after_max_lost() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 7);
    let mut ids = Vec::new();
    let mut log = Vec::new();
    for frame in 0..40 {
        log.extend(run(&mut tracker, [(frame, vec![person(walker(frame))])]));
        ids.extend(tracker.objects().map(|object| object.id.clone()));
    }
    // Confirmed on the second frame (confirm_hits = 2), then silent: moving
    // is not news.
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    let new = &log[0].1;
    assert_eq!(new.before, new.after);
    assert_eq!(new.after.hits, 2);
    assert_eq!(new.after.start_time, at(0));
    assert_eq!(ids.len(), 39);
    assert!(ids.iter().all(|id| *id == ids[0]));

    let object = only_object(&tracker);
    assert_eq!(object.bbox, walker(39));
    assert_eq!(object.frame_time, at(39));
    assert_eq!(object.hits, 40);
    assert!(!object.lost);

    // max_lost = 2 s = 16 frames: still there (lost) 16 frames after the
    // last sighting, ended on the 17th.
    let gone = run(&mut tracker, (40..=55).map(|frame| (frame, vec![])));
    assert!(gone.is_empty());
    assert!(only_object(&tracker).lost);
    assert_eq!(
        only_object(&tracker).bbox,
        walker(39),
        "keeps the last box seen"
    );
    let end = run(&mut tracker, [(56, vec![])]);
    assert_eq!(summary(&end), vec![(56, EventKind::End, 1)]);
    assert_eq!(end[0].1.after.end_time, Some(at(39)));
    assert_eq!(end[0].1.after.id, ids[0]);
    assert_eq!(tracker.objects().count(), 0);
}

#[test]
fn ids_are_frigate_style_and_determined_by_the_seed() {
    let walk = || (0..3).map(|frame| (frame, vec![person(walker(frame))]));
    let id_with_seed = |seed| {
        let mut tracker = Tracker::new(TrackerConfig::default(), seed);
        run(&mut tracker, walk());
        only_object(&tracker).id.clone()
    };
    let id = id_with_seed(42);
    let (time, suffix) = id.split_once('-').unwrap();
    assert_eq!(time, "1700000000.000000");
    assert_eq!(suffix.len(), 6);
    assert!(
        suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(id_with_seed(42), id);
    assert_ne!(id_with_seed(43), id);
}

#[test]
fn occlusion_shorter_than_max_lost_keeps_the_id() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // Seen for 20 frames, hidden for 12 (1.5 s) while it keeps walking,
    // seen again where the motion model expects it.
    let visible = |frame: u32| !(20..32).contains(&frame);
    let frames = (0..50).map(|frame| {
        let detections = if visible(frame) {
            vec![person(walker(frame))]
        } else {
            vec![]
        };
        (frame, detections)
    });
    let mut log = Vec::new();
    for (frame, detections) in frames {
        log.extend(run(&mut tracker, [(frame, detections)]));
        if frame == 25 {
            assert!(only_object(&tracker).lost);
        }
    }
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    let object = only_object(&tracker);
    assert!(!object.lost);
    assert_eq!(object.bbox, walker(49));
    assert_eq!(object.hits, 38);
}

#[test]
fn occlusion_longer_than_max_lost_ends_the_object_and_a_new_one_starts() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // Hidden for 20 frames (2.5 s).
    let frames = (0..50).map(|frame| {
        let detections = if (20..40).contains(&frame) {
            vec![]
        } else {
            vec![person(walker(frame))]
        };
        (frame, detections)
    });
    let log = run(&mut tracker, frames);
    assert_eq!(
        summary(&log),
        vec![
            (1, EventKind::New, 1),
            (36, EventKind::End, 1),
            (41, EventKind::New, 2)
        ]
    );
    assert_eq!(log[1].1.after.end_time, Some(at(19)));
    assert_ne!(log[2].1.after.id, log[0].1.after.id);
    assert_eq!(log[2].1.after.start_time, at(40));
}

/// Two 40×80 people walking towards each other at 15 px per frame, one 10 px
/// lower than the other; their boxes overlap around frame 10.
fn crossing(frame: u32) -> [[f32; 4]; 2] {
    let step = 15.0 * frame as f32;
    let rightwards = 280.0 + step;
    let leftwards = 570.0 - step;
    [
        [rightwards, 300.0, rightwards + 40.0, 380.0],
        [leftwards, 310.0, leftwards + 40.0, 390.0],
    ]
}

/// Where each identity ends up when every frame is matched to the previous
/// frame's boxes, with no motion model: identity `i` starts on box `i` of
/// frame 0.
fn follow_previous_boxes(frames: &[[[f32; 4]; 2]]) -> [[f32; 4]; 2] {
    let mut boxes = frames[0];
    for frame in &frames[1..] {
        let cost = |track: usize, detection: usize| {
            let overlap = iou(rect(boxes[track]), rect(frame[detection]));
            (overlap >= 0.2).then_some(1.0 - overlap)
        };
        for (track, detection) in assign(2, 2, cost, 0.8) {
            boxes[track] = frame[detection];
        }
    }
    boxes
}

#[test]
fn crossing_objects_keep_their_ids() {
    let frames: Vec<_> = (0..20).map(crossing).collect();
    let last = frames[19];

    // The scene is hard: without prediction, the identities swap when the
    // boxes overlap, because each person's previous box is closer to the
    // other person's current one.
    assert_eq!(follow_previous_boxes(&frames), [last[1], last[0]]);

    let mut tracker = Tracker::new(TrackerConfig::default(), 3);
    for (frame, boxes) in (0..).zip(&frames) {
        let log = run(&mut tracker, [(frame, boxes.map(person).to_vec())]);
        if frame == 1 {
            assert_eq!(
                summary(&log),
                vec![(1, EventKind::New, 1), (1, EventKind::New, 2)]
            );
        } else {
            assert!(log.is_empty(), "frame {frame}: {log:#?}");
        }
        if frame >= 1 {
            let objects: Vec<_> = tracker.objects().collect();
            assert_eq!(objects.len(), 2);
            assert_eq!(objects[0].bbox, boxes[0], "frame {frame}");
            assert_eq!(objects[1].bbox, boxes[1], "frame {frame}");
        }
    }
}

#[test]
fn low_score_detections_continue_a_track_but_never_start_one() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // Far from the walker, a weak detection in every frame.
    let ghost = detection("person", 0.2, [1000.0, 100.0, 1060.0, 220.0]);
    let mut log = Vec::new();
    for frame in 0..30 {
        let score = if (10..16).contains(&frame) { 0.2 } else { 0.9 };
        let walking = detection("person", score, walker(frame));
        log.extend(run(&mut tracker, [(frame, vec![walking, ghost.clone()])]));
        if frame >= 1 {
            let object = only_object(&tracker);
            assert!(!object.lost, "frame {frame}");
            assert_eq!(object.score, score);
            assert_eq!(object.bbox, walker(frame));
        }
    }
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
}

#[test]
fn a_single_false_positive_is_never_published() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    let mut frames = vec![(0, vec![person(walker(0))])];
    frames.extend((1..30).map(|frame| (frame, vec![])));
    // A detection every other frame never gets two hits in a row.
    frames.extend((30..60).map(|frame| {
        let detections = if frame % 2 == 0 {
            vec![person(walker(frame))]
        } else {
            vec![]
        };
        (frame, detections)
    }));
    assert_eq!(run(&mut tracker, frames), vec![]);
    assert_eq!(tracker.objects().count(), 0);
    assert!(tracker.finish(at(60)).is_empty());
}

fn band_zone(labels: &[&str]) -> ZoneConfig {
    // A vertical band from 40% to 60% of the frame's width: 512..768 px.
    let band = Polygon::new(vec![[0.4, 0.0], [0.6, 0.0], [0.6, 1.0], [0.4, 1.0]]).unwrap();
    ZoneConfig {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..ZoneConfig::new("driveway", band)
    }
}

/// The walker's bottom centre is at `330 + 10 * frame` px: inside the band
/// from frame 19 (520 px) to frame 43 (760 px).
fn walk_through_band(tracker: &mut Tracker, label: &str) -> Vec<(u32, TrackEvent)> {
    run(
        tracker,
        (0..50).map(|frame| (frame, vec![detection(label, 0.9, walker(frame))])),
    )
}

#[test]
fn zone_is_entered_and_left_after_inertia_frames_and_entered_zones_remain() {
    let config = TrackerConfig {
        zones: vec![band_zone(&[])],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    let log = walk_through_band(&mut tracker, "person");
    // Inertia 3: the third consecutive frame inside (19, 20, 21) enters,
    // the third outside (44, 45, 46) leaves.
    assert_eq!(
        summary(&log),
        vec![
            (1, EventKind::New, 1),
            (21, EventKind::Update, 1),
            (46, EventKind::Update, 1)
        ]
    );
    let entered = &log[1].1;
    assert_eq!(
        entered.changes,
        vec![Change::EnteredZone("driveway".into())]
    );
    assert!(entered.before.current_zones.is_empty());
    assert_eq!(entered.after.current_zones, ["driveway"]);
    assert_eq!(entered.after.entered_zones, ["driveway"]);
    let left = &log[2].1;
    assert_eq!(left.changes, vec![Change::LeftZone("driveway".into())]);
    assert_eq!(left.before.current_zones, ["driveway"]);
    assert!(left.after.current_zones.is_empty());
    assert_eq!(left.after.entered_zones, ["driveway"]);
    assert_eq!(only_object(&tracker).entered_zones, ["driveway"]);
}

#[test]
fn lost_frames_do_not_count_towards_zone_inertia() {
    let config = TrackerConfig {
        zones: vec![band_zone(&[])],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    // Inside from frame 19; unseen in frames 20 and 21, so the third frame
    // seen inside is frame 23.
    let frames = (0..30).map(|frame| {
        let detections = if (20..22).contains(&frame) {
            vec![]
        } else {
            vec![person(walker(frame))]
        };
        (frame, detections)
    });
    let log = run(&mut tracker, frames);
    assert_eq!(
        summary(&log),
        vec![(1, EventKind::New, 1), (23, EventKind::Update, 1)]
    );
}

#[test]
fn zone_labels_keep_other_labels_out() {
    let config = TrackerConfig {
        zones: vec![band_zone(&["car"])],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config.clone(), 1);
    let log = walk_through_band(&mut tracker, "person");
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    assert!(only_object(&tracker).entered_zones.is_empty());

    let mut tracker = Tracker::new(config, 1);
    let log = walk_through_band(&mut tracker, "car");
    assert_eq!(
        log[1].1.changes,
        vec![Change::EnteredZone("driveway".into())]
    );
}

#[test]
fn masked_detections_are_ignored() {
    // The left 30% of the frame.
    let mask = Polygon::new(vec![[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]).unwrap();
    let config = TrackerConfig {
        masks: vec![mask],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    // The bottom centre crosses 0.3 × 1280 = 384 px at frame 6 (390 px).
    let log = run(
        &mut tracker,
        (0..20).map(|frame| (frame, vec![person(walker(frame))])),
    );
    assert_eq!(summary(&log), vec![(7, EventKind::New, 1)]);
    assert_eq!(only_object(&tracker).start_time, at(6));
}

#[test]
fn boxes_outside_the_area_limits_are_ignored() {
    let config = TrackerConfig {
        // Of a 1280×720 frame: 921.6 px² to 460 800 px².
        min_area: 0.001,
        max_area: 0.5,
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    let tiny = [100.0, 100.0, 120.0, 120.0];
    let huge = [10.0, 10.0, 1200.0, 700.0];
    let log = run(
        &mut tracker,
        (0..10).map(|frame| {
            (
                frame,
                vec![person(tiny), person(huge), person(walker(frame))],
            )
        }),
    );
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    assert_eq!(only_object(&tracker).bbox, walker(9));
}

#[test]
fn per_label_minimum_scores_decide_what_starts_a_track() {
    let mut config = TrackerConfig::default();
    config.min_scores.insert("car".into(), 0.8);
    let mut tracker = Tracker::new(config.clone(), 1);
    let parked = [600.0, 400.0, 800.0, 500.0];
    let log = run(
        &mut tracker,
        (0..10).map(|frame| {
            (
                frame,
                vec![
                    detection("car", 0.7, parked),
                    detection("person", 0.7, walker(frame)),
                ],
            )
        }),
    );
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    assert_eq!(only_object(&tracker).label, "person");

    // Once started by confident detections, 0.7 keeps a car going.
    let mut tracker = Tracker::new(config, 1);
    let log = run(
        &mut tracker,
        (0..10).map(|frame| {
            (
                frame,
                vec![detection("car", if frame < 2 { 0.85 } else { 0.7 }, parked)],
            )
        }),
    );
    assert_eq!(summary(&log), vec![(1, EventKind::New, 1)]);
    assert!(!only_object(&tracker).lost);
    assert_eq!(only_object(&tracker).hits, 10);
}

#[test]
fn holding_still_makes_an_object_stationary_and_moving_ends_it() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // Still, with a pixel of jitter, until frame 86 (10 s = 80 frames), then
    // walking away from where it stood: the first step of 10 px (IoU 0.71
    // with the reference) is movement.
    let still = |frame: u32| {
        let jitter = (frame % 2) as f32;
        [300.0 + jitter, 300.0, 360.0 + jitter, 420.0]
    };
    let frames = (0..120).map(|frame| {
        let bbox = if frame < 86 {
            still(frame)
        } else {
            walker(frame - 86)
        };
        (frame, vec![person(bbox)])
    });
    let log = run(&mut tracker, frames);
    assert_eq!(
        summary(&log),
        vec![
            (1, EventKind::New, 1),
            (80, EventKind::Update, 1),
            (87, EventKind::Update, 1)
        ]
    );
    assert_eq!(log[1].1.changes, vec![Change::Stationary(true)]);
    assert!(log[1].1.after.stationary && !log[1].1.before.stationary);
    assert_eq!(log[2].1.changes, vec![Change::Stationary(false)]);
    assert!(!only_object(&tracker).stationary);
}

#[test]
fn label_changes_only_when_the_other_label_persists() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // Frames 0..=10: a person at 0.8, except one "dog" at 0.7 in frame 5
    // (person 8.0, dog 0.7). From frame 11 a dog at 0.8: its total passes
    // 8.0 at the tenth such frame, frame 20.
    let frames = (0..25).map(|frame| {
        let (label, score) = match frame {
            5 => ("dog", 0.7),
            0..=10 => ("person", 0.8),
            _ => ("dog", 0.8),
        };
        (frame, vec![detection(label, score, walker(frame))])
    });
    let log = run(&mut tracker, frames);
    assert_eq!(
        summary(&log),
        vec![(1, EventKind::New, 1), (20, EventKind::Update, 1)]
    );
    let flip = &log[1].1;
    assert_eq!(
        flip.changes,
        vec![Change::Label {
            from: "person".into(),
            to: "dog".into()
        }]
    );
    assert_eq!(
        (flip.after.label.as_str(), flip.after.class_id),
        ("dog", 16)
    );
}

#[test]
fn top_score_is_published_when_it_rises_by_the_step() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    let scores = [0.6, 0.62, 0.64, 0.68, 0.7, 0.5, 0.74];
    let frames = (0..)
        .zip(scores)
        .map(|(frame, score)| (frame, vec![detection("person", score, walker(frame))]));
    let log = run(&mut tracker, frames);
    // Published at 0.62 (new); 0.64 is +0.02, 0.68 is +0.06 → update;
    // 0.7 is +0.02 over 0.68, 0.74 is +0.06.
    assert_eq!(
        summary(&log),
        vec![
            (1, EventKind::New, 1),
            (3, EventKind::Update, 1),
            (6, EventKind::Update, 1)
        ]
    );
    assert_eq!(log[1].1.changes, vec![Change::TopScore]);
    assert_eq!(
        (log[1].1.before.top_score, log[1].1.after.top_score),
        (0.62, 0.68)
    );
    assert_eq!(only_object(&tracker).score, 0.74);
}

#[test]
fn variable_frame_intervals_are_followed_by_the_motion_model() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    // 160 px/s; after ten regular frames, gaps from 0.05 s to 0.6 s.
    let speed = 160.0;
    let intervals = [0.1; 10]
        .into_iter()
        .chain([0.05, 0.6, 0.1, 0.3, 0.05, 0.5, 0.2, 0.6]);
    let mut time = START;
    let mut previous_box = None;
    let mut gap_beyond_overlap = false;
    let mut log = Vec::new();
    for interval in intervals {
        time += interval;
        let x = (300.0 + speed * (time - START)) as f32;
        let bbox = [x, 300.0, x + 60.0, 420.0];
        if let Some(previous) = previous_box {
            gap_beyond_overlap |= iou(rect(previous), rect(bbox)) < 0.2;
        }
        previous_box = Some(bbox);
        log.extend(tracker.update(&[person(bbox)], time, WIDTH, HEIGHT));
        if log.len() == 1 {
            let object = only_object(&tracker);
            assert!(!object.lost);
            assert_eq!(object.bbox, bbox);
        }
    }
    assert!(
        gap_beyond_overlap,
        "some gap must be too long for matching without prediction"
    );
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0].kind, EventKind::New);
    assert_eq!(only_object(&tracker).hits, 18);
}

#[test]
fn finish_ends_every_object_and_the_tracker_can_go_on() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    let far = [900.0, 100.0, 960.0, 220.0];
    let mut frames: Vec<_> = (0..5)
        .map(|frame| (frame, vec![person(walker(frame)), person(far)]))
        .collect();
    // Frame 5: the walker is missed, and a third detection starts a
    // tentative track.
    frames.push((5, vec![person(far), person([100.0, 500.0, 160.0, 620.0])]));
    run(&mut tracker, frames);

    let ended = tracker.finish(at(6));
    let ends: Vec<_> = ended
        .iter()
        .map(|e| (e.kind, e.after.track_id, e.after.end_time))
        .collect();
    assert_eq!(
        ends,
        vec![
            (EventKind::End, 1, Some(at(4))),
            (EventKind::End, 2, Some(at(5)))
        ]
    );
    assert_eq!(tracker.objects().count(), 0);

    let log = run(
        &mut tracker,
        (7..9).map(|frame| (frame, vec![person(walker(frame))])),
    );
    assert_eq!(summary(&log), vec![(8, EventKind::New, 3)]);
}

#[test]
fn events_in_one_frame_are_ordered_by_track_id() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    let boxes = [
        [900.0, 100.0, 960.0, 220.0],
        [100.0, 100.0, 160.0, 220.0],
        [500.0, 100.0, 560.0, 220.0],
    ];
    let log = run(
        &mut tracker,
        (0..2).map(|frame| (frame, boxes.map(person).to_vec())),
    );
    assert_eq!(
        summary(&log).iter().map(|s| s.2).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Two end and one stays: the end events still come in track_id order.
    let log = run(
        &mut tracker,
        (2..20).map(|frame| (frame, vec![person(boxes[1])])),
    );
    assert_eq!(
        summary(&log),
        vec![(18, EventKind::End, 1), (18, EventKind::End, 3)]
    );
}

#[test]
fn object_looks_up_by_id() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    run(
        &mut tracker,
        (0..2).map(|frame| (frame, vec![person(walker(frame))])),
    );
    let id = only_object(&tracker).id.clone();
    assert_eq!(tracker.object(&id).map(|o| o.track_id), Some(1));
    assert!(tracker.object("1700000000.000000-nosuch").is_none());
}

#[test]
fn garbage_input_is_survived_as_documented() {
    let mut tracker = Tracker::new(TrackerConfig::default(), 1);
    run(
        &mut tracker,
        (0..3).map(|frame| (frame, vec![person(walker(frame))])),
    );
    let seen = only_object(&tracker).clone();

    // A non-finite frame time is ignored entirely.
    for time in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(
            tracker
                .update(&[person(walker(3))], time, WIDTH, HEIGHT)
                .is_empty()
        );
    }
    assert_eq!(only_object(&tracker), &seen);

    // Garbage detections are ignored; the object just misses the frame.
    let garbage = [
        detection("person", f32::NAN, walker(3)),
        detection("person", f32::INFINITY, walker(3)),
        person([f32::NAN, 300.0, 360.0, 420.0]),
        person([f32::NEG_INFINITY, 300.0, f32::INFINITY, 420.0]),
        person([360.0, 420.0, 300.0, 300.0]),
        person([330.0, 300.0, 330.0, 420.0]),
    ];
    assert!(run(&mut tracker, [(3, garbage.to_vec())]).is_empty());
    assert!(only_object(&tracker).lost);

    // Huge finite boxes and an empty frame list do not upset anything.
    let huge = person([-1e38, -1e38, 1e38, 1e38]);
    let config = TrackerConfig {
        max_area: f32::INFINITY,
        ..TrackerConfig::default()
    };
    let mut unbounded = Tracker::new(config, 1);
    run(
        &mut unbounded,
        (0..3).map(|frame| (frame, vec![huge.clone()])),
    );
    assert_eq!(unbounded.objects().count(), 1);
    assert!(unbounded.update(&[], at(3), WIDTH, HEIGHT).is_empty());

    // Time going backwards counts as no time passing.
    assert!(run(&mut tracker, [(4, vec![person(walker(4))])]).is_empty());
    let events = tracker.update(&[person(walker(5))], at(1), WIDTH, HEIGHT);
    assert!(events.is_empty());
    assert_eq!(only_object(&tracker).frame_time, at(4));
    assert_eq!(only_object(&tracker).bbox, walker(5));

    // A zero-size frame shows nothing: the object misses it.
    assert!(
        tracker
            .update(&[person(walker(6))], at(6), 0, HEIGHT)
            .is_empty()
    );
    assert!(only_object(&tracker).lost);
    assert_eq!(only_object(&tracker).id, seen.id);
}

#[test]
fn nonsensical_config_numbers_do_not_panic() {
    let walkers = || {
        (0..10).map(|frame| {
            (
                frame,
                vec![person(walker(frame)), person(walker(frame + 20))],
            )
        })
    };

    // Thresholds nothing can meet: nothing is ever matched, so nothing is
    // ever confirmed.
    for config in [
        TrackerConfig {
            match_iou: f32::NAN,
            max_lost: f64::NAN,
            ..TrackerConfig::default()
        },
        TrackerConfig {
            match_iou: f32::INFINITY,
            max_lost: -1.0,
            low_score: f32::NEG_INFINITY,
            ..TrackerConfig::default()
        },
        TrackerConfig {
            min_score: f32::NAN,
            ..TrackerConfig::default()
        },
    ] {
        let mut tracker = Tracker::new(config, 1);
        assert_eq!(run(&mut tracker, walkers()), vec![]);
        assert_eq!(tracker.finish(at(10)), vec![]);
    }

    // Degenerate but meetable: confirmed on first sight, never stationary,
    // top score never published.
    let config = TrackerConfig {
        match_iou: -1.0,
        confirm_hits: 0,
        stationary_after: f64::NAN,
        top_score_step: f32::NAN,
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    let log = run(&mut tracker, walkers());
    assert_eq!(
        summary(&log),
        vec![(0, EventKind::New, 1), (0, EventKind::New, 2)]
    );
    assert_eq!(tracker.finish(at(10)).len(), 2);
}

#[test]
fn events_serialise_in_frigate_shape() {
    let config = TrackerConfig {
        zones: vec![band_zone(&[])],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, 1);
    let log = walk_through_band(&mut tracker, "person");
    let new = serde_json::to_value(&log[0].1).unwrap();
    assert_eq!(new["kind"], "new");
    assert_eq!(new["after"]["label"], "person");
    assert_eq!(new["after"]["box"], serde_json::json!(walker(1)));
    assert_eq!(new["after"]["end_time"], serde_json::Value::Null);
    let entered = serde_json::to_value(&log[1].1).unwrap();
    assert_eq!(entered["kind"], "update");
    assert_eq!(
        entered["changes"],
        serde_json::json!([{ "entered_zone": "driveway" }])
    );

    let changes = [
        Change::Label {
            from: "cat".into(),
            to: "dog".into(),
        },
        Change::Stationary(true),
        Change::TopScore,
    ];
    let expected = serde_json::json!([
        { "label": { "from": "cat", "to": "dog" } },
        { "stationary": true },
        "top_score",
    ]);
    assert_eq!(serde_json::to_value(changes).unwrap(), expected);
    let ended = serde_json::to_value(&tracker.finish(at(50))[0]).unwrap();
    assert_eq!(ended["kind"], "end");
    assert_eq!(ended["after"]["end_time"], serde_json::json!(at(49)));
}
