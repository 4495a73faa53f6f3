//! RTSP cameras end to end: a real RTSP server (gst-rtsp-server, basic authentication) on a
//! free loopback port, the real binary, mosquitto, the tiny model.

mod common;

use std::time::Duration;

use common::*;
use gstreamer_rtsp_server as rtsp;
use rtsp::prelude::*;
use rtsp::{glib, gst};

const T: Duration = Duration::from_secs(60);

/// An RTSP server streaming a live test pattern as RTP/JPEG at `/cam`, for user `cam` with
/// password `s3cret` only. It runs until the test process ends.
fn start_rtsp_server(port: u16) {
    gst::init().unwrap();
    let server = rtsp::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&port.to_string());

    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(
        "( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=160,height=120,framerate=5/1 \
         ! jpegenc ! rtpjpegpay name=pay0 pt=96 )",
    );
    factory.set_shared(true);
    let role = gst::Structure::builder("viewer")
        .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
        .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
        .build();
    factory.add_role_from_structure(&role);
    server.mount_points().unwrap().add_factory("/cam", factory);

    let auth = rtsp::RTSPAuth::new();
    let token = rtsp::RTSPToken::builder()
        .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        .build();
    auth.add_basic(rtsp::RTSPAuth::make_basic("cam", "s3cret").as_str(), &token);
    server.set_auth(Some(&auth));

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let context = glib::MainContext::new();
        context
            .with_thread_default(|| {
                let _source = server.attach(Some(&context)).unwrap();
                ready_tx.send(()).unwrap();
                glib::MainLoop::new(Some(&context), false).run();
            })
            .unwrap();
    });
    ready_rx.recv_timeout(T).expect("RTSP server did not start");
}

#[test]
fn rtsp_camera_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let sub = Subscriber::connect(broker.port, None);
    let port = free_port();
    start_rtsp_server(port);

    let cameras = format!(
        "[[camera]]\nname = \"gate\"\nsource = \"rtsp://cam:s3cret@127.0.0.1:{port}/cam\"\nfps = 2\nmax_tokens = 4\ninterval = 1\nscene_change = 0\n\n\
         [[camera]]\nname = \"intruder\"\nsource = \"rtsp://cam:wrong-password@127.0.0.1:{port}/cam\"\nfps = 2\nmax_tokens = 4\ninterval = 1\nscene_change = 0\n"
    );
    let cfg = config(dir.path(), &format!("url = \"{}\"", broker.url()), &cameras);
    let mut daemon = Daemon::start(dir.path(), &cfg);

    // The right credentials: online, and the stream is described.
    sub.wait("gate online", T, |m| {
        m.topic == "lookout/gate/status" && m.json()["state"] == "online"
    });
    let description = sub
        .wait("gate description", T, |m| {
            m.topic == "lookout/gate/description"
        })
        .json();
    assert_eq!(description["frame"]["width"], 160, "{description}");
    assert!(description["text"].is_string());

    // The wrong password: offline, with a reason that says so.
    let offline = sub
        .wait("intruder offline", T, |m| {
            m.topic == "lookout/intruder/status" && m.json()["state"] == "offline"
        })
        .json();
    let reason = offline["reason"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(reason.contains("auth"), "reason: {offline}");

    // Passwords never reach the broker or the log.
    assert!(daemon.term().success());
    let log = daemon.log_text();
    for secret in ["s3cret", "wrong-password"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(
            sub.all().iter().all(|m| !m.text().contains(secret)),
            "{secret} published"
        );
    }
}
