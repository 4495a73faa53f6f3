//! One model serves every camera: a bounded job queue and the worker thread that owns the
//! [`Engine`].
//!
//! Ordering: on-demand jobs (questions, "describe now") go first, in arrival order, up to a
//! capacity (more are refused, never queued without bound). Triggered descriptions hold at most
//! one slot per camera: a newer trigger replaces the camera's stale queued one, because describing
//! an old frame late is worse than describing the current one. Inference is blocking CPU work, so
//! it runs on a plain thread, never on the async runtime.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lookout_pipeline::answer::{Answer, AnswerKind, Question, Value};
use lookout_pipeline::engine::{Cancel, Cancelled, Description, Engine, EngineOptions, Request};
use lookout_pipeline::sampler::SamplingParams;
use lookout_pipeline::seen::{ReusePolicy, Seen};

use crate::camera::{Frame, Rect};
use crate::config::CameraConfig;
use crate::config::sensor::SensorConfig;

#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    Interval,
    SceneChange {
        score: f64,
    },
    /// `describe/set` or the Home Assistant button.
    OnDemand,
    /// A new tracked object, described at first sight.
    Object(ObjectTrigger),
}

/// What a first-sight description is about, and how to ask for it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectTrigger {
    /// The tracked object's id (as in `events`).
    pub object_id: String,
    pub label: String,
    /// The camera's per-label prompt, placeholders filled in.
    pub prompt: String,
    pub max_tokens: usize,
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::SceneChange { .. } => "scene_change",
            Trigger::OnDemand => "on_demand",
            Trigger::Object(_) => "object",
        }
    }
}

#[derive(Clone, Debug)]
pub enum JobKind {
    Describe {
        trigger: Trigger,
    },
    Ask {
        question: String,
        /// Where an MQTT 5 asker wants the answer as well.
        reply: Option<crate::mqtt::Reply>,
        /// The answer's type; `None` is free text, as a description.
        answer: Option<AnswerKind>,
    },
    /// A yes/no check of a new object before it is announced; the verdict goes back to the
    /// camera's detector thread, not to MQTT.
    Verify(VerifyRequest),
    /// The camera's standing questions (`[[camera.sensor]]`) named here, answered together.
    Sense {
        sensors: Vec<String>,
        /// What asked: `start`, `scene_change`, `interval` or a tracked label.
        trigger: String,
    },
}

#[derive(Clone, Debug)]
pub struct VerifyRequest {
    pub object_id: String,
    /// The camera's `verify` question, placeholders filled in.
    pub question: String,
    pub reply: std::sync::mpsc::Sender<Verdict>,
}

/// The answer to a [`VerifyRequest`].
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub object_id: String,
    /// The model's share of "yes" against "no", or why there is none.
    pub yes: Result<f64, String>,
    /// From queued to answered.
    pub waited: Duration,
}

#[derive(Clone, Debug)]
pub struct Job {
    /// The id of the resulting description or answer (for an ask: the asker's id).
    pub id: String,
    pub camera: Arc<CameraConfig>,
    pub kind: JobKind,
    pub frame: Frame,
    pub queued: SystemTime,
}

/// What a job made.
#[derive(Clone, Debug)]
pub enum Output {
    /// A description, or a free-text answer.
    Text(Description),
    /// A typed answer (yes/no, a choice, a number, short text).
    Typed(Answer),
    /// Each sensor's answer, or why it has none.
    Sensors(Vec<SensorAnswer>),
}

#[derive(Clone, Debug)]
pub struct SensorAnswer {
    pub name: String,
    pub answer: Result<Answer, String>,
}

pub struct JobResult {
    pub job: Job,
    pub outcome: Result<Output, String>,
    /// JPEG of the described frame (descriptions only).
    pub snapshot: Option<Vec<u8>>,
    pub finished: SystemTime,
}

#[derive(Default)]
struct State {
    on_demand: VecDeque<Job>,
    triggered: VecDeque<Job>,
    /// First-sight descriptions queued or running, per camera: scene-change descriptions of
    /// that camera wait for none of them, they are skipped (the object's text says more).
    object_jobs: HashMap<String, usize>,
    closed: bool,
}

/// What became of a triggered description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    Queued,
    /// It took the place of the camera's stale queued one.
    Replaced,
    /// A scene change while a first-sight description of the camera is queued or running.
    Skipped,
    /// lookout is stopping.
    Closed,
}

fn is_object_job(job: &Job) -> bool {
    matches!(
        &job.kind,
        JobKind::Describe {
            trigger: Trigger::Object(_)
        }
    )
}

fn is_scene_change(job: &Job) -> bool {
    matches!(
        &job.kind,
        JobKind::Describe {
            trigger: Trigger::SceneChange { .. }
        }
    )
}

pub struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    /// [`crate::clock::now_ms`] + 1 when the current job started, 0 when idle (watchdog).
    pub busy_since: AtomicU64,
    pub completed: AtomicU64,
    /// Set at shutdown: the job being run stops at its next token or image slice.
    cancel: Cancel,
}

/// Why a question got no answer at shutdown: said to the asker, who can ask again.
pub const NOT_ANSWERED_STOPPING: &str =
    "not answered: lookout is stopping (ask again when it is back)";

impl JobQueue {
    pub fn new(capacity: usize) -> Arc<JobQueue> {
        Arc::new(JobQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity,
            busy_since: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancel: Cancel::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (plain pushes and pops).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a triggered description (or sensor answers), replacing the camera's queued one
    /// of the same kind; sensors still waiting are asked along with the new ones.
    pub fn submit_trigger(&self, mut job: Job) -> Submitted {
        let mut s = self.lock();
        if s.closed {
            return Submitted::Closed;
        }
        if is_scene_change(&job) && s.object_jobs.get(&job.camera.name).is_some_and(|n| *n > 0) {
            return Submitted::Skipped;
        }
        let senses = |j: &Job| matches!(j.kind, JobKind::Sense { .. });
        let replaced = match s
            .triggered
            .iter_mut()
            .find(|j| j.camera.name == job.camera.name && senses(j) == senses(&job))
        {
            Some(slot) => {
                if let (
                    JobKind::Sense {
                        sensors: waiting, ..
                    },
                    JobKind::Sense { sensors, .. },
                ) = (&slot.kind, &mut job.kind)
                {
                    for name in waiting {
                        if !sensors.contains(name) {
                            sensors.push(name.clone());
                        }
                    }
                }
                *slot = job;
                true
            }
            None => {
                s.triggered.push_back(job);
                false
            }
        };
        drop(s);
        self.ready.notify_one();
        if replaced {
            Submitted::Replaced
        } else {
            Submitted::Queued
        }
    }

    /// Queues an on-demand job; gives it back when the queue is full or closed.
    pub fn submit_on_demand(&self, job: Job) -> Result<(), Box<Job>> {
        let mut s = self.lock();
        if s.closed || s.on_demand.len() >= self.capacity {
            return Err(Box::new(job));
        }
        if is_object_job(&job) {
            *s.object_jobs.entry(job.camera.name.clone()).or_default() += 1;
            // A scene-change description already waiting would say less, later.
            let camera = job.camera.name.clone();
            s.triggered
                .retain(|j| !(j.camera.name == camera && is_scene_change(j)));
        }
        s.on_demand.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a verification ahead of everything else: an alert waits for it. Gives it back
    /// when the queue is full or closed.
    pub fn submit_verify(&self, job: Job) -> Result<(), Box<Job>> {
        let mut s = self.lock();
        if s.closed || s.on_demand.len() >= self.capacity {
            return Err(Box::new(job));
        }
        s.on_demand.push_front(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Drops a camera's queued triggered job (camera disabled or removed).
    pub fn forget_camera(&self, camera: &str) {
        self.lock().triggered.retain(|j| j.camera.name != camera);
    }

    /// A job handed out by [`JobQueue::pop`] is done (or was never run).
    pub fn finished(&self, job: &Job) {
        if is_object_job(job) {
            let mut s = self.lock();
            if let Some(n) = s.object_jobs.get_mut(&job.camera.name) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Blocks for the next job; `None` once closed.
    pub fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some(job) = s.on_demand.pop_front().or_else(|| s.triggered.pop_front()) {
                return Some(job);
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn len(&self) -> usize {
        let s = self.lock();
        s.on_demand.len() + s.triggered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out jobs and returns the ones still waiting, questions first.
    pub fn close(&self) -> Vec<Job> {
        let mut s = self.lock();
        s.closed = true;
        let State {
            on_demand,
            triggered,
            ..
        } = &mut *s;
        let waiting = on_demand.drain(..).chain(triggered.drain(..)).collect();
        drop(s);
        self.ready.notify_all();
        waiting
    }

    /// Makes the job being run end early, as [`NOT_ANSWERED_STOPPING`] (shutdown only: every
    /// later job would end the same way).
    pub fn cancel_running(&self) {
        self.cancel.cancel();
    }
}

/// The result of a job that was never run because lookout is stopping: an asker is told so, a
/// description is simply not made.
pub fn not_run(job: Job) -> JobResult {
    JobResult {
        job,
        outcome: Err(NOT_ANSWERED_STOPPING.into()),
        snapshot: None,
        finished: SystemTime::now(),
    }
}

/// Starts the worker thread: loads the model on it, reports the load through `loaded`, then
/// serves the queue until it closes. Results go to `results` (the MQTT session).
pub fn spawn_worker(
    model_dir: PathBuf,
    options: EngineOptions,
    queue: Arc<JobQueue>,
    results: tokio::sync::mpsc::Sender<JobResult>,
    loaded: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            lookout_pipeline::threads::lower_this_thread();
            let engine = match Engine::load(&model_dir, &options) {
                Ok(e) => {
                    let _ = loaded.send(Ok(()));
                    e
                }
                Err(e) => {
                    let _ = loaded.send(Err(e.context(format!(
                        "loading the model from {} (model.path)",
                        model_dir.display()
                    ))));
                    return;
                }
            };
            let mut looks = Looks::default();
            serve(&queue, &results, |job| {
                run_job(&engine, &mut looks, job, &queue.cancel)
            });
        })
}

/// Runs the queue's jobs until it closes (or the session is gone); `run` returns the result
/// for the session, or `None` when it delivered it itself (verifications). A job that panics
/// becomes that job's error: the panic is a bug, but it must not leave every camera without a
/// model while the daemon still looks alive.
fn serve(
    queue: &JobQueue,
    results: &tokio::sync::mpsc::Sender<JobResult>,
    mut run: impl FnMut(Job) -> Option<JobResult>,
) {
    while let Some(job) = queue.pop() {
        queue
            .busy_since
            .store(crate::clock::now_ms() + 1, Ordering::Relaxed);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job.clone())))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                log::error!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "inference panicked: {what}");
                let error = format!("inference failed (internal error: {what})");
                match &job.kind {
                    JobKind::Verify(request) => {
                        let _ = request.reply.send(Verdict {
                            object_id: request.object_id.clone(),
                            yes: Err(error),
                            waited: job.queued.elapsed().unwrap_or_default(),
                        });
                        None
                    }
                    _ => Some(JobResult {
                        job: job.clone(),
                        outcome: Err(error),
                        snapshot: None,
                        finished: SystemTime::now(),
                    }),
                }
            });
        queue.busy_since.store(0, Ordering::Relaxed);
        queue.completed.fetch_add(1, Ordering::Relaxed);
        queue.finished(&job);
        // blocking_send: the session drains quickly; a closed channel means shutdown.
        if let Some(result) = result
            && results.blocking_send(result).is_err()
        {
            break;
        }
    }
}

/// What an error of the engine is to the asker: a cancelled request was cut by the shutdown.
fn inference_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Cancelled>() {
        Some(_) => NOT_ANSWERED_STOPPING.to_string(),
        None => format!("{e:#}"),
    }
}

/// A camera frame as the engine takes it.
fn frame_image(frame: &Frame) -> Result<lookout_pipeline::image::RgbImage, String> {
    lookout_pipeline::image::RgbImage::from_raw_rgb(frame.width, frame.height, frame.rgb.to_vec())
        .map_err(|e| format!("bad frame: {e}"))
}

/// What the model last saw of each camera (and of each sensor region of it): a look at an
/// unchanged picture encodes only the slices that changed, and reuses the language model's
/// state after the image when none did. One entry per camera and region, so memory is bounded
/// by the configuration (about 40 MB for a 1080p frame at the default slicing).
#[derive(Default)]
pub struct Looks(HashMap<(String, Option<Rect>), Seen>);

impl Looks {
    /// Looks at `frame` (or its `region`) for `camera`, starting from the last look.
    fn look(
        &mut self,
        engine: &Engine,
        camera: &CameraConfig,
        frame: &Frame,
        region: Option<Rect>,
        cancel: &Cancel,
    ) -> Result<&mut Seen, String> {
        let image = match region {
            Some((x, y, w, h)) => frame_image(&frame.crop(x, y, w, h)),
            None => frame_image(frame),
        }?;
        let key = (camera.name.clone(), region);
        let previous = self.0.remove(&key);
        let policy = ReusePolicy {
            threshold: camera.reuse_threshold as f32,
        };
        let seen = engine
            .see(&image, camera.max_slices, previous, &policy, cancel)
            .map_err(|e| inference_error(&e))?;
        Ok(self.0.entry(key).or_insert(seen))
    }
}

/// A typed question about the job's frame.
fn typed_answer(
    engine: &Engine,
    looks: &mut Looks,
    job: Job,
    question: Question,
    cancel: &Cancel,
) -> JobResult {
    let started = Instant::now();
    let outcome = looks
        .look(engine, &job.camera, &job.frame, None, cancel)
        .and_then(|seen| {
            engine
                .answer_seen(seen, &[question], cancel)
                .map(|mut answers| Output::Typed(answers.remove(0)))
                .map_err(|e| inference_error(&e))
        });
    match &outcome {
        Ok(_) => log::info!(
            camera = job.camera.name.as_str(), trigger = "ask", event_id = job.id.as_str();
            "answered in {:.1} s", started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            log::error!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "inference failed: {e}")
        }
    }
    JobResult {
        job,
        outcome,
        snapshot: None,
        finished: SystemTime::now(),
    }
}

/// Answers the camera's sensors named in the job: one look per region, and on each look every
/// question continues the same state after the image.
pub fn sense(
    engine: &Engine,
    looks: &mut Looks,
    job: Job,
    names: &[String],
    cancel: &Cancel,
) -> JobResult {
    let started = Instant::now();
    let frame = &job.frame;
    let mut by_region: Vec<(Option<Rect>, Vec<&SensorConfig>)> = Vec::new();
    for sensor in job
        .camera
        .sensors
        .iter()
        .filter(|s| names.contains(&s.name))
    {
        let region = sensor.region_pixels(frame.width, frame.height);
        match by_region.iter_mut().find(|(r, _)| *r == region) {
            Some((_, group)) => group.push(sensor),
            None => by_region.push((region, vec![sensor])),
        }
    }
    let mut answers = Vec::new();
    for (region, sensors) in by_region {
        let questions: Result<Vec<Question>, String> = sensors
            .iter()
            .map(|s| {
                Ok(Question {
                    text: s.question.clone(),
                    kind: s.kind()?,
                })
            })
            .collect();
        let result = questions.and_then(|questions| {
            let seen = looks.look(engine, &job.camera, frame, region, cancel)?;
            engine
                .answer_seen(seen, &questions, cancel)
                .map_err(|e| inference_error(&e))
        });
        match result {
            Ok(group) => {
                for (sensor, mut answer) in sensors.iter().zip(group) {
                    if let Value::Number(n) = answer.value {
                        answer.value = Value::Number(sensor.clamp(n));
                    }
                    answers.push(SensorAnswer {
                        name: sensor.name.clone(),
                        answer: Ok(answer),
                    });
                }
            }
            Err(e) => {
                log::error!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "sensors not answered: {e}");
                answers.extend(sensors.iter().map(|s| SensorAnswer {
                    name: s.name.clone(),
                    answer: Err(e.clone()),
                }));
            }
        }
    }
    let trigger = match &job.kind {
        JobKind::Sense { trigger, .. } => trigger.as_str(),
        _ => "",
    };
    log::info!(
        camera = job.camera.name.as_str(), event_id = job.id.as_str();
        "{} sensor(s) answered on {trigger} in {:.1} s", answers.iter().filter(|a| a.answer.is_ok()).count(),
        started.elapsed().as_secs_f64()
    );
    JobResult {
        job,
        outcome: Ok(Output::Sensors(answers)),
        snapshot: None,
        finished: SystemTime::now(),
    }
}

/// Asks the model a new object's yes/no question about its crop (`job.frame`), read off its
/// answer distribution (no text is generated).
fn verify(engine: &Engine, job: &Job, request: &VerifyRequest, cancel: &Cancel) -> Verdict {
    let started = Instant::now();
    let yes = frame_image(&job.frame).and_then(|image| {
        let question = Question {
            text: request.question.clone(),
            kind: AnswerKind::YesNo,
        };
        // A crop is small: its overview image says all there is.
        let answers = engine
            .answer(Some(&image), Some(1), &[question], cancel)
            .map_err(|e| format!("{e:#}"))?;
        Ok(answers[0].scores["yes"])
    });
    match &yes {
        Ok(share) => log::info!(
            camera = job.camera.name.as_str(), event_id = request.object_id.as_str();
            "verified in {:.2} s: yes {share:.2}", started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            log::warn!(camera = job.camera.name.as_str(), event_id = request.object_id.as_str(); "verification failed: {e}")
        }
    }
    Verdict {
        object_id: request.object_id.clone(),
        yes,
        waited: job.queued.elapsed().unwrap_or_default(),
    }
}

/// Runs one job: the result for the session, or `None` for a verification, whose verdict goes
/// to the detector thread that asked.
fn run_job(engine: &Engine, looks: &mut Looks, job: Job, cancel: &Cancel) -> Option<JobResult> {
    let started = Instant::now();
    let (prompt, max_tokens, trigger) = match &job.kind {
        JobKind::Verify(request) => {
            let _ = request.reply.send(verify(engine, &job, request, cancel));
            return None;
        }
        JobKind::Sense { sensors, .. } => {
            let sensors = sensors.clone();
            return Some(sense(engine, looks, job, &sensors, cancel));
        }
        JobKind::Describe {
            trigger: Trigger::Object(object),
        } => (object.prompt.clone(), object.max_tokens, Some("object")),
        JobKind::Describe { trigger } => (
            job.camera.prompt.clone(),
            job.camera.max_tokens,
            Some(trigger.name()),
        ),
        JobKind::Ask {
            question,
            answer: Some(kind),
            ..
        } => {
            let question = Question {
                text: question.clone(),
                kind: kind.clone(),
            };
            return Some(typed_answer(engine, looks, job.clone(), question, cancel));
        }
        JobKind::Ask { question, .. } => (question.clone(), job.camera.max_tokens, None),
    };
    let request = Request {
        prompt,
        image: None,
        max_slices: job.camera.max_slices,
        max_tokens,
        sampling: SamplingParams::default(),
        cancel: cancel.clone(),
    };
    // A crop around an object is not the camera's picture: it is looked at afresh.
    let crop = matches!(
        &job.kind,
        JobKind::Describe {
            trigger: Trigger::Object(_)
        }
    ) && job.camera.detect.as_ref().is_some_and(|d| d.describe_crop);
    let outcome = if crop {
        frame_image(&job.frame).and_then(|image| {
            let request = Request {
                image: Some(image),
                ..request
            };
            engine
                .describe(&request, &mut |_| {})
                .map(Output::Text)
                .map_err(|e| inference_error(&e))
        })
    } else {
        looks
            .look(engine, &job.camera, &job.frame, None, cancel)
            .and_then(|seen| {
                engine
                    .describe_seen(seen, &request, &mut |_| {})
                    .map(Output::Text)
                    .map_err(|e| inference_error(&e))
            })
    };
    let snapshot = match (&job.kind, &outcome) {
        (JobKind::Describe { .. }, Ok(_)) => match crate::snapshot::jpeg(
            &job.frame,
            job.camera.snapshot_width,
            job.camera.snapshot_quality,
        ) {
            Ok(jpeg) => Some(jpeg),
            Err(e) => {
                log::warn!(camera = job.camera.name.as_str(); "snapshot encoding failed: {e:#}");
                None
            }
        },
        _ => None,
    };
    match &outcome {
        Ok(Output::Typed(_) | Output::Sensors(_)) => {}
        Ok(Output::Text(d)) => log::info!(
            camera = job.camera.name.as_str(), trigger = trigger.unwrap_or("ask"), event_id = job.id.as_str();
            "{} in {:.1} s: {} tokens", if trigger.is_some() { "described" } else { "answered" },
            started.elapsed().as_secs_f64(), d.tokens.len()
        ),
        Err(e) if cancel.is_cancelled() => {
            log::warn!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "stopped unfinished: lookout is stopping")
        }
        Err(e) => {
            log::error!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "inference failed: {e}")
        }
    }
    Some(JobResult {
        job,
        outcome,
        snapshot,
        finished: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(camera: &str, kind: JobKind) -> Job {
        let config = CameraConfig {
            name: camera.into(),
            ..CameraConfig::default()
        };
        Job {
            id: crate::clock::new_id(),
            camera: Arc::new(config),
            kind,
            frame: Frame {
                width: 1,
                height: 1,
                rgb: Arc::new(vec![0; 3]),
                captured: SystemTime::now(),
            },
            queued: SystemTime::now(),
        }
    }

    #[test]
    fn verifications_go_ahead_of_questions_and_count_against_the_capacity() {
        let q = JobQueue::new(2);
        let ask = || JobKind::Ask {
            question: "?".into(),
            reply: None,
            answer: None,
        };
        q.submit_on_demand(job("a", ask())).unwrap();
        let (reply, _verdicts) = std::sync::mpsc::channel();
        let verify = || {
            JobKind::Verify(VerifyRequest {
                object_id: "o1".into(),
                question: "Is there a person?".into(),
                reply: reply.clone(),
            })
        };
        q.submit_verify(job("b", verify())).unwrap();
        assert!(q.submit_verify(job("b", verify())).is_err(), "full");
        assert!(matches!(q.pop().unwrap().kind, JobKind::Verify(_)));
        assert!(matches!(q.pop().unwrap().kind, JobKind::Ask { .. }));
    }

    #[test]
    fn on_demand_first_and_triggers_replace() {
        let q = JobQueue::new(2);
        let describe = |camera, trigger| job(camera, JobKind::Describe { trigger });
        assert_eq!(
            q.submit_trigger(describe("a", Trigger::Interval)),
            Submitted::Queued
        );
        let scene = Trigger::SceneChange { score: 0.5 };
        assert_eq!(q.submit_trigger(describe("a", scene)), Submitted::Replaced);
        assert_eq!(
            q.submit_trigger(describe("b", Trigger::Interval)),
            Submitted::Queued
        );
        q.submit_on_demand(job(
            "b",
            JobKind::Ask {
                question: "?".into(),
                reply: None,
                answer: None,
            },
        ))
        .unwrap();
        q.submit_on_demand(job(
            "b",
            JobKind::Ask {
                question: "?".into(),
                reply: None,
                answer: None,
            },
        ))
        .unwrap();
        assert!(
            q.submit_on_demand(job(
                "b",
                JobKind::Ask {
                    question: "?".into(),
                    reply: None,
                    answer: None,
                }
            ))
            .is_err()
        );
        assert_eq!(q.len(), 4);
        assert!(matches!(q.pop().unwrap().kind, JobKind::Ask { .. }));
        assert!(matches!(q.pop().unwrap().kind, JobKind::Ask { .. }));
        let first = q.pop().unwrap();
        assert_eq!(first.camera.name, "a");
        assert!(matches!(
            first.kind,
            JobKind::Describe {
                trigger: Trigger::SceneChange { .. }
            }
        ));
        assert_eq!(q.pop().unwrap().camera.name, "b");
        q.close();
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_newer_sensor_job_takes_along_the_sensors_still_waiting() {
        let q = JobQueue::new(2);
        let sense = |sensors: &[&str], trigger: &str| JobKind::Sense {
            sensors: sensors.iter().map(|s| s.to_string()).collect(),
            trigger: trigger.into(),
        };
        let describe = JobKind::Describe {
            trigger: Trigger::Interval,
        };
        assert_eq!(q.submit_trigger(job("a", describe)), Submitted::Queued);
        assert_eq!(
            q.submit_trigger(job("a", sense(&["door", "bins"], "interval"))),
            Submitted::Queued,
            "a camera's sensors and its description wait side by side"
        );
        assert_eq!(
            q.submit_trigger(job("a", sense(&["cars", "door"], "scene_change"))),
            Submitted::Replaced
        );
        assert_eq!(q.len(), 2);
        assert!(matches!(q.pop().unwrap().kind, JobKind::Describe { .. }));
        let JobKind::Sense { sensors, trigger } = q.pop().unwrap().kind else {
            panic!("the sensor job")
        };
        assert_eq!(sensors, ["cars", "door", "bins"]);
        assert_eq!(trigger, "scene_change");
    }

    #[test]
    fn closing_hands_back_what_waits_and_refuses_more() {
        let q = JobQueue::new(4);
        let describe = || JobKind::Describe {
            trigger: Trigger::Interval,
        };
        let ask = || JobKind::Ask {
            question: "who is at the door?".into(),
            reply: None,
            answer: None,
        };
        q.submit_trigger(job("yard", describe()));
        q.submit_on_demand(job("door", ask())).unwrap();
        let waiting = q.close();
        let cameras: Vec<&str> = waiting.iter().map(|j| j.camera.name.as_str()).collect();
        assert_eq!(cameras, ["door", "yard"]);
        assert!(q.is_empty());
        assert!(q.pop().is_none());
        assert!(q.submit_on_demand(job("door", ask())).is_err());
        assert_eq!(q.submit_trigger(job("yard", describe())), Submitted::Closed);
        assert!(q.is_empty());

        let result = not_run(waiting.into_iter().next().unwrap());
        assert_eq!(result.outcome.unwrap_err(), NOT_ANSWERED_STOPPING);
    }

    #[test]
    fn scene_changes_give_way_to_first_sight_descriptions() {
        let q = JobQueue::new(4);
        let scene = |camera| {
            job(
                camera,
                JobKind::Describe {
                    trigger: Trigger::SceneChange { score: 0.3 },
                },
            )
        };
        let object = |camera| {
            let trigger = Trigger::Object(ObjectTrigger {
                object_id: "1.0-abc".into(),
                label: "person".into(),
                prompt: "Describe the person.".into(),
                max_tokens: 32,
            });
            job(camera, JobKind::Describe { trigger })
        };
        assert_eq!(q.submit_trigger(scene("porch")), Submitted::Queued);
        assert_eq!(q.submit_trigger(scene("yard")), Submitted::Queued);
        // The porch's waiting scene change is dropped; the yard's stays.
        q.submit_on_demand(object("porch")).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q.submit_trigger(scene("porch")), Submitted::Skipped);
        let running = q.pop().unwrap();
        assert!(is_object_job(&running));
        // Still running: scene changes of the porch are skipped until it is done.
        assert_eq!(q.submit_trigger(scene("porch")), Submitted::Skipped);
        q.finished(&running);
        assert_eq!(q.submit_trigger(scene("porch")), Submitted::Queued);
        // Only scene changes give way: the interval is a heartbeat.
        q.submit_on_demand(object("porch")).unwrap();
        let interval = job(
            "porch",
            JobKind::Describe {
                trigger: Trigger::Interval,
            },
        );
        assert_eq!(q.submit_trigger(interval), Submitted::Queued);
    }

    #[test]
    fn a_job_that_panics_fails_alone_and_the_next_one_runs() {
        let q = Arc::new(JobQueue::new(4));
        for question in ["boom", "fine"] {
            let kind = JobKind::Ask {
                question: question.into(),
                reply: None,
                answer: None,
            };
            q.submit_on_demand(job("a", kind)).unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || {
                serve(&q, &tx, |job| {
                    let JobKind::Ask { question, .. } = &job.kind else {
                        unreachable!("only asks were queued")
                    };
                    if question == "boom" {
                        panic!("kaboom");
                    }
                    let outcome = Err(format!("ran {question}"));
                    Some(JobResult {
                        job,
                        outcome,
                        snapshot: None,
                        finished: SystemTime::now(),
                    })
                })
            })
        };
        let first = rx.blocking_recv().unwrap();
        let second = rx.blocking_recv().unwrap();
        q.close();
        worker.join().expect("the worker survives the panic");
        let first = first.outcome.unwrap_err();
        assert!(first.contains("internal error: kaboom"), "{first}");
        assert_eq!(second.outcome.unwrap_err(), "ran fine");
        assert_eq!(q.completed.load(Ordering::Relaxed), 2);
        assert_eq!(q.busy_since.load(Ordering::Relaxed), 0);
    }
}
