//! When a camera's sensors ask their questions: all of them on the first frame (so that every
//! entity has a state), then each on its own triggers. A scene-change sensor watches its own
//! region: a change there counts even when the rest of the frame is still, and a change
//! elsewhere does not ask it again.

use std::time::{Duration, Instant};

use super::Frame;
use super::scene::Thumbnail;
use crate::config::CameraConfig;
use crate::config::sensor::{SensorTrigger, region_pixels};

/// Sensors due on a frame, and the trigger named in their answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub sensors: Vec<String>,
    /// `start`, `scene_change` or `interval`.
    pub trigger: &'static str,
}

/// The scene-change watch of one region (`None`: the whole frame).
struct Watch {
    region: Option<[f64; 4]>,
    reference: Option<Thumbnail>,
    last: Option<Instant>,
}

pub struct SensorSchedule {
    started: bool,
    watches: Vec<Watch>,
    /// Per sensor, when its interval is next due (`None`: not on an interval).
    next_interval: Vec<Option<Instant>>,
}

impl SensorSchedule {
    pub fn new(config: &CameraConfig) -> SensorSchedule {
        let mut watches: Vec<Watch> = Vec::new();
        for sensor in &config.sensors {
            if sensor.asks_on(&SensorTrigger::SceneChange)
                && !watches.iter().any(|w| w.region == sensor.region)
            {
                watches.push(Watch {
                    region: sensor.region,
                    reference: None,
                    last: None,
                });
            }
        }
        SensorSchedule {
            started: false,
            watches,
            next_interval: vec![None; config.sensors.len()],
        }
    }

    /// The sensors to ask about `frame`, sampled at `now`.
    pub fn due(&mut self, config: &CameraConfig, frame: &Frame, now: Instant) -> Option<Due> {
        if config.sensors.is_empty() {
            return None;
        }
        let thumb = |region: Option<[f64; 4]>| match region {
            Some(r) => Thumbnail::of_region(frame, region_pixels(r, frame.width, frame.height)),
            None => Thumbnail::of(frame),
        };
        let gap = Duration::from_secs_f64(config.scene_min_gap);
        if !self.started {
            self.started = true;
            for watch in &mut self.watches {
                watch.reference = Some(thumb(watch.region));
                watch.last = Some(now);
            }
            for (next, sensor) in self.next_interval.iter_mut().zip(&config.sensors) {
                if sensor.asks_on(&SensorTrigger::Interval) {
                    *next = Some(now + Duration::from_secs_f64(sensor.interval));
                }
            }
            return Some(Due {
                sensors: config.sensors.iter().map(|s| s.name.clone()).collect(),
                trigger: "start",
            });
        }
        let mut changed = Vec::new();
        for watch in &mut self.watches {
            if watch.last.is_some_and(|t| now.duration_since(t) < gap) {
                continue;
            }
            let current = thumb(watch.region);
            let moved = watch
                .reference
                .as_ref()
                .is_none_or(|r| r.difference(&current) >= config.scene_change);
            if moved {
                watch.reference = Some(current);
                watch.last = Some(now);
                changed.push(watch.region);
            }
        }
        let mut sensors = Vec::new();
        let mut scene = false;
        for (next, sensor) in self.next_interval.iter_mut().zip(&config.sensors) {
            let on_change =
                sensor.asks_on(&SensorTrigger::SceneChange) && changed.contains(&sensor.region);
            let on_interval = next.is_some_and(|t| now >= t);
            if on_interval {
                *next = Some(now + Duration::from_secs_f64(sensor.interval));
            }
            if on_change || on_interval {
                scene |= on_change;
                sensors.push(sensor.name.clone());
            }
        }
        (!sensors.is_empty()).then_some(Due {
            sensors,
            trigger: if scene { "scene_change" } else { "interval" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sensor::SensorConfig;
    use std::sync::Arc;

    /// A 64x48 grey frame with the rectangles `(x, y, w, h)` painted white.
    fn frame(squares: &[(usize, usize, usize, usize)]) -> Frame {
        let mut rgb = vec![60u8; 64 * 48 * 3];
        for &(x0, y0, w, h) in squares {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    rgb[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3].fill(255);
                }
            }
        }
        Frame {
            width: 64,
            height: 48,
            rgb: Arc::new(rgb),
            captured: std::time::SystemTime::now(),
        }
    }

    fn camera() -> CameraConfig {
        let sensor = |name: &str, on: &[&str], region| SensorConfig {
            name: name.into(),
            question: "?".into(),
            answer: "yes_no".into(),
            on: on.iter().map(|s| s.to_string()).collect(),
            interval: 60.0,
            region,
            ..SensorConfig::default()
        };
        CameraConfig {
            scene_change: 0.05,
            scene_min_gap: 5.0,
            sensors: vec![
                sensor("whole", &["scene_change"], None),
                sensor("door", &["scene_change"], Some([0.5, 0.0, 1.0, 0.5])),
                sensor("hourly", &["interval"], None),
            ],
            ..CameraConfig::default()
        }
    }

    fn names(due: Option<Due>) -> Vec<String> {
        due.map(|d| d.sensors).unwrap_or_default()
    }

    #[test]
    fn every_sensor_answers_first_then_on_its_own_triggers() {
        let config = camera();
        let mut schedule = SensorSchedule::new(&config);
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let first = schedule.due(&config, &frame(&[]), t0).unwrap();
        assert_eq!(first.trigger, "start");
        assert_eq!(first.sensors, ["whole", "door", "hourly"]);
        // Nothing changed: nothing is asked.
        assert_eq!(schedule.due(&config, &frame(&[]), s(10)), None);
        // A change in the door's region (top right): both scene-change sensors.
        let door = (40, 0, 24, 24);
        let door_open = frame(&[door]);
        let due = schedule.due(&config, &door_open, s(20)).unwrap();
        assert_eq!(
            (due.sensors.as_slice(), due.trigger),
            (&["whole".to_string(), "door".into()][..], "scene_change")
        );
        // The same picture again is no change.
        assert_eq!(schedule.due(&config, &door_open, s(30)), None);
        // A change outside the door's region asks the whole-frame sensor only.
        let bottom_left = frame(&[door, (0, 24, 32, 24)]);
        assert_eq!(names(schedule.due(&config, &bottom_left, s(40))), ["whole"]);
        // Changes come no closer than scene_min_gap.
        assert_eq!(schedule.due(&config, &door_open, s(42)), None);
        // The interval comes round.
        let due = schedule.due(&config, &bottom_left, s(61)).unwrap();
        assert_eq!(
            (due.sensors.as_slice(), due.trigger),
            (&["hourly".to_string()][..], "interval")
        );
        assert_eq!(schedule.due(&config, &bottom_left, s(100)), None);
        assert_eq!(
            names(schedule.due(&config, &bottom_left, s(122))),
            ["hourly"]
        );
    }
}
