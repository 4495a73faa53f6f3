//! Configuration errors, credentials and TLS against a real mosquitto.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn check_config_accepts_a_good_file_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write(
        &good,
        &config(
            dir.path(),
            "url = \"mqtt://127.0.0.1:1883\"",
            &testsrc_camera("front", ""),
        ),
    );
    let (ok, out) = lookout(&["check-config", good.to_str().unwrap()], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("ok") && out.contains("front"), "{out}");

    // Several bad values: all reported, each with its key.
    let bad = dir.path().join("bad.toml");
    write(
        &bad,
        &config(
            dir.path(),
            "url = \"http://broker\"\nqos = 3\nprotocol = \"4\"",
            "[[camera]]\nname = \"Front Door\"\nsource = \"carrier-pigeon://x\"\nfps = 0\nsnapshot_quality = 101\n",
        ),
    );
    let (ok, out) = lookout(&["check-config", bad.to_str().unwrap()], &[]);
    assert!(!ok);
    for key in [
        "mqtt.url",
        "mqtt.qos",
        "mqtt.protocol",
        "camera[0].name",
        "camera[0].source",
        "camera[0].fps",
        "camera[0].snapshot_quality",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }

    // Unknown keys and wrong types are errors, not ignored.
    let typo = dir.path().join("typo.toml");
    write(
        &typo,
        &config(dir.path(), "url = \"mqtt://x\"\nkeepalive = 5", ""),
    );
    let (ok, out) = lookout(&["check-config", typo.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("keepalive"), "{out}");
    let wrong_type = dir.path().join("type.toml");
    write(
        &wrong_type,
        &config(dir.path(), "url = \"mqtt://x\"\nqos = \"high\"", ""),
    );
    let (ok, out) = lookout(&["check-config", wrong_type.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("qos"), "{out}");

    // Environment overrides apply, and their errors name the key too.
    let (ok, out) = lookout(
        &["check-config", good.to_str().unwrap()],
        &[("LOOKOUT__CAMERA__0__FPS", "-1")],
    );
    assert!(!ok && out.contains("camera[0].fps"), "{out}");
    let (ok, out) = lookout(
        &["check-config", good.to_str().unwrap()],
        &[("LOOKOUT__MQTT__URL", "mqtts://secure:8883")],
    );
    assert!(ok && out.contains("mqtts://secure:8883"), "{out}");

    // A camera whose GStreamer plugin is not installed: the element and the package are named.
    let plugins = dir.path().join("no-plugins");
    std::fs::create_dir(&plugins).unwrap();
    let testsrc = dir.path().join("testsrc.toml");
    write(
        &testsrc,
        &config(
            dir.path(),
            "",
            "[[camera]]\nname = \"pattern\"\nsource = \"testsrc\"\n",
        ),
    );
    let (ok, out) = lookout(&["check-config", testsrc.to_str().unwrap()], &[]);
    assert!(ok, "{out}");
    let (ok, out) = lookout(
        &["check-config", testsrc.to_str().unwrap()],
        &[
            ("GST_PLUGIN_SYSTEM_PATH_1_0", plugins.to_str().unwrap()),
            ("GST_PLUGIN_PATH_1_0", plugins.to_str().unwrap()),
            (
                "GST_REGISTRY_1_0",
                dir.path().join("registry.bin").to_str().unwrap(),
            ),
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("camera[0].source")
            && out.contains("videotestsrc")
            && out.contains("gstreamer1.0-plugins-base"),
        "{out}"
    );

    // Missing model, unreadable password file, missing file.
    let no_model = dir.path().join("nomodel.toml");
    write(
        &no_model,
        &config(dir.path(), "", "")
            .replace(&model_dir().display().to_string(), "/nonexistent/model"),
    );
    let (ok, out) = lookout(&["check-config", no_model.to_str().unwrap()], &[]);
    assert!(
        !ok && out.contains("model.path") && out.contains("/nonexistent/model"),
        "{out}"
    );
    let pw = dir.path().join("pw.toml");
    write(
        &pw,
        &config(
            dir.path(),
            "url = \"mqtt://x\"\nusername = \"u\"\npassword_file = \"/nonexistent/secret\"",
            "",
        ),
    );
    let (ok, out) = lookout(&["check-config", pw.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("mqtt.password_file"), "{out}");
    let (ok, out) = lookout(&["check-config", "/nonexistent/lookout.toml"], &[]);
    assert!(!ok && out.contains("/nonexistent/lookout.toml"), "{out}");

    // `run` refuses the same bad file before loading anything.
    let (ok, out) = lookout(&["run", "--config", bad.to_str().unwrap()], &[]);
    assert!(!ok && out.contains("camera[0].fps"), "{out}");
}

#[test]
fn broker_refusing_credentials_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    password_file(&passwords, "lookout", "right");
    let port = free_port();
    let _broker = Mosquitto::with_conf(
        dir.path(),
        port,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    );
    let secret = dir.path().join("secret");
    write(&secret, "wrong\n");
    // Each protocol version reports the refusal with its own return codes.
    for protocol in ["5", "3.1.1"] {
        let cfg = config(
            dir.path(),
            &format!(
                "url = \"mqtt://127.0.0.1:{port}\"\nusername = \"lookout\"\npassword_file = \"{}\"\nprotocol = \"{protocol}\"",
                secret.display()
            ),
            &testsrc_camera("cam", "interval = 0\nscene_change = 0"),
        );
        let daemon = Daemon::start(dir.path(), &cfg);
        daemon.wait_log("refused the credentials", T);
        assert!(
            daemon.log_text().contains("mqtt.password"),
            "MQTT {protocol}: {}",
            daemon.log_text()
        );
    }
}

/// A mosquitto with a plain listener (its `port`, for the test's own subscriber) and a TLS one on
/// the returned port, serving the certificates [`make_certs`] made in `dir`. `settings` come last,
/// so that per-listener ones (`require_certificate`) apply to the TLS listener.
fn tls_broker(dir: &Path, settings: &str) -> (Mosquitto, u16) {
    let (tls_port, plain_port) = (free_port(), free_port());
    let d = dir.display();
    let broker = Mosquitto::with_conf(
        dir,
        plain_port,
        format!(
            "listener {plain_port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n{settings}"
        ),
    );
    (broker, tls_port)
}

#[test]
fn tls_with_username_and_password() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let passwords = dir.path().join("passwd");
    password_file(&passwords, "lookout", "s3cret");
    let (broker, tls_port) = tls_broker(
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    );
    let d = dir.path().display();
    for protocol in ["5", "3.1.1"] {
        let sub = Subscriber::connect(broker.port, Some(("lookout", "s3cret")));
        let cfg = config(
            dir.path(),
            &format!(
                "url = \"mqtts://localhost:{tls_port}\"\nusername = \"lookout\"\npassword = \"s3cret\"\nca = \"{d}/ca.pem\"\nprotocol = \"{protocol}\""
            ),
            &testsrc_camera("cam", "interval = 1\nscene_change = 0"),
        );
        let mut daemon = Daemon::start(dir.path(), &cfg);
        sub.wait("available over TLS", T, |m| {
            m.topic == "lookout/available" && m.text() == "online"
        });
        sub.wait("description over TLS", T, |m| {
            m.topic == "lookout/cam/description"
        });
        assert!(daemon.term().success(), "MQTT {protocol}");
        sub.wait("stopped over TLS", T, |m| {
            m.topic == "lookout/available" && m.text() == "stopped"
        });
    }

    // The wrong CA: a TLS error naming the settings.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    make_certs(&other);
    let cfg = config(
        dir.path(),
        &format!(
            "url = \"mqtts://localhost:{tls_port}\"\nusername = \"lookout\"\npassword = \"s3cret\"\nca = \"{}/ca.pem\"",
            other.display()
        ),
        &testsrc_camera("cam", "interval = 0\nscene_change = 0"),
    );
    let daemon = Daemon::start(dir.path(), &cfg);
    daemon.wait_log("TLS with", T);
    assert!(
        daemon.log_text().contains("mqtt.ca"),
        "{}",
        daemon.log_text()
    );
}

/// Mutual TLS: a broker that requires a client certificate accepts lookout's (`mqtt.cert` and
/// `mqtt.key`), and turns away a lookout without one, which says so.
#[test]
fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let (broker, tls_port) = tls_broker(
        dir.path(),
        "allow_anonymous true\nrequire_certificate true\n",
    );
    let d = dir.path().display();
    let sub = Subscriber::connect(broker.port, None);
    let cameras = testsrc_camera("cam", "interval = 1\nscene_change = 0");
    let tls = format!("url = \"mqtts://localhost:{tls_port}\"\nca = \"{d}/ca.pem\"");
    let cfg = config(
        dir.path(),
        &format!("{tls}\ncert = \"{d}/client.pem\"\nkey = \"{d}/client.key\""),
        &cameras,
    );
    let mut daemon = Daemon::start(dir.path(), &cfg);
    sub.wait("description over mutual TLS", T, |m| {
        m.topic == "lookout/cam/description"
    });
    assert!(daemon.term().success());

    // No client certificate: the broker ends the handshake, and the log says what failed.
    let outbox = dir.path().join("outbox");
    std::fs::remove_dir_all(&outbox).unwrap();
    let cfg = config(dir.path(), &tls, &cameras);
    let daemon = Daemon::start(dir.path(), &cfg);
    daemon.wait_log("TLS with", T);
    let log = daemon.log_text();
    assert!(log.contains("mqtt.cert"), "{log}");
}
