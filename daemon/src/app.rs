//! `lookout run`: wires configuration, model, cameras, MQTT and systemd together.
//!
//! Lifetimes: the model (worker thread), the job queue, the outbox and the embedded broker live
//! for the whole process. Cameras and the MQTT session form a *generation* that SIGHUP replaces
//! with one built from the re-read configuration, so a reload never reloads the model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use lookout_pipeline::engine::EngineOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::camera::{CameraShared, supervisor};
use crate::config::{
    Broker, CameraConfig, Config, DEFAULT_MODEL_DIR, DEFAULT_OUTBOX_MAX_BYTES, ModelSource,
    detect::DetectConfig,
};
use crate::detection::slot::FrameSlot;
use crate::jobs::{Job, JobKind, JobQueue, JobResult};
use crate::mqtt::Topics;
use crate::mqtt::session::{Control, Session, SessionParts};
use crate::outbox::Outbox;
use crate::service::{self, Health};

/// With detection on, inference threads run this many `nice` steps below the detector threads:
/// on a 2-core board a detector thread then gets a whole core when it wants one (CFS weights
/// 1024 against 2 x 335), instead of a third of the machine.
const INFERENCE_NICENESS: i32 = 5;
/// How long a clean stop keeps trying to deliver the outbox.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, how long a cancelled job may take to reach its next token or image slice.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

pub fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load_valid(config_file.as_deref())?;
    crate::logging::init(&config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lookout-rt")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(config_file, config))
}

/// Everything checked before the model is loaded, so a bad setting fails in milliseconds.
fn preflight(config: &Config) -> anyhow::Result<()> {
    if let ModelSource::Dir(dir) = config.model_source()?
        && !dir.join("config.json").is_file()
    {
        anyhow::bail!(
            "model.path: no model at {} (set [model] path in the config file, LOOKOUT__MODEL__PATH or LOOKOUT_MODEL, or leave them unset to download model.id)",
            dir.display()
        );
    }
    // Reads the password file and TLS material: errors name their key.
    crate::mqtt::check(config)?;
    Ok(())
}

struct Generation {
    cameras: Arc<BTreeMap<String, Arc<CameraShared>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    control: mpsc::Sender<Control>,
    session: tokio::task::JoinHandle<SessionParts>,
    connection: tokio::task::JoinHandle<()>,
}

async fn run_async(config_file: Option<PathBuf>, config: Config) -> anyhow::Result<()> {
    preflight(&config)?;
    crate::camera::gst::init()?;
    let outbox_dir = config.outbox_dir()?;
    let outbox = Outbox::open(
        &outbox_dir,
        config.outbox.max_bytes.unwrap_or(DEFAULT_OUTBOX_MAX_BYTES),
    )?;
    if !outbox.is_empty() {
        log::info!(
            "outbox holds {} undelivered message(s) from before",
            outbox.len()
        );
    }
    let embedded = match config.broker() {
        Broker::Embedded(addr) => {
            crate::broker::start(addr)?;
            Some(addr)
        }
        Broker::External { .. } => None,
    };

    // Signals first, so a SIGTERM during the model load is not fatal-by-default.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let queue = JobQueue::new(config.daemon.queue_capacity);
    let (results_tx, results_rx) = mpsc::channel::<JobResult>(16);
    let (loaded_tx, loaded_rx) = oneshot::channel();
    // Downloading and loading are progress: keep the watchdog fed, and tell systemd that
    // start-up is still going (a first download can outlast TimeoutStartSec).
    let load_pet = tokio::spawn(async {
        let period = sd_notify::watchdog_enabled()
            .map(|d| d / 2)
            .unwrap_or(Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            let extend = format!("EXTEND_TIMEOUT_USEC={}", (period * 3).as_micros());
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Custom(&extend),
            ]);
        }
    });
    let model_dir = match config.model_source()? {
        ModelSource::Dir(dir) => dir,
        ModelSource::Hub { hub, repo, dir } => {
            if !lookout_models::hub::is_complete(&dir) {
                let what = format!("{hub}/{}@{}", repo.repo, repo.revision);
                service::status(&format!("downloading model {what}"));
                log::info!("downloading model {what} into {}", dir.display());
                let target = dir.clone();
                let download = tokio::task::spawn_blocking(move || {
                    lookout_models::hub::fetch(&hub, &repo, &target, &mut |file| {
                        log::info!("downloading {file}")
                    })
                });
                tokio::select! {
                    r = download => r.context("the download task failed")?
                        .map_err(|e| download_failed(&what, e))?,
                    _ = sigterm.recv() => { log::info!("stopped while downloading the model"); return Ok(()) }
                    _ = sigint.recv() => { log::info!("stopped while downloading the model"); return Ok(()) }
                }
                log::info!("model downloaded");
            }
            dir
        }
    };
    service::status(&format!("loading model from {}", model_dir.display()));
    log::info!(
        "loading model from {} ({})",
        model_dir.display(),
        config.model.weights
    );
    // Detection keeps its rate while a description is made: inference yields the CPU to it.
    if config.cameras.iter().any(|c| c.detect.is_some()) {
        lookout_pipeline::threads::set_niceness(INFERENCE_NICENESS);
    }
    // The session outlives the worker at shutdown; questions still queued are answered here.
    let shutdown_results = results_tx.clone();
    let worker = crate::jobs::spawn_worker(
        model_dir,
        EngineOptions {
            precision: config.precision(),
            threads: config.model.threads,
            compiled_cache: config.compiled_cache_dir(),
        },
        queue.clone(),
        results_tx,
        loaded_tx,
    )?;
    let loaded = tokio::select! {
        r = loaded_rx => r.unwrap_or_else(|_| Err(anyhow::anyhow!("the inference thread died while loading the model"))),
        _ = sigterm.recv() => { log::info!("stopped while loading the model"); return Ok(()) }
        _ = sigint.recv() => { log::info!("stopped while loading the model"); return Ok(()) }
    };
    load_pet.abort();
    loaded?;
    log::info!("model loaded");

    let main_loop = Arc::new(AtomicU64::new(crate::clock::now_ms()));
    let mut parts = SessionParts {
        outbox,
        results: results_rx,
    };
    let mut config = config;
    let mut generation = start_generation(&config, &queue, parts, &main_loop, Vec::new())?;
    let health = Arc::new(Health {
        main_loop: main_loop.clone(),
        cameras: std::sync::Mutex::new(generation.cameras.clone()),
        queue: queue.clone(),
        job_timeout: Duration::from_secs_f64(config.daemon.job_timeout),
    });
    let watchdog = tokio::spawn(service::watchdog(health.clone()));
    service::ready(&format!("serving {} camera(s)", generation.cameras.len()));
    log::info!("ready: {} camera(s)", generation.cameras.len());

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                service::reloading();
                match Config::load_valid(config_file.as_deref()).and_then(|c| preflight(&c).map(|_| c)) {
                    Err(e) => log::error!("reload failed, keeping the running configuration: {e:#}"),
                    Ok(new) => {
                        if new.model != config.model {
                            log::warn!("[model] changed: restart lookout to load another model");
                        }
                        if new.broker() != config.broker() && embedded.is_some() {
                            log::warn!("the embedded broker keeps listening on {}: restart to change it", embedded.unwrap_or_else(|| crate::config::DEFAULT_LISTEN.parse().expect("constant")));
                        }
                        let previous = config.cameras.clone();
                        // Moving to another broker or topic prefix leaves `stopped` on the old
                        // availability topic, or whatever watches it there sees lookout online forever.
                        let moved = new.broker() != config.broker()
                            || new.mqtt.topic_prefix != config.mqtt.topic_prefix;
                        parts = stop_generation(generation, &queue, moved).await?;
                        config = new;
                        generation = start_generation(&config, &queue, parts, &main_loop, previous)?;
                        *health.cameras.lock().unwrap_or_else(|p| p.into_inner()) = generation.cameras.clone();
                        log::info!("reloaded: {} camera(s)", generation.cameras.len());
                    }
                }
                service::ready(&format!("serving {} camera(s)", generation.cameras.len()));
            }
        }
    }

    // Clean stop: no new triggers; questions still waiting are told so; the job being run has
    // `shutdown_timeout` to finish, then stops at its next token or image slice; flush; `stopped`.
    service::stopping();
    log::info!("stopping");
    watchdog.abort();
    for camera in generation.cameras.values() {
        camera.stop.store(true, Ordering::Relaxed);
    }
    tell_waiting_askers(queue.close(), &shutdown_results).await;
    let timeout = Duration::from_secs_f64(config.daemon.shutdown_timeout);
    let mut finished = tokio::task::spawn_blocking(move || worker.join());
    if tokio::time::timeout(timeout, &mut finished).await.is_err() {
        log::info!(
            "the job being run did not finish within {timeout:?} (daemon.shutdown_timeout): cancelling it"
        );
        queue.cancel_running();
        if tokio::time::timeout(CANCEL_GRACE, &mut finished)
            .await
            .is_err()
        {
            log::warn!(
                "the job being run did not stop within {CANCEL_GRACE:?} of being cancelled: abandoned"
            );
        }
    }
    stop_generation(generation, &queue, true).await?;
    log::info!("stopped");
    Ok(())
}

/// The first start could not fetch the model: the cause, then what else a user (often on a box
/// that is offline on purpose) can do.
fn download_failed(what: &str, cause: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "model.id: cannot download {what}: {cause:#}\n(no model is installed: put a checkpoint \
         directory at {DEFAULT_MODEL_DIR}, or name one with [model] path or $LOOKOUT_MODEL; an \
         offline box can point [model] hub_url at a local mirror)"
    )
}

/// Answers the questions that were still queued at shutdown, through the outbox like any answer;
/// queued descriptions are only counted.
async fn tell_waiting_askers(waiting: Vec<Job>, results: &mpsc::Sender<JobResult>) {
    let mut descriptions = 0;
    for job in waiting {
        match job.kind {
            JobKind::Ask { .. } => {
                log::info!(camera = job.camera.name.as_str(), event_id = job.id.as_str(); "question not answered: lookout is stopping");
                let _ = results.send(crate::jobs::not_run(job)).await;
            }
            JobKind::Describe { .. } | JobKind::Sense { .. } => descriptions += 1,
            // The detector thread that waits for it is stopping too.
            JobKind::Verify(_) => {}
        }
    }
    if descriptions > 0 {
        log::info!(
            "{descriptions} queued description(s) or sensor answer(s) not made: lookout is stopping"
        );
    }
}

fn start_generation(
    config: &Config,
    queue: &Arc<JobQueue>,
    parts: SessionParts,
    main_loop: &Arc<AtomicU64>,
    previous: Vec<CameraConfig>,
) -> anyhow::Result<Generation> {
    let (status_tx, status_rx) = mpsc::channel(64);
    let (detection_tx, detection_rx) = mpsc::channel(64);
    let mut cameras = BTreeMap::new();
    let mut threads = Vec::new();
    for camera in &config.cameras {
        let shared = CameraShared::new(camera.clone());
        let slot = match &camera.detect {
            Some(detect) => {
                let slot = Arc::new(FrameSlot::default());
                threads.push(
                    crate::detection::worker::spawn(
                        shared.clone(),
                        detect.clone(),
                        config.detector_source(detect)?,
                        slot.clone(),
                        queue.clone(),
                        detection_tx.clone(),
                    )
                    .context("starting a detector thread")?,
                );
                Some(slot)
            }
            None => None,
        };
        threads.push(
            supervisor::spawn(shared.clone(), queue.clone(), status_tx.clone(), slot)
                .context("starting a camera thread")?,
        );
        cameras.insert(camera.name.clone(), shared);
    }
    let cameras = Arc::new(cameras);

    let (conn_tx, conn_rx) = mpsc::channel(256);
    let (client, connection) = crate::mqtt::connect(config, conn_tx)?;
    let (control_tx, control_rx) = mpsc::channel(1);
    let session = Session::new(
        Topics::new(config),
        crate::mqtt::qos(config.mqtt.qos),
        config.mqtt.discovery,
        crate::discovery::node_id(&config.client_id()),
        config.model_label(),
        client,
        cameras.clone(),
        previous,
        queue.clone(),
        parts.outbox,
        main_loop.clone(),
    );
    let session =
        tokio::spawn(session.run(conn_rx, status_rx, parts.results, detection_rx, control_rx));
    Ok(Generation {
        cameras,
        threads,
        control: control_tx,
        session,
        connection,
    })
}

async fn stop_generation(
    generation: Generation,
    queue: &Arc<JobQueue>,
    stopped: bool,
) -> anyhow::Result<SessionParts> {
    for camera in generation.cameras.values() {
        camera.stop.store(true, Ordering::Relaxed);
        queue.forget_camera(camera.name());
    }
    // Camera threads notice within a tick; join off the runtime.
    let threads = generation.threads;
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    let (done_tx, done_rx) = oneshot::channel();
    let _ = generation
        .control
        .send(Control::Stop {
            flush: FLUSH_TIMEOUT,
            stopped,
            done: done_tx,
        })
        .await;
    let _ = done_rx.await;
    let parts = generation
        .session
        .await
        .context("the MQTT session task failed");
    generation.connection.abort();
    parts
}

/// `lookout check-config FILE`: everything `run` checks before loading the model.
pub fn check(file: &Path) -> anyhow::Result<String> {
    let config = Config::load_valid(Some(file))?;
    preflight(&config)?;
    // `run` reports a missing plugin as that camera's status and keeps the others going; here
    // it is an error, since the camera could never start.
    crate::camera::gst::init()?;
    for (i, camera) in config.cameras.iter().enumerate() {
        if let Ok(source) = crate::camera::source::Source::parse(&camera.source) {
            crate::camera::gst::check_elements(&source)
                .map_err(|e| anyhow::anyhow!("camera[{i}].source: {e}"))?;
        }
        // `run` keeps a camera whose detector cannot load describing; here it is an error.
        if let Some(detect) = &camera.detect {
            let source = config.detector_source(detect)?;
            // A hub detector not fetched yet is fetched by `run`; one already here is loaded.
            if source.download.is_none() || source.path.is_file() {
                let detect = DetectConfig {
                    model: Some(source.path),
                    ..detect.clone()
                };
                crate::detection::worker::load_detector(&detect)
                    .map_err(|e| anyhow::anyhow!("camera[{i}].detect.model: {e:#}"))?;
            }
        }
    }
    let broker = match config.broker() {
        Broker::Embedded(addr) => format!("embedded broker on {addr}"),
        Broker::External { host, port, tls } => {
            format!("{}://{host}:{port}", if tls { "mqtts" } else { "mqtt" })
        }
    };
    let cameras: Vec<String> = config
        .cameras
        .iter()
        .map(|c| {
            format!(
                "{} ({})",
                c.name,
                crate::camera::source::Source::parse(&c.source)
                    .map(|s| s.redacted())
                    .unwrap_or_default()
            )
        })
        .collect();
    Ok(format!(
        "{}: ok\n  model: {} ({})\n  mqtt: {broker}, topics under {}/\n  cameras: {}\n  outbox: {}",
        file.display(),
        match config.model_source()? {
            ModelSource::Dir(dir) => dir.display().to_string(),
            ModelSource::Hub { hub, repo, dir } => format!(
                "{} from {hub}/{}@{} ({})",
                dir.display(),
                repo.repo,
                repo.revision,
                if lookout_models::hub::is_complete(&dir) {
                    "downloaded"
                } else {
                    "downloaded on first start"
                }
            ),
        },
        config.model.weights,
        config.mqtt.topic_prefix,
        cameras.join(", "),
        config
            .outbox_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("{e:#}"))
    ))
}
