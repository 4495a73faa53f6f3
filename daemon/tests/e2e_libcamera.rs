//! libcamera cameras: the real binary drives GStreamer's libcamerasrc. This machine has no camera
//! libcamera can open (and no vimc module), so what is proven is the wiring and the failure path:
//! a camera libcamera does not have goes offline with libcamera's reason, and the daemon carries on.

mod common;

use std::process::Command;
use std::time::Duration;

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
