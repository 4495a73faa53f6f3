//! The daemon's configuration: one TOML file, every key overridable from the environment.
//!
//! Layering, lowest to highest: built-in defaults, the TOML file, then `LOOKOUT__SECTION__KEY`
//! variables (`LOOKOUT__MQTT__URL`, `LOOKOUT__CAMERA__0__FPS`: a numeric segment indexes the
//! `[[camera]]` array). Loading is two steps so that every problem is reported with the key that
//! caused it: the `config` crate deserializes (unknown keys and wrong types are errors naming the
//! key), then [`Config::validate`] checks values and cross-field rules and returns *all* problems
//! at once. Nothing falls back silently: a value that is present and wrong is an error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod detect;
pub mod sensor;

use anyhow::Context;
use lookout_models::Precision;
use serde::Deserialize;

/// Prefix of environment overrides; segments are separated by `__`.
pub const ENV_PREFIX: &str = "LOOKOUT__";
/// The model directory used when `[model] path` is not set and `$LOOKOUT_MODEL` is unset.
pub const DEFAULT_MODEL_DIR: &str = "/var/lib/lookout/models/minicpm-v-4.6";
/// See [`CameraConfig::reuse_threshold`]: above the noise of a camera sensor and of JPEG
/// re-compression after the model's downscaling, below what a person or car entering a slice
/// changes.
pub const DEFAULT_REUSE_THRESHOLD: f64 = 1.5;
/// The embedded broker's default listen address (loopback only: it has no authentication).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelConfig,
    pub mqtt: MqttConfig,
    #[serde(rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    pub outbox: OutboxConfig,
    pub log: LogConfig,
    pub daemon: DaemonConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model directory; `None` means `$LOOKOUT_MODEL`, else [`DEFAULT_MODEL_DIR`] when a model
    /// is installed there, else `id` downloaded into the cache.
    pub path: Option<PathBuf>,
    /// Registry id (`minicpm-v-4.6`, `minicpm-v-4.6-thinking`) or hub repository
    /// (`owner/name[@revision]`), fetched from `hub_url` on first start.
    pub id: String,
    /// The Hugging Face hub (or a mirror) that `id` is fetched from.
    pub hub_url: String,
    /// Where downloaded models go; default `$CACHE_DIRECTORY` (systemd), else
    /// `$XDG_CACHE_HOME/lookout`, else `~/.cache/lookout`.
    pub cache_dir: Option<PathBuf>,
    /// Weight precision: `f32`, `f16` or `q4_0`.
    pub weights: String,
    /// Worker threads for inference; `None` uses every core.
    pub threads: Option<usize>,
    /// Keep the quantized weights in `<cache_dir>/compiled` after the first start, so later
    /// starts map them instead of quantizing again.
    pub compiled_cache: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: None,
            id: "minicpm-v-4.6".into(),
            hub_url: lookout_models::hub::DEFAULT_HUB.into(),
            cache_dir: None,
            weights: "q4_0".into(),
            threads: None,
            compiled_cache: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`; unset starts the embedded broker.
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// CA bundle (PEM) for `mqtts://`; unset uses the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub topic_prefix: String,
    pub discovery_prefix: String,
    /// Publish Home Assistant discovery.
    pub discovery: bool,
    /// QoS of subscriptions (0, 1 or 2). Descriptions and answers are always QoS 1.
    pub qos: u8,
    /// Listen address of the embedded broker (only used without `url`).
    pub listen: String,
    /// Keep-alive in seconds.
    pub keep_alive: u64,
    /// MQTT protocol spoken to an external broker: "5" (answers also go to an asker's response
    /// topic, with its correlation data) or "3.1.1". The embedded broker speaks 3.1.1.
    pub protocol: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca: None,
            cert: None,
            key: None,
            topic_prefix: "lookout".into(),
            discovery_prefix: "homeassistant".into(),
            discovery: true,
            qos: 1,
            listen: DEFAULT_LISTEN.into(),
            keep_alive: 30,
            protocol: "5".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Used in topics and entity ids: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// `v4l2:///dev/video0`, `rtsp://…`, `libcamera://[name]`, `file:///clip.mp4`, `testsrc`,
    /// or a GStreamer description ending in an appsink (`gst:… ! appsink name=sink`).
    pub source: String,
    /// Frames sampled per second for triggers and on-demand questions.
    pub fps: f64,
    pub enabled: bool,
    pub prompt: String,
    pub max_tokens: usize,
    /// Describe every `interval` seconds; 0 disables.
    pub interval: f64,
    /// Scene-change threshold: mean absolute difference (0..1) of a small grayscale thumbnail
    /// against the last described frame; 0 disables.
    pub scene_change: f64,
    /// Minimum seconds between two scene-change descriptions.
    pub scene_min_gap: f64,
    /// Image slices for the model (more is slower and sees more detail); unset uses the model's.
    pub max_slices: Option<usize>,
    /// Snapshot width in pixels (height keeps the aspect ratio); 0 keeps the frame size.
    pub snapshot_width: u32,
    /// JPEG quality, 1..=100.
    pub snapshot_quality: u8,
    /// Seconds without a frame before the source is rebuilt.
    pub no_frame_timeout: f64,
    /// Object detection, tracking and first-sight descriptions (off without this table).
    pub detect: Option<detect::DetectConfig>,
    /// Standing questions, each answered as a Home Assistant entity.
    #[serde(rename = "sensor")]
    pub sensors: Vec<sensor::SensorConfig>,
    /// A slice whose preprocessed pixels differ from the last encoded ones by at most this mean
    /// absolute difference (0-255 levels) keeps its features; 0 reuses identical slices only.
    pub reuse_threshold: f64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            name: String::new(),
            source: String::new(),
            fps: 1.0,
            enabled: true,
            prompt: "Describe what is happening in this camera image in one or two sentences."
                .into(),
            max_tokens: 96,
            interval: 300.0,
            scene_change: 0.08,
            scene_min_gap: 10.0,
            max_slices: None,
            snapshot_width: 640,
            snapshot_quality: 80,
            no_frame_timeout: 20.0,
            detect: None,
            sensors: Vec::new(),
            reuse_threshold: DEFAULT_REUSE_THRESHOLD,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Directory; unset means `$STATE_DIRECTORY/outbox` under systemd, else
    /// `$XDG_STATE_HOME/lookout/outbox` (`~/.local/state/lookout/outbox`).
    pub path: Option<PathBuf>,
    /// Size cap in bytes; when exceeded the oldest messages are dropped (counted and logged).
    pub max_bytes: Option<u64>,
}

pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` (a plain level) wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// On SIGTERM, how long the job being run may take to finish before it is cancelled at its
    /// next token or image slice (seconds).
    pub shutdown_timeout: f64,
    /// A single inference taking longer than this stops the systemd watchdog (seconds).
    pub job_timeout: f64,
    /// On-demand jobs (questions, describe now) waiting at most; more are refused.
    pub queue_capacity: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            shutdown_timeout: 10.0,
            job_timeout: 600.0,
            queue_capacity: 16,
        }
    }
}

/// Where the model is.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A checkpoint directory, used as is.
    Dir(PathBuf),
    /// `repo` fetched from `hub` into `dir` (once; later starts use the copy).
    Hub {
        hub: String,
        repo: lookout_models::hub::RepoRef,
        dir: PathBuf,
    },
}

/// Where a camera's detector is: a file, or a hub file fetched into the cache on first start.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSource {
    /// The file the detector loads from.
    pub path: PathBuf,
    /// Set for an `hf://` model, fetched to `path` when it is not there yet.
    pub download: Option<DetectorDownload>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectorDownload {
    pub hub: String,
    pub file: lookout_models::hub::HubFile,
    /// The detector cache; `path` is `file.local_path(cache)`.
    pub cache: PathBuf,
}

impl ModelSource {
    pub fn dir(&self) -> &Path {
        match self {
            ModelSource::Dir(d) => d,
            ModelSource::Hub { dir, .. } => dir,
        }
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// Start rumqttd on this address and connect to it.
    Embedded(SocketAddr),
    External {
        host: String,
        port: u16,
        tls: bool,
    },
}

impl Config {
    /// Loads `file` (if any) and the environment, without validating values.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            // Read it ourselves: the error then says which file and why (missing, unreadable).
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading config file {}", file.display()))?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        for (key, value) in std::env::vars() {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path = env_key_to_path(rest)
                .with_context(|| format!("environment variable {key}: not a config key"))?;
            builder = builder
                .set_override(path.as_str(), value)
                .with_context(|| format!("environment variable {key}"))?;
        }
        let raw = builder.build().context("parsing configuration")?;
        let where_ = file
            .map(|f| format!(" in {}", f.display()))
            .unwrap_or_default();
        raw.try_deserialize::<Config>()
            .map_err(|e| anyhow::anyhow!("invalid configuration{where_}: {e}"))
    }

    /// Checks every value; returns all problems, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut err = |key: &str, msg: String| errors.push(format!("{key}: {msg}"));

        if self.model.weights.parse::<Precision>().is_err() {
            err(
                "model.weights",
                format!(
                    "unknown precision {:?}; use f32, f16 or q4_0",
                    self.model.weights
                ),
            );
        }
        if let Err(e) = lookout_models::hub::RepoRef::resolve(&self.model.id) {
            err("model.id", e.to_string());
        }
        if !(self.model.hub_url.starts_with("https://")
            || self.model.hub_url.starts_with("http://"))
        {
            err(
                "model.hub_url",
                format!("must be an http(s):// URL (got {:?})", self.model.hub_url),
            );
        }
        if self.model.threads == Some(0) {
            err("model.threads", "must be at least 1".into());
        }

        let m = &self.mqtt;
        match &m.url {
            Some(url) => {
                if let Err(e) = parse_mqtt_url(url) {
                    err("mqtt.url", e);
                }
            }
            None => {
                if let Err(e) = m.listen.parse::<SocketAddr>() {
                    err(
                        "mqtt.listen",
                        format!("{:?} is not an address like 127.0.0.1:1883 ({e})", m.listen),
                    );
                }
            }
        }
        if m.password.is_some() && m.password_file.is_some() {
            err(
                "mqtt.password_file",
                "set either mqtt.password or mqtt.password_file, not both".into(),
            );
        }
        if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
            err("mqtt.username", "a password is set but no username".into());
        }
        if let Some(f) = &m.password_file
            && let Err(e) = std::fs::read_to_string(f)
        {
            err(
                "mqtt.password_file",
                format!("cannot read {}: {e}", f.display()),
            );
        }
        let tls = m
            .url
            .as_deref()
            .and_then(|u| parse_mqtt_url(u).ok())
            .is_some_and(|b| matches!(b, Broker::External { tls: true, .. }));
        for (key, value) in [
            ("mqtt.ca", &m.ca),
            ("mqtt.cert", &m.cert),
            ("mqtt.key", &m.key),
        ] {
            if let Some(path) = value {
                if !tls {
                    err(key, "only used with an mqtts:// url".into());
                } else if let Err(e) = std::fs::metadata(path) {
                    err(key, format!("cannot read {}: {e}", path.display()));
                }
            }
        }
        if m.cert.is_some() != m.key.is_some() {
            err("mqtt.cert", "mqtt.cert and mqtt.key go together".into());
        }
        for (key, value) in [
            ("mqtt.topic_prefix", &m.topic_prefix),
            ("mqtt.discovery_prefix", &m.discovery_prefix),
        ] {
            if value.is_empty()
                || value.contains(['#', '+'])
                || value.starts_with('/')
                || value.ends_with('/')
            {
                err(
                    key,
                    format!(
                        "{value:?} is not a valid topic prefix (non-empty, no wildcards, no leading or trailing /)"
                    ),
                );
            }
        }
        if let Some(id) = &m.client_id
            && (id.is_empty() || id.len() > 64)
        {
            err("mqtt.client_id", "must be 1 to 64 characters".into());
        }
        if m.qos > 2 {
            err("mqtt.qos", format!("must be 0, 1 or 2 (got {})", m.qos));
        }
        if !matches!(m.protocol.as_str(), "5" | "3.1.1") {
            err(
                "mqtt.protocol",
                format!("must be \"5\" or \"3.1.1\" (got {:?})", m.protocol),
            );
        }
        if m.keep_alive < 5 {
            err(
                "mqtt.keep_alive",
                format!("must be at least 5 seconds (got {})", m.keep_alive),
            );
        }

        let mut names = HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let k = |field: &str| format!("camera[{i}].{field}");
            if c.name.is_empty() {
                err(&k("name"), "is required".into());
            } else if !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-')
            {
                err(
                    &k("name"),
                    format!(
                        "{:?} may only hold lowercase letters, digits, _ and -",
                        c.name
                    ),
                );
            } else if !names.insert(c.name.clone()) {
                err(
                    &k("name"),
                    format!("{:?} is used by another camera", c.name),
                );
            }
            if c.source.is_empty() {
                err(&k("source"), "is required".into());
            } else if let Err(e) = crate::camera::source::Source::parse(&c.source) {
                err(&k("source"), e.to_string());
            }
            if !(c.fps > 0.0 && c.fps <= 60.0) {
                err(
                    &k("fps"),
                    format!("must be greater than 0 and at most 60 (got {})", c.fps),
                );
            }
            if c.prompt.trim().is_empty() {
                err(&k("prompt"), "must not be empty".into());
            }
            if c.max_tokens == 0 || c.max_tokens > 4096 {
                err(
                    &k("max_tokens"),
                    format!("must be 1 to 4096 (got {})", c.max_tokens),
                );
            }
            if !(c.interval >= 0.0 && c.interval.is_finite()) {
                err(
                    &k("interval"),
                    format!(
                        "must be 0 (off) or a number of seconds (got {})",
                        c.interval
                    ),
                );
            } else if c.interval > 0.0 && c.interval < 1.0 {
                err(
                    &k("interval"),
                    format!("must be 0 (off) or at least 1 second (got {})", c.interval),
                );
            }
            if !(0.0..=1.0).contains(&c.scene_change) {
                err(
                    &k("scene_change"),
                    format!("must be between 0 (off) and 1 (got {})", c.scene_change),
                );
            }
            if !(c.scene_min_gap >= 0.0 && c.scene_min_gap.is_finite()) {
                err(
                    &k("scene_min_gap"),
                    format!("must be 0 or more seconds (got {})", c.scene_min_gap),
                );
            }
            if c.max_slices == Some(0) || c.max_slices.is_some_and(|s| s > 36) {
                err(
                    &k("max_slices"),
                    format!("must be 1 to 36 (got {:?})", c.max_slices.unwrap_or(0)),
                );
            }
            if c.snapshot_width > 7680 {
                err(
                    &k("snapshot_width"),
                    format!("must be at most 7680 (got {})", c.snapshot_width),
                );
            }
            if !(1..=100).contains(&c.snapshot_quality) {
                err(
                    &k("snapshot_quality"),
                    format!("must be 1 to 100 (got {})", c.snapshot_quality),
                );
            }
            if !(c.no_frame_timeout >= 1.0 && c.no_frame_timeout.is_finite()) {
                err(
                    &k("no_frame_timeout"),
                    format!("must be at least 1 second (got {})", c.no_frame_timeout),
                );
            }
            if let Some(detect) = &c.detect {
                detect.validate(&|f| k(&format!("detect.{f}")), &mut err);
            }
            if !(0.0..=64.0).contains(&c.reuse_threshold) {
                err(
                    &k("reuse_threshold"),
                    format!(
                        "must be 0 (identical slices only) to 64 levels (got {})",
                        c.reuse_threshold
                    ),
                );
            }
            let mut sensor_names = HashSet::new();
            let labels = c.detect.as_ref().map(|d| d.labels.as_slice());
            for (j, s) in c.sensors.iter().enumerate() {
                let ks = |field: &str| k(&format!("sensor[{j}].{field}"));
                s.validate(&ks, labels, c.scene_change, &mut err);
                if !s.name.is_empty() && !sensor_names.insert(s.name.as_str()) {
                    err(
                        &ks("name"),
                        format!("{:?} is used by another sensor of this camera", s.name),
                    );
                }
            }
        }
        if self.outbox.max_bytes.is_some_and(|b| b < 64 * 1024) {
            err("outbox.max_bytes", "must be at least 65536".into());
        }
        if log_level(&self.log.level).is_none() {
            err(
                "log.level",
                format!(
                    "unknown level {:?}; use error, warn, info, debug or trace",
                    self.log.level
                ),
            );
        }
        let d = &self.daemon;
        if !(d.shutdown_timeout >= 0.0 && d.shutdown_timeout <= 300.0) {
            err(
                "daemon.shutdown_timeout",
                format!("must be 0 to 300 seconds (got {})", d.shutdown_timeout),
            );
        }
        if !(d.job_timeout >= 1.0 && d.job_timeout.is_finite()) {
            err(
                "daemon.job_timeout",
                format!("must be at least 1 second (got {})", d.job_timeout),
            );
        }
        if d.queue_capacity == 0 || d.queue_capacity > 1024 {
            err(
                "daemon.queue_capacity",
                format!("must be 1 to 1024 (got {})", d.queue_capacity),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Loads and validates; one error listing every problem.
    pub fn load_valid(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = Config::load(file)?;
        if config.cameras.is_empty() {
            config.cameras.push(default_camera());
        }
        config.validate().map_err(|errors| {
            anyhow::anyhow!("invalid configuration:\n  {}", errors.join("\n  "))
        })?;
        Ok(config)
    }

    /// Where the model comes from: a directory given (or installed at [`DEFAULT_MODEL_DIR`]),
    /// or `model.id` from the hub into the cache.
    pub fn model_source(&self) -> anyhow::Result<ModelSource> {
        if let Some(p) = &self.model.path {
            return Ok(ModelSource::Dir(p.clone()));
        }
        if let Some(p) = std::env::var_os("LOOKOUT_MODEL") {
            return Ok(ModelSource::Dir(PathBuf::from(p)));
        }
        if Path::new(DEFAULT_MODEL_DIR).join("config.json").is_file() {
            return Ok(ModelSource::Dir(PathBuf::from(DEFAULT_MODEL_DIR)));
        }
        let repo = lookout_models::hub::RepoRef::resolve(&self.model.id).context("model.id")?;
        let dir = self.cache_dir()?.join("models").join(repo.dir_name());
        Ok(ModelSource::Hub {
            hub: self.model.hub_url.clone(),
            repo,
            dir,
        })
    }

    /// The model as a person names it: its hub id, or its directory's name.
    pub fn model_label(&self) -> String {
        match self.model_source() {
            Ok(ModelSource::Hub { repo, .. }) if repo.revision == "main" => repo.repo,
            Ok(ModelSource::Hub { repo, .. }) => format!("{}@{}", repo.repo, repo.revision),
            Ok(ModelSource::Dir(dir)) => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
            Err(_) => "unknown".into(),
        }
    }

    /// Where `detect.model` points (validated already).
    pub fn detector_source(&self, detect: &detect::DetectConfig) -> anyhow::Result<DetectorSource> {
        let model = detect.model.as_ref().context("detect.model is not set")?;
        match model.to_str().and_then(lookout_models::hub::HubFile::parse) {
            None => Ok(DetectorSource {
                path: model.clone(),
                download: None,
            }),
            Some(file) => {
                let file = file.context("detect.model")?;
                let cache = self.cache_dir()?.join("detectors");
                Ok(DetectorSource {
                    path: file.local_path(&cache),
                    download: Some(DetectorDownload {
                        hub: self.model.hub_url.clone(),
                        file,
                        cache,
                    }),
                })
            }
        }
    }

    fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.model.cache_dir {
            Some(p) => Ok(p.clone()),
            None => default_cache_dir(),
        }
    }

    /// Where the compiled cache lives, unless `model.compiled_cache` turns it off. A cache
    /// directory that cannot be found turns it off too, with a warning: the model still loads.
    pub fn compiled_cache_dir(&self) -> Option<PathBuf> {
        if !self.model.compiled_cache {
            return None;
        }
        match self.cache_dir() {
            Ok(dir) => Some(dir.join(COMPILED_CACHE)),
            Err(e) => {
                log::warn!("compiled cache off: {e:#}");
                None
            }
        }
    }

    pub fn precision(&self) -> Precision {
        // Validated before use; q4_0 is the documented default.
        self.model.weights.parse().unwrap_or(Precision::Q4_0)
    }

    pub fn broker(&self) -> Broker {
        match &self.mqtt.url {
            Some(url) => parse_mqtt_url(url)
                .unwrap_or(Broker::Embedded(DEFAULT_LISTEN.parse().expect("constant"))),
            None => Broker::Embedded(
                self.mqtt
                    .listen
                    .parse()
                    .unwrap_or_else(|_| DEFAULT_LISTEN.parse().expect("constant")),
            ),
        }
    }

    /// Whether the client speaks MQTT 5 (an external broker and `mqtt.protocol = "5"`).
    pub fn mqtt_v5(&self) -> bool {
        matches!(self.broker(), Broker::External { .. }) && self.mqtt.protocol == "5"
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("lookout-{}", hostname()))
    }

    pub fn outbox_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.outbox.path {
            Some(p) => Ok(p.clone()),
            None => Ok(service_dir(
                "STATE_DIRECTORY",
                "XDG_STATE_HOME",
                ".local/state",
                "outbox.path",
            )?
            .join("outbox")),
        }
    }

    /// The MQTT password, from `password` or `password_file` (trailing newline removed).
    pub fn mqtt_password(&self) -> anyhow::Result<Option<String>> {
        if let Some(p) = &self.mqtt.password {
            return Ok(Some(p.clone()));
        }
        match &self.mqtt.password_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("mqtt.password_file: cannot read {}", f.display()))?;
                Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
            }
            None => Ok(None),
        }
    }
}

impl CameraConfig {
    pub fn interval(&self) -> Option<Duration> {
        (self.interval > 0.0).then(|| Duration::from_secs_f64(self.interval))
    }
    pub fn sample_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps)
    }
    pub fn no_frame_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.no_frame_timeout)
    }
}

/// The compiled cache's directory inside the cache directory.
pub const COMPILED_CACHE: &str = "compiled";

/// The cache directory when `model.cache_dir` is not set: `$CACHE_DIRECTORY` (systemd), else
/// `$XDG_CACHE_HOME/lookout`, else `~/.cache/lookout`.
pub fn default_cache_dir() -> anyhow::Result<PathBuf> {
    service_dir(
        "CACHE_DIRECTORY",
        "XDG_CACHE_HOME",
        ".cache",
        "model.cache_dir",
    )
}

/// lookout's directory of one kind: systemd's (`STATE_DIRECTORY=`, `CACHE_DIRECTORY=`; the first
/// of a colon-separated list), else `$<xdg>/lookout`, else `~/<home_default>/lookout`.
fn service_dir(systemd: &str, xdg: &str, home_default: &str, key: &str) -> anyhow::Result<PathBuf> {
    if let Some(dirs) = std::env::var_os(systemd) {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return Ok(PathBuf::from(first));
    }
    if let Some(dir) = std::env::var_os(xdg) {
        return Ok(PathBuf::from(dir).join("lookout"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(home_default).join("lookout")),
        None => anyhow::bail!("{key}: not set, and neither {systemd}, {xdg} nor HOME is"),
    }
}

/// With no `[[camera]]`: the first V4L2 device, or the GStreamer test pattern when there is none.
pub fn default_camera() -> CameraConfig {
    let source = first_v4l2_device()
        .map(|d| format!("v4l2://{}", d.display()))
        .unwrap_or_else(|| "testsrc".into());
    CameraConfig {
        name: "default".into(),
        source,
        ..CameraConfig::default()
    }
}

/// The lowest-numbered `/dev/videoN` that captures video. Not simply `/dev/video0`: a UVC camera
/// also creates a metadata node, and a Raspberry Pi has codec and ISP nodes (`/dev/video10` and
/// up) that are not cameras at all.
fn first_v4l2_device() -> Option<PathBuf> {
    let mut devices: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    devices.sort();
    devices
        .into_iter()
        .map(|(_, p)| p)
        .find(|p| v4l2_device_caps(p).is_some_and(is_camera))
}

/// `VIDIOC_QUERYCAP`: the capabilities of the opened node (`device_caps` when the driver
/// reports them, else the device's).
fn v4l2_device_caps(path: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    /// `struct v4l2_capability` from linux/videodev2.h.
    #[repr(C)]
    struct Capability {
        driver: [u8; 16],
        card: [u8; 32],
        bus_info: [u8; 32],
        version: u32,
        capabilities: u32,
        device_caps: u32,
        reserved: [u32; 3],
    }
    const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;
    // _IOR('V', 0, struct v4l2_capability)
    const VIDIOC_QUERYCAP: libc::c_ulong = 0x8068_5600;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    // SAFETY: an all-zero `Capability` is valid; the ioctl fills at most its 104 bytes.
    let mut cap: Capability = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a struct of the size the request encodes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), VIDIOC_QUERYCAP, &mut cap) };
    if rc != 0 {
        return None;
    }
    Some(if cap.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    })
}

/// A camera captures video (single- or multi-planar) and is not a memory-to-memory codec.
fn is_camera(caps: u32) -> bool {
    const CAPTURE: u32 = 0x1;
    const CAPTURE_MPLANE: u32 = 0x1000;
    const M2M_MPLANE: u32 = 0x4000;
    const M2M: u32 = 0x8000;
    caps & (CAPTURE | CAPTURE_MPLANE) != 0 && caps & (M2M | M2M_MPLANE) == 0
}

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
pub fn parse_mqtt_url(url: &str) -> Result<Broker, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err("put credentials in mqtt.username and mqtt.password, not in the url".into());
    }
    if rest.contains('/') {
        return Err(format!("{url:?} must not have a path"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        // [v6]:port
        let (h, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{url:?}: junk after ]")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: port {p:?} is not a number from 1 to 65535"))?,
        None if tls => 8883,
        None => 1883,
    };
    if port == 0 {
        return Err(format!("{url:?}: port must not be 0"));
    }
    Ok(Broker::External { host, port, tls })
}

pub fn log_level(level: &str) -> Option<log::LevelFilter> {
    match level.trim().to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" => Some(log::LevelFilter::Error),
        "warn" | "warning" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// `MQTT__URL` → `mqtt.url`; `CAMERA__0__FPS` → `camera[0].fps`.
fn env_key_to_path(rest: &str) -> Option<String> {
    let mut path = String::new();
    for segment in rest.split("__") {
        if segment.is_empty() {
            return None;
        }
        let segment = segment.to_ascii_lowercase();
        if segment.chars().all(|c| c.is_ascii_digit()) {
            if path.is_empty() {
                return None;
            }
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    (!path.is_empty()).then_some(path)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_cameras_are_capture_nodes_only() {
        // A UVC webcam's capture node: video capture, streaming, extended pix format.
        assert!(is_camera(0x0420_0001));
        // Its metadata node, and a Raspberry Pi codec (M2M multi-planar).
        assert!(!is_camera(0x0480_0000));
        assert!(!is_camera(0x0420_4000));
        // A multi-planar capture node (Pi unicam/CSI-2 receivers).
        assert!(is_camera(0x0420_1000));
        // No device here, or not a V4L2 device: not a camera.
        assert_eq!(v4l2_device_caps(Path::new("/dev/null")), None);
    }

    #[test]
    fn env_paths() {
        assert_eq!(env_key_to_path("MQTT__URL").as_deref(), Some("mqtt.url"));
        assert_eq!(
            env_key_to_path("CAMERA__0__FPS").as_deref(),
            Some("camera[0].fps")
        );
        assert_eq!(env_key_to_path("0__X"), None);
        assert_eq!(env_key_to_path("A____B"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://broker").unwrap(),
            Broker::External {
                host: "broker".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(
            parse_mqtt_url("mqtts://[::1]:9").unwrap(),
            Broker::External {
                host: "::1".into(),
                port: 9,
                tls: true
            }
        );
        assert!(parse_mqtt_url("http://x").is_err());
        assert!(parse_mqtt_url("mqtt://u:p@x").is_err());
        assert!(parse_mqtt_url("mqtt://x:99999").is_err());
    }
}
