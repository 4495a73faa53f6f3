//! Loading a detector graph and running it on frames.
//!
//! A detector runs on its own executor (one thread by default), never on the compute pool the
//! language model uses: it must keep its rate while a description is being made, and two model
//! calls sharing one pool would take turns rather than run side by side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::ThreadPool;
use serde::Serialize;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::labels::{self, LabelSource};
use super::layout::{self, Hints, Layout, LayoutKind, OutputShape};
use super::letterbox::{LetterboxGeometry, letterbox, resize_linear, to_nchw};
use super::nms::Candidate;
use super::{Detection, DetectorError, Thresholds, detr, end_to_end, rewrite, yolo};

/// ImageNet statistics, the normalisation DETR-family exports (RF-DETR) expect.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Debug, PartialEq)]
pub struct DetectorOptions {
    /// `(width, height)` fed to a graph whose input size is dynamic. A graph with a fixed input
    /// size uses its own; giving another is an error.
    pub input_size: Option<(u32, u32)>,
    /// Class names, one per line; wins over the model's metadata.
    pub labels_file: Option<PathBuf>,
    /// The output layout, when recognising it from the shapes is not enough.
    pub layout: Option<LayoutKind>,
    /// `(mean, std)` applied after scaling pixels to 0..1; default: none for YOLO layouts,
    /// ImageNet's for DETR.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    /// Threads for this detector's matrix products.
    pub threads: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            input_size: None,
            labels_file: None,
            layout: None,
            normalize: None,
            threads: 1,
        }
    }
}

/// How a frame becomes the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    /// Ultralytics' `LetterBox`: aspect kept, grey padding (YOLO exports).
    Letterbox,
    /// A plain resize to the input size (DETR exports).
    Resize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detections {
    /// Best first.
    pub detections: Vec<Detection>,
    pub timings: Timings,
}

pub struct Detector {
    path: PathBuf,
    plan: Arc<TypedSimplePlan>,
    input_type: DatumType,
    width: u32,
    height: u32,
    layout: Layout,
    outputs: Vec<OutputShape>,
    labels: Vec<String>,
    label_source: LabelSource,
    preprocess: Preprocess,
    mean: [f32; 3],
    std: [f32; 3],
    /// The detector's own threads; `None` for one thread (the caller's).
    pool: Option<Arc<ThreadPool>>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("path", &self.path)
            .field("layout", &self.layout.kind)
            .field("input", &(self.width, self.height))
            .finish_non_exhaustive()
    }
}

impl Detector {
    pub fn load(path: &Path, options: &DetectorOptions) -> Result<Detector, DetectorError> {
        let bytes = std::fs::read(path).map_err(|error| DetectorError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let not_onnx = |e: TractError| DetectorError::NotOnnx {
            path: path.to_path_buf(),
            cause: format!("{e:#}"),
        };
        // The input fact is set below, and every other shape follows from it. Exporters' shape
        // annotations of intermediate values are not needed, and with a dynamic batch (Ultralytics'
        // `dynamic=True`) they name a `batch` that the concrete batch of 1 must not contradict.
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_read(&mut bytes.as_slice())
            .map_err(not_onnx)?;
        let input_error = |what: String| DetectorError::Input {
            path: path.to_path_buf(),
            what,
        };
        if model.inputs.len() != 1 {
            return Err(input_error(format!(
                "has {} inputs; a detector takes one image input [1, 3, height, width]",
                model.inputs.len()
            )));
        }
        let (input_type, width, height) = input_spec(&model, options).map_err(input_error)?;
        let metadata = |key: &str| {
            model
                .properties
                .get(&format!("onnx.metadata_props.{key}"))
                .and_then(|t| {
                    Some(
                        t.try_as_plain_ram()
                            .ok()?
                            .to_scalar::<String>()
                            .ok()?
                            .clone(),
                    )
                })
        };
        let names = metadata("names");
        let hints = Hints {
            ultralytics: metadata("task").is_some(),
        };

        let compile_error = |e: TractError| DetectorError::Compile {
            path: path.to_path_buf(),
            cause: format!("{e:#}"),
        };
        let fact =
            InferenceFact::dt_shape(input_type, tvec![1, 3, height as usize, width as usize]);
        let mut typed = model
            .with_input_fact(0, fact)
            .and_then(|m| m.into_optimized())
            .map_err(compile_error)?;
        rewrite::softmax_on_innermost_axis(&mut typed).map_err(compile_error)?;
        let outputs = output_shapes(&typed).map_err(|what| DetectorError::Layout {
            path: path.to_path_buf(),
            what,
        })?;
        let layout = layout::recognise(&outputs, hints, options.layout).map_err(|what| {
            DetectorError::Layout {
                path: path.to_path_buf(),
                what,
            }
        })?;
        let (labels, label_source) = labels::resolve(
            path,
            layout.classes,
            options.labels_file.as_deref(),
            names.as_deref(),
        )?;
        let plan = typed.into_runnable().map_err(compile_error)?;
        let preprocess = match layout.kind {
            LayoutKind::Detr => Preprocess::Resize,
            _ => Preprocess::Letterbox,
        };
        let (mean, std) = options.normalize.unwrap_or(match preprocess {
            Preprocess::Resize => (IMAGENET_MEAN, IMAGENET_STD),
            Preprocess::Letterbox => ([0.0; 3], [1.0; 3]),
        });
        Ok(Detector {
            path: path.to_path_buf(),
            plan,
            input_type,
            width,
            height,
            layout,
            outputs,
            labels,
            label_source,
            preprocess,
            mean,
            std,
            pool: pool(options.threads).map_err(|e| DetectorError::Run(e.to_string()))?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's input, `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The graph's outputs as loaded, with their shapes.
    pub fn outputs(&self) -> &[OutputShape] {
        &self.outputs
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn label_source(&self) -> LabelSource {
        self.label_source
    }

    pub fn preprocess(&self) -> Preprocess {
        self.preprocess
    }

    /// Detects objects in a packed RGB frame; boxes in frame pixels, best first.
    pub fn detect(
        &self,
        rgb: &[u8],
        width: u32,
        height: u32,
        thresholds: &Thresholds,
    ) -> Result<Detections, DetectorError> {
        if width == 0 || height == 0 || rgb.len() as u64 != u64::from(width) * u64::from(height) * 3
        {
            return Err(DetectorError::Frame(format!(
                "{width}x{height} RGB needs {} bytes, got {}",
                u64::from(width) * u64::from(height) * 3,
                rgb.len()
            )));
        }
        let started = Instant::now();
        let (input, geometry) = self.prepare(rgb, width, height);
        let prepared = Instant::now();
        let outputs = self.infer(input)?;
        let inferred = Instant::now();
        let detections =
            self.postprocess(&outputs, width, height, geometry.as_ref(), thresholds)?;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok(Detections {
            detections,
            timings: Timings {
                preprocess_ms: ms(started, prepared),
                inference_ms: ms(prepared, inferred),
                postprocess_ms: ms(inferred, Instant::now()),
            },
        })
    }

    /// The model input for a frame (NCHW f32), and where the frame sits in it when letterboxed.
    pub fn prepare(
        &self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> (Vec<f32>, Option<LetterboxGeometry>) {
        let (w, h) = (self.width, self.height);
        match self.preprocess {
            Preprocess::Letterbox => {
                let (canvas, geometry) = letterbox(rgb, width, height, w, h);
                (to_nchw(&canvas, w, h, self.mean, self.std), Some(geometry))
            }
            Preprocess::Resize => {
                let resized = resize_linear(rgb, width, height, w, h);
                (to_nchw(&resized, w, h, self.mean, self.std), None)
            }
        }
    }

    /// Runs the graph on a prepared input; every output as f32, in graph order.
    pub fn infer(&self, input: Vec<f32>) -> Result<Vec<Vec<f32>>, DetectorError> {
        let run = |e: TractError| DetectorError::Run(format!("{e:#}"));
        let shape = (1, 3, self.height as usize, self.width as usize);
        let mut tensor = tract_ndarray::Array4::from_shape_vec(shape, input)
            .map_err(|e| DetectorError::Run(format!("input of {shape:?}: {e}")))?
            .into_tensor();
        if self.input_type != DatumType::F32 {
            tensor = tensor
                .cast_to_dt(self.input_type)
                .map_err(run)?
                .into_owned();
        }
        let outputs = match &self.pool {
            // On a thread of the detector's pool, the matrix products split between a running
            // thread and spinning workers, without a wake-up round trip per product.
            Some(pool) => pool.install(|| {
                multithread_tract_scope(Executor::MultiThread(pool.clone()), || {
                    self.plan.run(tvec![tensor.into_tvalue()])
                })
            }),
            None => multithread_tract_scope(Executor::SingleThread, || {
                self.plan.run(tvec![tensor.into_tvalue()])
            }),
        }
        .map_err(run)?;
        outputs
            .iter()
            .map(|o| {
                let o = o.cast_to::<f32>()?;
                Ok(o.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            })
            .collect::<TractResult<_>>()
            .map_err(run)
    }

    /// Raw outputs to detections in frame pixels (`width` x `height`), best first.
    pub fn postprocess(
        &self,
        outputs: &[Vec<f32>],
        width: u32,
        height: u32,
        geometry: Option<&LetterboxGeometry>,
        t: &Thresholds,
    ) -> Result<Vec<Detection>, DetectorError> {
        let classes = self.labels.len();
        let boxes = &outputs[self.layout.boxes];
        let candidates = match self.layout.kind {
            LayoutKind::Yolov8 => yolo::decode_v8(boxes, classes, t),
            LayoutKind::Yolov5 => yolo::decode_v5(boxes, classes, t),
            LayoutKind::EndToEnd => end_to_end::decode(boxes, classes, t)?,
            LayoutKind::Detr => {
                let logits = &outputs[self.layout.logits.unwrap_or(1)];
                detr::decode(boxes, logits, classes, width, height, t)
            }
        };
        Ok(candidates
            .into_iter()
            .map(
                |Candidate {
                     class_id,
                     score,
                     bbox,
                 }| Detection {
                    class_id,
                    label: self.labels[class_id].clone(),
                    score,
                    bbox: match geometry {
                        Some(g) => g.to_source(bbox, width, height),
                        None => bbox,
                    },
                },
            )
            .collect())
    }
}

/// The input's element type and the `(width, height)` to run it at.
fn input_spec(
    model: &InferenceModel,
    options: &DetectorOptions,
) -> Result<(DatumType, u32, u32), String> {
    let fact = model.input_fact(0).map_err(|e| e.to_string())?;
    let found = fact.format_dt_shape();
    let dims: Vec<Option<i64>> = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.as_i64()))
        .collect();
    if fact.shape.is_open() || dims.len() != 4 {
        return Err(format!(
            "its input is {found}; a detector takes one image [1, 3, height, width] (NCHW)"
        ));
    }
    if dims[1].is_some_and(|c| c != 3) {
        return Err(format!(
            "its input is {found}: expected 3 colour channels (NCHW, RGB)"
        ));
    }
    let input_type = match fact.datum_type.concretize() {
        None | Some(DatumType::F32) => DatumType::F32,
        Some(DatumType::F16) => DatumType::F16,
        Some(other) => {
            return Err(format!(
                "its input is {other:?}; expected f32 or f16 pixels"
            ));
        }
    };
    let size = match (dims[3], dims[2], options.input_size) {
        (Some(w), Some(h), None) => (w as u32, h as u32),
        (Some(w), Some(h), Some(given)) if given == (w as u32, h as u32) => given,
        (Some(w), Some(h), Some((gw, gh))) => {
            return Err(format!(
                "its input size is fixed at {w}x{h}; the configured input size {gw}x{gh} cannot be used"
            ));
        }
        (_, _, Some(given)) => given,
        _ => {
            return Err(format!(
                "its input {found} has a dynamic size: give the input size (width and height) to run it at"
            ));
        }
    };
    if size.0 == 0 || size.1 == 0 || size.0 > 4096 || size.1 > 4096 {
        return Err(format!(
            "input size {}x{} is out of range (1 to 4096)",
            size.0, size.1
        ));
    }
    Ok((input_type, size.0, size.1))
}

fn output_shapes(model: &TypedModel) -> Result<Vec<OutputShape>, String> {
    model
        .outputs
        .iter()
        .enumerate()
        .map(|(i, &outlet)| {
            let fact = model.outlet_fact(outlet).map_err(|e| e.to_string())?;
            let name = model
                .outlet_label(outlet)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(outlet.node).name.clone());
            let shape = fact
                .shape
                .as_concrete()
                .ok_or_else(|| format!("output {i} ({name}) has no fixed shape: {:?}", fact.shape))?
                .to_vec();
            Ok(OutputShape { name, shape })
        })
        .collect()
}

fn pool(threads: usize) -> Result<Option<Arc<ThreadPool>>, rayon::ThreadPoolBuildError> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("lookout-detect-{i}"))
        .num_threads(threads)
        .build()?;
    Ok(Some(Arc::new(pool)))
}
