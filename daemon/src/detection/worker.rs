//! A camera's detector thread: newest frame in, tracked objects out.
//!
//! Per frame: detect, track, then report what changed (events, counts, a snapshot of a new best
//! view, the `detections` message when due) and queue first-sight descriptions. The detector
//! loads here, not at start-up: a detector that fails to load leaves its camera describing, and
//! says why on `<camera>/detector`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lookout_pipeline::detect::{Detector, DetectorOptions, Thresholds};
use lookout_pipeline::track::{
    Change, EventKind, Polygon, TrackEvent, TrackedObject, Tracker, TrackerConfig, ZoneConfig,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::payloads::Detection2DArray;
use super::slot::FrameSlot;
use super::{DetectionMsg, FrameReport, Snapshot};
use crate::camera::{CameraShared, Frame};
use crate::config::detect::DetectConfig;
use crate::config::sensor::SensorTrigger;
use crate::config::{DetectorDownload, DetectorSource};
use crate::jobs::{Job, JobKind, JobQueue, ObjectTrigger, Trigger, Verdict, VerifyRequest};

/// Longest wait for a frame, so a stop is seen promptly.
const TICK: Duration = Duration::from_millis(250);
/// How often `<camera>/detector` reports the measured rate.
const STATS_EVERY: Duration = Duration::from_secs(10);
/// Padding around an object's box for a cropped description, as a fraction of the box size.
const CROP_PADDING: f32 = 0.25;
/// The smallest crop side given to the language model, in pixels.
const MIN_CROP: u32 = 224;

pub fn spawn(
    shared: Arc<CameraShared>,
    mut config: DetectConfig,
    source: DetectorSource,
    slot: Arc<FrameSlot>,
    queue: Arc<JobQueue>,
    out: mpsc::Sender<DetectionMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("detect-{}", shared.name()))
        .spawn(move || {
            let camera = shared.name().to_string();
            let status = |payload: serde_json::Value| {
                let _ = out.blocking_send(DetectionMsg::Status {
                    camera: camera.clone(),
                    payload: payload.to_string(),
                });
            };
            let started = fetch(&camera, &source, &status).and_then(|path| {
                config.model = Some(path);
                Worker::new(shared, config, slot.clone(), queue, out.clone())
            });
            match started {
                Ok(worker) => worker.run(),
                Err(e) => {
                    log::error!(camera = camera.as_str(); "object detection is off: {e:#}");
                    status(json!({ "state": "error", "error": format!("{e:#}") }));
                }
            }
        })
}

/// The detector's file, fetched first when it is a hub file not downloaded yet.
fn fetch(
    camera: &str,
    source: &DetectorSource,
    status: &dyn Fn(serde_json::Value),
) -> anyhow::Result<PathBuf> {
    let Some(DetectorDownload { hub, file, cache }) =
        source.download.as_ref().filter(|_| !source.path.is_file())
    else {
        return Ok(source.path.clone());
    };
    let what = format!(
        "{hub}/{}@{}/{}",
        file.repo.repo, file.repo.revision, file.path
    );
    log::info!(camera = camera; "downloading detector {what}");
    status(json!({ "state": "downloading", "model": what }));
    let path = lookout_models::hub::fetch_file(hub, file, cache)
        .with_context(|| format!("detect.model: cannot download {what}"))?;
    log::info!(camera = camera; "detector downloaded to {}", path.display());
    Ok(path)
}

/// The camera's detector, as its `detect` table says.
pub fn load_detector(config: &DetectConfig) -> anyhow::Result<Detector> {
    let model = config
        .model
        .clone()
        .ok_or_else(|| anyhow::anyhow!("detect.model is not set"))?;
    let options = DetectorOptions {
        input_size: config.input_size.map(|[w, h]| (w, h)),
        labels_file: config.labels_file.clone(),
        layout: config
            .layout
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        normalize: None,
        threads: config.threads,
    };
    Ok(Detector::load(&model, &options)?)
}

/// The tracker's settings from the camera's `detect` table (validated already).
pub fn tracker_config(c: &DetectConfig) -> anyhow::Result<TrackerConfig> {
    let polygon =
        |points: &[[f64; 2]]| Polygon::new(points.to_vec()).map_err(|e| anyhow::anyhow!("{e}"));
    Ok(TrackerConfig {
        labels: c.labels.clone(),
        min_score: c.min_score as f32,
        min_scores: c
            .min_scores
            .iter()
            .map(|(l, s)| (l.clone(), *s as f32))
            .collect(),
        low_score: c.track_score as f32,
        min_area: c.min_area as f32,
        max_area: c.max_area as f32,
        masks: c
            .masks
            .iter()
            .map(|m| polygon(m))
            .collect::<Result<_, _>>()?,
        zones: c
            .zones
            .iter()
            .map(|z| {
                Ok(ZoneConfig {
                    name: z.name.clone(),
                    polygon: polygon(&z.points)?,
                    inertia: z.inertia,
                    labels: z.labels.clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        stationary_after: c.stationary_after,
        max_lost: c.max_lost,
        confirm_hits: c.confirm_frames,
        ..TrackerConfig::default()
    })
}

struct Worker {
    shared: Arc<CameraShared>,
    config: DetectConfig,
    slot: Arc<FrameSlot>,
    queue: Arc<JobQueue>,
    out: mpsc::Sender<DetectionMsg>,
    detector: Detector,
    thresholds: Thresholds,
    tracker: Tracker,
    /// Count topics and their last published values.
    counts: BTreeMap<String, usize>,
    described: HashSet<String>,
    next_detections: Instant,
    last_frame: Instant,
    /// The latest frame's size: the `region` of the events published.
    last_size: (u32, u32),
    stats: Stats,
    verify: Verification,
}

/// New objects waiting for the language model's yes or no before they are announced, and those
/// it said no to, whose events are never published.
struct Verification {
    reply: Sender<Verdict>,
    verdicts: Receiver<Verdict>,
    /// Each held object's events so far, `new` first, with the frame of each.
    held: HashMap<String, Vec<(Frame, TrackEvent)>>,
    rejected: HashSet<String>,
    kept: u64,
    dropped: u64,
    /// Checks that failed or could not be queued: their objects are announced unchecked.
    failed: u64,
    /// Milliseconds from `new` held to its verdict, the latest ones.
    waits_ms: Vec<f64>,
}

/// Verdict waits kept for the status report's median.
const WAITS_KEPT: usize = 64;

impl Verification {
    fn new() -> Verification {
        let (reply, verdicts) = channel();
        Verification {
            reply,
            verdicts,
            held: HashMap::new(),
            rejected: HashSet::new(),
            kept: 0,
            dropped: 0,
            failed: 0,
            waits_ms: Vec::new(),
        }
    }

    /// Whether `id`'s events are not published (yet, or ever).
    fn hides(&self, id: &str) -> bool {
        self.held.contains_key(id) || self.rejected.contains(id)
    }

    /// Holds or drops an event of an object being checked or dropped; gives it back otherwise.
    fn intercept(&mut self, frame: &Frame, event: TrackEvent) -> Option<TrackEvent> {
        let id = &event.after.id;
        if self.rejected.contains(id) {
            if event.kind == EventKind::End {
                self.rejected.remove(id);
            }
            return None;
        }
        match self.held.get_mut(id) {
            Some(events) => {
                events.push((frame.clone(), event));
                None
            }
            None => Some(event),
        }
    }

    /// The held events of every object a verdict has come for, in order; objects it said no
    /// to (below `threshold`) are dropped.
    fn released(&mut self, camera: &str, threshold: f64) -> Vec<(Frame, TrackEvent)> {
        let mut out = Vec::new();
        while let Ok(verdict) = self.verdicts.try_recv() {
            let Some(events) = self.held.remove(&verdict.object_id) else {
                continue;
            };
            if self.waits_ms.len() == WAITS_KEPT {
                self.waits_ms.remove(0);
            }
            self.waits_ms.push(verdict.waited.as_secs_f64() * 1e3);
            let label = &events[0].1.after.label;
            match verdict.yes {
                Ok(yes) if yes < threshold => {
                    log::info!(camera = camera, event_id = verdict.object_id.as_str(); "{label} dropped: the model says it is not one (yes {yes:.2} < verify_threshold {threshold})");
                    self.dropped += 1;
                    let ended = events.iter().any(|(_, e)| e.kind == EventKind::End);
                    if !ended {
                        self.rejected.insert(verdict.object_id);
                    }
                }
                Ok(_) => {
                    self.kept += 1;
                    out.extend(events);
                }
                Err(e) => {
                    log::warn!(camera = camera, event_id = verdict.object_id.as_str(); "{label} announced unchecked: {e}");
                    self.failed += 1;
                    out.extend(events);
                }
            }
        }
        out
    }

    fn status(&self) -> serde_json::Value {
        let mut waits = self.waits_ms.clone();
        waits.sort_by(f64::total_cmp);
        json!({
            "waiting": self.held.len(),
            "kept": self.kept,
            "dropped": self.dropped,
            "failed": self.failed,
            "wait_ms_median": waits.get(waits.len() / 2).map(|w| w.round()),
        })
    }
}

#[derive(Default)]
struct Stats {
    frames: u64,
    busy: Duration,
    since: Option<Instant>,
    last_error: Option<String>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Worker {
    fn new(
        shared: Arc<CameraShared>,
        config: DetectConfig,
        slot: Arc<FrameSlot>,
        queue: Arc<JobQueue>,
        out: mpsc::Sender<DetectionMsg>,
    ) -> anyhow::Result<Worker> {
        let detector = load_detector(&config)?;
        let model = detector.path().to_path_buf();
        let unknown: Vec<&String> = config
            .labels
            .iter()
            .filter(|l| !detector.labels().contains(l))
            .collect();
        if !unknown.is_empty() {
            log::warn!(camera = shared.name(); "the detector {} has no class {unknown:?}: those labels are never seen", model.display());
        }
        let (w, h) = detector.input_size();
        log::info!(
            camera = shared.name();
            "detector {} loaded: {} layout, input {w}x{h}, {} classes, {} fps",
            model.display(), detector.layout().kind, detector.labels().len(), config.fps
        );
        let tracker = Tracker::new(tracker_config(&config)?, seed(shared.name()));
        let mut counts = BTreeMap::new();
        for label in &config.labels {
            counts.insert(label.clone(), 0);
            for zone in &config.zones {
                if zone.labels.is_empty() || zone.labels.contains(label) {
                    counts.insert(format!("{}/{label}", zone.name), 0);
                }
            }
        }
        let thresholds = Thresholds {
            min_score: config.track_score as f32,
            iou: config.iou as f32,
            max_detections: 300,
        };
        let worker = Worker {
            shared,
            config,
            slot,
            queue,
            out,
            detector,
            thresholds,
            tracker,
            counts,
            described: HashSet::new(),
            next_detections: Instant::now(),
            last_frame: Instant::now(),
            last_size: (0, 0),
            stats: Stats::default(),
            verify: Verification::new(),
        };
        // Every count starts at zero, so Home Assistant shows 0 rather than "unknown".
        let zeros = worker.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        worker.send(FrameReport {
            camera: worker.name().to_string(),
            frame_size: (0, 0),
            events: Vec::new(),
            counts: zeros,
            detections: None,
            snapshots: Vec::new(),
        });
        Ok(worker)
    }

    fn name(&self) -> &str {
        self.shared.name()
    }

    fn send(&self, report: FrameReport) {
        if !report.is_empty() {
            // blocking_send: reports must not be lost; the session drains this channel.
            let _ = self.out.blocking_send(DetectionMsg::Frame(report));
        }
    }

    fn run(mut self) {
        self.status("running");
        loop {
            if self.shared.stop.load(Ordering::Relaxed) || self.slot.is_closed() {
                break;
            }
            match self.slot.take(TICK) {
                Some(frame) => {
                    self.last_frame = Instant::now();
                    self.process(&frame);
                }
                None => {
                    let released = self
                        .verify
                        .released(self.shared.name(), self.config.verify_threshold);
                    self.report(released, None);
                    // No frames (camera offline or disabled): objects cannot be seen leaving.
                    if self.last_frame.elapsed().as_secs_f64() > self.config.max_lost {
                        self.finish();
                    }
                }
            }
            if self.stats.since.is_some_and(|s| s.elapsed() >= STATS_EVERY) {
                self.status("running");
            }
        }
        self.finish();
        self.status("stopped");
    }

    fn finish(&mut self) {
        let events = self.tracker.finish(unix_seconds(SystemTime::now()));
        if events.is_empty() {
            return;
        }
        // Ends carry no pixels: an empty frame stands in for them.
        let none = Frame {
            width: 0,
            height: 0,
            rgb: Arc::new(Vec::new()),
            captured: SystemTime::now(),
        };
        let ready = events
            .into_iter()
            .filter_map(|e| self.verify.intercept(&none, e))
            .map(|e| (none.clone(), e))
            .collect();
        self.report(ready, None);
    }

    fn process(&mut self, frame: &Frame) {
        let started = Instant::now();
        let found =
            match self
                .detector
                .detect(&frame.rgb, frame.width, frame.height, &self.thresholds)
            {
                Ok(found) => found,
                Err(e) => {
                    let e = e.to_string();
                    if self.stats.last_error.as_ref() != Some(&e) {
                        log::warn!(camera = self.name(); "detection failed: {e}");
                        self.stats.last_error = Some(e);
                    }
                    return;
                }
            };
        self.stats.last_error = None;
        self.last_size = (frame.width, frame.height);
        let time = unix_seconds(frame.captured);
        let events = self
            .tracker
            .update(&found.detections, time, frame.width, frame.height);
        let mut ready = self
            .verify
            .released(self.shared.name(), self.config.verify_threshold);
        for event in events {
            let Some(event) = self.verify.intercept(frame, event) else {
                continue;
            };
            if event.kind == EventKind::New && self.hold_for_verification(frame, &event) {
                continue;
            }
            ready.push((frame.clone(), event));
        }
        let detections = (self.config.detections_fps > 0.0
            && Instant::now() >= self.next_detections)
            .then(|| {
                self.next_detections =
                    Instant::now() + Duration::from_secs_f64(1.0 / self.config.detections_fps);
                Detection2DArray::of(
                    self.name(),
                    frame.captured,
                    self.tracker
                        .objects()
                        .filter(|o| !o.lost && !self.verify.hides(&o.id)),
                )
            });
        self.report(ready, detections);
        self.stats.frames += 1;
        self.stats.busy += started.elapsed();
        self.stats.since.get_or_insert_with(Instant::now);
    }

    /// Publishes `ready` events (snapshots of new best views with them, first-sight
    /// descriptions queued), the counts that changed, and `detections` when due.
    fn report(&mut self, ready: Vec<(Frame, TrackEvent)>, detections: Option<Detection2DArray>) {
        let mut snapshots = Vec::new();
        let mut events = Vec::with_capacity(ready.len());
        for (frame, event) in ready {
            if frame.width > 0 && shows_a_better_view(&event) {
                match self.snapshot(&frame, &event.after) {
                    Ok(jpeg) => snapshots.push(Snapshot {
                        object_id: event.after.id.clone(),
                        label: event.after.label.clone(),
                        jpeg,
                    }),
                    Err(e) => log::warn!(camera = self.name(); "object snapshot failed: {e:#}"),
                }
            }
            if frame.width > 0 {
                self.maybe_describe(&frame, &event);
                self.maybe_sense(&frame, &event);
            }
            events.push(event);
        }
        let counts = self.counts_changed();
        self.send(FrameReport {
            camera: self.name().to_string(),
            frame_size: self.last_size,
            events,
            counts,
            detections,
            snapshots,
        });
    }

    /// Queues the `verify` check of a new object, if its label is checked; `false` when it is
    /// not, or the check could not be queued (it is then announced unchecked).
    fn hold_for_verification(&mut self, frame: &Frame, event: &TrackEvent) -> bool {
        let object = &event.after;
        let zone = object
            .current_zones
            .first()
            .map(String::as_str)
            .unwrap_or("");
        let Some(question) = self
            .config
            .verify_question(&object.label, self.name(), zone)
        else {
            return false;
        };
        let job = Job {
            id: crate::clock::new_id(),
            camera: self.shared.config.clone(),
            kind: JobKind::Verify(VerifyRequest {
                object_id: object.id.clone(),
                question,
                reply: self.verify.reply.clone(),
            }),
            frame: crop(frame, object.bbox),
            queued: SystemTime::now(),
        };
        if self.queue.submit_verify(job).is_err() {
            log::warn!(camera = self.name(), event_id = object.id.as_str(); "{} announced unchecked: the queue is full (daemon.queue_capacity)", object.label);
            self.verify.failed += 1;
            return false;
        }
        self.verify
            .held
            .insert(object.id.clone(), vec![(frame.clone(), event.clone())]);
        true
    }

    /// The count topics whose value changed since last published, updated.
    fn counts_changed(&mut self) -> Vec<(String, usize)> {
        let mut now: BTreeMap<String, usize> = self.counts.keys().map(|k| (k.clone(), 0)).collect();
        for object in self.tracker.objects() {
            if self.verify.hides(&object.id) {
                continue;
            }
            if let Some(n) = now.get_mut(&object.label) {
                *n += 1;
            }
            for zone in &object.current_zones {
                if let Some(n) = now.get_mut(&format!("{zone}/{}", object.label)) {
                    *n += 1;
                }
            }
        }
        let changed: Vec<(String, usize)> = now
            .iter()
            .filter(|(k, v)| self.counts.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        self.counts = now;
        changed
    }

    fn snapshot(&self, frame: &Frame, object: &TrackedObject) -> anyhow::Result<Vec<u8>> {
        let mut rgb = frame.rgb.to_vec();
        draw_box(&mut rgb, frame.width, frame.height, object.bbox);
        let framed = Frame {
            rgb: Arc::new(rgb),
            ..frame.clone()
        };
        let c = &self.shared.config;
        crate::snapshot::jpeg(&framed, c.snapshot_width, c.snapshot_quality)
    }

    /// Queues the first-sight description of a new object of a `describe_on` label (in one of
    /// `describe_zones`, when given), once per object.
    fn maybe_describe(&mut self, frame: &Frame, event: &TrackEvent) {
        let object = &event.after;
        let c = &self.config;
        if event.kind == EventKind::End
            || !c.describe_on.contains(&object.label)
            || self.described.contains(&object.id)
        {
            return;
        }
        let zone = if c.describe_zones.is_empty() {
            if event.kind != EventKind::New {
                return;
            }
            object.current_zones.first().cloned().unwrap_or_default()
        } else {
            match event.changes.iter().find_map(|ch| match ch {
                Change::EnteredZone(z) if c.describe_zones.contains(z) => Some(z.clone()),
                _ => None,
            }) {
                Some(z) => z,
                None => return,
            }
        };
        self.described.insert(object.id.clone());
        let image = if c.describe_crop {
            crop(frame, object.bbox)
        } else {
            frame.clone()
        };
        let job = Job {
            id: crate::clock::new_id(),
            camera: self.shared.config.clone(),
            kind: JobKind::Describe {
                trigger: Trigger::Object(ObjectTrigger {
                    object_id: object.id.clone(),
                    label: object.label.clone(),
                    prompt: c.prompt_for(&object.label, self.name(), &zone),
                    max_tokens: c.describe_max_tokens,
                }),
            },
            frame: image,
            queued: SystemTime::now(),
        };
        match self.queue.submit_on_demand(job) {
            Ok(()) => {
                log::debug!(camera = self.name(), event_id = object.id.as_str(); "first-sight description queued")
            }
            Err(_) => {
                log::warn!(camera = self.name(), event_id = object.id.as_str(); "first-sight description not queued: the queue is full (daemon.queue_capacity)")
            }
        }
    }

    /// Queues the sensors that ask when a new object of its label is announced.
    fn maybe_sense(&mut self, frame: &Frame, event: &TrackEvent) {
        if event.kind != EventKind::New {
            return;
        }
        let label = &event.after.label;
        let trigger = SensorTrigger::Label(label.clone());
        let sensors: Vec<String> = self
            .shared
            .config
            .sensors
            .iter()
            .filter(|s| s.asks_on(&trigger))
            .map(|s| s.name.clone())
            .collect();
        if sensors.is_empty() {
            return;
        }
        let job = Job {
            id: crate::clock::new_id(),
            camera: self.shared.config.clone(),
            kind: JobKind::Sense {
                sensors,
                trigger: label.clone(),
            },
            frame: frame.clone(),
            queued: SystemTime::now(),
        };
        if self.queue.submit_trigger(job) == crate::jobs::Submitted::Closed {
            log::debug!(camera = self.name(); "sensors not queued: lookout is stopping");
        }
    }

    fn status(&mut self, state: &str) {
        let (fps, inference_ms) = match self.stats.since {
            Some(since) if self.stats.frames > 0 => (
                self.stats.frames as f64 / since.elapsed().as_secs_f64().max(1e-3),
                self.stats.busy.as_secs_f64() * 1e3 / self.stats.frames as f64,
            ),
            _ => (0.0, 0.0),
        };
        let (w, h) = self.detector.input_size();
        let payload = json!({
            "state": state,
            "model": self.detector.path().display().to_string(),
            "layout": self.detector.layout().kind.to_string(),
            "input_size": [w, h],
            "fps": (fps * 100.0).round() / 100.0,
            "frame_ms": (inference_ms * 10.0).round() / 10.0,
            "skipped_frames": self.slot.skipped(),
            "error": self.stats.last_error,
        });
        let mut payload = payload;
        if self.config.verify.is_some() {
            payload["verify"] = self.verify.status();
        }
        self.stats = Stats {
            last_error: self.stats.last_error.take(),
            since: Some(Instant::now()),
            ..Stats::default()
        };
        let _ = self.out.blocking_send(DetectionMsg::Status {
            camera: self.name().to_string(),
            payload: payload.to_string(),
        });
    }
}

/// A snapshot is worth publishing when the object is new or its top score rose.
fn shows_a_better_view(event: &TrackEvent) -> bool {
    match event.kind {
        EventKind::New => true,
        EventKind::Update => event.changes.iter().any(|c| matches!(c, Change::TopScore)),
        EventKind::End => false,
    }
}

/// A deterministic id seed per camera: ids differ between cameras and between runs (time).
fn seed(camera: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in camera.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// A 2-pixel (wider on big frames) box outline in a colour that stands out on most scenes.
fn draw_box(rgb: &mut [u8], width: u32, height: u32, bbox: [f32; 4]) {
    const COLOUR: [u8; 3] = [255, 48, 48];
    let (w, h) = (width as i64, height as i64);
    let thickness = (w.max(h) / 480).max(2);
    let clamp = |v: f32, max: i64| (v.round() as i64).clamp(0, max - 1);
    let (x1, y1, x2, y2) = (
        clamp(bbox[0], w),
        clamp(bbox[1], h),
        clamp(bbox[2], w),
        clamp(bbox[3], h),
    );
    let mut paint = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&COLOUR);
        }
    };
    for t in 0..thickness {
        for x in x1..=x2 {
            paint(x, y1 + t);
            paint(x, y2 - t);
        }
        for y in y1..=y2 {
            paint(x1 + t, y);
            paint(x2 - t, y);
        }
    }
}

/// The object's box with [`CROP_PADDING`] around it, at least [`MIN_CROP`] pixels a side
/// (where the frame allows), inside the frame.
fn crop(frame: &Frame, bbox: [f32; 4]) -> Frame {
    let (fw, fh) = (frame.width as f32, frame.height as f32);
    let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    let side = |size: f32, frame_size: f32| {
        (size * (1.0 + 2.0 * CROP_PADDING))
            .max(MIN_CROP as f32)
            .min(frame_size)
    };
    let (cw, ch) = (side(bw, fw), side(bh, fh));
    let left = ((bbox[0] + bbox[2] - cw) / 2.0).clamp(0.0, fw - cw) as u32;
    let top = ((bbox[1] + bbox[3] - ch) / 2.0).clamp(0.0, fh - ch) as u32;
    let (cw, ch) = ((cw as u32).max(1), (ch as u32).max(1));
    frame.crop(left, top, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: u32, height: u32) -> Frame {
        Frame {
            width,
            height,
            rgb: Arc::new((0..width * height * 3).map(|i| (i % 251) as u8).collect()),
            captured: SystemTime::now(),
        }
    }

    #[test]
    fn crops_stay_inside_the_frame() {
        let f = frame(640, 480);
        let c = crop(&f, [600.0, 400.0, 640.0, 480.0]);
        assert_eq!((c.width, c.height), (224, 224));
        assert_eq!(c.rgb.len(), 224 * 224 * 3);
        // Bottom-right aligned: the crop's last pixel is the frame's last pixel.
        assert_eq!(c.rgb[c.rgb.len() - 3..], f.rgb[f.rgb.len() - 3..]);
        let big = crop(&f, [0.0, 0.0, 640.0, 480.0]);
        assert_eq!((big.width, big.height), (640, 480));
        let tiny = crop(&frame(100, 50), [10.0, 10.0, 20.0, 20.0]);
        assert_eq!((tiny.width, tiny.height), (100, 50));
    }

    /// Two people confirmed on the second frame (`new` each), then gone until both end.
    fn two_people() -> (Vec<TrackEvent>, Vec<TrackEvent>) {
        use lookout_pipeline::detect::Detection;
        let mut tracker = Tracker::new(TrackerConfig::default(), 7);
        let person = |x: f32| Detection {
            class_id: 0,
            label: "person".into(),
            score: 0.9,
            bbox: [x, 100.0, x + 100.0, 400.0],
        };
        let both = [person(50.0), person(400.0)];
        let mut new = tracker.update(&both, 0.0, 640, 480);
        new.extend(tracker.update(&both, 0.2, 640, 480));
        let mut end = Vec::new();
        for i in 0..30 {
            end.extend(tracker.update(&[], 0.4 + i as f64 * 0.2, 640, 480));
        }
        (new, end)
    }

    #[test]
    fn verdicts_release_held_objects_in_order_or_drop_them_for_good() {
        let (new, end) = two_people();
        assert_eq!((new.len(), end.len()), (2, 2));
        let f = frame(4, 4);
        let mut v = Verification::new();
        let (kept, dropped) = (new[0].after.id.clone(), new[1].after.id.clone());
        for event in &new {
            v.held
                .insert(event.after.id.clone(), vec![(f.clone(), event.clone())]);
        }
        assert!(v.hides(&kept) && v.hides(&dropped));
        assert!(v.released("yard", 0.5).is_empty(), "no verdict yet");

        let verdict = |id: &str, yes| Verdict {
            object_id: id.into(),
            yes,
            waited: Duration::from_millis(40),
        };
        v.reply.send(verdict(&kept, Ok(0.7))).unwrap();
        v.reply.send(verdict(&dropped, Ok(0.3))).unwrap();
        let released = v.released("yard", 0.5);
        assert_eq!(released.len(), 1);
        assert_eq!(
            (released[0].1.kind, &released[0].1.after.id),
            (EventKind::New, &kept)
        );
        assert!(!v.hides(&kept) && v.hides(&dropped));
        assert_eq!((v.kept, v.dropped, v.failed), (1, 1, 0));

        // The kept object's end passes; the dropped one's is swallowed, and it is forgotten.
        let passed: Vec<TrackEvent> = end.into_iter().filter_map(|e| v.intercept(&f, e)).collect();
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[0].after.id, kept);
        assert!(v.rejected.is_empty());
        assert_eq!(v.status()["wait_ms_median"], 40.0);
    }

    #[test]
    fn a_failed_check_announces_the_object_with_what_happened_meanwhile() {
        let (new, end) = two_people();
        let f = frame(4, 4);
        let mut v = Verification::new();
        let id = new[0].after.id.clone();
        v.held.insert(id.clone(), vec![(f.clone(), new[0].clone())]);
        // Its end arrives while the check runs: held behind the `new`.
        let end = end.into_iter().find(|e| e.after.id == id).unwrap();
        assert!(v.intercept(&f, end).is_none());
        v.reply
            .send(Verdict {
                object_id: id.clone(),
                yes: Err("inference failed".into()),
                waited: Duration::ZERO,
            })
            .unwrap();
        let kinds: Vec<EventKind> = v
            .released("yard", 0.5)
            .iter()
            .map(|(_, e)| e.kind)
            .collect();
        assert_eq!(kinds, [EventKind::New, EventKind::End]);
        assert_eq!(v.failed, 1);
    }

    #[test]
    fn boxes_are_drawn_inside_the_frame() {
        let mut rgb = vec![0u8; 100 * 50 * 3];
        draw_box(&mut rgb, 100, 50, [-10.0, 10.0, 200.0, 40.0]);
        let at = |x: usize, y: usize| &rgb[(y * 100 + x) * 3..(y * 100 + x) * 3 + 3];
        assert_eq!(at(50, 10), [255, 48, 48]);
        assert_eq!(at(0, 25), [255, 48, 48]);
        assert_eq!(at(50, 25), [0, 0, 0]);
    }
}
