//! Shared harness for the end-to-end tests: a real mosquitto on a free loopback port, a real
//! MQTT subscriber, the real `lookout` binary, and the tiny fixture model.
//!
//! Needs (Debian): mosquitto mosquitto-clients gstreamer1.0-tools gstreamer1.0-plugins-base
//! gstreamer1.0-plugins-good openssl, libgstrtspserver-1.0-dev for the RTSP test server, and a C
//! compiler (build-essential) for the emulated V4L2 webcam.

#![allow(dead_code)]

pub mod virtual_camera;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// The `lookout` binary under test: the one Cargo built, or `LOOKOUT_TEST_BIN` run through
/// `LOOKOUT_TEST_RUNNER` (cross/test runs these tests against the ARM builds under
/// qemu that way).
pub fn lookout_command() -> Command {
    let bin = std::env::var("LOOKOUT_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lookout").to_string());
    let runner = std::env::var("LOOKOUT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// When a wait of `timeout` gives up. Under an emulator (`LOOKOUT_TEST_RUNNER`, qemu-user for the
/// ARM builds) the model runs about 50 times slower than natively, so every wait is 5 times
/// longer there: a wait guards against a hang, it does not measure speed.
pub fn deadline(timeout: Duration) -> Instant {
    let emulated = std::env::var_os("LOOKOUT_TEST_RUNNER").is_some_and(|r| !r.is_empty());
    Instant::now() + if emulated { timeout * 5 } else { timeout }
}

pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures/minicpmv46-tiny-16x")
        .canonicalize()
        .expect("the tiny fixture model is in models/fixtures")
}

/// Whether this host has a `/dev/video*` node, which `lookout run` with no `[[camera]]` would use.
pub fn host_has_video_nodes() -> bool {
    std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("video"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let until = deadline(timeout);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

pub fn require(binary: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(binary).is_file())
        })
        .unwrap_or(false);
    assert!(found, "{binary} not found: apt-get install {package}");
}

fn mosquitto_bin() -> PathBuf {
    require("mosquitto", "mosquitto");
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}

/// A mosquitto process; `conf` is the body of its config file (listeners included).
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    conf: String,
    child: Option<Child>,
}

impl Mosquitto {
    /// Anonymous, plain listener on a free port, persistence on (so a restart keeps the test
    /// subscriber's session and its queued messages, as a production broker would).
    pub fn start(dir: &Path) -> Mosquitto {
        let port = free_port();
        let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        Mosquitto::with_conf(dir, port, conf)
    }

    pub fn with_conf(dir: &Path, port: u16, listeners: String) -> Mosquitto {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            // `user root`: as root, mosquitto would otherwise switch to the mosquitto user, which
            // cannot read the test's private temp dir (certificates, password file, persistence).
            "user root\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest file {}/mosquitto.log\nlog_type all\n{listeners}",
            dir.display(),
            dir.display()
        );
        let mut m = Mosquitto {
            port,
            dir,
            conf,
            child: None,
        };
        m.restart();
        m
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let conf_path = self.dir.join("mosquitto.conf");
        std::fs::write(&conf_path, &self.conf).unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A subscriber to `#` with a persistent session (QoS 1), recording everything it receives.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Msg>>>,
    pub client: Client,
}

impl Subscriber {
    pub fn connect(port: u16, credentials: Option<(&str, &str)>) -> Subscriber {
        let id = format!("e2e-sub-{}", free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(16 << 20, 16 << 20);
        if let Some((u, p)) = credentials {
            options.set_credentials(u, p);
        }
        let (client, mut connection) = Client::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let sub = client.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe("#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        Subscriber { messages, client }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.messages.lock().unwrap().clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `pred` holds for some message received so far; returns the first such.
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_after(0, what, timeout, pred)
    }

    /// Like [`Subscriber::wait`], among the messages after the first `seen` received (from
    /// `self.all().len()` taken earlier): for a state that recurs, such as offline, then online.
    pub fn wait_after(
        &self,
        seen: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let until = deadline(timeout);
        loop {
            if let Some(m) = self.all().into_iter().skip(seen).find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < until,
                "timed out after {timeout:?} waiting for {what}; got topics {:?}",
                self.topics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` messages on `topic`.
    pub fn wait_count(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Msg> {
        let until = deadline(timeout);
        loop {
            let got = self.on(topic);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < until,
                "timed out after {timeout:?} waiting for {n} messages on {topic} (got {})",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.all().into_iter().map(|m| m.topic).collect();
        t.sort();
        t.dedup();
        t
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .unwrap();
    }
}

/// What an MQTT 5 client receives on its response topic after publishing a request with
/// that response topic and `correlation` as correlation data: (payload, correlation data).
pub fn ask_v5(
    port: u16,
    topic: &str,
    request: &str,
    response_topic: &str,
    correlation: &[u8],
    timeout: Duration,
) -> (Vec<u8>, Option<Vec<u8>>) {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};
    use rumqttc::v5::{Client as Client5, Event as Event5, MqttOptions as Options5};

    let mut options = Options5::new(format!("e2e-asker-{}", free_port()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client5::new(options, 16);
    let until = deadline(timeout);
    let mut asked = false;
    for event in connection.iter() {
        assert!(
            Instant::now() < until,
            "no reply on {response_topic} within {timeout:?}"
        );
        match event {
            Ok(Event5::Incoming(Packet5::ConnAck(_))) => {
                client.subscribe(response_topic, QoS5::AtLeastOnce).unwrap();
            }
            Ok(Event5::Incoming(Packet5::SubAck(_))) if !asked => {
                let properties = PublishProperties {
                    response_topic: Some(response_topic.into()),
                    correlation_data: Some(correlation.to_vec().into()),
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        topic,
                        QoS5::AtLeastOnce,
                        false,
                        request.as_bytes().to_vec(),
                        properties,
                    )
                    .unwrap();
                asked = true;
            }
            Ok(Event5::Incoming(Packet5::Publish(p))) if p.topic == response_topic.as_bytes() => {
                let correlation = p
                    .properties
                    .and_then(|props| props.correlation_data)
                    .map(|d| d.to_vec());
                return (p.payload.to_vec(), correlation);
            }
            Ok(_) => {}
            Err(e) => panic!("MQTT 5 asker: {e}"),
        }
    }
    panic!("MQTT 5 asker: connection closed")
}

/// A `NOTIFY_SOCKET` for `lookout run`, read all along as systemd does: its queue holds only a
/// few datagrams (net.unix.max_dgram_qlen, 10 by default), and a full one blocks the sender.
pub struct NotifySocket {
    notes: Arc<Mutex<String>>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        let notes = Arc::new(Mutex::new(String::new()));
        let sink = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let mut notes = sink.lock().unwrap();
                notes.push_str(&String::from_utf8_lossy(&buf[..n]));
                notes.push('\n');
            }
        });
        NotifySocket { notes }
    }

    /// Every notification so far, one datagram per line.
    pub fn text(&self) -> String {
        self.notes.lock().unwrap().clone()
    }

    /// Waits until `what` (such as `READY=1`) has been sent by `daemon`.
    pub fn wait_for(&self, what: &str, timeout: Duration, daemon: &Daemon) {
        let until = deadline(timeout);
        while !self.text().contains(what) {
            assert!(
                Instant::now() < until,
                "no {what}: {:?}\n{}",
                self.text(),
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `lookout run` process with its stderr captured to a file.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::start_with_env(dir, config, &[])
    }

    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_command(dir, config, lookout_command(), env)
    }

    /// `lookout run` through `cmd`: the binary, or a command that ends by running it.
    pub fn start_command(
        dir: &Path,
        config: &str,
        mut cmd: Command,
        env: &[(&str, &str)],
    ) -> Daemon {
        let config_path = dir.join("lookout.toml");
        std::fs::write(&config_path, config).unwrap();
        cmd.arg("run").arg("--config").arg(&config_path);
        Daemon::spawn(dir, cmd, env)
    }

    /// Runs `cmd` (a whole `lookout` command line) with its log in `dir`.
    pub fn spawn(dir: &Path, mut cmd: Command, env: &[(&str, &str)]) -> Daemon {
        let n = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("lookout-{n}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::null()).stderr(stderr);
        cmd.env("RUST_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting lookout");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, what: &str, timeout: Duration) {
        let until = deadline(timeout);
        while !self.log_text().contains(what) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what:?} in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Event ids the daemon logged as described, in order.
    pub fn described_ids(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" described in "))
            .filter_map(|l| l.split(" event_id=").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    }

    pub fn term(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        wait_exit(&mut child, Duration::from_secs(60))
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- the end of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let until = deadline(timeout);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `lookout` with `args`; (exit success, stdout + stderr).
pub fn lookout(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = lookout_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A config file for the tiny model; `mqtt` and `cameras` are TOML fragments.
pub fn config(dir: &Path, mqtt: &str, cameras: &str) -> String {
    format!(
        "[model]\npath = {:?}\nweights = \"f32\"\nthreads = 1\n\n[outbox]\npath = {:?}\n\n[log]\nlevel = \"debug\"\n\n[daemon]\nshutdown_timeout = 20\n\n[mqtt]\nclient_id = \"e2e\"\n{mqtt}\n\n{cameras}\n",
        model_dir().display().to_string(),
        dir.join("outbox").display().to_string()
    )
}

/// A camera on the live test pattern, small and quick.
pub fn testsrc_camera(name: &str, extra: &str) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nsource = \"gst:videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=5/1 ! videoconvert ! appsink name=sink\"\nfps = 2\nmax_tokens = 4\nsnapshot_width = 80\n{extra}\n"
    )
}

/// A 3-second 160x120 MJPEG/AVI clip made with gst-launch (plugins-good: jpegenc, avimux).
pub fn make_clip(path: &Path) {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let status = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=30",
            "pattern=smpte",
            "!",
            "video/x-raw,width=160,height=120,framerate=10/1",
            "!",
            "jpegenc",
            "!",
            "avimux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", path.display()))
        .status()
        .expect("running gst-launch-1.0");
    assert!(
        status.success(),
        "gst-launch-1.0 could not make the clip (gstreamer1.0-plugins-good installed?)"
    );
}

pub fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `mosquitto_passwd -b -c FILE user password`.
pub fn password_file(path: &Path, user: &str, password: &str) {
    require("mosquitto_passwd", "mosquitto");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(path)
        .arg(user)
        .arg(password)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate (for brokers that
/// require one: mutual TLS), made with the openssl CLI.
pub fn make_certs(dir: &Path) {
    require("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lookout-test-ca",
    ]);
    // `name`.key and `name`.pem, signed by the CA, with the extensions in `extensions`.
    let signed = |name: &str, subject: &str, extensions: &str| {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        write(&dir.join(&ext), extensions);
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    };
    signed(
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    signed(
        "client",
        "/CN=lookout-client",
        "extendedKeyUsage=clientAuth\n",
    );
}

/// Builds `tests/common/NAME.c` into the preload library `dir/libNAME.so` with the host's C
/// compiler.
pub fn build_preload(dir: &Path, name: &str) -> PathBuf {
    require("cc", "build-essential");
    let library = dir.join(format!("lib{name}.so"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/common/{name}.c"));
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    library
}

/// Returns the environment that makes `device` (a new link to /dev/null) a 320x240 YUYV webcam
/// sending frames of colour `rgb` (until [`FakeV4l2::show`] changes the scene), unplugged while
/// the file `unplugged` exists.
pub fn fake_v4l2_camera(dir: &Path, device: &Path, rgb: [u8; 3]) -> FakeV4l2 {
    let library = build_preload(dir, "fake_v4l2");
    std::os::unix::fs::symlink("/dev/null", device).unwrap();
    FakeV4l2 {
        library,
        device: device.to_path_buf(),
        unplugged: dir.join("camera-unplugged"),
        scene: dir.join("camera-scene"),
        frozen: dir.join("camera-frozen"),
        rgb: format!("{},{},{}", rgb[0], rgb[1], rgb[2]),
    }
}

pub struct FakeV4l2 {
    pub library: PathBuf,
    pub device: PathBuf,
    pub unplugged: PathBuf,
    pub scene: PathBuf,
    pub frozen: PathBuf,
    pub rgb: String,
}

impl FakeV4l2 {
    /// The variables to start `lookout` with.
    pub fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("LD_PRELOAD", self.library.display().to_string()),
            ("LOOKOUT_FAKE_V4L2_PATH", self.device.display().to_string()),
            ("LOOKOUT_FAKE_V4L2_RGB", self.rgb.clone()),
            (
                "LOOKOUT_FAKE_V4L2_UNPLUGGED",
                self.unplugged.display().to_string(),
            ),
            ("LOOKOUT_FAKE_V4L2_SCENE", self.scene.display().to_string()),
            (
                "LOOKOUT_FAKE_V4L2_FROZEN",
                self.frozen.display().to_string(),
            ),
        ]
    }

    /// From the next frame on, the camera sees `rgb`.
    pub fn show(&self, rgb: [u8; 3]) {
        let staged = self.scene.with_extension("new");
        std::fs::write(&staged, format!("{},{},{}", rgb[0], rgb[1], rgb[2])).unwrap();
        std::fs::rename(&staged, &self.scene).unwrap();
    }

    pub fn unplug(&self) {
        std::fs::write(&self.unplugged, b"").unwrap();
    }

    pub fn plug_in(&self) {
        std::fs::remove_file(&self.unplugged).unwrap();
    }

    /// The camera hangs: open and streaming, but no frame comes.
    pub fn freeze(&self) {
        std::fs::write(&self.frozen, b"").unwrap();
    }

    pub fn thaw(&self) {
        std::fs::remove_file(&self.frozen).unwrap();
    }
}

/// The mean colour of a JPEG.
pub fn mean_rgb(jpeg: &[u8]) -> [f64; 3] {
    let image = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("snapshot decodes")
        .to_rgb8();
    let mut sum = [0f64; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as f64;
        }
    }
    sum.map(|s| s / (image.width() * image.height()) as f64)
}

/// A Home Assistant MQTT template rendered over a received payload, as Home Assistant renders
/// it (Jinja, with `value` and `value_json`).
pub fn render(template: &serde_json::Value, payload: &str) -> String {
    let env = minijinja::Environment::new();
    let value_json: serde_json::Value =
        serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
    env.render_str(
        template.as_str().expect("a template"),
        minijinja::context! { value => payload, value_json => value_json },
    )
    .unwrap()
}
