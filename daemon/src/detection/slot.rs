//! The newest frame, handed from a camera's thread to its detector's thread. One slot, never a
//! queue: a detector that falls behind skips frames (and counts them) instead of working
//! through a backlog of the past.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::camera::Frame;

#[derive(Default)]
pub struct FrameSlot {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    frame: Option<Frame>,
    /// Frames replaced before the detector took them.
    skipped: u64,
    closed: bool,
}

impl FrameSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the newest frame in, replacing (and counting) one the detector has not taken yet.
    pub fn offer(&self, frame: Frame) {
        let mut s = self.lock();
        if s.frame.replace(frame).is_some() {
            s.skipped += 1;
        }
        drop(s);
        self.ready.notify_one();
    }

    /// The newest frame, waiting up to `timeout` for one; `None` on timeout or once closed.
    pub fn take(&self, timeout: Duration) -> Option<Frame> {
        let s = self.lock();
        let (mut s, _) = self
            .ready
            .wait_timeout_while(s, timeout, |s| s.frame.is_none() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        if s.closed { None } else { s.frame.take() }
    }

    pub fn skipped(&self) -> u64 {
        self.lock().skipped
    }

    /// Wakes the detector for good: it stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;

    fn frame(v: u8) -> Frame {
        Frame {
            width: 1,
            height: 1,
            rgb: Arc::new(vec![v; 3]),
            captured: SystemTime::now(),
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_the_rest() {
        let slot = FrameSlot::default();
        assert!(slot.take(Duration::from_millis(1)).is_none());
        slot.offer(frame(1));
        slot.offer(frame(2));
        slot.offer(frame(3));
        assert_eq!(slot.take(Duration::ZERO).unwrap().rgb[0], 3);
        assert_eq!(slot.skipped(), 2);
        assert!(slot.take(Duration::from_millis(1)).is_none());
        slot.offer(frame(4));
        slot.close();
        assert!(slot.take(Duration::from_secs(5)).is_none());
    }
}
