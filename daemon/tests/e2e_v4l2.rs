//! V4L2 cameras end to end: GStreamer's real v4l2src reading a webcam that `fake_v4l2.c` emulates
//! in user space (this machine has no video device and cannot load v4l2loopback), the real binary,
//! mosquitto, the tiny model.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// The mean colour of a JPEG.
fn mean_rgb(jpeg: &[u8]) -> [f64; 3] {
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

#[test]
fn webcam_is_described_and_survives_being_unplugged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let webcam = fake_v4l2_camera(dir.path(), [200, 30, 30]);

    let cameras = format!(
        "[[camera]]\nname = \"desk\"\nsource = \"v4l2://{}\"\nfps = 2\nmax_tokens = 4\ninterval = 1\nscene_change = 0\nno_frame_timeout = 5\n",
        webcam.device.display()
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let env = webcam.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut daemon = Daemon::start_with_env(dir.path(), &cfg, &env);

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
    webcam.plug_in();
    let seen = sub.on("lookout/desk/status").len();
    let until = std::time::Instant::now() + T;
    while !sub.on("lookout/desk/status")[seen..]
        .iter()
        .any(|m| m.json()["state"] == "online")
    {
        assert!(
            std::time::Instant::now() < until,
            "desk did not come back online"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sub.wait_count("lookout/desk/description", before + 1, T);

    assert!(daemon.term().success());
}
