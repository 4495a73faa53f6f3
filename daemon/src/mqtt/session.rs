//! The MQTT session state: what is subscribed, which retained states to (re)publish, which
//! outbox message is in flight, and the commands arriving from Home Assistant and robots.
//!
//! Outbox delivery is one message at a time, in order: publish the oldest with QoS 1, remove it
//! on its PUBACK, publish the next. Every other publication is QoS 0 and retained, re-sent on each
//! connect from an in-memory cache, so any QoS ≥ 1 packet id the event loop reports is ours.
//!
//! Reconnects: rumqttc drops queued requests on a clean-session reconnect, but a request we sent
//! between the connection dropping and us hearing of it can still go out after the reconnect.
//! Such a stale publish can only be of the outbox head (the next one is sent only after the head's
//! PUBACK), so we adopt it as in flight instead of publishing the head twice, and we start
//! publishing only after the SubAck of the subscription sent on ConnAck: requests are processed in
//! order, so by then every stale request has been seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::connection::ConnEvent;
use super::{Client, Reply, Topics};
use crate::camera::CameraShared;
use crate::camera::supervisor::CameraStatus;
use crate::clock::{new_id, rfc3339};
use crate::config::CameraConfig;
use crate::detection::DetectionMsg;
use crate::detection::book::{ObjectBook, Outgoing};
use crate::discovery::Discovery;
use crate::jobs::{Job, JobKind, JobQueue, JobResult, Output, SensorAnswer, Trigger};
use crate::outbox::Outbox;
use lookout_pipeline::answer::AnswerKind;

/// Home Assistant caps entity states at 255 characters.
const SUMMARY_MAX: usize = 255;
/// How long the outbox waits after discovery is published: Home Assistant subscribes to an
/// entity's topics when its config arrives, and an event (not retained) published before that
/// is lost to it.
const DISCOVERY_GRACE: Duration = Duration::from_secs(2);

pub enum Control {
    /// Stop: drain finished jobs into the outbox, publish it for up to `flush`, then disconnect.
    /// `stopped` publishes `stopped` on `available` (clean exit, not a reload).
    Stop {
        flush: Duration,
        stopped: bool,
        done: oneshot::Sender<()>,
    },
}

pub struct SessionParts {
    pub outbox: Outbox,
    pub results: mpsc::Receiver<JobResult>,
}

pub struct Session {
    pub topics: Topics,
    pub subscribe_qos: QoS,
    pub discovery: bool,
    pub node_id: String,
    /// The device's model in discovery.
    pub model: String,
    pub client: Client,
    pub cameras: Arc<BTreeMap<String, Arc<CameraShared>>>,
    /// The previous generation's cameras: entities they had and these lack are removed.
    pub previous_cameras: Vec<CameraConfig>,
    pub queue: Arc<JobQueue>,
    pub outbox: Outbox,
    /// Main-loop progress for the watchdog.
    pub heartbeat: Arc<AtomicU64>,
    connected: bool,
    /// Subscribed on this connection: outbox publishing may start.
    ready: bool,
    inflight: Option<Inflight>,
    last_sent: Option<u64>,
    retained: HashMap<String, Vec<u8>>,
    /// The config topics of the entities published last: retained configs of ours outside this
    /// set are stale.
    discovery_topics: HashSet<String>,
    objects: ObjectBook,
    /// Outbox delivery waits until then after discovery was published ([`DISCOVERY_GRACE`]).
    outbox_held_until: Option<std::time::Instant>,
    /// The value last published per (camera, sensor).
    sensor_values: HashMap<(String, String), lookout_pipeline::answer::Value>,
}

struct Inflight {
    seq: u64,
    pkid: Option<u16>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topics: Topics,
        subscribe_qos: QoS,
        discovery: bool,
        node_id: String,
        model: String,
        client: Client,
        cameras: Arc<BTreeMap<String, Arc<CameraShared>>>,
        previous_cameras: Vec<CameraConfig>,
        queue: Arc<JobQueue>,
        outbox: Outbox,
        heartbeat: Arc<AtomicU64>,
    ) -> Session {
        Session {
            topics,
            subscribe_qos,
            discovery,
            node_id,
            model,
            client,
            cameras,
            previous_cameras,
            queue,
            outbox,
            heartbeat,
            connected: false,
            ready: false,
            inflight: None,
            last_sent: None,
            retained: HashMap::new(),
            discovery_topics: HashSet::new(),
            objects: ObjectBook::default(),
            sensor_values: HashMap::new(),
            outbox_held_until: None,
        }
    }

    pub async fn run(
        mut self,
        mut conn: mpsc::Receiver<ConnEvent>,
        mut status: mpsc::Receiver<CameraStatus>,
        mut results: mpsc::Receiver<JobResult>,
        mut detections: mpsc::Receiver<DetectionMsg>,
        mut control: mpsc::Receiver<Control>,
    ) -> SessionParts {
        for camera in self.cameras.clone().values() {
            self.publish_enabled(camera);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            tokio::select! {
                Some(event) = conn.recv() => self.on_conn(event),
                Some(s) = status.recv() => self.on_status(s),
                Some(r) = results.recv() => self.on_result(r),
                Some(d) = detections.recv() => self.on_detection(d),
                c = control.recv() => break c,
                _ = tick.tick() => {
                    self.heartbeat.store(crate::clock::now_ms(), Ordering::Relaxed);
                    self.pump_outbox();
                }
            }
        };
        let (flush, stopped, done) = match stop {
            Some(Control::Stop {
                flush,
                stopped,
                done,
            }) => (flush, stopped, Some(done)),
            None => (Duration::ZERO, false, None),
        };
        // Finished jobs first: they must reach the outbox (disk) before we give up on the broker.
        while let Ok(r) = results.try_recv() {
            self.on_result(r);
        }
        while let Ok(s) = status.try_recv() {
            self.on_status(s);
        }
        while let Ok(d) = detections.try_recv() {
            self.on_detection(d);
        }
        let deadline = tokio::time::Instant::now() + flush;
        // Stopping: deliver what can be delivered now rather than wait out the discovery grace.
        self.outbox_held_until = None;
        self.pump_outbox();
        while !self.outbox.is_empty() && self.connected && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, conn.recv()).await {
                Ok(Some(event)) => self.on_conn(event),
                _ => break,
            }
        }
        if !self.outbox.is_empty() {
            log::info!(
                "{} message(s) stay in the outbox for the next start",
                self.outbox.len()
            );
        }
        if stopped && self.connected {
            let _ = self.client.try_publish(
                &self.topics.available(),
                QoS::AtMostOnce,
                true,
                b"stopped".to_vec(),
                None,
            );
        }
        let _ = self.client.try_disconnect();
        // Let the event loop write the last packets and the DISCONNECT.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = conn.recv().await {
                if let ConnEvent::Disconnected(_) = event {
                    break;
                }
            }
        })
        .await;
        if let Some(done) = done {
            let _ = done.send(());
        }
        SessionParts {
            outbox: self.outbox,
            results,
        }
    }

    fn on_conn(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Connected => {
                self.connected = true;
                self.ready = false;
                self.inflight = None;
                self.on_connect();
            }
            ConnEvent::Disconnected(_) => {
                self.connected = false;
                self.ready = false;
                self.inflight = None;
            }
            ConnEvent::SubAck => {
                self.ready = true;
                self.pump_outbox();
            }
            ConnEvent::Published(pkid) => match &mut self.inflight {
                Some(inflight) if inflight.pkid.is_none() => inflight.pkid = Some(pkid),
                Some(_) => log::warn!("MQTT: unexpected publish id {pkid} while one is in flight"),
                None => {
                    // A stale request from before the reconnect: adopt it (see the module docs).
                    if let Some(seq) = self.last_sent {
                        self.inflight = Some(Inflight {
                            seq,
                            pkid: Some(pkid),
                        });
                    }
                }
            },
            ConnEvent::PubAck(pkid) => {
                if let Some(inflight) = &self.inflight
                    && inflight.pkid == Some(pkid)
                {
                    self.outbox.remove(inflight.seq);
                    self.inflight = None;
                    self.pump_outbox();
                }
            }
            ConnEvent::Message {
                topic,
                payload,
                reply,
            } => self.on_message(&topic, &payload, reply),
        }
    }

    fn on_connect(&mut self) {
        let mut filters = vec![
            (format!("{}/+/ask", self.topics.prefix), self.subscribe_qos),
            (
                format!("{}/+/describe/set", self.topics.prefix),
                self.subscribe_qos,
            ),
            (
                format!("{}/+/enabled/set", self.topics.prefix),
                self.subscribe_qos,
            ),
        ];
        if self.discovery {
            filters.push((self.topics.ha_status(), self.subscribe_qos));
            // Our own retained discovery configs: any that names an entity this start no longer
            // has (a camera removed while lookout was stopped) is cleared when it arrives.
            filters.push((self.own_discovery_filter(), QoS::AtMostOnce));
        }
        if let Err(e) = self.client.try_subscribe_many(filters) {
            log::warn!("MQTT: cannot queue the subscription: {e}");
        }
        self.send(&self.topics.available(), true, b"online".to_vec());
        self.publish_discovery_and_states();
    }

    /// `<discovery prefix>/+/<node>/+/config`: every entity config of this instance.
    fn own_discovery_filter(&self) -> String {
        format!(
            "{}/+/{}/+/config",
            self.topics.discovery_prefix, self.node_id
        )
    }

    /// Every discovery config (topic, payload) of the cameras this session has.
    fn discovery_messages(&self) -> Vec<(String, String)> {
        let d = Discovery {
            topics: &self.topics,
            node_id: self.node_id.clone(),
            model: self.model.clone(),
        };
        self.cameras
            .values()
            .flat_map(|camera| d.camera(&camera.config))
            .collect()
    }

    /// A retained config of ours arrived: cleared when no current entity has that topic.
    fn on_own_discovery(&mut self, topic: &str, payload: &[u8]) {
        if self.discovery_topics.is_empty() {
            self.discovery_topics = self
                .discovery_messages()
                .into_iter()
                .map(|(t, _)| t)
                .collect();
        }
        if payload.is_empty() || self.discovery_topics.contains(topic) {
            return;
        }
        log::info!("Home Assistant: removing {topic}, an entity this configuration no longer has");
        self.send(topic, true, Vec::new());
    }

    fn publish_discovery(&mut self) {
        if !self.discovery {
            return;
        }
        let d = Discovery {
            topics: &self.topics,
            node_id: self.node_id.clone(),
            model: self.model.clone(),
        };
        let messages = self.discovery_messages();
        self.discovery_topics = messages.iter().map(|(t, _)| t.clone()).collect();
        let removals: Vec<String> = self
            .previous_cameras
            .iter()
            .flat_map(|c| d.camera(c))
            .map(|(topic, _)| topic)
            .filter(|t| !self.discovery_topics.contains(t))
            .collect();
        for topic in removals {
            self.send(&topic, true, Vec::new());
        }
        for (topic, payload) in messages {
            self.send(&topic, true, payload.into_bytes());
        }
        self.outbox_held_until = Some(std::time::Instant::now() + DISCOVERY_GRACE);
    }

    /// QoS 0 publish if connected; dropped otherwise (retained states are re-sent on connect).
    fn send(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        if !self.connected {
            return;
        }
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtMostOnce, retain, payload, None)
        {
            log::debug!("MQTT: publish to {topic} deferred: {e}");
        }
    }

    /// A retained state: cached for re-sending on every connect.
    fn publish_state(&mut self, topic: String, payload: Vec<u8>) {
        self.send(&topic, true, payload.clone());
        self.retained.insert(topic, payload);
    }

    fn pump_outbox(&mut self) {
        if !self.ready || self.inflight.is_some() {
            return;
        }
        if self
            .outbox_held_until
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            return;
        }
        let Some(message) = self.outbox.head() else {
            return;
        };
        match self.client.try_publish(
            &message.topic,
            QoS::AtLeastOnce,
            message.retain,
            message.payload.into_bytes(),
            message.correlation_data.as_deref(),
        ) {
            Ok(()) => {
                self.inflight = Some(Inflight {
                    seq: message.seq,
                    pkid: None,
                });
                self.last_sent = Some(message.seq);
            }
            // Request channel full: the next tick retries.
            Err(e) => log::debug!("MQTT: outbox publish deferred: {e}"),
        }
    }

    fn enqueue(&mut self, topic: String, payload: &Value) {
        self.enqueue_with(topic, payload, None);
    }

    fn enqueue_with(&mut self, topic: String, payload: &Value, correlation_data: Option<&[u8]>) {
        self.enqueue_text(topic, &payload.to_string(), correlation_data);
    }

    fn enqueue_text(&mut self, topic: String, payload: &str, correlation_data: Option<&[u8]>) {
        match self.outbox.append(&topic, payload, false, correlation_data) {
            Ok(_) => self.pump_outbox(),
            Err(e) => log::error!("outbox: {e:#}; message to {topic} lost"),
        }
    }

    /// An answer: to `<camera>/answer`, and to the asker's response topic when it gave one.
    fn enqueue_answer(&mut self, camera: &str, payload: &Value, reply: Option<&Reply>) {
        self.enqueue(self.topics.camera(camera, "answer"), payload);
        if let Some(reply) = reply {
            self.enqueue_with(
                reply.topic.clone(),
                payload,
                reply.correlation_data.as_deref(),
            );
        }
    }

    fn on_detection(&mut self, msg: DetectionMsg) {
        match msg {
            DetectionMsg::Frame(report) => {
                let out = self.objects.on_report(&self.topics, report);
                self.route(out);
            }
            DetectionMsg::Status { camera, payload } => self.publish_state(
                self.topics.camera(&camera, "detector"),
                payload.into_bytes(),
            ),
        }
    }

    fn route(&mut self, messages: Vec<Outgoing>) {
        for message in messages {
            match message {
                Outgoing::Outbox { topic, payload } => self.enqueue_text(topic, &payload, None),
                Outgoing::State { topic, payload } => self.publish_state(topic, payload),
                Outgoing::Live { topic, payload } => self.send(&topic, false, payload.into_bytes()),
            }
        }
    }

    fn on_status(&mut self, s: CameraStatus) {
        let payload = json!({
            "state": if s.online { "online" } else { "offline" },
            "reason": s.reason,
            "time": rfc3339(SystemTime::now()),
        });
        self.publish_state(
            self.topics.camera(&s.camera, "status"),
            payload.to_string().into_bytes(),
        );
    }

    fn publish_enabled(&mut self, camera: &CameraShared) {
        let state = if camera.is_enabled() { "ON" } else { "OFF" };
        self.publish_state(
            self.topics.camera(camera.name(), "enabled/state"),
            state.as_bytes().to_vec(),
        );
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], reply: Option<Reply>) {
        if self.discovery && is_own_discovery(topic, &self.topics.discovery_prefix, &self.node_id) {
            return self.on_own_discovery(topic, payload);
        }
        if topic == self.topics.ha_status() {
            if payload.eq_ignore_ascii_case(b"online") {
                log::info!("Home Assistant is online: re-publishing discovery and states");
                self.publish_discovery_and_states();
            }
            return;
        }
        let Some((camera, leaf)) = self.topics.parse_camera_topic(topic) else {
            return;
        };
        let Some(shared) = self.cameras.get(camera).cloned() else {
            log::warn!("MQTT: {topic}: no camera named {camera:?}");
            return;
        };
        let text = String::from_utf8_lossy(payload).trim().to_string();
        match leaf {
            "describe/set" => match shared.latest_frame() {
                Some(frame) => {
                    let job = Job {
                        id: new_id(),
                        camera: shared.config.clone(),
                        kind: JobKind::Describe {
                            trigger: Trigger::OnDemand,
                        },
                        frame,
                        queued: SystemTime::now(),
                    };
                    if self.queue.submit_on_demand(job).is_err() {
                        log::warn!(camera = camera; "describe request refused: the queue is full");
                    } else {
                        shared.described_on_demand.store(true, Ordering::Relaxed);
                    }
                }
                None => {
                    log::warn!(camera = camera; "describe request ignored: no frame (camera offline or disabled)")
                }
            },
            "enabled/set" => {
                let on = match text.to_ascii_uppercase().as_str() {
                    "ON" | "TRUE" | "1" => true,
                    "OFF" | "FALSE" | "0" => false,
                    _ => {
                        log::warn!(camera = camera; "{topic}: expected ON or OFF, got {text:?}");
                        return;
                    }
                };
                shared.enabled.store(on, Ordering::Relaxed);
                if !on {
                    self.queue.forget_camera(camera);
                }
                // The camera's own thread says when it is disabled, or online again.
                log::debug!(camera = camera; "{topic}: {}", if on { "ON" } else { "OFF" });
                self.publish_enabled(&shared);
            }
            "ask" => self.on_ask(&shared, &text, reply),
            _ => {}
        }
    }

    fn publish_discovery_and_states(&mut self) {
        self.publish_discovery();
        let retained: Vec<(String, Vec<u8>)> = self
            .retained
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        for (topic, payload) in retained {
            self.send(&topic, true, payload);
        }
    }

    fn on_ask(&mut self, camera: &Arc<CameraShared>, text: &str, reply: Option<Reply>) {
        let Ask {
            id,
            question,
            answer,
        } = parse_ask(text);
        let name = camera.name().to_string();
        let fail = |s: &mut Session, reply: Option<&Reply>, error: String| {
            log::warn!(camera = name.as_str(), event_id = id.as_str(); "question not answered: {error}");
            let payload = json!({
                "id": id, "camera": name, "time": rfc3339(SystemTime::now()),
                "question": question, "text": null, "summary": null, "error": error,
            });
            s.enqueue_answer(&name, &payload, reply);
            // Home Assistant's answer sensor shows last_answer: a refusal must reach it too.
            s.publish_state(
                s.topics.camera(&name, "last_answer"),
                payload.to_string().into_bytes(),
            );
        };
        // The text entity's state: the question last asked, kept across Home Assistant restarts.
        self.publish_state(
            self.topics.camera(&name, "ask/state"),
            question.chars().take(255).collect::<String>().into_bytes(),
        );
        if question.is_empty() {
            return fail(self, reply.as_ref(), "empty question".into());
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return fail(self, reply.as_ref(), format!("answer: {e}")),
        };
        let Some(frame) = camera.latest_frame() else {
            return fail(
                self,
                reply.as_ref(),
                "no frame: the camera is offline or disabled".into(),
            );
        };
        let job = Job {
            id: id.clone(),
            camera: camera.config.clone(),
            kind: JobKind::Ask {
                question: question.clone(),
                reply: reply.clone(),
                answer,
            },
            frame,
            queued: SystemTime::now(),
        };
        match self.queue.submit_on_demand(job) {
            Ok(()) => {
                log::debug!(camera = name.as_str(), event_id = id.as_str(); "question queued")
            }
            Err(_) => fail(
                self,
                reply.as_ref(),
                "busy: too many questions waiting (daemon.queue_capacity)".into(),
            ),
        }
    }

    fn on_result(&mut self, r: JobResult) {
        let job = &r.job;
        let camera = job.camera.name.clone();
        let frame = json!({ "width": job.frame.width, "height": job.frame.height, "captured": rfc3339(job.frame.captured) });
        match (&job.kind, &r.outcome) {
            (JobKind::Describe { trigger }, Ok(Output::Text(d))) => {
                let summary = summarize(&d.text);
                let object = match trigger {
                    Trigger::Object(o) => Some(o),
                    _ => None,
                };
                let mut payload = json!({
                    "event_type": "description",
                    "id": job.id,
                    "camera": camera,
                    "time": rfc3339(r.finished),
                    "trigger": trigger.name(),
                    "scene_score": match trigger { Trigger::SceneChange { score } => Some(*score), _ => None },
                    "prompt": job.camera.prompt,
                    "text": d.text,
                    "summary": summary,
                    "frame": frame,
                    "tokens": d.tokens.len(),
                    "prompt_tokens": d.prompt_tokens,
                    "image_tokens": d.image_tokens,
                    "stop_reason": d.stop_reason,
                    "timings": d.timings,
                    "queued": rfc3339(job.queued),
                });
                if let Some(o) = object {
                    payload["prompt"] = json!(o.prompt);
                    payload["object_id"] = json!(o.object_id);
                    payload["label"] = json!(o.label);
                }
                self.enqueue(self.topics.camera(&camera, "description"), &payload);
                if let Some(o) = object {
                    let out =
                        self.objects
                            .on_description(&self.topics, &camera, &o.object_id, &d.text);
                    self.route(out);
                }
                let state = json!({
                    "summary": summary, "text": d.text, "id": job.id,
                    "time": rfc3339(r.finished), "trigger": trigger.name(),
                });
                self.publish_state(
                    self.topics.camera(&camera, "state"),
                    state.to_string().into_bytes(),
                );
                if let Some(jpeg) = &r.snapshot {
                    self.publish_state(self.topics.camera(&camera, "snapshot"), jpeg.clone());
                }
            }
            (JobKind::Describe { .. }, _) => {}
            (JobKind::Sense { trigger, .. }, Ok(Output::Sensors(answers))) => {
                for answer in answers {
                    self.on_sensor_answer(&r, trigger, answer, &frame);
                }
            }
            (JobKind::Sense { .. }, _) => {}
            // Verdicts go straight back to the camera's detector thread.
            (JobKind::Verify(_), _) => {}
            (
                JobKind::Ask {
                    question,
                    reply,
                    answer,
                },
                outcome,
            ) => {
                let (text, error, timings) = match outcome {
                    Ok(Output::Text(d)) => (
                        Some(d.text.clone()),
                        None,
                        serde_json::to_value(&d.timings).ok(),
                    ),
                    Ok(Output::Typed(a)) => (
                        Some(a.value.to_string()),
                        None,
                        serde_json::to_value(&a.timings).ok(),
                    ),
                    Ok(Output::Sensors(_)) => (None, None, None),
                    Err(e) => (None, Some(e.clone()), None),
                };
                let mut payload = json!({
                    "id": job.id,
                    "camera": camera,
                    "time": rfc3339(r.finished),
                    "question": question,
                    "text": text,
                    "summary": text.as_deref().map(summarize),
                    "error": error,
                    "frame": frame,
                    "timings": timings,
                });
                if let Some(kind) = answer {
                    payload["answer"] = json!(kind.name());
                    if let Ok(Output::Typed(a)) = outcome {
                        payload["value"] = json!(a.value);
                        payload["confidence"] = json!(a.confidence);
                        payload["scores"] = json!(a.scores);
                    }
                }
                self.enqueue_answer(&camera, &payload, reply.as_ref());
                self.publish_state(
                    self.topics.camera(&camera, "last_answer"),
                    payload.to_string().into_bytes(),
                );
            }
        }
    }
}

impl Session {
    /// Publishes a sensor's answer, retained, when its value changed (or is the first since
    /// start): the state Home Assistant shows changes only when the answer does.
    fn on_sensor_answer(
        &mut self,
        r: &JobResult,
        trigger: &str,
        answer: &SensorAnswer,
        frame: &Value,
    ) {
        let camera = r.job.camera.name.as_str();
        let a = match &answer.answer {
            Ok(a) => a,
            Err(e) => {
                log::warn!(camera = camera, event_id = r.job.id.as_str(); "sensor {} not answered: {e}", answer.name);
                return;
            }
        };
        let key = (camera.to_string(), answer.name.clone());
        if self.sensor_values.get(&key) == Some(&a.value) {
            log::debug!(camera = camera; "sensor {} on {trigger}: still {}", answer.name, a.value);
            return;
        }
        let unit = r
            .job
            .camera
            .sensors
            .iter()
            .find(|s| s.name == answer.name)
            .and_then(|s| s.unit.clone());
        let payload = json!({
            "value": a.value,
            "confidence": a.confidence,
            "scores": a.scores,
            "time": rfc3339(r.finished),
            "frame": frame,
            "sensor": answer.name,
            "camera": camera,
            "question": a.question,
            "answer": a.answer,
            "unit": unit,
            "trigger": trigger,
            "timings": a.timings,
        });
        log::info!(camera = camera, event_id = r.job.id.as_str(); "sensor {}: {} ({:.2})", answer.name, a.value, a.confidence);
        self.sensor_values.insert(key, a.value.clone());
        self.publish_state(
            self.topics
                .camera(camera, &format!("sensor/{}", answer.name)),
            payload.to_string().into_bytes(),
        );
    }
}

/// A question from `<camera>/ask`: plain text, or JSON `{"id": …, "question": …, "answer": …}`
/// (a numeric id is accepted and kept as text).
#[derive(Debug, PartialEq)]
pub struct Ask {
    pub id: String,
    pub question: String,
    /// The answer type (`yes_no`, `number`, `text`, `choice:a,b` or `choice` with `options`);
    /// `None` for free text; an error when it is not one.
    pub answer: Result<Option<AnswerKind>, String>,
}

pub fn parse_ask(text: &str) -> Ask {
    if text.starts_with('{')
        && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text)
    {
        let id = match m.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => new_id(),
        };
        let question = m
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let answer = match (m.get("answer"), m.get("options")) {
            (None | Some(Value::Null), _) => Ok(None),
            (Some(Value::String(kind)), Some(Value::Array(options))) if kind == "choice" => options
                .iter()
                .map(|o| {
                    o.as_str()
                        .map(str::to_string)
                        .ok_or("options must be strings")
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(str::to_string)
                .and_then(AnswerKind::choice)
                .map(Some),
            (Some(Value::String(kind)), _) => kind.parse().map(Some),
            (Some(other), _) => Err(format!("answer must be a string, not {other}")),
        };
        return Ask {
            id,
            question,
            answer,
        };
    }
    Ask {
        id: new_id(),
        question: text.trim().to_string(),
        answer: Ok(None),
    }
}

/// Whether `topic` is `<discovery prefix>/<component>/<node>/<object>/config`.
fn is_own_discovery(topic: &str, discovery_prefix: &str, node: &str) -> bool {
    let Some(rest) = topic
        .strip_prefix(discovery_prefix)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    matches!(parts[..], [_, n, _, "config"] if n == node)
}

/// The first sentence (or line), at most 255 characters, cut on a character boundary.
pub fn summarize(text: &str) -> String {
    let text = text.trim();
    let first = text
        .char_indices()
        .find(|&(i, c)| {
            c == '\n'
                || (matches!(c, '.' | '!' | '?')
                    && text[i + c.len_utf8()..].starts_with(char::is_whitespace))
        })
        .map(|(i, c)| {
            if c == '\n' {
                &text[..i]
            } else {
                &text[..i + c.len_utf8()]
            }
        })
        .unwrap_or(text)
        .trim();
    if first.chars().count() <= SUMMARY_MAX {
        return first.to_string();
    }
    let mut out: String = first.chars().take(SUMMARY_MAX - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks() {
        assert_eq!(
            parse_ask(r#"{"id":"q1","question":" what? "}"#),
            Ask {
                id: "q1".into(),
                question: "what?".into(),
                answer: Ok(None)
            }
        );
        assert_eq!(parse_ask(r#"{"id":7,"question":"x"}"#).id, "7");
        let plain = parse_ask("is the door open?");
        assert!(!plain.id.is_empty());
        assert_eq!(plain.question, "is the door open?");
        assert_eq!(plain.answer, Ok(None));
        let answer = |json: &str| parse_ask(json).answer;
        assert_eq!(
            answer(r#"{"question":"x","answer":"yes_no"}"#),
            Ok(Some(AnswerKind::YesNo))
        );
        assert_eq!(
            answer(r#"{"question":"x","answer":"choice","options":["green","blue"]}"#),
            Ok(Some(AnswerKind::Choice(vec![
                "green".into(),
                "blue".into()
            ])))
        );
        assert_eq!(
            answer(r#"{"question":"x","answer":"choice:a,b"}"#),
            Ok(Some(AnswerKind::Choice(vec!["a".into(), "b".into()])))
        );
        assert!(
            answer(r#"{"question":"x","answer":"boolean"}"#)
                .unwrap_err()
                .contains("unknown answer type")
        );
        assert!(
            answer(r#"{"question":"x","answer":"choice","options":["a"]}"#)
                .unwrap_err()
                .contains("at least two")
        );
        assert!(answer(r#"{"question":"x","answer":3}"#).is_err());
    }

    #[test]
    fn own_discovery_topics() {
        let own = |t: &str| is_own_discovery(t, "homeassistant", "e2e");
        assert!(own("homeassistant/switch/e2e/porch_enabled/config"));
        assert!(!own("homeassistant/switch/other/porch_enabled/config"));
        assert!(!own("homeassistant/status"));
        assert!(!own("homeassistant/switch/e2e/porch_enabled/state"));
        assert!(!own("lookout/porch/ask"));
    }

    #[test]
    fn summaries() {
        assert_eq!(summarize("A cat sits. It sleeps."), "A cat sits.");
        assert_eq!(summarize("line one\nline two"), "line one");
        assert_eq!(summarize("3.5 cats"), "3.5 cats");
        let long = "é".repeat(400);
        let s = summarize(&long);
        assert_eq!(s.chars().count(), 255);
    }
}
