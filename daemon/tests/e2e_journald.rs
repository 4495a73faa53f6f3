//! Logging under systemd: with stderr connected to the journal (`JOURNAL_STREAM`), records go to
//! journald's native socket with structured fields. The test stands in for journald on its
//! socket, so it needs a host where no journald runs and `/run` is writable (root), as in CI;
//! elsewhere it says why and does nothing.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const SOCKET: &str = "/run/systemd/journal/socket";

/// Removes the stand-in socket when the test ends, however it ends.
struct Bound(UnixDatagram);

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SOCKET);
    }
}

fn bind_journal_socket() -> Option<Bound> {
    if Path::new(SOCKET).exists() {
        eprintln!("a journald owns {SOCKET}: skipping (this test stands in for journald)");
        return None;
    }
    if let Err(e) = std::fs::create_dir_all("/run/systemd/journal") {
        eprintln!("cannot create /run/systemd/journal ({e}): skipping (needs root)");
        return None;
    }
    let socket = UnixDatagram::bind(SOCKET).expect("binding the journal socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    Some(Bound(socket))
}

/// journald's native protocol: `KEY=value\n`, or `KEY\n` + u64 LE length + value + `\n`.
fn parse_fields(mut datagram: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !datagram.is_empty() {
        let end = datagram
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .expect("field name");
        let name = String::from_utf8_lossy(&datagram[..end]).into_owned();
        let value;
        if datagram[end] == b'=' {
            let stop = end
                + 1
                + datagram[end + 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap();
            value = &datagram[end + 1..stop];
            datagram = &datagram[stop + 1..];
        } else {
            let len = u64::from_le_bytes(datagram[end + 1..end + 9].try_into().unwrap()) as usize;
            value = &datagram[end + 9..end + 9 + len];
            datagram = &datagram[end + 9 + len + 1..];
        }
        fields.insert(name, String::from_utf8_lossy(value).into_owned());
    }
    fields
}

#[test]
fn journald_gets_structured_fields() {
    let Some(journal) = bind_journal_socket() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let cfg = config(
        dir.path(),
        &format!("url = \"{}\"", broker.url()),
        &testsrc_camera("yard", "interval = 1\nscene_change = 0"),
    );
    let config_path = dir.path().join("lookout.toml");
    write(&config_path, &cfg);
    // What systemd does for a unit's stderr: JOURNAL_STREAM names the stream's device:inode.
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = lookout_command()
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let until = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 1 << 16];
    let described = loop {
        assert!(
            Instant::now() < until,
            "no description logged to the journal; stderr: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        let Ok(n) = journal.0.recv(&mut buf) else {
            continue;
        };
        let fields = parse_fields(&buf[..n]);
        if fields
            .get("MESSAGE")
            .is_some_and(|m| m.starts_with("described in"))
        {
            break fields;
        }
    };
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(described["SYSLOG_IDENTIFIER"], "lookout");
    // systemd-journal-logger maps info to syslog's notice (5), debug to info (6).
    assert_eq!(described["PRIORITY"], "5");
    assert_eq!(described["CAMERA"], "yard");
    assert_eq!(described["TRIGGER"], "interval");
    assert!(!described["EVENT_ID"].is_empty());
    // Nothing went to stderr: the journal got it all.
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!stderr.contains("described in"), "{stderr}");
}
