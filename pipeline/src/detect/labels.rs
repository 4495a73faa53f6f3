//! Class names: the model's own (Ultralytics writes `names` into the ONNX metadata), a labels
//! file the user gives, or the 80 COCO names most public detectors are trained on.

use std::path::Path;

use super::DetectorError;

/// The 80 COCO class names, in the order of Ultralytics' `coco.yaml` (and most YOLO exports).
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Where the names came from (reported by `lookout detect` and the daemon's log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    LabelsFile,
    Metadata,
    Coco,
}

/// Picks the class names for a model with `classes` classes (`None`: end-to-end rows carry
/// class ids, so the names say how many there are): an explicit labels file first (the
/// user asked for it), then the model's `names` metadata, then COCO when the model has 80
/// classes. Any other case is an error that says what to do.
pub fn resolve(
    model: &Path,
    classes: Option<usize>,
    labels_file: Option<&Path>,
    metadata_names: Option<&str>,
) -> Result<(Vec<String>, LabelSource), DetectorError> {
    if let Some(file) = labels_file {
        let text = std::fs::read_to_string(file).map_err(|error| DetectorError::Read {
            path: file.to_path_buf(),
            error,
        })?;
        let names = parse_labels_file(&text);
        if let Some(classes) = classes
            && names.len() != classes
        {
            return Err(DetectorError::Labels {
                labels: file.to_path_buf(),
                model: model.to_path_buf(),
                found: names.len(),
                classes,
            });
        }
        return Ok((names, LabelSource::LabelsFile));
    }
    if let Some(text) = metadata_names {
        let names = parse_python_names(text).ok_or_else(|| DetectorError::Metadata {
            path: model.to_path_buf(),
            what: format!("its `names` metadata is not a dict or list of names: {text:.120}"),
        })?;
        if let Some(classes) = classes
            && names.len() != classes
        {
            return Err(DetectorError::Metadata {
                path: model.to_path_buf(),
                what: format!(
                    "its `names` metadata has {} names but the model outputs {classes} classes",
                    names.len()
                ),
            });
        }
        return Ok((names, LabelSource::Metadata));
    }
    if classes.is_none_or(|c| c == COCO.len()) {
        return Ok((
            COCO.iter().map(|s| s.to_string()).collect(),
            LabelSource::Coco,
        ));
    }
    Err(DetectorError::Metadata {
        path: model.to_path_buf(),
        what: format!(
            "the model has {} classes and no `names` metadata: give a labels file (one name per line)",
            classes.unwrap_or_default()
        ),
    })
}

/// One name per line; surrounding whitespace and blank lines are ignored.
fn parse_labels_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Ultralytics' metadata value: the Python `str()` of a dict `{0: 'person', 1: "driver's"}`, or
/// of a list `['person', 'car']`. Dict keys must be 0..n in order.
fn parse_python_names(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    let (is_dict, body) = if let Some(b) = text.strip_prefix('{') {
        (true, b.strip_suffix('}')?)
    } else if let Some(b) = text.strip_prefix('[') {
        (false, b.strip_suffix(']')?)
    } else {
        return None;
    };
    let mut names = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        if is_dict {
            let (key, after) = rest.split_once(':')?;
            if key.trim().parse::<usize>().ok()? != names.len() {
                return None;
            }
            rest = after.trim_start();
        }
        let (name, after) = python_string(rest)?;
        names.push(name);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    Some(names)
}

/// A quoted Python string literal at the start of `s`, with its backslash escapes undone; and
/// what follows it.
fn python_string(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            c if c == quote => return Some((out, &s[1 + i + 1..])),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_metadata_names() {
        assert_eq!(
            parse_python_names("{0: 'person', 1: \"driver's seat\", 2: 'a\\'b'}").unwrap(),
            ["person", "driver's seat", "a'b"]
        );
        assert_eq!(
            parse_python_names("['cat', 'dog']").unwrap(),
            ["cat", "dog"]
        );
        assert_eq!(parse_python_names("{}").unwrap(), Vec::<String>::new());
        // Keys out of order, junk, unterminated strings.
        assert_eq!(parse_python_names("{1: 'a', 0: 'b'}"), None);
        assert_eq!(parse_python_names("{0: 'a' 1: 'b'}"), None);
        assert_eq!(parse_python_names("{0: 'a}"), None);
        assert_eq!(parse_python_names("person"), None);
    }

    #[test]
    fn precedence_and_mismatches() {
        let model = Path::new("m.onnx");
        let dir = std::env::temp_dir().join(format!("lookout-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("labels.txt");
        std::fs::write(&file, "cat\n\n dog \n").unwrap();

        let (names, from) = resolve(model, Some(2), Some(&file), Some("{0: 'a', 1: 'b'}")).unwrap();
        assert_eq!(
            (names.as_slice(), from),
            (
                &["cat".to_string(), "dog".into()][..],
                LabelSource::LabelsFile
            )
        );
        let (names, from) = resolve(model, Some(2), None, Some("{0: 'a', 1: 'b'}")).unwrap();
        assert_eq!(
            (names, from),
            (vec!["a".to_string(), "b".into()], LabelSource::Metadata)
        );
        let (names, from) = resolve(model, Some(80), None, None).unwrap();
        assert_eq!(
            (names[0].as_str(), names[79].as_str(), from),
            ("person", "toothbrush", LabelSource::Coco)
        );

        let short = resolve(model, Some(3), Some(&file), None)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("labels.txt")
                && short.contains("2 names")
                && short.contains("3 classes"),
            "{short}"
        );
        let none = resolve(model, Some(5), None, None).unwrap_err().to_string();
        assert!(
            none.contains("m.onnx") && none.contains("5 classes"),
            "{none}"
        );
        let bad = resolve(model, Some(2), None, Some("{0: 'a'}"))
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("1 names") && bad.contains("2 classes"),
            "{bad}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
