//! `lookout detect`: one image through an ONNX object detector; boxes in image pixels, best
//! first, as text or as one JSON object.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lookout_pipeline::detect::{Detector, DetectorOptions, LayoutKind, Thresholds};
use lookout_pipeline::image::decode_image;
use serde_json::json;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// The detector (an ONNX file: YOLOv5/v8/v9/v10/11, end-to-end or DETR-family export).
    #[arg(long)]
    pub model: PathBuf,
    /// Image to look at (JPEG, PNG or WebP).
    #[arg(long)]
    pub image: PathBuf,
    /// Keep boxes scoring above this.
    #[arg(long, default_value_t = 0.25)]
    pub min_score: f32,
    /// Suppress same-class boxes overlapping a better one by more than this IoU.
    #[arg(long, default_value_t = 0.45)]
    pub iou: f32,
    /// At most this many boxes.
    #[arg(long, default_value_t = 300)]
    pub max_detections: usize,
    /// Class names, one per line (default: the model's metadata, else COCO).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Input size WIDTHxHEIGHT for a model whose input size is dynamic.
    #[arg(long, value_parser = parse_size)]
    pub input_size: Option<(u32, u32)>,
    /// Output layout when the shapes are ambiguous: yolov8, yolov5, end2end or detr.
    #[arg(long)]
    pub layout: Option<LayoutKind>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, like 640x640"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: {v:?} is not a whole number"))
    };
    Ok((n(w)?, n(h)?))
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    check_thresholds(args.min_score, args.iou)?;
    if args.threads == 0 || args.threads > 256 {
        anyhow::bail!("--threads: must be 1 to 256 (got {})", args.threads);
    }
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let image =
        decode_image(&bytes).with_context(|| format!("decoding {}", args.image.display()))?;
    let detector = Detector::load(
        &args.model,
        &DetectorOptions {
            input_size: args.input_size,
            labels_file: args.labels.clone(),
            layout: args.layout,
            normalize: None,
            threads: args.threads,
        },
    )?;
    let thresholds = Thresholds {
        min_score: args.min_score,
        iou: args.iou,
        max_detections: args.max_detections,
    };
    let found = detector.detect(image.as_raw(), image.width(), image.height(), &thresholds)?;
    if args.json {
        let detections: Vec<_> = found
            .detections
            .iter()
            .map(|d| json!({ "label": d.label, "class_id": d.class_id, "score": d.score, "box": d.bbox }))
            .collect();
        let out = json!({
            "width": image.width(),
            "height": image.height(),
            "detections": detections,
            "timings": found.timings,
        });
        println!("{out}");
    } else {
        for d in &found.detections {
            let [x1, y1, x2, y2] = d.bbox;
            println!(
                "{:<16} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]",
                d.label, d.score
            );
        }
        let (w, h) = detector.input_size();
        let t = &found.timings;
        eprintln!(
            "{} object(s); {} layout at {w}x{h}; preprocess {:.1} ms, inference {:.1} ms, postprocess {:.1} ms",
            found.detections.len(),
            detector.layout().kind,
            t.preprocess_ms,
            t.inference_ms,
            t.postprocess_ms
        );
    }
    Ok(())
}

pub fn check_thresholds(min_score: f32, iou: f32) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&min_score) {
        anyhow::bail!("--min-score: must be at least 0 and below 1 (got {min_score})");
    }
    if !(iou > 0.0 && iou <= 1.0) {
        anyhow::bail!("--iou: must be above 0 and at most 1 (got {iou})");
    }
    Ok(())
}
