//! A camera's `[camera.detect]` table: the object detector, what it tracks, zones and masks, and
//! the descriptions made when a new object is first seen.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Labels tracked when `labels` is not given: what a home or yard camera is usually for.
pub const DEFAULT_LABELS: [&str; 6] = ["person", "car", "bicycle", "motorcycle", "dog", "cat"];

/// Topic leaves a camera already uses: a label or zone of the same name would collide with them
/// under `<prefix>/<camera>/…`.
const RESERVED_NAMES: [&str; 13] = [
    "ask",
    "answer",
    "last_answer",
    "describe",
    "description",
    "enabled",
    "state",
    "status",
    "snapshot",
    "detections",
    "sensor",
    "detect",
    "events",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// The ONNX detector file, or `hf://owner/name[@revision]/path/file.onnx` on the hub
    /// (`[model] hub_url`), fetched into the cache on first start.
    pub model: Option<PathBuf>,
    /// Frames per second run through the detector.
    pub fps: f64,
    /// Threads for the detector (its own, apart from the language model's).
    pub threads: usize,
    /// `[width, height]` for a model whose input size is dynamic.
    pub input_size: Option<[u32; 2]>,
    /// `yolov8`, `yolov5`, `end2end` or `detr` when the outputs are ambiguous.
    pub layout: Option<String>,
    /// Class names, one per line (default: the model's metadata, else COCO).
    pub labels_file: Option<PathBuf>,
    /// Labels to track; others are ignored.
    pub labels: Vec<String>,
    /// Score a detection needs to start or confirm an object.
    pub min_score: f64,
    /// Per-label `min_score`.
    pub min_scores: BTreeMap<String, f64>,
    /// Weaker detections down to this score only keep existing objects going.
    pub track_score: f64,
    /// IoU above which the detector suppresses a same-class box.
    pub iou: f64,
    /// Box area bounds, as fractions of the frame.
    pub min_area: f64,
    pub max_area: f64,
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// Polygons (normalised `[x, y]` points) where detections are ignored.
    pub masks: Vec<Vec<[f64; 2]>>,
    /// Seconds without moving before an object is stationary.
    pub stationary_after: f64,
    /// Seconds an object may go unseen before it ends.
    pub max_lost: f64,
    /// Frames an object must be seen in before it is announced.
    pub confirm_frames: u32,
    /// Rate of `<camera>/detections` messages; 0 publishes none.
    pub detections_fps: f64,
    /// Labels whose new objects are described by the language model.
    pub describe_on: Vec<String>,
    /// Only describe objects in one of these zones (empty: anywhere).
    pub describe_zones: Vec<String>,
    /// Prompt for those descriptions: `{label}`, `{camera}` and `{zone}` are filled in.
    pub describe_prompt: String,
    /// Per-label prompts, overriding `describe_prompt`.
    pub describe_prompts: BTreeMap<String, String>,
    /// Describe a padded crop around the object instead of the whole frame.
    pub describe_crop: bool,
    /// Tokens for a first-sight description.
    pub describe_max_tokens: usize,
    /// A yes/no question (`{label}`, `{camera}`, `{zone}` filled in) put to the language model
    /// about a padded crop of each new object before it is announced: objects it answers no
    /// to are dropped as false detections. Unset: no check.
    pub verify: Option<String>,
    /// Labels checked with `verify` (empty: every tracked label).
    pub verify_labels: Vec<String>,
    /// The model's share of "yes" (against "no") an object needs to be kept, 0 to 1.
    pub verify_threshold: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    pub name: String,
    /// Normalised `[x, y]` points (0..1, from the top left).
    pub points: Vec<[f64; 2]>,
    /// Consecutive frames inside (or outside) before an object enters (or leaves).
    pub inertia: u32,
    /// Labels this zone counts (empty: every tracked label).
    pub labels: Vec<String>,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            name: String::new(),
            points: Vec::new(),
            inertia: 3,
            labels: Vec::new(),
        }
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            model: None,
            fps: 5.0,
            threads: 1,
            input_size: None,
            layout: None,
            labels_file: None,
            labels: DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
            min_score: 0.5,
            min_scores: BTreeMap::new(),
            track_score: 0.1,
            iou: 0.45,
            min_area: 0.0,
            max_area: 1.0,
            zones: Vec::new(),
            masks: Vec::new(),
            stationary_after: 10.0,
            max_lost: 2.0,
            confirm_frames: 2,
            detections_fps: 5.0,
            describe_on: Vec::new(),
            describe_zones: Vec::new(),
            describe_prompt: "Describe the {label} in this image from the {camera} camera in one sentence: who or what it is and what it is doing.".into(),
            describe_prompts: BTreeMap::new(),
            describe_crop: false,
            describe_max_tokens: 64,
            verify: None,
            verify_labels: Vec::new(),
            verify_threshold: 0.5,
        }
    }
}

impl DetectConfig {
    /// Checks every value; `k` turns a field name into its full key (`camera[0].detect.fps`).
    pub fn validate(&self, k: &dyn Fn(&str) -> String, err: &mut dyn FnMut(&str, String)) {
        match &self.model {
            None => err(
                &k("model"),
                "is required (the path of an ONNX detector, or hf://owner/name/file.onnx)".into(),
            ),
            Some(p) => match p.to_str().and_then(lookout_models::hub::HubFile::parse) {
                Some(Err(e)) => err(&k("model"), format!("{e:#}")),
                Some(Ok(_)) => {}
                None if !p.is_file() => err(&k("model"), format!("no file at {}", p.display())),
                None => {}
            },
        }
        if !(self.fps > 0.0 && self.fps <= 30.0) {
            err(
                &k("fps"),
                format!("must be greater than 0 and at most 30 (got {})", self.fps),
            );
        }
        if self.threads == 0 || self.threads > 16 {
            err(
                &k("threads"),
                format!("must be 1 to 16 (got {})", self.threads),
            );
        }
        if let Some([w, h]) = self.input_size
            && !((32..=4096).contains(&w) && (32..=4096).contains(&h))
        {
            err(
                &k("input_size"),
                format!("must be [width, height], each 32 to 4096 (got [{w}, {h}])"),
            );
        }
        if let Some(layout) = &self.layout
            && let Err(e) = layout.parse::<lookout_pipeline::detect::LayoutKind>()
        {
            err(&k("layout"), e);
        }
        if let Some(p) = &self.labels_file
            && !p.is_file()
        {
            err(&k("labels_file"), format!("no file at {}", p.display()));
        }
        if self.labels.is_empty() {
            err(&k("labels"), "must name at least one label to track".into());
        }
        for (i, label) in self.labels.iter().enumerate() {
            if let Err(e) = topic_name(label) {
                err(&format!("{}[{i}]", k("labels")), e);
            }
        }
        let score = |v: f64| (0.0..=1.0).contains(&v);
        if !score(self.min_score) {
            err(
                &k("min_score"),
                format!("must be 0 to 1 (got {})", self.min_score),
            );
        }
        for (label, v) in &self.min_scores {
            if !score(*v) {
                err(
                    &format!("{}.{label}", k("min_scores")),
                    format!("must be 0 to 1 (got {v})"),
                );
            }
            if !self.labels.contains(label) {
                err(
                    &format!("{}.{label}", k("min_scores")),
                    format!("{label:?} is not in labels"),
                );
            }
        }
        if !(self.track_score > 0.0 && self.track_score <= self.min_score) {
            err(
                &k("track_score"),
                format!(
                    "must be above 0 and at most min_score {} (got {})",
                    self.min_score, self.track_score
                ),
            );
        }
        if !(self.iou > 0.0 && self.iou <= 1.0) {
            err(
                &k("iou"),
                format!("must be above 0 and at most 1 (got {})", self.iou),
            );
        }
        if !(self.min_area >= 0.0 && self.min_area < self.max_area && self.max_area <= 1.0) {
            err(
                &k("min_area"),
                format!(
                    "min_area and max_area are fractions of the frame, 0 <= min_area < max_area <= 1 (got {} and {})",
                    self.min_area, self.max_area
                ),
            );
        }
        let mut zone_names = Vec::new();
        for (i, zone) in self.zones.iter().enumerate() {
            let zk = |f: &str| format!("{}[{i}].{f}", k("zone"));
            if let Err(e) = topic_name(&zone.name) {
                err(&zk("name"), e);
            } else if zone_names.contains(&&zone.name) {
                err(
                    &zk("name"),
                    format!("{:?} is used by another zone", zone.name),
                );
            } else if self.labels.contains(&zone.name) {
                err(
                    &zk("name"),
                    format!("{:?} is also a label: topics would collide", zone.name),
                );
            }
            zone_names.push(&zone.name);
            if let Err(e) = polygon(&zone.points) {
                err(&zk("points"), e);
            }
            if zone.inertia == 0 || zone.inertia > 100 {
                err(
                    &zk("inertia"),
                    format!("must be 1 to 100 frames (got {})", zone.inertia),
                );
            }
            for label in &zone.labels {
                if !self.labels.contains(label) {
                    err(&zk("labels"), format!("{label:?} is not in labels"));
                }
            }
        }
        for (i, mask) in self.masks.iter().enumerate() {
            if let Err(e) = polygon(mask) {
                err(&format!("{}[{i}]", k("masks")), e);
            }
        }
        let seconds = |v: f64, lo: f64| v >= lo && v <= 86_400.0;
        if !seconds(self.stationary_after, 0.5) {
            err(
                &k("stationary_after"),
                format!(
                    "must be 0.5 to 86400 seconds (got {})",
                    self.stationary_after
                ),
            );
        }
        if !seconds(self.max_lost, 0.1) {
            err(
                &k("max_lost"),
                format!("must be 0.1 to 86400 seconds (got {})", self.max_lost),
            );
        }
        if self.confirm_frames == 0 || self.confirm_frames > 100 {
            err(
                &k("confirm_frames"),
                format!("must be 1 to 100 (got {})", self.confirm_frames),
            );
        }
        if !(self.detections_fps >= 0.0 && self.detections_fps <= 30.0) {
            err(
                &k("detections_fps"),
                format!("must be 0 (off) to 30 (got {})", self.detections_fps),
            );
        }
        for label in &self.describe_on {
            if !self.labels.contains(label) {
                err(&k("describe_on"), format!("{label:?} is not in labels"));
            }
        }
        for zone in &self.describe_zones {
            if !self.zones.iter().any(|z| &z.name == zone) {
                err(&k("describe_zones"), format!("no zone named {zone:?}"));
            }
        }
        for (label, prompt) in
            std::iter::once((&"".to_string(), &self.describe_prompt)).chain(&self.describe_prompts)
        {
            let key = if label.is_empty() {
                k("describe_prompt")
            } else {
                format!("{}.{label}", k("describe_prompts"))
            };
            if prompt.trim().is_empty() {
                err(&key, "must not be empty".into());
            } else if let Err(e) = check_template(prompt) {
                err(&key, e);
            }
        }
        if self.describe_max_tokens == 0 || self.describe_max_tokens > 1024 {
            err(
                &k("describe_max_tokens"),
                format!("must be 1 to 1024 (got {})", self.describe_max_tokens),
            );
        }
        if let Some(question) = &self.verify {
            if question.trim().is_empty() {
                err(
                    &k("verify"),
                    "must not be empty (leave it out for no check)".into(),
                );
            } else if let Err(e) = check_template(question) {
                err(&k("verify"), e);
            }
        }
        for label in &self.verify_labels {
            if !self.labels.contains(label) {
                err(&k("verify_labels"), format!("{label:?} is not in labels"));
            }
        }
        if !self.verify_labels.is_empty() && self.verify.is_none() {
            err(
                &k("verify_labels"),
                "is set but verify (the question) is not".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.verify_threshold) {
            err(
                &k("verify_threshold"),
                format!("must be 0 to 1 (got {})", self.verify_threshold),
            );
        }
    }

    /// The `verify` question for a new `label` object, when that label is checked.
    pub fn verify_question(&self, label: &str, camera: &str, zone: &str) -> Option<String> {
        let question = self.verify.as_ref()?;
        if !self.verify_labels.is_empty() && !self.verify_labels.iter().any(|l| l == label) {
            return None;
        }
        Some(fill(question, label, camera, zone))
    }

    /// The prompt for a new `label` object, with its placeholders filled in.
    pub fn prompt_for(&self, label: &str, camera: &str, zone: &str) -> String {
        let template = self
            .describe_prompts
            .get(label)
            .unwrap_or(&self.describe_prompt);
        fill(template, label, camera, zone)
    }
}

fn fill(template: &str, label: &str, camera: &str, zone: &str) -> String {
    template
        .replace("{label}", label)
        .replace("{camera}", camera)
        .replace("{zone}", zone)
}

/// Labels and zone names appear in topics and entity ids.
fn topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if name.contains(['/', '#', '+', '\0']) {
        return Err(format!(
            "{name:?} must not contain /, #, + or NUL (it is used in topics)"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "{name:?} is a topic lookout already uses under each camera"
        ));
    }
    Ok(())
}

fn polygon(points: &[[f64; 2]]) -> Result<(), String> {
    if points.len() < 3 {
        return Err(format!(
            "a polygon needs at least 3 points (got {})",
            points.len()
        ));
    }
    for (i, [x, y]) in points.iter().enumerate() {
        if !((0.0..=1.0).contains(x) && (0.0..=1.0).contains(y)) {
            return Err(format!(
                "point {i} [{x}, {y}] is outside the frame: coordinates are fractions 0 to 1"
            ));
        }
    }
    Ok(())
}

/// Only `{label}`, `{camera}` and `{zone}` may appear in braces.
fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or("an unclosed { (placeholders are {label}, {camera}, {zone})")?;
        let name = &after[..close];
        if !matches!(name, "label" | "camera" | "zone") {
            return Err(format!(
                "unknown placeholder {{{name}}}: use {{label}}, {{camera}} or {{zone}}"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Readme {
        camera: Camera,
    }

    #[derive(Deserialize)]
    struct Camera {
        detect: DetectConfig,
    }

    /// The README's `[camera.detect]` example uses real keys with valid values.
    #[test]
    fn the_readme_example_is_a_valid_detect_table() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[camera.detect]")
            .expect("the README's detect example");
        let block = &readme[start + "```toml\n".len()..];
        let block = &block[..block.find("```").unwrap()];
        let parsed: Readme = config::Config::builder()
            .add_source(config::File::from_str(block, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap_or_else(|e| panic!("the README's detect example: {e}"));
        let d = parsed.camera.detect;
        assert_eq!(
            (d.zones.len(), d.describe_zones.as_slice()),
            (1, &["driveway".to_string()][..])
        );
        let mut errors = Vec::new();
        d.validate(&|f| f.to_string(), &mut |k: &str, m: String| {
            errors.push(format!("{k}: {m}"))
        });
        // Only the files it names are not on this machine.
        assert!(
            errors
                .iter()
                .all(|e| e.starts_with("model:") || e.starts_with("labels_file:")),
            "{errors:?}"
        );
    }

    #[test]
    fn prompts_fill_their_placeholders() {
        let mut d = DetectConfig::default();
        d.describe_prompts.insert(
            "car".into(),
            "The {label} in the {zone} of {camera}?".into(),
        );
        assert_eq!(
            d.prompt_for("car", "porch", "driveway"),
            "The car in the driveway of porch?"
        );
        assert!(
            d.prompt_for("person", "porch", "")
                .starts_with("Describe the person in this image from the porch camera")
        );
        assert!(check_template("{label} {zone} {camera}").is_ok());
        assert!(check_template("{person}").unwrap_err().contains("{person}"));
        assert!(check_template("{label").is_err());
    }
}
