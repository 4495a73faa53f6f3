//! Which detector family a graph is, from the names and shapes of its outputs (batch 1).

use std::fmt;
use std::str::FromStr;

/// The output layouts lookout reads, as the README documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// Ultralytics YOLOv8 / YOLO11 / YOLOv9: `[1, 4 + classes, anchors]`.
    Yolov8,
    /// YOLOv5 / YOLOX with objectness: `[1, anchors, 5 + classes]`.
    Yolov5,
    /// NMS inside the graph (YOLOv10, Ultralytics `nms=True`): `[1, N, 6]`.
    EndToEnd,
    /// DETR family: boxes `[1, Q, 4]` and logits `[1, Q, classes]`.
    Detr,
}

pub const SUPPORTED: &str = "yolov8 [1, 4+classes, anchors]; yolov5 [1, anchors, 5+classes]; \
end2end [1, N, 6] (x1, y1, x2, y2, score, class); detr: boxes [1, Q, 4] and logits [1, Q, classes]";

impl FromStr for LayoutKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yolov8" => Ok(LayoutKind::Yolov8),
            "yolov5" => Ok(LayoutKind::Yolov5),
            "end2end" => Ok(LayoutKind::EndToEnd),
            "detr" => Ok(LayoutKind::Detr),
            _ => Err(format!(
                "unknown detector layout {s:?}: use yolov8, yolov5, end2end or detr"
            )),
        }
    }
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutKind::Yolov8 => "yolov8",
            LayoutKind::Yolov5 => "yolov5",
            LayoutKind::EndToEnd => "end2end",
            LayoutKind::Detr => "detr",
        })
    }
}

/// A recognised layout: the family, the class count the shapes imply (`None` for end-to-end
/// rows, which carry a class id, not scores), and which output holds what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    pub classes: Option<usize>,
    /// The output with the boxes (the only one, except for DETR).
    pub boxes: usize,
    /// DETR's logits output.
    pub logits: Option<usize>,
}

/// One graph output as loaded: its name and concrete shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputShape {
    pub name: String,
    pub shape: Vec<usize>,
}

impl fmt::Display for OutputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name, self.shape)
    }
}

/// What the ONNX metadata says about the exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Ultralytics (YOLOv8 and later) wrote it: it sets `task`, and its heads are channels
    /// first. Without this, a small input makes `[1, 4 + classes, anchors]` look like YOLOv5's
    /// `[1, anchors, 5 + classes]` (80 classes at 64x64 is `[1, 84, 84]`).
    pub ultralytics: bool,
}

/// Recognises the layout, or says why not. `forced` (the config's `layout`) settles what the
/// shapes and hints cannot: a one-class YOLOv5 export is `[1, anchors, 6]`, which reads as
/// end-to-end.
pub fn recognise(
    outputs: &[OutputShape],
    hints: Hints,
    forced: Option<LayoutKind>,
) -> Result<Layout, String> {
    let layout = match outputs {
        [only] => single(only, hints, forced),
        [a, b] if forced.is_none_or(|k| k == LayoutKind::Detr) => detr(a, b),
        _ => None,
    };
    layout.ok_or_else(|| {
        let found: Vec<String> = outputs.iter().map(|o| o.to_string()).collect();
        let forced = forced.map(|k| format!(" as {k}")).unwrap_or_default();
        format!(
            "cannot read its outputs{forced} ({}); supported layouts: {SUPPORTED}",
            found.join(", ")
        )
    })
}

fn single(output: &OutputShape, hints: Hints, forced: Option<LayoutKind>) -> Option<Layout> {
    let &[1, rows, cols] = output.shape.as_slice() else {
        return None;
    };
    let kind = match forced {
        Some(kind) => kind,
        None if hints.ultralytics && rows > 4 && cols != 6 => LayoutKind::Yolov8,
        None if cols == 6 => LayoutKind::EndToEnd,
        // Channels first, far fewer channels than anchors.
        None if rows > 4 && rows < cols => LayoutKind::Yolov8,
        None if cols > 5 && rows > cols => LayoutKind::Yolov5,
        None => return None,
    };
    let classes = match kind {
        LayoutKind::Yolov8 if rows > 4 => Some(rows - 4),
        LayoutKind::Yolov5 if cols > 5 => Some(cols - 5),
        LayoutKind::EndToEnd if cols == 6 => None,
        _ => return None,
    };
    Some(Layout {
        kind,
        classes,
        boxes: 0,
        logits: None,
    })
}

fn detr(a: &OutputShape, b: &OutputShape) -> Option<Layout> {
    let is_boxes = |o: &OutputShape| matches!(o.shape.as_slice(), &[1, _, 4]);
    let boxes = match (is_boxes(a), is_boxes(b)) {
        (true, false) => 0,
        (false, true) => 1,
        // A four-class model: the names decide.
        (true, true) if looks_like_boxes(&b.name) && !looks_like_boxes(&a.name) => 1,
        (true, true) => 0,
        (false, false) => return None,
    };
    let (bx, lg) = if boxes == 0 { (a, b) } else { (b, a) };
    let (&[1, queries, 4], &[1, q, classes]) = (bx.shape.as_slice(), lg.shape.as_slice()) else {
        return None;
    };
    (queries == q && classes > 0).then_some(Layout {
        kind: LayoutKind::Detr,
        classes: Some(classes),
        boxes,
        logits: Some(1 - boxes),
    })
}

fn looks_like_boxes(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("box") || n.contains("dets")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(name: &str, shape: &[usize]) -> OutputShape {
        OutputShape {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    fn kind(outputs: &[OutputShape]) -> Result<(LayoutKind, Option<usize>), String> {
        recognise(outputs, Hints::default(), None).map(|l| (l.kind, l.classes))
    }

    #[test]
    fn recognises_every_family() {
        assert_eq!(
            kind(&[out("output0", &[1, 84, 8400])]),
            Ok((LayoutKind::Yolov8, Some(80)))
        );
        assert_eq!(
            kind(&[out("output0", &[1, 25200, 85])]),
            Ok((LayoutKind::Yolov5, Some(80)))
        );
        assert_eq!(
            kind(&[out("output0", &[1, 300, 6])]),
            Ok((LayoutKind::EndToEnd, None))
        );
        let detr = recognise(
            &[out("dets", &[1, 300, 4]), out("labels", &[1, 300, 91])],
            Hints::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            (detr.kind, detr.classes, detr.boxes, detr.logits),
            (LayoutKind::Detr, Some(91), 0, Some(1))
        );
        let swapped = recognise(
            &[out("logits", &[1, 300, 80]), out("boxes", &[1, 300, 4])],
            Hints::default(),
            None,
        )
        .unwrap();
        assert_eq!((swapped.boxes, swapped.logits), (1, Some(0)));
    }

    #[test]
    fn one_class_yolov5_needs_the_layout_key() {
        let o = [out("output0", &[1, 252, 6])];
        assert_eq!(kind(&o), Ok((LayoutKind::EndToEnd, None)));
        let forced = recognise(&o, Hints::default(), Some(LayoutKind::Yolov5)).unwrap();
        assert_eq!((forced.kind, forced.classes), (LayoutKind::Yolov5, Some(1)));
    }

    #[test]
    fn unknown_layouts_list_what_was_found() {
        let err = kind(&[out("logits", &[1, 7])]).unwrap_err();
        assert!(
            err.contains("logits [1, 7]") && err.contains("yolov8 [1, 4+classes, anchors]"),
            "{err}"
        );
        let err = kind(&[out("a", &[1, 10, 4]), out("b", &[1, 12, 3])]).unwrap_err();
        assert!(err.contains("a [1, 10, 4], b [1, 12, 3]"), "{err}");
        assert!(
            recognise(
                &[out("output0", &[1, 7, 6])],
                Hints::default(),
                Some(LayoutKind::Detr)
            )
            .is_err()
        );
    }

    #[test]
    fn ultralytics_metadata_settles_small_heads() {
        // 80 classes at 64x64 input: 80 anchors, fewer than 84 channels, so the shapes alone
        // read YOLOv5; and 84 anchors (strides 8, 16, 32) make a square nothing can read.
        let small = [out("output0", &[1, 84, 80])];
        assert_eq!(kind(&small), Ok((LayoutKind::Yolov5, Some(75))));
        assert!(kind(&[out("output0", &[1, 84, 84])]).is_err());
        let ultralytics = Hints { ultralytics: true };
        for anchors in [80, 84] {
            let l = recognise(&[out("output0", &[1, 84, anchors])], ultralytics, None).unwrap();
            assert_eq!((l.kind, l.classes), (LayoutKind::Yolov8, Some(80)));
        }
        // Its end-to-end exports stay end-to-end.
        let nms = [out("output0", &[1, 300, 6])];
        let l = recognise(&nms, ultralytics, None).unwrap();
        assert_eq!(l.kind, LayoutKind::EndToEnd);
    }
}
