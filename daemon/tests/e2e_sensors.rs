//! Standing questions as Home Assistant entities, end to end: real mosquitto, real GStreamer
//! sources, the tiny real model. Sensors answer at start and on their triggers, publish retained
//! typed values that change only with the answer, are announced by discovery with templates
//! that render (as Home Assistant renders them) to valid states, and a follow-up question about
//! an unchanged picture continues the saved state instead of encoding the image again.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A still picture: every frame is the same, bit for bit.
fn still_camera(name: &str, extra: &str) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nsource = \"gst:videotestsrc is-live=true pattern=smpte ! video/x-raw,width=160,height=120,framerate=5/1 ! videoconvert ! appsink name=sink\"\nfps = 2\nmax_tokens = 4\ninterval = 0\nscene_change = 0.05\n{extra}\n"
    )
}

const SENSORS: &str = r#"
[[camera.sensor]]
name = "door"
question = "Is the garage door open? Answer yes or no."
answer = "yes_no"

[[camera.sensor]]
name = "bins"
question = "Which bin is out?"
answer = "choice"
options = ["none", "green", "blue"]

[[camera.sensor]]
name = "cars"
question = "How many cars are in the driveway?"
answer = "number"
unit = "cars"
min = 0
max = 3

[[camera.sensor]]
name = "note"
question = "What is on the wall?"
answer = "text"
max_tokens = 4

[[camera.sensor]]
name = "corner"
question = "Is the top right corner bright? Answer yes or no."
answer = "yes_no"
region = [0.5, 0.0, 1.0, 0.5]

[[camera.sensor]]
name = "clock"
question = "Is it daytime? Answer yes or no."
answer = "yes_no"
on = ["interval"]
interval = 1
"#;

#[test]
fn sensors_answer_publish_typed_retained_states_and_share_the_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cameras = format!(
        "{}{SENSORS}\n{}\n[[camera.sensor]]\nname = \"ball\"\nquestion = \"Is there a ball? Answer yes or no.\"\nanswer = \"yes_no\"\n",
        still_camera("garage", ""),
        testsrc_camera(
            "yard",
            "interval = 0\nscene_change = 0.002\nscene_min_gap = 1"
        ),
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    // Each sensor's first answer, retained, with its type's value, from the start trigger.
    let state = |name: &str| {
        let topic = format!("lookout/garage/sensor/{name}");
        sub.wait(&topic, T, |m| m.topic == topic)
    };
    for name in ["door", "bins", "cars", "note", "corner", "clock"] {
        let v = state(name).json();
        for key in ["value", "confidence", "scores", "time", "frame", "timings"] {
            assert!(
                !v.get(key).is_none_or(Value::is_null) || key == "scores",
                "{name} lacks {key}: {v}"
            );
        }
        assert_eq!(v["trigger"], "start", "{v}");
        assert_eq!(v["frame"]["width"], 160);
        let confidence = v["confidence"].as_f64().unwrap();
        assert!(confidence > 0.0 && confidence <= 1.0, "{v}");
        // Scored answers: the options' shares sum to one and the winner's is the confidence.
        if let Some(scores) = v["scores"].as_object().filter(|s| !s.is_empty()) {
            let total: f64 = scores.values().map(|s| s.as_f64().unwrap()).sum();
            assert!((total - 1.0).abs() < 1e-6, "{v}");
        }
    }
    assert!(state("door").json()["value"].is_boolean());
    let bins = state("bins").json();
    assert!(
        ["none", "green", "blue"].contains(&bins["value"].as_str().unwrap()),
        "{bins}"
    );
    assert_eq!(
        bins["confidence"],
        bins["scores"][bins["value"].as_str().unwrap()]
    );
    let cars = state("cars").json();
    let n = cars["value"].as_f64().unwrap();
    assert!((0.0..=3.0).contains(&n), "clamped into the range: {cars}");
    assert_eq!(cars["unit"], "cars");
    assert!(state("note").json()["value"].is_string());
    // One look for the whole frame, one for the corner's region: every question after the first
    // on a look continues its saved state.
    let door = state("door").json();
    assert_eq!(door["timings"]["reuse"]["slices_reused"], 0, "{door}");
    assert!(door["timings"]["reuse"]["slices_encoded"].as_u64().unwrap() >= 1);

    // Discovery: each sensor as its type's entity, and its template renders a valid state.
    let entity = |component: &str, name: &str| {
        let topic = format!("homeassistant/{component}/e2e/garage_sensor_{name}/config");
        sub.wait(&topic, T, |m| m.topic == topic).json()
    };
    let payload = |name: &str| state(name).text();
    let door_entity = entity("binary_sensor", "door");
    assert_eq!(door_entity["state_topic"], "lookout/garage/sensor/door");
    assert_eq!(
        door_entity["json_attributes_topic"],
        "lookout/garage/sensor/door"
    );
    let rendered = render(&door_entity["value_template"], &payload("door"));
    let expected = if door["value"] == true { "ON" } else { "OFF" };
    assert_eq!(rendered, expected);
    assert!(
        door_entity["availability"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["topic"] == "lookout/garage/status"),
        "a sensor follows its camera: {door_entity}"
    );
    let bins_entity = entity("sensor", "bins");
    assert_eq!(bins_entity["device_class"], "enum");
    assert_eq!(
        bins_entity["options"],
        serde_json::json!(["none", "green", "blue"])
    );
    let shown = render(&bins_entity["value_template"], &payload("bins"));
    assert!(
        bins_entity["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == &shown)
    );
    let cars_entity = entity("sensor", "cars");
    assert_eq!(cars_entity["unit_of_measurement"], "cars");
    assert_eq!(cars_entity["state_class"], "measurement");
    let shown: f64 = render(&cars_entity["value_template"], &payload("cars"))
        .parse()
        .expect("a number state");
    assert_eq!(shown, n);
    let note_entity = entity("sensor", "note");
    assert!(
        render(&note_entity["value_template"], &payload("note"))
            .chars()
            .count()
            <= 255
    );
    entity("binary_sensor", "corner");
    entity("binary_sensor", "clock");

    // A follow-up question about the unchanged picture: nothing is encoded, and the state after
    // the image is the one the sensors left.
    sub.publish(
        "lookout/garage/ask",
        r#"{"id":"f1","question":"Is the light on? Answer yes or no.","answer":"yes_no"}"#,
    );
    let follow_up = sub
        .wait("answer f1", T, |m| {
            m.topic == "lookout/garage/answer" && m.json()["id"] == "f1"
        })
        .json();
    let reuse = &follow_up["timings"]["reuse"];
    assert_eq!(reuse["slices_encoded"], 0, "{follow_up}");
    assert_eq!(reuse["prefix_reused"], true, "{follow_up}");
    assert_eq!(follow_up["timings"]["shared_prefill_ms"], 0.0);

    // The interval sensor keeps answering, but an unchanged answer is not published again.
    let until = deadline(T);
    while daemon
        .log_text()
        .matches("sensor clock on interval: still")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < until,
            "the clock sensor is asked again every second"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sub.on("lookout/garage/sensor/clock").len(), 1);

    // The moving ball changes the yard's picture: its sensor is asked again on scene change.
    sub.wait("yard ball", T, |m| m.topic == "lookout/yard/sensor/ball");
    daemon.wait_log("sensor(s) answered on scene_change", T);

    // A new subscriber gets every sensor's state from the broker, retained.
    let late = Subscriber::connect(broker.port, None);
    let m = late.wait("retained door", T, |m| {
        m.topic == "lookout/garage/sensor/door"
    });
    assert!(m.retain);
    assert!(daemon.term().success());
}

#[test]
fn bad_sensor_tables_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let cameras = format!(
        "{}\n[[camera.sensor]]\nname = \"door\"\nquestion = \"Open?\"\nanswer = \"boolean\"\n\n[[camera.sensor]]\nname = \"bins\"\nquestion = \"Which?\"\nanswer = \"choice\"\noptions = [\"green\", \"green\"]\n\n[[camera.sensor]]\nname = \"gate\"\nquestion = \"Open?\"\nanswer = \"yes_no\"\nregion = [0.5, 0.5, 1.5, 1.0]\n\n[[camera.sensor]]\nname = \"gate\"\nquestion = \"Open?\"\nanswer = \"yes_no\"\non = [\"person\"]\n",
        still_camera("garage", "")
    );
    let path = dir.path().join("lookout.toml");
    write(&path, &config(dir.path(), "", &cameras));
    let (ok, out) = lookout(&["check-config", path.to_str().unwrap()], &[]);
    assert!(!ok, "{out}");
    for expected in [
        "camera[0].sensor[0].answer: unknown answer type \"boolean\"",
        "camera[0].sensor[1].options: choice option \"green\" is given twice",
        "camera[0].sensor[2].region: must be [x1, y1, x2, y2] inside the frame",
        "camera[0].sensor[3].on: \"person\" is not scene_change or interval, and the camera has no [camera.detect]",
        "camera[0].sensor[3].name: \"gate\" is used by another sensor of this camera",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
