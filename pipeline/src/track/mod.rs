//! Multi-object tracking: turns each frame's detections into objects with
//! stable identities, and reports when an object appears, changes in a way
//! that matters (zones, label, score, stationary) and ends.
//!
//! Pure computation: no I/O, no clock of its own (frame times come from the
//! caller), no randomness beyond the seeded id suffixes. The same inputs and
//! seed always give the same events, in the same order.
//!
//! One [`Tracker`] per camera. Each [`Tracker::update`]:
//!
//! 1. filters the detections (labels, score, area, masks, garbage) and
//!    splits them into high and low confidence;
//! 2. predicts every track forward by the time since the previous frame with
//!    a constant-velocity Kalman filter;
//! 3. associates in two stages as ByteTrack does (Zhang et al. 2022, "BYTE"):
//!    high detections to all tracks, then low detections to the confirmed
//!    tracks still unmatched, each stage an optimal assignment on
//!    `1 − IoU(predicted box, detection)`, class-agnostic;
//! 4. starts tentative tracks from unmatched high detections, drops
//!    tentative tracks that missed (never published), marks confirmed ones
//!    that missed as lost, and ends those unseen for more than
//!    [`TrackerConfig::max_lost`];
//! 5. confirms tracks matched [`TrackerConfig::confirm_hits`] times, and
//!    reports [`TrackEvent`]s ordered by `track_id`.

mod assignment;
mod config;
mod event;
mod filter;
mod geometry;
mod kalman;
mod label;
mod object;
mod state;
mod stationary;
mod zones;

pub use config::{DEFAULT_ZONE_INERTIA, TrackerConfig, ZoneConfig};
pub use event::{Change, EventKind, TrackEvent};
pub use object::TrackedObject;
pub use zones::{Polygon, PolygonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::detect::Detection;
use filter::{Candidate, Confidence, classify};
use geometry::{FrameSize, iou, rect};
use state::Track;

/// Characters of an id's random suffix, as in Frigate's ids.
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_SUFFIX_LEN: usize = 6;

/// Tracks the objects of one camera. See the [module docs](self).
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    rng: StdRng,
    last_track_id: u64,
    /// Time of the latest frame; never decreases.
    clock: Option<f64>,
    /// Tentative and confirmed tracks, in order of creation (so confirmed
    /// ones are in `track_id` order).
    tracks: Vec<Track>,
}

impl Tracker {
    /// A tracker with no objects. `seed` drives the random part of object
    /// ids, so the same seed gives the same ids.
    pub fn new(config: TrackerConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            last_track_id: 0,
            clock: None,
            tracks: Vec::new(),
        }
    }

    /// Processes one frame's detections, taken at `frame_time` (unix
    /// seconds) from a `frame_width × frame_height` frame, and returns what
    /// happened, ordered by `track_id`.
    ///
    /// A detection is ignored if its score or any coordinate is not finite,
    /// its box has no positive width and height (an inverted box included),
    /// its label is not tracked, its score is below both `low_score` and its
    /// label's minimum, its area is outside `[min_area, max_area]` of the
    /// frame, or its bottom centre is in a mask. In a zero-size frame every
    /// detection is ignored (there are no pixels to place it in), so every
    /// object misses that frame.
    ///
    /// The tracker's clock never runs backwards: a `frame_time` earlier than
    /// the previous frame's is taken as the previous frame's (no time passes,
    /// so nothing moves and nothing expires). A non-finite `frame_time`
    /// cannot be placed in time at all: the frame is ignored and nothing
    /// changes. None of this panics.
    pub fn update(
        &mut self,
        detections: &[Detection],
        frame_time: f64,
        frame_width: u32,
        frame_height: u32,
    ) -> Vec<TrackEvent> {
        let Some((now, dt)) = self.advance_clock(frame_time) else {
            return Vec::new();
        };
        let frame = FrameSize::new(frame_width, frame_height);
        let candidates: Vec<Candidate> = detections
            .iter()
            .filter_map(|detection| classify(detection, &self.config, frame))
            .collect();
        for track in &mut self.tracks {
            track.predict(dt);
        }
        let (matches, unmatched_high) = self.associate(&candidates);

        let mut events = Vec::new();
        let tracks = std::mem::take(&mut self.tracks);
        for (mut track, matched) in tracks.into_iter().zip(matches) {
            match matched {
                Some(candidate) => {
                    track.observe(candidate, now, &self.config);
                    self.tracks.push(track);
                }
                // A tentative track that misses was most likely a false
                // positive: dropped without a word.
                None if !track.is_confirmed() => {}
                // Ended only on a frame that shows it absent, so a stalled
                // pipeline (no frames for a while) does not end objects that
                // are still there.
                None if track.is_gone(now, self.config.max_lost) => {
                    events.extend(track.end());
                }
                None => {
                    track.miss();
                    self.tracks.push(track);
                }
            }
        }
        for candidate in unmatched_high {
            self.tracks.push(Track::start(candidate, now, &self.config));
        }
        events.extend(self.confirm_and_publish());
        events.sort_by_key(|event| event.after.track_id);
        events
    }

    /// Ends every object, as when the camera stops: one end event per
    /// confirmed object (its `end_time` the last time it was seen), ordered
    /// by `track_id`; tentative tracks are dropped. `time` advances the clock
    /// (if finite and later), so a tracker reused afterwards keeps running
    /// forwards.
    pub fn finish(&mut self, time: f64) -> Vec<TrackEvent> {
        self.advance_clock(time);
        self.tracks.drain(..).filter_map(Track::end).collect()
    }

    /// Every confirmed object that has not ended, including ones missed in
    /// the latest frames, in `track_id` order.
    pub fn objects(&self) -> impl Iterator<Item = &TrackedObject> {
        self.tracks
            .iter()
            .filter(|track| track.is_confirmed())
            .map(Track::object)
    }

    /// The confirmed, not ended object with this id.
    pub fn object(&self, id: &str) -> Option<&TrackedObject> {
        self.objects().find(|object| object.id == id)
    }

    /// Moves the clock to `frame_time`; returns the new time and the step
    /// from the previous frame, or `None` for a non-finite time.
    fn advance_clock(&mut self, frame_time: f64) -> Option<(f64, f64)> {
        if !frame_time.is_finite() {
            return None;
        }
        let (now, dt) = match self.clock {
            Some(previous) if frame_time < previous => (previous, 0.0),
            Some(previous) => (frame_time, frame_time - previous),
            None => (frame_time, 0.0),
        };
        self.clock = Some(now);
        Some((now, dt))
    }

    /// ByteTrack's two association stages. Returns the candidate matched to
    /// each track (indexed like `self.tracks`) and the high candidates left
    /// over, which may start new tracks.
    fn associate<'c, 'd>(
        &self,
        candidates: &'c [Candidate<'d>],
    ) -> (Vec<Option<&'c Candidate<'d>>>, Vec<&'c Candidate<'d>>) {
        let (high, low): (Vec<&Candidate>, Vec<&Candidate>) = candidates
            .iter()
            .partition(|candidate| candidate.confidence == Confidence::High);
        let mut matches: Vec<Option<&Candidate>> = vec![None; self.tracks.len()];

        let every_track: Vec<usize> = (0..self.tracks.len()).collect();
        let mut high_taken = vec![false; high.len()];
        for (track, detection) in self.match_by_overlap(&every_track, &high) {
            matches[every_track[track]] = Some(high[detection]);
            high_taken[detection] = true;
        }

        let confirmed_unmatched: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| matches[i].is_none() && self.tracks[i].is_confirmed())
            .collect();
        for (track, detection) in self.match_by_overlap(&confirmed_unmatched, &low) {
            matches[confirmed_unmatched[track]] = Some(low[detection]);
        }

        let unmatched_high = high
            .into_iter()
            .zip(high_taken)
            .filter_map(|(candidate, taken)| (!taken).then_some(candidate))
            .collect();
        (matches, unmatched_high)
    }

    /// Optimal assignment of `candidates` to the tracks at `track_indices`
    /// on `1 − IoU`, pairs below `match_iou` forbidden, as `(position in
    /// track_indices, position in candidates)`.
    fn match_by_overlap(
        &self,
        track_indices: &[usize],
        candidates: &[&Candidate],
    ) -> Vec<(usize, usize)> {
        let min_iou = f64::from(self.config.match_iou);
        let predicted: Vec<_> = track_indices
            .iter()
            .map(|&i| self.tracks[i].predicted_box())
            .collect();
        let cost = |track: usize, detection: usize| {
            let overlap = iou(predicted[track], rect(candidates[detection].detection.bbox));
            (overlap >= min_iou).then_some(1.0 - overlap)
        };
        // Leaving a pair unmatched costs what the weakest allowed match does,
        // so the optimum never trades a good match for two barely allowed
        // ones (ByteTrack's `lapjv` cost limit).
        assignment::assign(
            predicted.len(),
            candidates.len(),
            cost,
            1.0 - min_iou.clamp(0.0, 1.0),
        )
    }

    /// Confirms tentative tracks with enough hits (new events) and reports
    /// significant changes of confirmed ones (update events).
    fn confirm_and_publish(&mut self) -> Vec<TrackEvent> {
        let confirm_hits = self.config.confirm_hits.max(1);
        let mut events = Vec::new();
        for track in &mut self.tracks {
            if track.is_confirmed() {
                events.extend(track.publish_changes(self.config.top_score_step));
            } else if track.object().hits >= confirm_hits {
                self.last_track_id += 1;
                let suffix = random_suffix(&mut self.rng);
                let id = format!("{:.6}-{suffix}", track.object().start_time);
                events.push(track.confirm(id, self.last_track_id));
            }
        }
        events
    }
}

fn random_suffix(rng: &mut StdRng) -> String {
    (0..ID_SUFFIX_LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests;
