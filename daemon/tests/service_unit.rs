//! The shipped systemd unit, checked by systemd itself.

mod common;

use std::path::Path;
use std::process::Command;

/// `systemd-analyze security` scores the unit's sandboxing from 0 (locked down) to 10 (none).
/// The unit must stay at "OK" or better (below 2.5): a hardening line dropped by mistake fails
/// here rather than on a user's box.
#[test]
fn unit_is_hardened() {
    common::require("systemd-analyze", "systemd");
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/lookout.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("running systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {overall:?}"));
    assert!(score < 2.5, "{overall}\n{text}");
}
