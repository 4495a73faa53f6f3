//! A camera's `[[camera.sensor]]` tables: standing questions whose typed answers are published
//! as Home Assistant entities.

use lookout_pipeline::answer::{AnswerKind, TEXT_TOKENS};
use serde::Deserialize;

/// What makes a sensor ask its question again (besides the first frame after start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SensorTrigger {
    /// The camera's picture changed by `scene_change` or more since the sensors last asked.
    SceneChange,
    /// Every `interval` seconds.
    Interval,
    /// A new tracked object of this label is announced.
    Label(String),
}

/// `[x1, y1, x2, y2]` (fractions of the frame) as a pixel rectangle `(x, y, width, height)` of a
/// `width` x `height` frame, at least one pixel a side.
pub fn region_pixels([x1, y1, x2, y2]: [f64; 4], width: u32, height: u32) -> crate::camera::Rect {
    let px = |f: f64, size: u32| ((f * f64::from(size)).round() as u32).min(size);
    let (left, top) = (px(x1, width).min(width - 1), px(y1, height).min(height - 1));
    let (right, bottom) = (px(x2, width).max(left + 1), px(y2, height).max(top + 1));
    (left, top, right - left, bottom - top)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// Part of the topic and entity id: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// Asked verbatim about the frame (or its `region`).
    pub question: String,
    /// `yes_no`, `number`, `choice` or `text`.
    pub answer: String,
    /// The options of a `choice`.
    pub options: Vec<String>,
    /// Unit of a `number` (Home Assistant's `unit_of_measurement`).
    pub unit: Option<String>,
    /// Range of a `number`: answers outside are clamped into it.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Longest `text` answer, in tokens.
    pub max_tokens: usize,
    /// `scene_change`, `interval`, and tracked labels of `[camera.detect]`.
    pub on: Vec<String>,
    /// Seconds between answers when `on` holds `interval`.
    pub interval: f64,
    /// `[x1, y1, x2, y2]` as fractions of the frame: the question is about this crop only.
    pub region: Option<[f64; 4]>,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            name: String::new(),
            question: String::new(),
            answer: String::new(),
            options: Vec::new(),
            unit: None,
            min: None,
            max: None,
            max_tokens: TEXT_TOKENS,
            on: vec!["scene_change".into()],
            interval: 300.0,
            region: None,
        }
    }
}

impl SensorConfig {
    /// The answer's type, checked.
    pub fn kind(&self) -> Result<AnswerKind, String> {
        match self.answer.as_str() {
            "yes_no" => Ok(AnswerKind::YesNo),
            "number" => Ok(AnswerKind::Number),
            "text" => Ok(AnswerKind::Text(self.max_tokens)),
            "choice" => AnswerKind::choice(self.options.clone()),
            "" => Err("is required: yes_no, number, choice or text".into()),
            other => Err(format!(
                "unknown answer type {other:?}: use yes_no, number, choice or text"
            )),
        }
    }

    pub fn triggers(&self) -> impl Iterator<Item = SensorTrigger> + '_ {
        self.on.iter().map(|on| match on.as_str() {
            "scene_change" => SensorTrigger::SceneChange,
            "interval" => SensorTrigger::Interval,
            label => SensorTrigger::Label(label.to_string()),
        })
    }

    pub fn asks_on(&self, trigger: &SensorTrigger) -> bool {
        self.triggers().any(|t| &t == trigger)
    }

    /// The `region` as a pixel rectangle of a `width` x `height` frame ([`region_pixels`]).
    pub fn region_pixels(&self, width: u32, height: u32) -> Option<crate::camera::Rect> {
        self.region.map(|r| region_pixels(r, width, height))
    }

    /// A number answer inside the sensor's range.
    pub fn clamp(&self, value: f64) -> f64 {
        let value = self.min.map_or(value, |min| value.max(min));
        self.max.map_or(value, |max| value.min(max))
    }

    /// Checks the table; `labels` are the camera's tracked labels (`None` without detection),
    /// `scene_change` its scene-change threshold.
    pub fn validate(
        &self,
        k: &dyn Fn(&str) -> String,
        labels: Option<&[String]>,
        scene_change: f64,
        err: &mut dyn FnMut(&str, String),
    ) {
        if self.name.is_empty() {
            err(&k("name"), "is required".into());
        } else if !self
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            err(
                &k("name"),
                format!(
                    "{:?} may only hold lowercase letters, digits, _ and -",
                    self.name
                ),
            );
        }
        if self.question.trim().is_empty() {
            err(&k("question"), "must not be empty".into());
        }
        match self.kind() {
            Err(e) if self.answer == "choice" => err(&k("options"), e),
            Err(e) => err(&k("answer"), e),
            Ok(_) => {}
        }
        if self.answer != "choice" && !self.options.is_empty() {
            err(&k("options"), "only a choice has options".into());
        }
        if self.answer != "number" {
            for (key, set) in [
                ("unit", self.unit.is_some()),
                ("min", self.min.is_some()),
                ("max", self.max.is_some()),
            ] {
                if set {
                    err(&k(key), "only a number has a unit and a range".into());
                }
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min >= max
        {
            err(&k("max"), format!("must be above min ({min}) (got {max})"));
        }
        for (key, value) in [("min", self.min), ("max", self.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                err(&k(key), "must be a finite number".into());
            }
        }
        if self.unit.as_deref().is_some_and(|u| u.trim().is_empty()) {
            err(&k("unit"), "must not be empty".into());
        }
        if self.max_tokens == 0 || self.max_tokens > 256 {
            err(
                &k("max_tokens"),
                format!("must be 1 to 256 (got {})", self.max_tokens),
            );
        }
        if self.on.is_empty() {
            err(
                &k("on"),
                "must name at least one of scene_change, interval or a tracked label".into(),
            );
        }
        for on in &self.on {
            match on.as_str() {
                "scene_change" if scene_change <= 0.0 => err(
                    &k("on"),
                    "scene_change is off for this camera (its scene_change is 0)".into(),
                ),
                "scene_change" => {}
                "interval" => {
                    if !(self.interval >= 1.0 && self.interval.is_finite()) {
                        err(
                            &k("interval"),
                            format!("must be at least 1 second (got {})", self.interval),
                        );
                    }
                }
                label => match labels {
                    None => err(
                        &k("on"),
                        format!(
                            "{label:?} is not scene_change or interval, and the camera has no [camera.detect] table for labels"
                        ),
                    ),
                    Some(labels) if !labels.iter().any(|l| l == label) => err(
                        &k("on"),
                        format!(
                            "{label:?} is not scene_change, interval or a tracked label ({})",
                            labels.join(", ")
                        ),
                    ),
                    Some(_) => {}
                },
            }
        }
        if let Some([x1, y1, x2, y2]) = self.region {
            let inside = [x1, y1, x2, y2].iter().all(|v| (0.0..=1.0).contains(v));
            if !inside || x1 >= x2 || y1 >= y2 {
                err(
                    &k("region"),
                    format!(
                        "must be [x1, y1, x2, y2] inside the frame (each 0 to 1, x1 < x2, y1 < y2) (got [{x1}, {y1}, {x2}, {y2}])"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(answer: &str) -> SensorConfig {
        SensorConfig {
            name: "door".into(),
            question: "Is the garage door open? Answer yes or no.".into(),
            answer: answer.into(),
            ..SensorConfig::default()
        }
    }

    fn problems(s: &SensorConfig, labels: Option<&[String]>) -> Vec<String> {
        let mut out = Vec::new();
        s.validate(
            &|f| format!("camera[0].sensor[0].{f}"),
            labels,
            0.08,
            &mut |k, m| out.push(format!("{k}: {m}")),
        );
        out
    }

    #[test]
    fn bad_tables_name_their_keys() {
        assert!(problems(&sensor("yes_no"), None).is_empty());
        let p = problems(&sensor("boolean"), None);
        assert!(
            p[0].starts_with("camera[0].sensor[0].answer: unknown answer type"),
            "{p:?}"
        );
        let p = problems(&sensor("choice"), None);
        assert!(
            p[0].starts_with("camera[0].sensor[0].options: a choice needs at least two"),
            "{p:?}"
        );
        let duplicates = SensorConfig {
            options: vec!["green".into(), "blue".into(), "green".into()],
            ..sensor("choice")
        };
        assert!(
            problems(&duplicates, None)[0]
                .contains("options: choice option \"green\" is given twice")
        );
        let outside = SensorConfig {
            region: Some([0.5, 0.2, 1.2, 0.8]),
            ..sensor("yes_no")
        };
        assert!(problems(&outside, None)[0].starts_with("camera[0].sensor[0].region: must be"));
        let range = SensorConfig {
            min: Some(5.0),
            max: Some(1.0),
            ..sensor("number")
        };
        assert!(problems(&range, None)[0].starts_with("camera[0].sensor[0].max: must be above"));
        let label = SensorConfig {
            on: vec!["person".into()],
            ..sensor("yes_no")
        };
        assert!(problems(&label, None)[0].contains("no [camera.detect]"));
        let labels = ["person".to_string()];
        assert!(problems(&label, Some(&labels)).is_empty());
        let unit = SensorConfig {
            unit: Some("cars".into()),
            ..sensor("yes_no")
        };
        assert!(problems(&unit, None)[0].starts_with("camera[0].sensor[0].unit:"));
    }

    #[test]
    fn regions_are_pixel_rectangles_inside_the_frame() {
        let s = SensorConfig {
            region: Some([0.5, 0.25, 1.0, 0.75]),
            ..sensor("yes_no")
        };
        assert_eq!(s.region_pixels(640, 480), Some((320, 120, 320, 240)));
        let thin = SensorConfig {
            region: Some([0.999, 0.0, 1.0, 0.001]),
            ..sensor("yes_no")
        };
        let (x, y, w, h) = thin.region_pixels(100, 100).unwrap();
        assert!(x + w <= 100 && y + h <= 100 && w >= 1 && h >= 1);
    }

    #[test]
    fn numbers_are_clamped_into_the_range() {
        let s = SensorConfig {
            min: Some(0.0),
            max: Some(10.0),
            ..sensor("number")
        };
        assert_eq!(s.clamp(-3.0), 0.0);
        assert_eq!(s.clamp(12.0), 10.0);
        assert_eq!(s.clamp(4.5), 4.5);
    }
}
