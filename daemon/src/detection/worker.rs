//! A camera's detector thread: newest frame in, tracked objects out.
//!
//! Per frame: detect, track, then report what changed (events, counts, a snapshot of a new best
//! view, the `detections` message when due) and queue first-sight descriptions. The detector
//! loads here, not at start-up: a detector that fails to load leaves its camera describing, and
//! says why on `<camera>/detector`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
use crate::jobs::{Job, JobKind, JobQueue, ObjectTrigger, Trigger};

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
    config: DetectConfig,
    slot: Arc<FrameSlot>,
    queue: Arc<JobQueue>,
    out: mpsc::Sender<DetectionMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("detect-{}", shared.name()))
        .spawn(move || {
            let camera = shared.name().to_string();
            let worker = match Worker::new(shared, config, slot.clone(), queue, out.clone()) {
                Ok(w) => w,
                Err(e) => {
                    log::error!(camera = camera.as_str(); "object detection is off: {e:#}");
                    let payload = json!({ "state": "error", "error": format!("{e:#}") });
                    let _ = out.blocking_send(DetectionMsg::Status {
                        camera,
                        payload: payload.to_string(),
                    });
                    return;
                }
            };
            worker.run();
        })
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
    stats: Stats,
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
            stats: Stats::default(),
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
        let counts = self.counts_changed();
        self.send(FrameReport {
            camera: self.name().to_string(),
            frame_size: (0, 0),
            events,
            counts,
            detections: None,
            snapshots: Vec::new(),
        });
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
        let time = unix_seconds(frame.captured);
        let events = self
            .tracker
            .update(&found.detections, time, frame.width, frame.height);
        let mut snapshots = Vec::new();
        for event in &events {
            if shows_a_better_view(event) {
                match self.snapshot(frame, &event.after) {
                    Ok(jpeg) => snapshots.push(Snapshot {
                        object_id: event.after.id.clone(),
                        label: event.after.label.clone(),
                        jpeg,
                    }),
                    Err(e) => log::warn!(camera = self.name(); "object snapshot failed: {e:#}"),
                }
            }
            self.maybe_describe(frame, event);
        }
        let counts = self.counts_changed();
        let detections = (self.config.detections_fps > 0.0
            && Instant::now() >= self.next_detections)
            .then(|| {
                self.next_detections =
                    Instant::now() + Duration::from_secs_f64(1.0 / self.config.detections_fps);
                Detection2DArray::of(
                    self.name(),
                    frame.captured,
                    self.tracker.objects().filter(|o| !o.lost),
                )
            });
        self.send(FrameReport {
            camera: self.name().to_string(),
            frame_size: (frame.width, frame.height),
            events,
            counts,
            detections,
            snapshots,
        });
        self.stats.frames += 1;
        self.stats.busy += started.elapsed();
        self.stats.since.get_or_insert_with(Instant::now);
    }

    /// The count topics whose value changed since last published, updated.
    fn counts_changed(&mut self) -> Vec<(String, usize)> {
        let mut now: BTreeMap<String, usize> = self.counts.keys().map(|k| (k.clone(), 0)).collect();
        for object in self.tracker.objects() {
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
    let mut rgb = Vec::with_capacity((cw * ch * 3) as usize);
    for y in top..top + ch {
        let start = ((y * frame.width + left) * 3) as usize;
        rgb.extend_from_slice(&frame.rgb[start..start + (cw * 3) as usize]);
    }
    Frame {
        width: cw,
        height: ch,
        rgb: Arc::new(rgb),
        captured: frame.captured,
    }
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
