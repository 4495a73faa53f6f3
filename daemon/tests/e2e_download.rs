//! `[model] id`: the model is fetched from a hub on first start. A local HTTP server on
//! 127.0.0.1 plays the Hugging Face hub (`/<owner>/<name>/resolve/<revision>/<file>`), serving
//! the tiny fixture checkpoint.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

struct Hub {
    url: String,
    /// Request paths, in order.
    requests: Arc<Mutex<Vec<String>>>,
    /// Cut the next `model.safetensors` short (the connection drops mid-body).
    cut_weights: Arc<AtomicBool>,
}

impl Hub {
    fn start(repo: &'static str, files: PathBuf) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut_weights = Arc::new(AtomicBool::new(false));
        let (log, cut) = (requests.clone(), cut_weights.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(path.clone());
                let prefix = format!("/{repo}/resolve/main/");
                let file = path
                    .strip_prefix(&prefix)
                    .filter(|f| !f.contains('/'))
                    .map(|f| files.join(f))
                    .filter(|p| p.is_file());
                let _ = match file {
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                    Some(file) => {
                        let body = std::fs::read(&file).unwrap();
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let cut_now = path.ends_with("/model.safetensors")
                            && cut.swap(false, Ordering::SeqCst);
                        let sent = if cut_now {
                            &body[..body.len() / 2]
                        } else {
                            &body[..]
                        };
                        stream
                            .write_all(head.as_bytes())
                            .and_then(|_| stream.write_all(sent))
                    }
                };
            }
        });
        Hub {
            url,
            requests,
            cut_weights,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn download_config(dir: &Path, hub: &Hub, id: &str, broker: &Mosquitto) -> String {
    // The common config names a model path; this one names an id instead.
    let cfg = config(
        dir,
        &format!("url = \"{}\"", broker.url()),
        &testsrc_camera("yard", "interval = 1\nscene_change = 0"),
    );
    let model = format!(
        "[model]\nid = \"{id}\"\nhub_url = \"{}\"\ncache_dir = {:?}\nweights = \"f32\"\nthreads = 1\n",
        hub.url,
        dir.join("cache").display().to_string()
    );
    let rest = cfg.split_once("\n\n").unwrap().1;
    format!("{model}\n{rest}")
}

#[test]
fn model_is_downloaded_once_and_resumes_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let hub = Hub::start("test-org/tiny", model_dir());
    let model_dir = dir.path().join("cache/models/test-org--tiny--main");
    let cfg = download_config(dir.path(), &hub, "test-org/tiny@main", &broker);

    // First start: the weights arrive cut short. A clear error; what did arrive is kept.
    hub.cut_weights.store(true, Ordering::SeqCst);
    let mut first = Daemon::start(dir.path(), &cfg);
    let status = wait_exit(first.child.as_mut().unwrap(), T);
    assert!(!status.success());
    let log = first.log_text();
    assert!(
        log.contains("model.id: cannot download")
            && log.contains("model.safetensors")
            && log.contains("[model] path"),
        "{log}"
    );
    assert!(model_dir.join("config.json").is_file());
    assert!(!model_dir.join("model.safetensors").exists());

    // Second start: only the missing files are fetched, then the daemon runs on the model.
    let before = hub.requests().len();
    let sub = Subscriber::connect(broker.port, None);
    let mut second = Daemon::start(dir.path(), &cfg);
    sub.wait("description with the downloaded model", T, |m| {
        m.topic == "lookout/yard/description"
    });
    assert!(second.term().success());
    let fetched: Vec<String> = hub.requests()[before..].to_vec();
    assert!(
        fetched.iter().all(|p| !p.ends_with("/config.json")),
        "config.json fetched again: {fetched:?}"
    );
    assert!(fetched.iter().any(|p| p.ends_with("/model.safetensors")));
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "chat_template.jinja",
    ] {
        assert_eq!(
            std::fs::read(model_dir.join(file)).unwrap(),
            std::fs::read(common::model_dir().join(file)).unwrap(),
            "{file}"
        );
    }

    // Third start: the download is complete; the hub is not asked again.
    let before = hub.requests().len();
    let sub = Subscriber::connect(broker.port, None);
    let mut third = Daemon::start(dir.path(), &cfg);
    sub.wait("description from the cached model", T, |m| {
        m.topic == "lookout/yard/description"
    });
    assert!(third.term().success());
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());
}

#[test]
fn unknown_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let hub = Hub::start("test-org/tiny", model_dir());
    let cfg = download_config(dir.path(), &hub, "test-org/absent", &broker);
    let mut daemon = Daemon::start(dir.path(), &cfg);
    let status = wait_exit(daemon.child.as_mut().unwrap(), T);
    assert!(!status.success());
    let log = daemon.log_text();
    assert!(
        log.contains("model.id") && log.contains("test-org/absent") && log.contains("404"),
        "{log}"
    );

    // Not a model id at all: check-config names the key.
    let bad = dir.path().join("bad.toml");
    write(
        &bad,
        &download_config(dir.path(), &hub, "not a model", &broker),
    );
    let (ok, out) = lookout(&["check-config", bad.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("model.id"), "{out}");
}

#[test]
fn a_hub_detector_is_fetched_once_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/detectors");
    let hub = Hub::start("test-org/detectors", fixtures.clone());
    let camera = |model: &str| {
        testsrc_camera(
            "yard",
            &format!(
                "interval = 0\nscene_change = 0\n[camera.detect]\nmodel = \"{model}\"\nlabels = [\"ball\"]\n"
            ),
        )
    };
    let with_hub = |camera: &str| {
        config(dir.path(), &format!("url = \"{}\"", broker.url()), camera).replacen(
            "[model]\n",
            &format!(
                "[model]\nhub_url = \"{}\"\ncache_dir = {:?}\n",
                hub.url,
                dir.path().join("cache").display().to_string()
            ),
            1,
        )
    };
    let cfg = with_hub(&camera("hf://test-org/detectors/ball.onnx"));
    let cached = dir
        .path()
        .join("cache/detectors/test-org--detectors--main/ball.onnx");

    // check-config does not fetch: that is `run`'s first start.
    let path = dir.path().join("lookout.toml");
    write(&path, &cfg);
    let (ok, out) = lookout(&["check-config", path.to_str().unwrap()], &[]);
    assert!(ok, "{out}");
    assert!(!cached.exists() && hub.requests().is_empty());

    for start in ["first", "second"] {
        let sub = Subscriber::connect(broker.port, None);
        let mut daemon = Daemon::start(dir.path(), &cfg);
        sub.wait(&format!("{start} start: a ball"), T, |m| {
            m.topic == "lookout/events" && m.json()["type"] == "new"
        });
        assert!(daemon.term().success());
    }
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(fixtures.join("ball.onnx")).unwrap()
    );
    assert_eq!(
        hub.requests(),
        ["/test-org/detectors/resolve/main/ball.onnx"],
        "fetched once"
    );

    // A file the hub does not have: the detector says so, naming it; the camera runs on.
    let cfg = with_hub(&camera("hf://test-org/detectors/missing.onnx"));
    let sub = Subscriber::connect(broker.port, None);
    let mut daemon = Daemon::start(dir.path(), &cfg);
    let status = sub.wait("the detector's error", T, |m| {
        m.topic == "lookout/yard/detector" && m.json()["state"] == "error"
    });
    let error = status.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("test-org/detectors@main/missing.onnx") && error.contains("HTTP 404"),
        "{error}"
    );
    sub.wait("the camera still online", T, |m| {
        m.topic == "lookout/yard/status" && m.json()["state"] == "online"
    });
    assert!(daemon.term().success());

    // A malformed reference is a config error that names the key.
    write(&path, &with_hub(&camera("hf://test-org/ball.onnx")));
    let (ok, out) = lookout(&["check-config", path.to_str().unwrap()], &[]);
    assert!(
        !ok && out.contains("camera[0].detect.model") && out.contains("hf://owner/name"),
        "{out}"
    );
}
