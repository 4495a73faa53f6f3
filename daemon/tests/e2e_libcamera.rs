//! libcamera cameras: the real binary drives GStreamer's libcamerasrc.
//!
//! - A camera libcamera does not have goes offline with libcamera's reason, and the daemon carries
//!   on (Debian 12's libcamera, as installed).
//! - A camera libcamera has is described: libcamera's virtual camera (`common::virtual_camera`)
//!   sends an image through libcamera and libcamerasrc, and its size and colour come out in the
//!   description and the snapshot.

mod common;

use std::process::Command;
use std::time::Duration;

use common::virtual_camera::{can_unshare, libcamera_root, virtual_camera};
use common::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn an_absent_libcamera_camera_is_offline_with_the_reason() {
    let inspect = Command::new("gst-inspect-1.0")
        .arg("libcamerasrc")
        .output()
        .expect("gst-inspect-1.0 runs");
    assert!(
        inspect.status.success(),
        "GStreamer's libcamerasrc is missing: apt-get install gstreamer1.0-libcamera"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cameras = format!(
        "[[camera]]\nname = \"csi\"\nsource = \"libcamera://lookout-test-absent\"\nfps = 2\n\n{}",
        testsrc_camera("pattern", "interval = 1\nscene_change = 0")
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    let offline = sub
        .wait("csi offline", T, |m| {
            m.topic == "lookout/csi/status" && m.json()["state"] == "offline"
        })
        .json();
    assert!(
        offline["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Could not find a camera named 'lookout-test-absent'")),
        "{offline}"
    );
    // The other camera is unaffected.
    sub.wait("pattern description", T, |m| {
        m.topic == "lookout/pattern/description"
    });
    assert!(daemon.term().success());
}

#[test]
fn a_libcamera_camera_is_described() {
    if !can_unshare() {
        eprintln!("cannot make a mount namespace: skipping (needs root)");
        return;
    }
    let root = libcamera_root();
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.jpg");
    image::RgbImage::from_pixel(800, 600, image::Rgb([40, 160, 60]))
        .save(&scene)
        .unwrap();
    let camera = virtual_camera(dir.path(), "lookout-csi", &scene, (800, 600));

    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let cameras = "[[camera]]\nname = \"csi\"\nsource = \"libcamera://lookout-csi\"\nfps = 2\nmax_tokens = 4\ninterval = 1\nscene_change = 0\n";
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), cameras);
    let mut daemon = Daemon::start_command(
        dir.path(),
        &cfg,
        camera.lookout_command(&root, dir.path()),
        &[],
    );

    sub.wait("csi online", T, |m| {
        m.topic == "lookout/csi/status" && m.json()["state"] == "online"
    });
    // Frames flow: several descriptions on the interval, each of the camera's full frame.
    let descriptions = sub.wait_count("lookout/csi/description", 3, T);
    for d in &descriptions {
        let d = d.json();
        assert_eq!(d["frame"]["width"], 800, "{d}");
        assert_eq!(d["frame"]["height"], 600, "{d}");
    }
    // The picture is the camera's, colours in the right channels. Not to the unit: libcamera's
    // virtual camera passes on the JPEG's full-range BT.601 YCbCr but labels it Rec709 (limited
    // range), and libcamerasrc's caps carry that label, so the decoded colour shifts (measured
    // 19,145,48 with libcamera 0.7.1). Swapped chroma planes would give red above blue.
    let snapshot = sub.wait("csi snapshot", T, |m| m.topic == "lookout/csi/snapshot");
    let [r, g, b] = mean_rgb(&snapshot.payload);
    assert!(
        g > 120.0 && g > 2.5 * b && b > r + 10.0,
        "snapshot colour {r:.0},{g:.0},{b:.0}, the camera sends 40,160,60"
    );
    assert!(daemon.term().success(), "{}", daemon.log_text());
}
