//! Every supported detector layout against goldens from onnxruntime and the exporters' own
//! post-processing (`models/tools/make_detectors.py`): raw outputs within 1e-4, then the same
//! boxes in the same order, classes equal, coordinates within 0.5 px; and the preprocessing
//! of lossless images equal to Ultralytics' tensor.

use std::path::{Path, PathBuf};

use lookout_pipeline::detect::letterbox::LetterboxGeometry;
use lookout_pipeline::detect::{Detector, DetectorOptions, LayoutKind, Preprocess, Thresholds};
use lookout_pipeline::image::decode_image;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/detectors")
}

fn goldens() -> Value {
    let text = std::fs::read_to_string(fixtures().join("goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(file: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join(file)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn options(model: &str) -> DetectorOptions {
    match model {
        "yolov8-dynamic" => DetectorOptions {
            input_size: Some((64, 64)),
            ..Default::default()
        },
        "detr" => DetectorOptions {
            labels_file: Some(fixtures().join("detr.labels.txt")),
            ..Default::default()
        },
        _ => DetectorOptions::default(),
    }
}

fn thresholds(case: &Value) -> Thresholds {
    let t = &case["thresholds"];
    Thresholds {
        min_score: t["conf"].as_f64().unwrap() as f32,
        // End-to-end and DETR layouts do no suppression: no IoU.
        iou: t["iou"].as_f64().unwrap_or(0.45) as f32,
        max_detections: t["max_det"].as_u64().unwrap() as usize,
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, worst) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        worst <= tolerance,
        "{what}: element {i} differs by {worst} ({} vs {})",
        got[i],
        want[i]
    );
}

fn assert_same_detections(what: &str, got: &[lookout_pipeline::detect::Detection], want: &Value) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: detection count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.class_id as u64,
            w["class_id"].as_u64().unwrap(),
            "{what}: #{i} class"
        );
        assert_eq!(g.label, w["label"].as_str().unwrap(), "{what}: #{i} label");
        let score = w["score"].as_f64().unwrap() as f32;
        assert!(
            (g.score - score).abs() < 1e-4,
            "{what}: #{i} score {} vs {score}",
            g.score
        );
        let wb: Vec<f32> = w["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (a, b) in g.bbox.iter().zip(&wb) {
            assert!(
                (a - b).abs() <= 0.5,
                "{what}: #{i} box {:?} vs {wb:?}",
                g.bbox
            );
        }
    }
}

#[test]
fn every_layout_matches_its_reference() {
    let goldens = goldens();
    let cases = goldens["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 15, "five layouts, three images each");
    for case in cases {
        let model = case["model"].as_str().unwrap();
        let what = format!("{model} on {}", case["image"].as_str().unwrap());
        let detector = Detector::load(
            &fixtures().join(case["model_file"].as_str().unwrap()),
            &options(model),
        )
        .unwrap();
        let expected_kind = match case["layout"].as_str().unwrap() {
            "yolov8" => LayoutKind::Yolov8,
            "yolov5" => LayoutKind::Yolov5,
            "end2end" => LayoutKind::EndToEnd,
            "detr" => LayoutKind::Detr,
            other => panic!("unexpected layout {other}"),
        };
        assert_eq!(detector.layout().kind, expected_kind, "{what}");

        // The model alone: the reference's input tensor in, its outputs out.
        let outputs = detector
            .infer(floats(case["input"]["file"].as_str().unwrap()))
            .unwrap();
        for (i, o) in detector.outputs().iter().enumerate() {
            let golden = &case["outputs"][&o.name];
            assert!(!golden.is_null(), "{what}: no golden for output {}", o.name);
            assert_close(
                &format!("{what}: {}", o.name),
                &outputs[i],
                &floats(golden["file"].as_str().unwrap()),
                1e-4,
            );
        }

        // Post-processing: the reference's boxes, in the frame's pixels.
        let (w, h) = (
            case["orig_width"].as_u64().unwrap() as u32,
            case["orig_height"].as_u64().unwrap() as u32,
        );
        let (iw, ih) = detector.input_size();
        let geometry = (detector.preprocess() == Preprocess::Letterbox).then(|| {
            let g = LetterboxGeometry::new(w, h, iw, ih);
            let lb = &case["letterbox"];
            assert_eq!(
                (g.resized_width, g.resized_height, g.pad_left, g.pad_top),
                (
                    lb["new_unpad_w"].as_u64().unwrap() as u32,
                    lb["new_unpad_h"].as_u64().unwrap() as u32,
                    lb["pad_left"].as_u64().unwrap() as u32,
                    lb["pad_top"].as_u64().unwrap() as u32
                ),
                "{what}: letterbox geometry"
            );
            g
        });
        let found = detector
            .postprocess(&outputs, w, h, geometry.as_ref(), &thresholds(case))
            .unwrap();
        assert_same_detections(&what, &found, &case["detections"]);

        // The whole path from a lossless image: the same tensor, the same boxes.
        let image_file = case["image_file"].as_str().unwrap();
        if image_file.ends_with(".png") {
            let image = decode_image(&std::fs::read(fixtures().join(image_file)).unwrap()).unwrap();
            let (input, _) = detector.prepare(image.as_raw(), image.width(), image.height());
            let golden_input = floats(case["input"]["file"].as_str().unwrap());
            let tolerance = if detector.preprocess() == Preprocess::Letterbox {
                0.0
            } else {
                1e-6
            };
            assert_close(
                &format!("{what}: input tensor"),
                &input,
                &golden_input,
                tolerance,
            );
            let found = detector
                .detect(
                    image.as_raw(),
                    image.width(),
                    image.height(),
                    &thresholds(case),
                )
                .unwrap();
            assert_same_detections(
                &format!("{what}, whole path"),
                &found.detections,
                &case["detections"],
            );
        }
    }
}

#[test]
fn class_names_come_from_metadata_labels_file_or_coco() {
    let load = |model: &str| {
        Detector::load(&fixtures().join(format!("{model}.onnx")), &options(model)).unwrap()
    };
    assert_eq!(load("yolov8").labels(), ["person", "car", "dog"]);
    assert_eq!(load("end2end").labels().len(), 3);
    let coco = load("yolov8-dynamic");
    assert_eq!(
        (
            coco.labels().len(),
            coco.labels()[0].as_str(),
            coco.labels()[79].as_str()
        ),
        (80, "person", "toothbrush")
    );
    assert_eq!(
        load("detr").labels(),
        ["person", "bicycle", "car", "dog", "cat"]
    );
}

#[test]
fn the_ball_graph_finds_the_test_pattern_ball() {
    let detector =
        Detector::load(&fixtures().join("ball.onnx"), &DetectorOptions::default()).unwrap();
    assert_eq!(detector.labels(), ["ball"]);
    let image = decode_image(&std::fs::read(fixtures().join("ball_320x240.png")).unwrap()).unwrap();
    let found = detector
        .detect(
            image.as_raw(),
            image.width(),
            image.height(),
            &Thresholds::default(),
        )
        .unwrap();
    assert_eq!(found.detections.len(), 1, "{found:?}");
    let [x1, y1, x2, y2] = found.detections[0].bbox;
    // videotestsrc draws the ball 37 pixels across, its centre here at (242.5, 198).
    assert!(
        (31.0..43.0).contains(&(x2 - x1)) && (31.0..43.0).contains(&(y2 - y1)),
        "{:?}",
        found.detections[0]
    );
    assert!(
        ((x1 + x2) / 2.0 - 242.5).abs() < 2.0 && ((y1 + y2) / 2.0 - 198.0).abs() < 2.0,
        "{:?}",
        found.detections[0]
    );
    let black = vec![0u8; 320 * 240 * 3];
    assert!(
        detector
            .detect(&black, 320, 240, &Thresholds::default())
            .unwrap()
            .detections
            .is_empty()
    );
}

#[test]
fn bad_models_are_named_with_what_was_found() {
    let err = |path: PathBuf, options: DetectorOptions| {
        Detector::load(&path, &options).unwrap_err().to_string()
    };
    let e = err(
        fixtures().join("bad-layout.onnx"),
        DetectorOptions::default(),
    );
    assert!(
        e.contains("bad-layout.onnx")
            && e.contains("output0 [1, 7]")
            && e.contains("supported layouts"),
        "{e}"
    );
    let e = err(
        fixtures().join("wrong-rank.onnx"),
        DetectorOptions::default(),
    );
    assert!(
        e.contains("wrong-rank.onnx")
            && e.contains("1,64,64")
            && e.contains("[1, 3, height, width]"),
        "{e}"
    );
    let e = err(
        fixtures().join("yolov8-dynamic.onnx"),
        DetectorOptions::default(),
    );
    assert!(e.contains("dynamic size"), "{e}");
    let e = err(
        fixtures().join("yolov8.onnx"),
        DetectorOptions {
            input_size: Some((64, 64)),
            ..Default::default()
        },
    );
    assert!(e.contains("fixed at 96x64"), "{e}");
    let dir = std::env::temp_dir().join(format!("lookout-detectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let e = err(junk, DetectorOptions::default());
    assert!(
        e.contains("junk.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "person\ncar\n").unwrap();
    let e = err(
        fixtures().join("detr.onnx"),
        DetectorOptions {
            labels_file: Some(short),
            ..Default::default()
        },
    );
    assert!(
        e.contains("short.txt") && e.contains("2 names") && e.contains("5 classes"),
        "{e}"
    );
    let e = err(fixtures().join("detr.onnx"), DetectorOptions::default());
    assert!(
        e.contains("detr.onnx") && e.contains("5 classes") && e.contains("labels file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
