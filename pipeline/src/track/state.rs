//! One track: the published object plus everything the tracker keeps to
//! maintain it (motion model, label votes, zone presence, stillness, and
//! the object as last published).

use super::config::TrackerConfig;
use super::event::{Change, EventKind, TrackEvent};
use super::filter::Candidate;
use super::geometry::{Rect, rect};
use super::kalman::BoxFilter;
use super::label::LabelVotes;
use super::object::TrackedObject;
use super::stationary::Stillness;
use super::zones::ZonePresence;

#[derive(Clone, Debug)]
pub(super) struct Track {
    /// The object as it is now. While the track is tentative, `id` is empty
    /// and `track_id` 0: both are handed out on confirmation, so objects
    /// that never get published use up neither.
    object: TrackedObject,
    /// The object as last published; `None` while tentative.
    published: Option<TrackedObject>,
    motion: BoxFilter,
    labels: LabelVotes,
    /// One per configured zone, in the same order.
    zones: Vec<ZonePresence>,
    stillness: Stillness,
}

impl Track {
    /// A tentative track from its first detection, seen at `now`.
    pub(super) fn start(candidate: &Candidate, now: f64, config: &TrackerConfig) -> Self {
        let detection = candidate.detection;
        let mut stillness = Stillness::new(detection.bbox, now);
        let stationary = stillness.observe(detection.bbox, now, config.stationary_after);
        let mut track = Self {
            object: TrackedObject {
                id: String::new(),
                track_id: 0,
                label: detection.label.clone(),
                class_id: detection.class_id,
                score: detection.score,
                top_score: detection.score,
                bbox: detection.bbox,
                area: detection.area(),
                current_zones: Vec::new(),
                entered_zones: Vec::new(),
                stationary,
                start_time: now,
                end_time: None,
                frame_time: now,
                lost: false,
                hits: 1,
            },
            published: None,
            motion: BoxFilter::new(rect(detection.bbox)),
            labels: LabelVotes::new(&detection.label, detection.class_id, detection.score),
            zones: vec![ZonePresence::default(); config.zones.len()],
            stillness,
        };
        track.update_zones(candidate.anchor, config);
        track
    }

    pub(super) fn object(&self) -> &TrackedObject {
        &self.object
    }

    pub(super) fn is_confirmed(&self) -> bool {
        self.published.is_some()
    }

    pub(super) fn predict(&mut self, dt: f64) {
        self.motion.predict(dt);
    }

    /// Where the motion model expects the object in the current frame.
    pub(super) fn predicted_box(&self) -> Rect {
        self.motion.predicted_box()
    }

    /// Folds in the detection matched to this track at `now`.
    pub(super) fn observe(&mut self, candidate: &Candidate, now: f64, config: &TrackerConfig) {
        let detection = candidate.detection;
        self.motion.correct(rect(detection.bbox));
        self.labels
            .add(&detection.label, detection.class_id, detection.score);
        let (label, class_id) = self.labels.leader();
        let object = &mut self.object;
        label.clone_into(&mut object.label);
        object.class_id = class_id;
        object.score = detection.score;
        object.top_score = object.top_score.max(detection.score);
        object.bbox = detection.bbox;
        object.area = detection.area();
        object.frame_time = now;
        object.lost = false;
        object.hits = object.hits.saturating_add(1);
        object.stationary = self
            .stillness
            .observe(detection.bbox, now, config.stationary_after);
        self.update_zones(candidate.anchor, config);
    }

    /// The track was not matched in this frame. Zones and stillness are left
    /// as they are: an unseen object gives no evidence either way.
    pub(super) fn miss(&mut self) {
        self.object.lost = true;
        self.motion.hold_size();
    }

    /// Whether the object has gone unseen for longer than `max_lost`
    /// seconds at `now`. A NaN `max_lost` counts as no time at all.
    pub(super) fn is_gone(&self, now: f64, max_lost: f64) -> bool {
        now - self.object.frame_time > max_lost || max_lost.is_nan()
    }

    /// Publishes the track as an object.
    pub(super) fn confirm(&mut self, id: String, track_id: u64) -> TrackEvent {
        self.object.id = id;
        self.object.track_id = track_id;
        self.published = Some(self.object.clone());
        TrackEvent {
            kind: EventKind::New,
            before: self.object.clone(),
            after: self.object.clone(),
            changes: Vec::new(),
        }
    }

    /// An update event if the object changed significantly since it was
    /// last published; `None` for tentative tracks.
    pub(super) fn publish_changes(&mut self, top_score_step: f32) -> Option<TrackEvent> {
        let published = self.published.as_mut()?;
        let changes = Change::between(published, &self.object, top_score_step);
        if changes.is_empty() {
            return None;
        }
        let before = std::mem::replace(published, self.object.clone());
        Some(TrackEvent {
            kind: EventKind::Update,
            before,
            after: self.object.clone(),
            changes,
        })
    }

    /// Ends the track; the end event of a confirmed one, `None` for a
    /// tentative one, which was never published.
    pub(super) fn end(self) -> Option<TrackEvent> {
        let before = self.published?;
        let mut after = self.object;
        after.end_time = Some(after.frame_time);
        Some(TrackEvent {
            kind: EventKind::End,
            before,
            after,
            changes: Vec::new(),
        })
    }

    fn update_zones(&mut self, anchor: [f64; 2], config: &TrackerConfig) {
        let object = &mut self.object;
        for (presence, zone) in self.zones.iter_mut().zip(&config.zones) {
            // A label the zone does not admit counts as outside, so an object
            // relabelled to one leaves the zone like one walking out.
            let inside = zone.admits(&object.label) && zone.polygon.contains(anchor[0], anchor[1]);
            let entered = presence.observe(inside, zone.inertia) && presence.is_inside();
            if entered && !object.entered_zones.contains(&zone.name) {
                object.entered_zones.push(zone.name.clone());
            }
        }
        object.current_zones = self
            .zones
            .iter()
            .zip(&config.zones)
            .filter(|(presence, _)| presence.is_inside())
            .map(|(_, zone)| zone.name.clone())
            .collect();
    }
}
