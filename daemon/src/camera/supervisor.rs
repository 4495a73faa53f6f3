//! A camera's thread: keeps its pipeline alive and turns sampled frames into triggered jobs.
//!
//! A pipeline that errors, ends (live sources), or delivers no frame for `no_frame_timeout` is torn
//! down and rebuilt after an exponential backoff (1 s doubling to 60 s, reset by the next frame).
//! Status changes (online, or offline with a reason) go to the MQTT session, which publishes them
//! retained. Everything here is per camera, so one bad camera never affects another.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::gst::{BusEvent, Running};
use super::scene::Thumbnail;
use super::sensors::SensorSchedule;
use super::source::Source;
use super::{CameraShared, Frame};
use crate::detection::slot::FrameSlot;
use crate::jobs::{Job, JobKind, JobQueue, Submitted, Trigger};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest blocking wait, so stop and enable flips are seen promptly.
const TICK: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq)]
pub struct CameraStatus {
    pub camera: String,
    pub online: bool,
    pub reason: Option<String>,
}

/// Starts the camera's thread. With `detect`, every frame pulled at the detector's rate is also
/// offered to its detector thread.
pub fn spawn(
    shared: Arc<CameraShared>,
    queue: Arc<JobQueue>,
    status: mpsc::Sender<CameraStatus>,
    detect: Option<Arc<FrameSlot>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("camera-{}", shared.name()))
        .spawn(move || Supervisor::new(shared, queue, status, detect).run())
}

struct Supervisor {
    shared: Arc<CameraShared>,
    queue: Arc<JobQueue>,
    status: mpsc::Sender<CameraStatus>,
    reported: Option<(bool, Option<String>)>,
    backoff: Duration,
    detect: Option<Arc<FrameSlot>>,
    /// When the next frame is due for the triggers (they sample at the camera's `fps`).
    next_trigger_sample: Option<Instant>,
    // Trigger state.
    reference: Option<Thumbnail>,
    last_trigger: Option<Instant>,
    last_scene: Option<Instant>,
    sensors: SensorSchedule,
}

impl Supervisor {
    fn new(
        shared: Arc<CameraShared>,
        queue: Arc<JobQueue>,
        status: mpsc::Sender<CameraStatus>,
        detect: Option<Arc<FrameSlot>>,
    ) -> Self {
        Supervisor {
            sensors: SensorSchedule::new(&shared.config),
            shared,
            queue,
            status,
            reported: None,
            backoff: MIN_BACKOFF,
            detect,
            next_trigger_sample: None,
            reference: None,
            last_trigger: None,
            last_scene: None,
        }
    }

    fn name(&self) -> &str {
        self.shared.name()
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn beat(&self) {
        self.shared
            .heartbeat
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    fn report(&mut self, online: bool, reason: Option<String>) {
        let state = (online, reason.clone());
        if self.reported.as_ref() == Some(&state) {
            return;
        }
        self.reported = Some(state);
        self.shared.online.store(online, Ordering::Relaxed);
        let camera = self.name().to_string();
        if online {
            log::info!(camera = camera.as_str(); "camera online");
        } else if matches!(reason.as_deref(), Some("stopped" | "disabled")) {
            log::info!(camera = camera.as_str(); "camera {}", reason.as_deref().unwrap_or_default());
        } else {
            log::warn!(camera = camera.as_str(); "camera offline: {}", reason.as_deref().unwrap_or("unknown"));
        }
        // blocking_send: status must not be lost; the session drains this channel continuously.
        let _ = self.status.blocking_send(CameraStatus {
            camera,
            online,
            reason,
        });
    }

    /// Sleeps `d` in ticks; false if asked to stop meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            self.beat();
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopping()
    }

    fn run(mut self) {
        let source = match Source::parse(&self.shared.config.source) {
            Ok(s) => s,
            Err(e) => {
                // Validated at load; kept so a bad source can never panic a thread.
                self.report(false, Some(e.to_string()));
                return;
            }
        };
        let max_rate = (1.0 / self.pull_period().as_secs_f64()).ceil() as u32;
        while !self.stopping() {
            self.beat();
            if !self.shared.is_enabled() {
                self.report(false, Some("disabled".into()));
                *self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.sleep(TICK);
                continue;
            }
            log::debug!(camera = self.name(); "starting {}", source.redacted());
            let failure = match Running::start(&source, max_rate) {
                Ok(running) => self.pump(&running, &source),
                Err(e) => Some(format!("{e:#}")),
            };
            let Some(reason) = failure else { continue };
            self.report(false, Some(reason));
            if !self.sleep(self.backoff) {
                break;
            }
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.report(false, Some("stopped".into()));
    }

    /// Frames are pulled at the faster of the camera's and the detector's rates.
    fn pull_period(&self) -> Duration {
        let camera = self.shared.config.sample_period();
        match &self.shared.config.detect {
            Some(d) if self.detect.is_some() => camera.min(Duration::from_secs_f64(1.0 / d.fps)),
            _ => camera,
        }
    }

    /// Runs until the pipeline fails (the reason), or until stopped or disabled (`None`).
    fn pump(&mut self, running: &Running, source: &Source) -> Option<String> {
        let period = self.pull_period();
        let timeout = self.shared.config.no_frame_timeout();
        let mut last_frame = Instant::now();
        let mut next_sample = Instant::now();
        loop {
            self.beat();
            if self.stopping() || !self.shared.is_enabled() {
                return None;
            }
            let wait = next_sample
                .saturating_duration_since(Instant::now())
                .min(TICK);
            match running.poll_bus(wait) {
                Some(BusEvent::Error(e)) => return Some(e),
                Some(BusEvent::Eos) if source.loops() => {
                    if let Err(e) = running.rewind() {
                        return Some(format!("{e:#}"));
                    }
                    continue;
                }
                Some(BusEvent::Eos) => return Some("end of stream".into()),
                None => {}
            }
            if Instant::now() < next_sample {
                continue;
            }
            match running.pull(Duration::from_millis(100)) {
                Ok(Some(frame)) => {
                    last_frame = Instant::now();
                    next_sample = last_frame + period;
                    self.backoff = MIN_BACKOFF;
                    self.report(true, None);
                    *self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(frame.clone());
                    if let Some(slot) = &self.detect {
                        slot.offer(frame.clone());
                    }
                    // Half a pull period early, so that jitter never costs a whole period.
                    let now = Instant::now();
                    if self.next_trigger_sample.is_none_or(|t| now >= t) {
                        self.next_trigger_sample =
                            Some(now + self.shared.config.sample_period() - period / 2);
                        self.on_frame(frame);
                    }
                }
                Ok(None) => {
                    if running.is_eos() && source.loops() {
                        if let Err(e) = running.rewind() {
                            return Some(format!("{e:#}"));
                        }
                    } else if last_frame.elapsed() >= timeout {
                        return Some(format!("no frame for {:.0} s", timeout.as_secs_f64()));
                    }
                }
                Err(e) => return Some(format!("{e:#}")),
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        self.ask_sensors(&frame);
        let config = &self.shared.config;
        let thumb = Thumbnail::of(&frame);
        let now = Instant::now();
        // A description by hand restarts the interval, as any other description does.
        if self
            .shared
            .described_on_demand
            .swap(false, Ordering::Relaxed)
        {
            self.last_trigger = Some(now);
            self.reference = Some(thumb.clone());
        }
        let due = |last: Option<Instant>, gap: Duration| {
            last.is_none_or(|t| now.duration_since(t) >= gap)
        };
        let trigger = if config.interval().is_some_and(|i| due(self.last_trigger, i)) {
            Some(Trigger::Interval)
        } else if let Some(reference) = &self.reference
            && config.scene_change > 0.0
        {
            let score = reference.difference(&thumb);
            (score >= config.scene_change
                && due(
                    self.last_scene,
                    Duration::from_secs_f64(config.scene_min_gap),
                ))
            .then_some(Trigger::SceneChange { score })
        } else {
            None
        };
        if self.reference.is_none() {
            self.reference = Some(thumb.clone());
        }
        let Some(trigger) = trigger else { return };
        if matches!(trigger, Trigger::SceneChange { .. }) {
            self.last_scene = Some(now);
        }
        // Any description restarts the interval: it is a "at least every N seconds" heartbeat.
        self.last_trigger = Some(now);
        self.reference = Some(thumb);
        let job = Job {
            id: crate::clock::new_id(),
            camera: config.clone(),
            kind: JobKind::Describe {
                trigger: trigger.clone(),
            },
            frame,
            queued: SystemTime::now(),
        };
        let id = job.id.clone();
        let outcome = match self.queue.submit_trigger(job) {
            Submitted::Queued => "queued",
            Submitted::Replaced => "queued (replaced a stale job)",
            Submitted::Skipped => "skipped: a first-sight description of this camera is under way",
            Submitted::Closed => "not queued: lookout is stopping",
        };
        log::debug!(camera = self.name(), trigger = trigger.name(), event_id = id.as_str(); "{outcome}");
    }

    /// Queues the sensors due on this frame, in one job: they share its encoding.
    fn ask_sensors(&mut self, frame: &Frame) {
        let config = self.shared.config.clone();
        let Some(due) = self.sensors.due(&config, frame, Instant::now()) else {
            return;
        };
        let job = Job {
            id: crate::clock::new_id(),
            camera: config,
            kind: JobKind::Sense {
                sensors: due.sensors,
                trigger: due.trigger.to_string(),
            },
            frame: frame.clone(),
            queued: SystemTime::now(),
        };
        let id = job.id.clone();
        let outcome = match self.queue.submit_trigger(job) {
            Submitted::Queued | Submitted::Skipped => "sensors queued",
            Submitted::Replaced => "sensors queued (with those still waiting)",
            Submitted::Closed => "sensors not queued: lookout is stopping",
        };
        log::debug!(camera = self.name(), trigger = due.trigger, event_id = id.as_str(); "{outcome}");
    }
}
