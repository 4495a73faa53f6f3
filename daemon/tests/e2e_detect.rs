//! Detection end to end: a real mosquitto, GStreamer's moving test ball, and a small ONNX graph
//! that really finds it (`models/fixtures/detectors/ball.onnx`, a few standard ops). The ball
//! is detected, tracked under one id, counted, snapshotted, described at first sight by the
//! tiny language model, and ends when the camera stops; Home Assistant's entities follow.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn detector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures/detectors")
        .join(name)
}

fn ball_camera(detect: &str) -> String {
    testsrc_camera(
        "yard",
        &format!(
            "interval = 0\nscene_change = 0\n[camera.detect]\nmodel = {:?}\nlabels = [\"ball\"]\n{detect}\n",
            detector("ball.onnx").display().to_string()
        ),
    )
}

#[test]
fn the_ball_is_detected_tracked_counted_described_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let camera = ball_camera(
        "describe_on = [\"ball\"]\ndescribe_max_tokens = 4\ndetections_fps = 2\nmax_lost = 1\n\
         [[camera.detect.zone]]\nname = \"lawn\"\npoints = [[0, 0], [1, 0], [1, 1], [0, 1]]\ninertia = 2\n",
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &camera);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    // Alert first: `new`, Frigate-shaped, with the ball's box inside the 160x120 frame.
    let new = sub.wait("a new ball event", T, |m| {
        m.topic == "lookout/events" && m.json()["type"] == "new"
    });
    let new = new.json();
    let after = &new["after"];
    let id = after["id"].as_str().unwrap().to_string();
    assert_eq!(after["label"], "ball");
    assert_eq!(after["camera"], "yard");
    assert_eq!(new["before"], new["after"]);
    let b: Vec<i64> = after["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        b[0] < b[2] && b[1] < b[3] && b[0] >= 0 && b[2] <= 160 && b[3] <= 120,
        "{b:?}"
    );
    // videotestsrc's ball is 37 pixels across at 160x120, give or take the anti-aliasing.
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    assert!(
        (31..=43).contains(&w) && (31..=43).contains(&h),
        "ball box {w}x{h}"
    );
    assert!(after["score"].as_f64().unwrap() > 0.5);
    for key in [
        "top_score",
        "area",
        "current_zones",
        "entered_zones",
        "stationary",
        "start_time",
        "end_time",
        "frame_time",
        "has_snapshot",
        "description",
    ] {
        assert!(
            after.get(key).is_some(),
            "events object lacks {key}: {after}"
        );
    }
    assert_eq!(
        after["has_snapshot"], true,
        "the snapshot goes out before the event"
    );

    // Counted (retained), snapshotted (a JPEG), and shaped for ROS.
    sub.wait("ball count 1", T, |m| {
        m.topic == "lookout/yard/ball" && m.text() == "1"
    });
    let snapshot = sub.wait("ball snapshot", T, |m| {
        m.topic == "lookout/yard/ball/snapshot"
    });
    assert!(snapshot.payload.starts_with(&[0xff, 0xd8]), "not a JPEG");
    // Retained, like the count: a subscriber arriving now gets both.
    let late = Subscriber::connect(broker.port, None);
    for topic in ["lookout/yard/ball/snapshot", "lookout/yard/ball"] {
        late.wait(topic, T, |m| m.topic == topic && m.retain);
    }
    let ros = sub.wait("detections with the ball", T, |m| {
        m.topic == "lookout/yard/detections"
            && m.json()["detections"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
    });
    let ros = ros.json();
    assert_eq!(ros["header"]["frame_id"], "yard");
    assert!(ros["header"]["stamp"]["sec"].as_i64().unwrap() > 1_700_000_000);
    let d = &ros["detections"][0];
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["results"][0]["hypothesis"]["class_id"], "ball");
    let size = d["bbox"]["size_x"].as_f64().unwrap();
    assert!((31.0..=43.0).contains(&size), "{d}");

    // Entering the zone is an update, and the zone has its own count.
    sub.wait("entered the lawn", T, |m| {
        m.topic == "lookout/events"
            && m.json()["after"]["entered_zones"] == serde_json::json!(["lawn"])
    });
    sub.wait("lawn ball count 1", T, |m| {
        m.topic == "lookout/yard/lawn/ball" && m.text() == "1"
    });

    // Text later: the first-sight description, three ways.
    let description = sub.wait("object description", T, |m| {
        m.topic == "lookout/yard/description" && m.json()["trigger"] == "object"
    });
    let description = description.json();
    assert_eq!(description["object_id"], id.as_str());
    assert_eq!(description["label"], "ball");
    let text = description["text"].as_str().unwrap().to_string();
    let update = sub.wait("tracked_object_update", T, |m| {
        m.topic == "lookout/tracked_object_update"
    });
    let update = update.json();
    assert_eq!(
        (
            update["type"].as_str(),
            update["id"].as_str(),
            update["camera"].as_str()
        ),
        (Some("description"), Some(id.as_str()), Some("yard"))
    );
    assert_eq!(update["description"], text.as_str());
    sub.wait("update with the description", T, |m| {
        m.topic == "lookout/events" && m.json()["after"]["description"] == text.as_str()
    });

    // One ball, one id: nothing else was ever announced while it moved.
    let events: Vec<Value> = sub.on("lookout/events").iter().map(|m| m.json()).collect();
    assert!(
        events.iter().all(|e| e["after"]["id"] == id.as_str()),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| e["type"] == "new").count(), 1);

    // Home Assistant: occupancy, count and snapshot entities per label and zone.
    for (component, object, key) in [
        ("binary_sensor", "ball_occupancy", "state_topic"),
        ("sensor", "ball_count", "state_topic"),
        ("image", "ball_snapshot", "image_topic"),
        ("binary_sensor", "lawn_ball_occupancy", "state_topic"),
        ("sensor", "detector", "state_topic"),
    ] {
        let topic = format!("homeassistant/{component}/e2e/yard_{object}/config");
        let v = sub.wait(&topic, T, |m| m.topic == topic).json();
        assert!(
            v[key]
                .as_str()
                .is_some_and(|t| t.starts_with("lookout/yard/")),
            "{topic}: {v}"
        );
    }

    // The camera stops: the ball ends, and the counts drop to zero.
    sub.publish("lookout/yard/enabled/set", "OFF");
    let end = sub.wait("end", T, |m| {
        m.topic == "lookout/events" && m.json()["type"] == "end"
    });
    let end = end.json();
    assert_eq!(end["after"]["id"], id.as_str());
    assert!(
        end["after"]["end_time"].as_f64().unwrap() >= end["after"]["start_time"].as_f64().unwrap()
    );
    assert_eq!(end["after"]["description"], text.as_str());
    sub.wait("ball count 0", T, |m| {
        m.topic == "lookout/yard/ball" && m.text() == "0"
    });
    assert!(daemon.term().success());
}

/// The ball camera under another name, its detector checked with `verify`.
fn verified_ball_camera(name: &str, threshold: f64) -> String {
    testsrc_camera(
        name,
        &format!(
            "interval = 0\nscene_change = 0\n[camera.detect]\nmodel = {:?}\nlabels = [\"ball\"]\n\
             verify = \"Is there a {{label}} in this picture? Answer yes or no.\"\n\
             verify_threshold = {threshold}\n",
            detector("ball.onnx").display().to_string()
        ),
    )
}

#[test]
fn verify_announces_only_what_the_model_confirms() {
    // The tiny model's yes share is some value strictly between 0 and 1: a threshold of 0 keeps
    // every object, a threshold of 1 drops every one, and both paths run on real verdicts.
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cameras = format!(
        "{}{}",
        verified_ball_camera("kept", 0.0),
        verified_ball_camera("dropped", 1.0)
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    let new = sub.wait("a new ball on the kept camera", T, |m| {
        m.topic == "lookout/events" && m.json()["type"] == "new"
    });
    let after = &new.json()["after"];
    assert_eq!(after["camera"], "kept");
    assert_eq!(after["has_snapshot"], true, "held with its snapshot");
    sub.wait("kept ball count 1", T, |m| {
        m.topic == "lookout/kept/ball" && m.text() == "1"
    });
    let status = |camera: &'static str, key: &'static str| {
        let topic = format!("lookout/{camera}/detector");
        sub.wait(&format!("{camera}: verify.{key} >= 1"), T, move |m| {
            m.topic == topic && m.json()["verify"][key].as_u64().is_some_and(|n| n >= 1)
        })
        .json()["verify"]
            .clone()
    };
    let kept = status("kept", "kept");
    assert_eq!(
        (kept["dropped"].as_u64(), kept["failed"].as_u64()),
        (Some(0), Some(0)),
        "{kept}"
    );
    assert!(kept["wait_ms_median"].as_f64().unwrap() > 0.0, "{kept}");
    let dropped = status("dropped", "dropped");
    assert_eq!(
        (dropped["kept"].as_u64(), dropped["failed"].as_u64()),
        (Some(0), Some(0)),
        "{dropped}"
    );

    // Nothing of the dropped camera's ball was ever published: no event, no snapshot, and its
    // count never left zero; its detections message does not show it either.
    let events: Vec<Value> = sub.on("lookout/events").iter().map(|m| m.json()).collect();
    assert!(
        events.iter().all(|e| e["after"]["camera"] == "kept"),
        "{events:?}"
    );
    assert!(sub.on("lookout/dropped/ball/snapshot").is_empty());
    assert!(
        sub.on("lookout/dropped/ball")
            .iter()
            .all(|m| m.text() == "0")
    );
    assert!(
        sub.on("lookout/dropped/detections")
            .iter()
            .all(|m| m.json()["detections"]
                .as_array()
                .is_some_and(|d| d.is_empty())),
        "a dropped object in detections"
    );
    assert!(daemon.term().success());
}

#[test]
fn a_camera_whose_detector_fails_keeps_describing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let camera = testsrc_camera(
        "yard",
        &format!(
            "interval = 1\nscene_change = 0\n[camera.detect]\nmodel = {:?}\n",
            detector("bad-layout.onnx").display().to_string()
        ),
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &camera);
    let mut daemon = Daemon::start(dir.path(), &cfg);
    let status = sub
        .wait("detector error", T, |m| m.topic == "lookout/yard/detector")
        .json();
    assert_eq!(status["state"], "error");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("bad-layout.onnx") && error.contains("supported layouts"),
        "{error}"
    );
    sub.wait("a description", T, |m| {
        m.topic == "lookout/yard/description"
    });
    assert!(daemon.term().success());
}

#[test]
fn lookout_detect_prints_boxes_and_names_bad_models() {
    let dir = tempfile::tempdir().unwrap();
    let frame = detector("ball_320x240.png");
    let (ok, out) = lookout(
        &[
            "detect",
            "--model",
            detector("ball.onnx").to_str().unwrap(),
            "--image",
            frame.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(320), Some(240))
    );
    let d = v["detections"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(d[0]["label"], "ball");
    for key in ["preprocess_ms", "inference_ms", "postprocess_ms"] {
        assert!(v["timings"][key].as_f64().is_some(), "{key}");
    }

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a model").unwrap();
    for (model, expected) in [
        (junk.clone(), "is not an ONNX model"),
        (detector("bad-layout.onnx"), "supported layouts"),
        (detector("wrong-rank.onnx"), "[1, 3, height, width]"),
        (dir.path().join("missing.onnx"), "missing.onnx"),
    ] {
        let (ok, out) = lookout(
            &[
                "detect",
                "--model",
                model.to_str().unwrap(),
                "--image",
                frame.to_str().unwrap(),
            ],
            &[],
        );
        assert!(!ok && out.contains(expected), "{}: {out}", model.display());
        assert!(
            out.contains(model.file_name().unwrap().to_str().unwrap()),
            "{out}"
        );
    }
}

#[test]
fn check_config_names_every_bad_detect_key_and_loads_the_detector() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, camera: &str| {
        let path = dir.path().join(name);
        write(
            &path,
            &config(dir.path(), "url = \"mqtt://127.0.0.1:1883\"", camera),
        );
        lookout(&["check-config", path.to_str().unwrap()], &[])
    };
    let (ok, out) = check("good.toml", &ball_camera("describe_on = [\"ball\"]"));
    assert!(ok, "{out}");

    let (ok, out) = check(
        "bad.toml",
        &ball_camera(
            "fps = 0\nmin_score = 2\nmin_scores = { cat = 0.4 }\nmasks = [[[0, 0], [1, 0]]]\n\
             describe_on = [\"dog\"]\ndescribe_prompt = \"Who is the {person}?\"\nlayout = \"yolov99\"\n\
             verify = \"Is it a {thing}?\"\nverify_labels = [\"dog\"]\nverify_threshold = 2\n\
             [[camera.detect.zone]]\nname = \"status\"\npoints = [[0, 0], [2, 0], [1, 1]]\n",
        ),
    );
    assert!(!ok);
    for key in [
        "camera[0].detect.fps",
        "camera[0].detect.min_score",
        "camera[0].detect.min_scores.cat",
        "camera[0].detect.masks[0]",
        "camera[0].detect.describe_on",
        "camera[0].detect.describe_prompt",
        "camera[0].detect.layout",
        "camera[0].detect.verify",
        "camera[0].detect.verify_labels",
        "camera[0].detect.verify_threshold",
        "camera[0].detect.zone[0].name",
        "camera[0].detect.zone[0].points",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    let (ok, out) = check("typo.toml", &ball_camera("labelz = [\"ball\"]"));
    assert!(!ok && out.contains("labelz"), "{out}");

    // A detector that exists but cannot be read is found before anything starts.
    let camera = testsrc_camera(
        "yard",
        &format!(
            "[camera.detect]\nmodel = {:?}\n",
            detector("wrong-rank.onnx").display().to_string()
        ),
    );
    let (ok, out) = check("rank.toml", &camera);
    assert!(
        !ok && out.contains("camera[0].detect.model") && out.contains("wrong-rank.onnx"),
        "{out}"
    );
}
