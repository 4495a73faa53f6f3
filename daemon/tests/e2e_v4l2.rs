//! V4L2 cameras end to end: GStreamer's real v4l2src reading a webcam that `fake_v4l2.c` emulates
//! in user space (this machine has no video device and cannot load v4l2loopback), the real binary,
//! mosquitto, the tiny model.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn start_with(dir: &Path, config: &str, webcam: &FakeV4l2) -> Daemon {
    let env = webcam.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_with_env(dir, config, &env)
}

#[test]
fn webcam_is_described_and_survives_being_unplugged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let webcam = fake_v4l2_camera(dir.path(), &dir.path().join("video0"), [200, 30, 30]);

    let cameras = format!(
        "[[camera]]\nname = \"desk\"\nsource = \"v4l2://{}\"\nfps = 2\nmax_tokens = 4\ninterval = 1\nscene_change = 0\nno_frame_timeout = 5\n",
        webcam.device.display()
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = start_with(dir.path(), &cfg, &webcam);

    // The webcam's frames reach the model: its size, and its colour in the described snapshot.
    sub.wait("desk online", T, |m| {
        m.topic == "lookout/desk/status" && m.json()["state"] == "online"
    });
    let description = sub
        .wait("desk description", T, |m| {
            m.topic == "lookout/desk/description"
        })
        .json();
    assert_eq!(description["frame"]["width"], 320, "{description}");
    assert_eq!(description["frame"]["height"], 240, "{description}");
    let snapshot = sub.wait("desk snapshot", T, |m| m.topic == "lookout/desk/snapshot");
    let [r, g, b] = mean_rgb(&snapshot.payload);
    assert!(
        (r - 200.0).abs() < 12.0 && (g - 30.0).abs() < 12.0 && (b - 30.0).abs() < 12.0,
        "snapshot colour {r:.0},{g:.0},{b:.0}, the camera sends 200,30,30"
    );

    // Unplugged: offline with the driver's reason, and no descriptions.
    webcam.unplug();
    let offline = sub
        .wait("desk offline", T, |m| {
            m.topic == "lookout/desk/status" && m.json()["state"] == "offline"
        })
        .json();
    assert!(
        offline["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{offline}"
    );
    // While it stays unplugged, the rebuilds say why they fail.
    let device = webcam.device.display().to_string();
    sub.wait("desk reported missing", T, |m| {
        m.topic == "lookout/desk/status"
            && m.json()["reason"]
                .as_str()
                .is_some_and(|r| r.contains(&device) && r.contains("No such file or directory"))
    });

    // Plugged back in: online again, and descriptions resume.
    let before = sub.on("lookout/desk/description").len();
    let seen = sub.all().len();
    webcam.plug_in();
    sub.wait_after(seen, "desk back online", T, |m| {
        m.topic == "lookout/desk/status" && m.json()["state"] == "online"
    });
    sub.wait_count("lookout/desk/description", before + 1, T);

    // Hung (streaming, but no frame): offline once no_frame_timeout passes, then rebuilt and
    // back when frames come again.
    let seen = sub.all().len();
    webcam.freeze();
    let hung = sub
        .wait_after(seen, "desk offline, hung", T, |m| {
            m.topic == "lookout/desk/status" && m.json()["state"] == "offline"
        })
        .json();
    assert_eq!(hung["reason"], "no frame for 5 s", "{hung}");
    let before = sub.on("lookout/desk/description").len();
    let seen = sub.all().len();
    webcam.thaw();
    sub.wait_after(seen, "desk recovered", T, |m| {
        m.topic == "lookout/desk/status" && m.json()["state"] == "online"
    });
    sub.wait_count("lookout/desk/description", before + 1, T);

    assert!(daemon.term().success());
}

/// The scene-change trigger: a still scene is described no more; a change is, with its score
/// and the new picture; changes closer together than `scene_min_gap` wait for it.
#[test]
fn a_changed_scene_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let webcam = fake_v4l2_camera(dir.path(), &dir.path().join("video0"), [60, 10, 10]);
    let cameras = format!(
        "[[camera]]\nname = \"hall\"\nsource = \"v4l2://{}\"\nfps = 5\nmax_tokens = 4\ninterval = 0\nscene_change = 0.2\nscene_min_gap = 4\n",
        webcam.device.display()
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = start_with(dir.path(), &cfg, &webcam);
    sub.wait("hall online", T, |m| {
        m.topic == "lookout/hall/status" && m.json()["state"] == "online"
    });

    // A still scene: nothing to say.
    std::thread::sleep(Duration::from_secs(3));
    assert!(sub.on("lookout/hall/description").is_empty());

    // Someone switches the light on: described once, for the change, showing the new scene.
    webcam.show([40, 220, 40]);
    let first = sub.wait("the change described", T, |m| {
        m.topic == "lookout/hall/description"
    });
    let seen_first = std::time::Instant::now();
    let first = first.json();
    assert_eq!(first["trigger"], "scene_change", "{first}");
    assert!(
        first["scene_score"].as_f64().is_some_and(|s| s >= 0.2),
        "{first}"
    );
    let snapshot = sub.wait("the new scene's snapshot", T, |m| {
        m.topic == "lookout/hall/snapshot"
    });
    let [r, g, b] = mean_rgb(&snapshot.payload);
    assert!(
        g > 180.0 && r < 80.0 && b < 80.0,
        "snapshot {r:.0},{g:.0},{b:.0}"
    );

    // And changes again at once: that waits for the minimum gap.
    webcam.show([20, 20, 240]);
    let second = sub.wait_count("lookout/hall/description", 2, T)[1].json();
    let gap = seen_first.elapsed();
    assert_eq!(second["trigger"], "scene_change", "{second}");
    assert!(
        gap >= Duration::from_millis(3500),
        "{gap:?} after the first"
    );

    // Still again: no more descriptions.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sub.on("lookout/hall/description").len(), 2);
    assert!(daemon.term().success());
}

/// Device nodes this test made in /dev, removed when it ends however it ends.
struct DevNodes(Vec<PathBuf>);

impl Drop for DevNodes {
    fn drop(&mut self) {
        for node in &self.0 {
            let _ = std::fs::remove_file(node);
        }
    }
}

/// With no `[[camera]]`, `lookout run` uses the first V4L2 node that captures video: here
/// /dev/video1, since /dev/video0 answers no V4L2 query (as a UVC camera's metadata node or a
/// codec would not claim capture). Needs root and a host without /dev/video* (as in CI);
/// elsewhere it says so and skips.
#[test]
fn default_camera_is_the_first_capture_node() {
    if host_has_video_nodes() {
        eprintln!("this host has /dev/video*: skipping (the test makes its own)");
        return;
    }
    let (video0, video1) = (Path::new("/dev/video0"), Path::new("/dev/video1"));
    if let Err(e) = std::os::unix::fs::symlink("/dev/null", video0) {
        eprintln!(
            "cannot create {} ({e}): skipping (needs root)",
            video0.display()
        );
        return;
    }
    let mut nodes = DevNodes(vec![video0.to_path_buf()]);
    let dir = tempfile::tempdir().unwrap();
    let webcam = fake_v4l2_camera(dir.path(), video1, [30, 30, 200]);
    nodes.0.push(video1.to_path_buf());

    let port = free_port();
    let cfg = config(dir.path(), &format!("listen = \"127.0.0.1:{port}\""), "");
    let mut daemon = start_with(dir.path(), &cfg, &webcam);
    let sub = Subscriber::connect(port, None);
    sub.wait("default camera online", T, |m| {
        m.topic == "lookout/default/status" && m.json()["state"] == "online"
    });
    sub.publish("lookout/default/describe/set", "PRESS");
    let description = sub
        .wait("default description", T, |m| {
            m.topic == "lookout/default/description"
        })
        .json();
    assert_eq!(description["frame"]["width"], 320, "{description}");
    let snapshot = sub.wait("default snapshot", T, |m| {
        m.topic == "lookout/default/snapshot"
    });
    let [r, g, b] = mean_rgb(&snapshot.payload);
    assert!(
        b > 150.0 && r < 80.0 && g < 80.0,
        "snapshot colour {r:.0},{g:.0},{b:.0}, /dev/video1 sends 30,30,200"
    );
    assert!(daemon.term().success());
    drop(nodes);
}
