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

/// How long the main loop or a camera supervisor may go without a turn. Both turn at least every
/// few seconds, even with nothing to do.
const STALL: Duration = Duration::from_secs(30);

/// What the watchdog looks at; cameras are swapped on reload.
pub struct Health {
    pub main_loop: Arc<AtomicU64>,
    pub cameras: std::sync::Mutex<Arc<BTreeMap<String, Arc<CameraShared>>>>,
    pub queue: Arc<JobQueue>,
    pub job_timeout: Duration,
}

impl Health {
    /// `Err(why)` when something is stuck; `Ok` carries the `STATUS=` line.
    pub fn check(&self) -> Result<String, String> {
        self.check_at(now_ms())
    }

    /// [`Health::check`] as it would be at `now` ([`crate::clock::now_ms`]).
    fn check_at(&self, now: u64) -> Result<String, String> {
        let stale = |ms: u64| now.saturating_sub(ms) > STALL.as_millis() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CameraConfig;

    fn health(job_timeout: Duration) -> Health {
        let camera = CameraShared::new(CameraConfig {
            name: "porch".into(),
            ..CameraConfig::default()
        });
        Health {
            main_loop: Arc::new(AtomicU64::new(now_ms())),
            cameras: std::sync::Mutex::new(Arc::new(BTreeMap::from([(
                "porch".to_string(),
                camera,
            )]))),
            queue: JobQueue::new(4),
            job_timeout,
        }
    }

    fn at(seconds: u64) -> u64 {
        now_ms() + seconds * 1000
    }

    /// The main loop and every camera supervisor took a turn at `now`.
    fn turned(health: &Health, now: u64) {
        health.main_loop.store(now, Ordering::Relaxed);
        for camera in health.cameras.lock().unwrap().values() {
            camera.heartbeat.store(now, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_long_job_is_not_a_hang() {
        let health = health(Duration::from_secs(600));
        assert_eq!(
            health.check().unwrap(),
            "0/1 cameras online, 0 job(s) queued, 0 done"
        );
        health
            .queue
            .busy_since
            .store(now_ms() + 1, Ordering::Relaxed);
        turned(&health, at(599));
        assert!(health.check_at(at(599)).is_ok());
    }

    #[test]
    fn a_hung_inference_stops_the_pets() {
        let health = health(Duration::from_secs(60));
        health
            .queue
            .busy_since
            .store(now_ms() + 1, Ordering::Relaxed);
        turned(&health, at(61));
        assert_eq!(
            health.check_at(at(61)),
            Err("inference stuck (daemon.job_timeout)".to_string())
        );
        // Once the job ends, the daemon is healthy again.
        health.queue.busy_since.store(0, Ordering::Relaxed);
        assert!(health.check_at(at(61)).is_ok());
    }

    #[test]
    fn a_stalled_loop_or_camera_stops_the_pets() {
        let health = health(Duration::from_secs(600));
        assert_eq!(
            health.check_at(at(31)),
            Err("main loop stalled".to_string())
        );
        health.main_loop.store(at(31), Ordering::Relaxed);
        assert_eq!(
            health.check_at(at(31)),
            Err("camera porch supervisor stalled".to_string())
        );
    }
}
