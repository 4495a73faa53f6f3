//! systemd integration: `READY=1`, `STATUS=` lines, and a watchdog that pets `WATCHDOG=1` only
//! while the main loop, every camera supervisor, and inference make progress. Outside systemd
//! (no `NOTIFY_SOCKET`) every call is a no-op.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::camera::CameraShared;
use crate::clock::now_ms;
use crate::jobs::JobQueue;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn reloading() {
    let _ = sd_notify::notify(&[NotifyState::Reloading, NotifyState::Status("reloading")]);
}

/// What the watchdog looks at; cameras are swapped on reload.
pub struct Health {
    pub main_loop: Arc<AtomicU64>,
    pub cameras: std::sync::Mutex<Arc<BTreeMap<String, Arc<CameraShared>>>>,
    pub queue: Arc<JobQueue>,
    pub job_timeout: Duration,
}

impl Health {
    /// `Err(why)` when something is stuck.
    pub fn check(&self) -> Result<String, String> {
        let now = now_ms();
        let stale = |ms: u64| now.saturating_sub(ms) > 30_000;
        if stale(self.main_loop.load(Ordering::Relaxed)) {
            return Err("main loop stalled".into());
        }
        let cameras = self
            .cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for camera in cameras.values() {
            if stale(camera.heartbeat.load(Ordering::Relaxed)) {
                return Err(format!("camera {} supervisor stalled", camera.name()));
            }
        }
        let busy = self.queue.busy_since.load(Ordering::Relaxed);
        if busy != 0 && now.saturating_sub(busy - 1) > self.job_timeout.as_millis() as u64 {
            return Err("inference stuck (daemon.job_timeout)".into());
        }
        let online = cameras
            .values()
            .filter(|c| c.online.load(Ordering::Relaxed))
            .count();
        Ok(format!(
            "{online}/{} cameras online, {} job(s) queued, {} done",
            cameras.len(),
            self.queue.len(),
            self.queue.completed.load(Ordering::Relaxed)
        ))
    }
}

/// Pets the watchdog at half its period while healthy; updates `STATUS=` either way.
pub async fn watchdog(health: Arc<Health>) {
    let period = sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(10));
    let enabled = sd_notify::watchdog_enabled().is_some();
    let mut last_problem = String::new();
    loop {
        tokio::time::sleep(period).await;
        match health.check() {
            Ok(line) => {
                last_problem.clear();
                let mut states = vec![NotifyState::Status(&line)];
                if enabled {
                    states.push(NotifyState::Watchdog);
                }
                let _ = sd_notify::notify(&states);
            }
            Err(problem) => {
                if problem != last_problem {
                    log::error!("health check failed: {problem}; not petting the watchdog");
                    last_problem = problem.clone();
                }
                status(&format!("unhealthy: {problem}"));
            }
        }
    }
}
