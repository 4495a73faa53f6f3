//! Cameras: a GStreamer source per camera, supervised on its own thread so that one bad camera
//! never stops the others, plus the triggers that turn frames into jobs.

pub mod gst;
pub mod scene;
pub mod sensors;
pub mod source;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::CameraConfig;

/// A rectangle of a frame in pixels: left, top, width, height.
pub type Rect = (u32, u32, u32, u32);

/// One RGB frame, shared (not copied) between the camera, the job queue and the snapshot.
#[derive(Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: Arc<Vec<u8>>,
    pub captured: SystemTime,
}

impl Frame {
    /// The `width` x `height` rectangle at (`left`, `top`), which must lie inside the frame.
    pub fn crop(&self, left: u32, top: u32, width: u32, height: u32) -> Frame {
        debug_assert!(left + width <= self.width && top + height <= self.height);
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for y in top..top + height {
            let start = ((y * self.width + left) * 3) as usize;
            rgb.extend_from_slice(&self.rgb[start..start + (width * 3) as usize]);
        }
        Frame {
            width,
            height,
            rgb: Arc::new(rgb),
            captured: self.captured,
        }
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

/// What the rest of the daemon shares with a camera's thread.
pub struct CameraShared {
    pub config: Arc<CameraConfig>,
    pub enabled: AtomicBool,
    /// The newest sampled frame, for on-demand questions.
    pub latest: Mutex<Option<Frame>>,
    /// [`crate::clock::now_ms`] of the supervisor's last loop turn (watchdog).
    pub heartbeat: AtomicU64,
    pub online: AtomicBool,
    pub stop: AtomicBool,
    /// Set when a description is asked for by hand: the interval restarts from it, as from
    /// any other description.
    pub described_on_demand: AtomicBool,
}

impl CameraShared {
    pub fn new(config: CameraConfig) -> Arc<CameraShared> {
        Arc::new(CameraShared {
            enabled: AtomicBool::new(config.enabled),
            config: Arc::new(config),
            latest: Mutex::new(None),
            heartbeat: AtomicU64::new(crate::clock::now_ms()),
            online: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            described_on_demand: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn latest_frame(&self) -> Option<Frame> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}
