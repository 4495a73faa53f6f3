//! `lookout run` end to end: real mosquitto, real GStreamer sources, the tiny real model.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn descriptions_discovery_commands_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.avi");
    make_clip(&clip);
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cameras = format!(
        "{}\n[[camera]]\nname = \"clip\"\nsource = \"file://{}\"\nfps = 2\nmax_tokens = 4\ninterval = 1\n",
        testsrc_camera("yard", "interval = 0\nscene_change = 0"),
        clip.display()
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    // Availability, retained.
    sub.wait("available online", T, |m| {
        m.topic == "lookout/available" && m.text() == "online"
    });

    // Discovery: every component of both cameras, with the keys HA requires.
    for camera in ["yard", "clip"] {
        for (component, object, keys) in [
            (
                "sensor",
                "description",
                &["state_topic", "value_template", "json_attributes_topic"][..],
            ),
            ("event", "described", &["state_topic", "event_types"][..]),
            ("image", "snapshot", &["image_topic"][..]),
            ("button", "describe", &["command_topic"][..]),
            ("switch", "enabled", &["command_topic", "state_topic"][..]),
            ("text", "ask", &["command_topic"][..]),
            ("sensor", "answer", &["state_topic"][..]),
            (
                "binary_sensor",
                "status",
                &["state_topic", "device_class"][..],
            ),
        ] {
            let topic = format!("homeassistant/{component}/e2e/{camera}_{object}/config");
            let m = sub.wait(&topic, T, |m| m.topic == topic);
            let v = m.json();
            for key in keys
                .iter()
                .chain(&["unique_id", "name", "availability", "device"])
            {
                assert!(!v[key].is_null(), "{topic} lacks {key}: {v}");
            }
            assert_eq!(v["availability"][0]["topic"], "lookout/available");
            assert_eq!(v["device"]["identifiers"][0], "lookout_e2e");
        }
    }
    let described = sub
        .wait("event_types", T, |m| {
            m.topic == "homeassistant/event/e2e/yard_described/config"
        })
        .json();
    assert_eq!(described["event_types"][0], "description");

    // The clip camera describes on its interval; the clip is 3 s long and loops.
    let first = sub
        .wait("clip description", T, |m| {
            m.topic == "lookout/clip/description"
        })
        .json();
    for key in [
        "id", "camera", "time", "trigger", "prompt", "text", "summary", "timings", "frame",
    ] {
        assert!(!first[key].is_null(), "description lacks {key}: {first}");
    }
    assert_eq!(first["event_type"], "description");
    assert_eq!(first["camera"], "clip");
    assert_eq!(first["trigger"], "interval");
    assert_eq!(first["frame"]["width"], 160);
    assert_eq!(first["frame"]["height"], 120);
    assert!(first["summary"].as_str().unwrap().chars().count() <= 255);
    sub.wait("clip online", T, |m| {
        m.topic == "lookout/clip/status" && m.json()["state"] == "online"
    });
    // Past the clip's end (3 s): still online, still describing.
    sub.wait_count("lookout/clip/description", 5, T);
    assert!(
        !sub.on("lookout/clip/status")
            .iter()
            .any(|m| m.json()["state"] == "offline"),
        "the looping clip must not go offline"
    );
    let snapshot = sub.wait("clip snapshot", T, |m| m.topic == "lookout/clip/snapshot");
    assert_eq!(&snapshot.payload[..2], &[0xFF, 0xD8], "snapshot is a JPEG");
    let state = sub
        .wait("clip state", T, |m| m.topic == "lookout/clip/state")
        .json();
    assert!(state["summary"].is_string());

    // yard has no automatic trigger: describe/set asks for one.
    sub.wait("yard online", T, |m| {
        m.topic == "lookout/yard/status" && m.json()["state"] == "online"
    });
    assert!(sub.on("lookout/yard/description").is_empty());
    sub.publish("lookout/yard/describe/set", "PRESS");
    let on_demand = sub
        .wait("yard on-demand description", T, |m| {
            m.topic == "lookout/yard/description"
        })
        .json();
    assert_eq!(on_demand["trigger"], "on_demand");

    // Questions: JSON with an id, and plain text.
    sub.publish(
        "lookout/yard/ask",
        r#"{"id":"q-42","question":"What colour is the ball?"}"#,
    );
    let answer = sub
        .wait("answer q-42", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["id"] == "q-42"
        })
        .json();
    assert_eq!(answer["question"], "What colour is the ball?");
    assert!(answer["text"].is_string(), "{answer}");
    assert!(answer["error"].is_null(), "{answer}");
    sub.publish("lookout/yard/ask", "Is anyone there?");
    let plain = sub
        .wait("plain answer", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["question"] == "Is anyone there?"
        })
        .json();
    assert!(plain["id"].as_str().is_some_and(|id| !id.is_empty()));
    sub.wait("last_answer", T, |m| m.topic == "lookout/yard/last_answer");

    // Typed answers: valid by construction, with the model's confidence; a bad type is refused
    // and said so.
    sub.publish(
        "lookout/yard/ask",
        r#"{"id":"q-bin","question":"Which bin is out?","answer":"choice","options":["none","green","blue"]}"#,
    );
    let typed = sub
        .wait("answer q-bin", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["id"] == "q-bin"
        })
        .json();
    assert_eq!(typed["answer"], "choice", "{typed}");
    let value = typed["value"].as_str().unwrap();
    assert!(["none", "green", "blue"].contains(&value), "{typed}");
    assert_eq!(typed["text"], value);
    let total: f64 = typed["scores"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-6, "{typed}");
    assert_eq!(typed["confidence"], typed["scores"][value], "{typed}");
    sub.publish(
        "lookout/yard/ask",
        r#"{"id":"q-door","question":"Is the door open? Answer yes or no.","answer":"yes_no"}"#,
    );
    let door = sub
        .wait("answer q-door", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["id"] == "q-door"
        })
        .json();
    assert!(door["value"].is_boolean(), "{door}");
    sub.publish(
        "lookout/yard/ask",
        r#"{"id":"q-bad","question":"Is it?","answer":"boolean"}"#,
    );
    let bad = sub
        .wait("answer q-bad", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["id"] == "q-bad"
        })
        .json();
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown answer type")),
        "{bad}"
    );

    // MQTT 5 request/response: the answer also goes to the asker's response topic, carrying
    // its correlation data back.
    let (reply, correlation) = ask_v5(
        broker.port,
        "lookout/yard/ask",
        r#"{"id":"q-v5","question":"What is in front of the camera?"}"#,
        "robot/7/replies",
        b"corr-123",
        T,
    );
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["id"], "q-v5");
    assert!(reply["text"].is_string(), "{reply}");
    assert_eq!(correlation.as_deref(), Some(&b"corr-123"[..]));
    sub.wait("answer q-v5 on the answer topic too", T, |m| {
        m.topic == "lookout/yard/answer" && m.json()["id"] == "q-v5"
    });

    // enabled/set: OFF stops the camera, ON brings it back.
    sub.wait("enabled ON", T, |m| {
        m.topic == "lookout/yard/enabled/state" && m.text() == "ON"
    });
    let ons = |s: &Subscriber| {
        s.on("lookout/yard/enabled/state")
            .iter()
            .filter(|m| m.text() == "ON")
            .count()
    };
    let ons_before = ons(&sub);
    sub.publish("lookout/yard/enabled/set", "OFF");
    sub.wait("enabled OFF", T, |m| {
        m.topic == "lookout/yard/enabled/state" && m.text() == "OFF"
    });
    sub.wait("yard disabled", T, |m| {
        m.topic == "lookout/yard/status" && m.json()["reason"] == "disabled"
    });
    sub.publish(
        "lookout/yard/ask",
        r#"{"id":"q-off","question":"Anything?"}"#,
    );
    let refused = sub
        .wait("refused answer", T, |m| {
            m.topic == "lookout/yard/answer" && m.json()["id"] == "q-off"
        })
        .json();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("offline or disabled"),
        "{refused}"
    );
    let onlines_before = sub
        .on("lookout/yard/status")
        .iter()
        .filter(|m| m.json()["state"] == "online")
        .count();
    sub.publish("lookout/yard/enabled/set", "ON");
    let until = deadline(T);
    while ons(&sub) <= ons_before {
        assert!(
            std::time::Instant::now() < until,
            "enabled/state did not return to ON"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = deadline(T);
    while sub
        .on("lookout/yard/status")
        .iter()
        .filter(|m| m.json()["state"] == "online")
        .count()
        <= onlines_before
    {
        assert!(
            std::time::Instant::now() < until,
            "yard did not come back online"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Home Assistant restarting: discovery is published again.
    let configs_before = sub.on("homeassistant/switch/e2e/yard_enabled/config").len();
    sub.publish("homeassistant/status", "online");
    sub.wait_count(
        "homeassistant/switch/e2e/yard_enabled/config",
        configs_before + 1,
        T,
    );

    // A newcomer gets the states retained (live deliveries never carry the retain flag).
    let late = Subscriber::connect(broker.port, None);
    for topic in [
        "lookout/available",
        "lookout/clip/status",
        "lookout/clip/state",
        "lookout/clip/snapshot",
        "lookout/yard/enabled/state",
        "lookout/yard/last_answer",
        "homeassistant/image/e2e/clip_snapshot/config",
    ] {
        let m = late.wait(topic, T, |m| m.topic == topic);
        assert!(m.retain, "{topic} must be retained");
    }
    // Live descriptions may arrive meanwhile; none may come from the retained store.
    assert!(
        late.on("lookout/clip/description")
            .iter()
            .all(|m| !m.retain),
        "descriptions are events, not retained"
    );

    // SIGTERM: `stopped`, exit 0.
    let status = daemon.term();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        daemon.log_text()
    );
    sub.wait("available stopped", T, |m| {
        m.topic == "lookout/available" && m.text() == "stopped"
    });
}

#[test]
fn sighup_reloads_cameras_and_mqtt_without_reloading_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let mqtt = format!("url = \"{}\"", broker.url());
    let mut daemon = Daemon::start(
        dir.path(),
        &config(
            dir.path(),
            &mqtt,
            &testsrc_camera("one", "interval = 1\nscene_change = 0"),
        ),
    );
    sub.wait("one description", T, |m| {
        m.topic == "lookout/one/description"
    });

    // Swap camera `one` for `two` and reload.
    let cfg = config(
        dir.path(),
        &mqtt,
        &testsrc_camera("two", "interval = 1\nscene_change = 0"),
    );
    std::fs::write(dir.path().join("lookout.toml"), cfg).unwrap();
    signal(daemon.child.as_ref().unwrap().id(), "HUP");
    daemon.wait_log("reloaded: 1 camera(s)", T);
    sub.wait("two discovery", T, |m| {
        m.topic == "homeassistant/sensor/e2e/two_description/config"
    });
    sub.wait("two description", T, |m| {
        m.topic == "lookout/two/description"
    });
    // `one`'s entities are removed (empty retained config).
    sub.wait("one removed", T, |m| {
        m.topic == "homeassistant/sensor/e2e/one_description/config" && m.payload.is_empty()
    });

    // Moving to another broker under another topic prefix: the old broker is told `stopped`,
    // the new one gets availability, discovery and descriptions.
    let second = Mosquitto::start(&dir.path().join("second"));
    let moved = Subscriber::connect(second.port, None);
    let cfg = config(
        dir.path(),
        &format!("url = \"{}\"\ntopic_prefix = \"moved\"", second.url()),
        &testsrc_camera("two", "interval = 1\nscene_change = 0"),
    );
    std::fs::write(dir.path().join("lookout.toml"), cfg).unwrap();
    signal(daemon.child.as_ref().unwrap().id(), "HUP");
    sub.wait("stopped on the old broker", T, |m| {
        m.topic == "lookout/available" && m.text() == "stopped"
    });
    moved.wait("online on the new broker", T, |m| {
        m.topic == "moved/available" && m.text() == "online"
    });
    moved.wait("discovery with the new topics", T, |m| {
        m.topic == "homeassistant/sensor/e2e/two_description/config"
            && m.json()["state_topic"] == "moved/two/state"
    });
    moved.wait("a description on the new broker", T, |m| {
        m.topic == "moved/two/description"
    });
    assert_eq!(
        daemon.log_text().matches("loading model").count(),
        1,
        "the model must not be reloaded"
    );

    // A broken file on reload keeps the running configuration.
    std::fs::write(dir.path().join("lookout.toml"), "[camera\n").unwrap();
    signal(daemon.child.as_ref().unwrap().id(), "HUP");
    daemon.wait_log("reload failed", T);
    let n = moved.on("moved/two/description").len();
    moved.wait_count("moved/two/description", n + 1, T);
    assert!(daemon.term().success());
}

/// No `mqtt.url`: the embedded broker serves. Under a (fake) systemd: READY=1, WATCHDOG=1,
/// STATUS=, STOPPING=1.
#[test]
fn embedded_broker_and_systemd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let socket_path = dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&socket_path);
    let cfg = config(
        dir.path(),
        &format!("listen = \"127.0.0.1:{port}\""),
        &testsrc_camera("cam", "interval = 1\nscene_change = 0"),
    );
    let mut daemon = Daemon::start_with_env(
        dir.path(),
        &cfg,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.wait_for("READY=1", T, &daemon);
    notify.wait_for("WATCHDOG=1", T, &daemon);
    let notes = notify.text();
    assert!(notes.contains("STATUS="), "{notes}");

    let sub = Subscriber::connect(port, None);
    sub.wait("description via the embedded broker", T, |m| {
        m.topic == "lookout/cam/description"
    });
    sub.wait("available", T, |m| {
        m.topic == "lookout/available" && m.text() == "online"
    });
    assert!(daemon.term().success());
    // Sent before the exit; the reader thread may take a moment to pick it up.
    notify.wait_for("STOPPING=1", Duration::from_secs(5), &daemon);
}

/// The README's first command: `lookout run` with no file. With no /dev/video* that is the test
/// pattern as camera `default`, the embedded broker on 127.0.0.1:1883, the outbox under $HOME.
/// Only the model is chosen, through $LOOKOUT_MODEL (the default model needs the hub).
#[test]
fn no_file_runs_on_its_defaults() {
    if host_has_video_nodes() {
        eprintln!("this host has /dev/video*: skipping (the default camera would be it)");
        return;
    }
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:1883") {
        eprintln!("127.0.0.1:1883 is taken ({e}): skipping (the embedded broker's default)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut cmd = lookout_command();
    cmd.arg("run");
    for (key, _) in std::env::vars() {
        if key.starts_with("LOOKOUT__") {
            cmd.env_remove(key);
        }
    }
    for key in [
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
        "STATE_DIRECTORY",
        "CACHE_DIRECTORY",
    ] {
        cmd.env_remove(key);
    }
    let model = model_dir();
    let mut daemon = Daemon::spawn(
        dir.path(),
        cmd,
        &[
            ("HOME", home.to_str().unwrap()),
            ("LOOKOUT_MODEL", model.to_str().unwrap()),
        ],
    );
    wait_for_port(1883, T);
    let sub = Subscriber::connect(1883, None);
    sub.wait("online", T, |m| {
        m.topic == "lookout/available" && m.text() == "online"
    });
    sub.wait("the test pattern streams", T, |m| {
        m.topic == "lookout/default/status" && m.json()["state"] == "online"
    });
    sub.wait("discovery", T, |m| {
        m.topic.starts_with("homeassistant/button/")
            && m.topic.ends_with("/default_describe/config")
    });
    // The first interval description comes at start; then one on demand.
    let first = sub
        .wait("the first description", T, |m| {
            m.topic == "lookout/default/description"
        })
        .json();
    assert_eq!(first["trigger"], "interval", "{first}");
    assert_eq!(first["frame"]["width"], 640, "{first}");
    assert!(!first["text"].as_str().unwrap().is_empty(), "{first}");
    sub.publish("lookout/default/describe/set", "PRESS");
    sub.wait("a description on demand", T, |m| {
        m.topic == "lookout/default/description" && m.json()["trigger"] == "on_demand"
    });
    assert!(
        home.join(".local/state/lookout/outbox").is_dir(),
        "the outbox under $HOME"
    );
    assert!(daemon.term().success());
    // The q4_0 weights were quantized once and kept, for the language model and the vision
    // tower, where the README says: the next start maps them.
    let compiled: Vec<String> = std::fs::read_dir(home.join(".cache/lookout/compiled"))
        .expect("the compiled cache under $HOME/.cache/lookout")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for part in ["language_model-q4_0", "vision-q4_0"] {
        assert!(
            compiled
                .iter()
                .any(|f| f.starts_with(part) && f.ends_with(".lookout")),
            "no {part}* file in the compiled cache: {compiled:?}"
        );
    }
}

/// Seconds since 1970 of lookout's RFC 3339 UTC times (`2026-05-01T12:00:03.120Z`).
fn unix_seconds(rfc3339: &str) -> f64 {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

#[test]
fn describe_now_restarts_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let interval = 3.0;
    let cfg = config(
        dir.path(),
        &format!("url = \"{}\"", broker.url()),
        &testsrc_camera("yard", &format!("interval = {interval}\nscene_change = 0")),
    );
    let mut daemon = Daemon::start(dir.path(), &cfg);
    let described = |trigger: &'static str, after: usize| {
        let seen = after;
        sub.wait(&format!("a description ({trigger})"), T, move |m| {
            m.topic == "lookout/yard/description" && m.json()["trigger"] == trigger
        });
        let all = sub.on("lookout/yard/description");
        all.into_iter()
            .skip(seen)
            .map(|m| m.json())
            .find(|d| d["trigger"] == trigger)
            .unwrap_or_else(|| panic!("no {trigger} description after #{seen}"))
    };
    described("interval", 0);
    // Well into the interval, a description by hand.
    std::thread::sleep(Duration::from_secs_f64(interval / 2.0));
    sub.publish("lookout/yard/describe/set", "PRESS");
    let on_demand = described("on_demand", 0);
    let count = sub.on("lookout/yard/description").len();
    let next = sub.wait("the next interval description", T, |m| {
        m.topic == "lookout/yard/description"
            && m.json()["trigger"] == "interval"
            && unix_seconds(m.json()["queued"].as_str().unwrap())
                > unix_seconds(on_demand["queued"].as_str().unwrap())
    });
    assert!(sub.on("lookout/yard/description").len() > count);
    let gap = unix_seconds(next.json()["queued"].as_str().unwrap())
        - unix_seconds(on_demand["queued"].as_str().unwrap());
    // The interval counts from the description by hand (give or take a sampling period).
    assert!(
        gap >= interval - 0.6,
        "an interval description {gap:.2} s after describe now"
    );
    assert!(daemon.term().success());
}
