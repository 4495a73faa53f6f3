//! `lookout bench`: speed and memory of the language model on a checkpoint, or of an ONNX
//! object detector (side by side with onnxruntime on the same file), printed as figures.
//!
//! Each configuration ((precision, threads) for the language model, threads for a detector) runs
//! in a child process of its own so that its peak RSS is its own and not the high-water mark of
//! an earlier configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

mod camera;
mod latency;

use anyhow::Context;
use clap::{ArgGroup, Args};
use lookout_models::{Checkpoint, Precision};
use lookout_pipeline::compiled::CacheUse;
use lookout_pipeline::detect::{Detections, Detector, DetectorOptions, Thresholds};
use lookout_pipeline::engine::{Engine, EngineOptions};
use lookout_pipeline::image::RgbImage;
use lookout_pipeline::qwen35::{LmOptions, OpProfile, Qwen35};
use lookout_pipeline::threads::set_threads;
use serde::{Deserialize, Serialize};

use lookout::config::CameraConfig;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("subject").required(true).args(["model", "detector"])))]
pub struct BenchArgs {
    /// Model directory (a Hugging Face checkpoint): the language model, or with --vision its image
    /// encoder. Give this or --detector.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// An ONNX object detector to measure instead: load time, peak RSS, and the median and p95
    /// of preprocess, inference, postprocess and the whole detect() call on a 1920x1080 frame.
    /// Give this or --model.
    #[arg(long, value_name = "FILE.onnx", conflicts_with_all = ["vision", "weights"])]
    pub detector: Option<PathBuf>,
    /// Precisions to measure (comma-separated; language model only).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,q4_0")]
    pub weights: Vec<Precision>,
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Timed repetitions of each measurement (default: 3 with --model, 30 with --detector).
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Measure image encoding instead (MiniCPM-V checkpoints): one 448x448 slice and a
    /// 1920x1080 frame cut into at most 1, 4 and 9 slices; peak RSS then covers the whole model
    /// describing that frame (encode and prefill).
    #[arg(long)]
    pub vision: bool,
    /// Detector input size WIDTHxHEIGHT, for a model whose input size is dynamic.
    #[arg(long, value_parser = super::detect::parse_size, conflicts_with = "model")]
    pub input_size: Option<(u32, u32)>,
    /// Also time onnxruntime on the same detector file at each thread count, interleaved with
    /// tract: PYTHON is an interpreter that has onnxruntime and numpy (e.g. /work/venv/bin/python),
    /// running the script of --onnxruntime-script.
    #[arg(long, value_name = "PYTHON", conflicts_with = "model")]
    pub onnxruntime: Option<PathBuf>,
    /// The onnxruntime timing script (default: models/tools/bench_detectors.py in the source tree
    /// this binary was built from, found through its build-time CARGO_MANIFEST_DIR).
    #[arg(
        long,
        value_name = "PATH",
        requires = "onnxruntime",
        conflicts_with = "model"
    )]
    pub onnxruntime_script: Option<PathBuf>,
    /// With --detector: measure the detector's latency (frame captured -> boxes) at --fps, idle
    /// and while the language model of DIR (q4_0) describes a 1920x1080 frame, with its threads
    /// at nice 5 (as the daemon runs them) and at nice 0.
    #[arg(long, value_name = "DIR", requires = "detector")]
    pub while_describing: Option<PathBuf>,
    /// Frames per second: offered to the detector (with --while-describing), or of the clip
    /// (with --camera).
    #[arg(long, default_value_t = 5.0)]
    pub fps: f64,
    /// With --model: replay this clip through the daemon's sensor code (standing yes/no
    /// questions on scene change), with and without reuse of unchanged slices and state.
    #[arg(long, value_name = "CLIP", requires = "model", conflicts_with_all = ["vision", "detector"])]
    pub camera: Option<PathBuf>,
    /// Yes/no sensors asked at each trigger (with --camera).
    #[arg(long, default_value_t = 4, requires = "camera")]
    pub sensors: usize,
    /// The camera's scene-change threshold (with --camera).
    #[arg(long, default_value_t = CameraConfig::default().scene_change, requires = "camera")]
    pub scene_change: f64,
    /// The camera's reuse_threshold in pixel levels (with --camera).
    #[arg(long, default_value_t = lookout::config::DEFAULT_REUSE_THRESHOLD, requires = "camera")]
    pub reuse_threshold: f64,
    /// Niceness of the language model's threads (one run of --while-describing).
    #[arg(long, hide = true, default_value_t = 0)]
    pub nice: i32,
    /// With --model (language model): where the time goes instead, op by op, for a 512-token
    /// prefill and 32 decode steps at each precision and thread count.
    #[arg(long, conflicts_with_all = ["vision", "detector", "camera"])]
    pub profile: bool,
    /// Run one configuration in this process (used by the parent run).
    #[arg(long, hide = true)]
    pub single: bool,
}

impl BenchArgs {
    fn repeat(&self) -> usize {
        let default = if self.detector.is_some() { 30 } else { 3 };
        self.repeat.unwrap_or(default).max(1)
    }

    /// The checkpoint directory (clap makes sure that it or --detector is given).
    fn model(&self) -> anyhow::Result<&Path> {
        self.model
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("give --model DIR or --detector FILE.onnx"))
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let (Some(clip), Some(model)) = (&args.camera, &args.model) {
        return camera::run(&args, clip, model);
    }
    if let (Some(detector), Some(model)) = (&args.detector, &args.while_describing) {
        return if args.single {
            latency::run_single(&args, detector, model)
        } else {
            latency::run(&args, detector, model)
        };
    }
    if let Some(detector) = &args.detector {
        return if args.single {
            run_detector_single(&args, detector)
        } else {
            run_detector(&args, detector)
        };
    }
    if args.single {
        return run_single(&args);
    }
    if args.vision {
        println!(
            "{:<7} {:>3} {:>13} {:>12} {:>9} {:>9} {:>13} {:>14} {:>14} {:>14}",
            "weights",
            "thr",
            "first_load_ms",
            "first_rss_mb",
            "load_ms",
            "rss_mb",
            "448x448_ms",
            "1080p/1_ms",
            "1080p/4_ms",
            "1080p/9_ms"
        );
    } else if !args.profile {
        println!(
            "{:<7} {:>3} {:>13} {:>12} {:>9} {:>9} {:>12} {:>12} {:>12} {:>13}",
            "weights",
            "thr",
            "first_load_ms",
            "first_rss_mb",
            "load_ms",
            "rss_mb",
            "prefill64/s",
            "prefill512/s",
            "decode@64/s",
            "decode@1024/s"
        );
    }
    let exe = std::env::current_exe()?;
    let model = args.model()?;
    for &precision in &args.weights {
        for &threads in &args.threads {
            let status = Command::new(&exe)
                .arg("bench")
                .arg("--model")
                .arg(model)
                .arg("--weights")
                .arg(precision.to_string())
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--repeat")
                .arg(args.repeat().to_string())
                .arg("--single")
                .args(args.vision.then_some("--vision"))
                .args(args.profile.then_some("--profile"))
                .status()?;
            anyhow::ensure!(
                status.success(),
                "benchmark of {precision} with {threads} threads failed"
            );
        }
    }
    Ok(())
}

fn run_single(args: &BenchArgs) -> anyhow::Result<()> {
    let (&precision, &threads) = (
        args.weights
            .first()
            .ok_or_else(|| anyhow::anyhow!("no precision"))?,
        args.threads
            .first()
            .ok_or_else(|| anyhow::anyhow!("no thread count"))?,
    );
    if args.vision {
        return run_vision(args, precision, threads);
    }
    set_threads(Some(threads))?;
    let cache = ScratchCache::new()?;
    let load = |expected: &str| -> anyhow::Result<(Qwen35, f64)> {
        let start = Instant::now();
        let checkpoint = Checkpoint::open(args.model()?)?;
        let options = LmOptions {
            compiled_cache: Some(cache.0.clone()),
            ..LmOptions::new(precision)
        };
        let lm = Qwen35::load(&checkpoint, &options)?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        cache.check(lm.compiled_cache(), expected, precision)?;
        Ok((lm, ms))
    };
    let (
        lm,
        Loads {
            first_ms,
            first_rss,
            load_ms,
        },
    ) = load_twice(load)?;

    // Deterministic token ids spread over the vocabulary; speed does not depend on the values.
    let vocab = lm.config.vocab_size as u64;
    let ids: Vec<u32> = (0..1024u64)
        .map(|i| ((i * 2_654_435_761) % vocab) as u32)
        .collect();

    let prefill = |len: usize| -> anyhow::Result<f64> {
        median(args.repeat(), || {
            let mut state = lm.new_state()?;
            let embeds = lm.embed(&ids[..len])?;
            let t = Instant::now();
            lm.forward(&mut state, &embeds)?;
            Ok(len as f64 / t.elapsed().as_secs_f64())
        })
    };
    // Each timed run decodes `steps` tokens from a fork of one prefilled state, so the context
    // is centred on `context` however many runs there are.
    let decode_at = |context: usize| -> anyhow::Result<f64> {
        let steps = 16;
        let mut prefilled = lm.new_state()?;
        lm.forward(&mut prefilled, &lm.embed(&ids[..context - steps / 2])?)?;
        median(args.repeat(), || {
            let mut state = lm.fork(&prefilled)?;
            let t = Instant::now();
            for i in 0..steps {
                lm.forward(&mut state, &lm.embed(&ids[i..i + 1])?)?;
            }
            Ok(steps as f64 / t.elapsed().as_secs_f64())
        })
    };
    if args.profile {
        return print_profile(&lm, &ids, precision, threads);
    }
    let p64 = prefill(64)?;
    let p512 = prefill(512)?;
    let d64 = decode_at(64)?;
    let d1024 = decode_at(1024)?;
    println!(
        "{:<7} {:>3} {:>13.0} {:>12.0} {:>9.0} {:>9.0} {:>12.1} {:>12.1} {:>12.2} {:>13.2}",
        precision.to_string(),
        threads,
        first_ms,
        first_rss,
        load_ms,
        peak_rss_mb(),
        p64,
        p512,
        d64,
        d1024
    );
    Ok(())
}

/// Where a 512-token prefill and 32 decode steps (after 64 and after 1024 tokens) spend their
/// time, op by op.
fn print_profile(
    lm: &Qwen35,
    ids: &[u32],
    precision: Precision,
    threads: usize,
) -> anyhow::Result<()> {
    // One untimed pass first: the plan sizes its scratch space on first use.
    lm.forward(&mut lm.new_state()?, &lm.embed(&ids[..128])?)?;
    let mut prefill = OpProfile::default();
    let mut state = lm.new_state()?;
    lm.forward_profiled(&mut state, &lm.embed(&ids[..512])?, &mut prefill)?;
    let steps = 32;
    let decode_after = |context: usize| -> anyhow::Result<OpProfile> {
        let mut profile = OpProfile::default();
        let mut state = lm.new_state()?;
        lm.forward(&mut state, &lm.embed(&ids[..context])?)?;
        for i in 0..steps {
            lm.forward_profiled(&mut state, &lm.embed(&ids[i..i + 1])?, &mut profile)?;
        }
        Ok(profile)
    };
    let decode = [decode_after(64)?, decode_after(ids.len() - steps)?];
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{precision}, {threads} thread(s): prefill of 512 tokens {:.0} ms ({:.1} tokens/s), \
         decode after 64 {:.1} ms/token ({:.2} tokens/s), after {} {:.1} ms/token ({:.2} tokens/s)",
        ms(prefill.wall),
        512.0 / prefill.wall.as_secs_f64(),
        ms(decode[0].wall) / steps as f64,
        steps as f64 / decode[0].wall.as_secs_f64(),
        ids.len() - steps,
        ms(decode[1].wall) / steps as f64,
        steps as f64 / decode[1].wall.as_secs_f64()
    );
    println!(
        "  {:<28} {:>11} {:>6} {:>6} | {:>13} {:>6} {:>8} | {:>15} {:>6}",
        "op",
        "prefill_ms",
        "share",
        "runs",
        "decode_ms/tok",
        "share",
        "runs/tok",
        "@1k_ms/tok",
        "share"
    );
    let share =
        |d: std::time::Duration, of: &OpProfile| 100.0 * d.as_secs_f64() / of.wall.as_secs_f64();
    let mut names: Vec<&str> = prefill.by_time().into_iter().map(|(n, _, _)| n).collect();
    for profile in &decode {
        for (name, _, _) in profile.by_time() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names {
        let (p, pr) = prefill.ops.get(name).copied().unwrap_or_default();
        let (d, dr) = decode[0].ops.get(name).copied().unwrap_or_default();
        let (l, _) = decode[1].ops.get(name).copied().unwrap_or_default();
        println!(
            "  {name:<28} {:>11.1} {:>5.1}% {pr:>6} | {:>13.2} {:>5.1}% {:>8.0} | {:>15.2} {:>5.1}%",
            ms(p),
            share(p, &prefill),
            ms(d) / steps as f64,
            share(d, &decode[0]),
            dr as f64 / steps as f64,
            ms(l) / steps as f64,
            share(l, &decode[1]),
        );
    }
    let outside = |p: &OpProfile| p.wall.saturating_sub(p.ops.values().map(|v| v.0).sum());
    println!(
        "  {:<28} {:>11.1} {:>5.1}% {:>6} | {:>13.2} {:>5.1}% {:>8} | {:>15.2} {:>5.1}%",
        "(outside the ops)",
        ms(outside(&prefill)),
        share(outside(&prefill), &prefill),
        "",
        ms(outside(&decode[0])) / steps as f64,
        share(outside(&decode[0]), &decode[0]),
        "",
        ms(outside(&decode[1])) / steps as f64,
        share(outside(&decode[1]), &decode[1])
    );
    Ok(())
}

fn run_vision(args: &BenchArgs, precision: Precision, threads: usize) -> anyhow::Result<()> {
    let cache = ScratchCache::new()?;
    let load = |expected: &str| -> anyhow::Result<(Engine, f64)> {
        let start = Instant::now();
        let engine = Engine::load(
            args.model()?,
            &EngineOptions {
                precision,
                threads: Some(threads),
                compiled_cache: Some(cache.0.clone()),
            },
        )?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        cache.check(engine.lm.compiled_cache(), expected, precision)?;
        if let Some(vision) = &engine.vision {
            cache.check(vision.encoder.compiled_cache(), expected, precision)?;
        }
        Ok((engine, ms))
    };
    let (
        engine,
        Loads {
            first_ms,
            first_rss,
            load_ms,
        },
    ) = load_twice(load)?;
    let slice = test_image(448, 448)?;
    let frame = test_image(1920, 1080)?;
    let encode = |image: &RgbImage, max_slices: usize| -> anyhow::Result<f64> {
        median(args.repeat(), || {
            Ok(engine
                .image_prompt(image, "Describe this image.", Some(max_slices))?
                .encode_ms)
        })
    };
    let one_slice = encode(&slice, 1)?;
    let frame_ms = [1, 4, 9].map(|n| encode(&frame, n));
    // Describe the frame once more, prefill included, so that peak RSS covers the whole path.
    let prompt = engine.image_prompt(&frame, "Describe this image.", Some(9))?;
    let mut state = engine.lm.new_state()?;
    engine.lm.forward(&mut state, &prompt.embeds)?;
    let [f1, f4, f9] = frame_ms;
    println!(
        "{:<7} {:>3} {:>13.0} {:>12.0} {:>9.0} {:>9.0} {:>13.0} {:>14.0} {:>14.0} {:>14.0}",
        precision.to_string(),
        threads,
        first_ms,
        first_rss,
        load_ms,
        peak_rss_mb(),
        one_slice,
        f1?,
        f4?,
        f9?
    );
    Ok(())
}

/// The compiled cache a user's commands share, for benchmarks that do not measure loading.
pub(super) fn default_compiled_cache() -> Option<PathBuf> {
    lookout::config::default_cache_dir()
        .ok()
        .map(|d| d.join(lookout::config::COMPILED_CACHE))
}

/// A compiled cache of the benchmark's own, so that both loads are measured every run: the
/// first (quantizing, then writing the cache) and a later one (mapping it, warm page cache).
struct ScratchCache(PathBuf);

impl ScratchCache {
    fn new() -> anyhow::Result<ScratchCache> {
        let dir = std::env::temp_dir().join(format!("lookout-bench-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ScratchCache(dir))
    }

    /// Fails unless the load used the cache as this measurement means (`written`, `mapped`);
    /// only q4_0 weights are cached.
    fn check(&self, used: &CacheUse, expected: &str, precision: Precision) -> anyhow::Result<()> {
        let expected = if precision == Precision::Q4_0 {
            expected
        } else {
            "off"
        };
        anyhow::ensure!(
            used.to_string() == expected,
            "the compiled cache was {used:?} where this load should have {expected} it"
        );
        Ok(())
    }
}

impl Drop for ScratchCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Untimed calls before the timed ones, for tract and onnxruntime alike.
const DETECTOR_WARMUP: usize = 5;
/// The synthetic camera frame every detector call gets.
const FRAME: (u32, u32) = (1920, 1080);

/// Median and p95 of one timing, in milliseconds (numpy's linear interpolation, as the
/// onnxruntime script computes them).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Spread {
    median: f64,
    p95: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        Spread {
            median: percentile(&values, 0.5),
            p95: percentile(&values, 0.95),
        }
    }
}

/// The `q` quantile of sorted `values`, interpolating linearly between neighbours.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// What one tract configuration measured (the child's one line of JSON to its parent).
#[derive(Debug, Serialize, Deserialize)]
struct TractFigures {
    threads: usize,
    input: (u32, u32),
    load_ms: f64,
    rss_mb: f64,
    boxes: usize,
    preprocess: Spread,
    inference: Spread,
    postprocess: Spread,
    total: Spread,
}

/// The onnxruntime script's line.
#[derive(Debug, Deserialize)]
struct OrtFigures {
    median_ms: f64,
    p95_ms: f64,
}

fn run_detector(args: &BenchArgs, detector: &Path) -> anyhow::Result<()> {
    if let Some(&bad) = args.threads.iter().find(|&&t| t == 0 || t > 256) {
        anyhow::bail!("--threads: each must be 1 to 256 (got {bad})");
    }
    let ort = match &args.onnxruntime {
        Some(python) => {
            let script = args.onnxruntime_script.clone().unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tools/bench_detectors.py")
            });
            check_onnxruntime(python, &script)?;
            Some((python.as_path(), script))
        }
        None => None,
    };
    let repeat = args.repeat();
    println!("{}", cpu_model());
    println!("detector: {}", detector.display());
    // The table's header waits for the first figures: a detector that does not load is then
    // the only thing printed after the lines above.
    let header = || {
        println!(
            "{:<11} {:>3} {:>8} {:>7} {:>5} {:>13} {:>15} {:>13} {:>15} {:>8} {:>9}",
            "engine",
            "thr",
            "load_ms",
            "rss_mb",
            "boxes",
            "preprocess_ms",
            "inference_ms",
            "postproc_ms",
            "detect_ms",
            "frames/s",
            "tract/ort"
        )
    };
    let exe = std::env::current_exe()?;
    let mut input = None;
    // Interleaved (tract 1, onnxruntime 1, tract 2, ...) so that both engines see the same
    // machine state at each thread count.
    for &threads in &args.threads {
        let mut child = Command::new(&exe);
        child
            .arg("bench")
            .arg("--detector")
            .arg(detector)
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--repeat")
            .arg(repeat.to_string())
            .arg("--single");
        if let Some((w, h)) = args.input_size {
            child.arg("--input-size").arg(format!("{w}x{h}"));
        }
        let out = checked_output(&mut child, &exe)
            .with_context(|| format!("tract with {}", n_threads(threads)))?;
        let tract: TractFigures = last_json_line(&out.stdout)
            .with_context(|| format!("reading the figures of tract with {}", n_threads(threads)))?;
        if input.replace(tract.input).is_none() {
            header();
        }
        let ms = |s: Spread| format!("{}/{}", fmt_ms(s.median), fmt_ms(s.p95));
        println!(
            "{:<11} {:>3} {:>8.0} {:>7.0} {:>5} {:>13} {:>15} {:>13} {:>15} {:>8.1} {:>9}",
            "tract",
            threads,
            tract.load_ms,
            tract.rss_mb,
            tract.boxes,
            ms(tract.preprocess),
            ms(tract.inference),
            ms(tract.postprocess),
            ms(tract.total),
            1000.0 / tract.total.median,
            "-"
        );
        if let Some((python, script)) = &ort {
            let o = run_onnxruntime(python, script, detector, threads, repeat, tract.input)?;
            println!(
                "{:<11} {:>3} {:>8} {:>7} {:>5} {:>13} {:>15} {:>13} {:>15} {:>8} {:>9}",
                "onnxruntime",
                threads,
                "-",
                "-",
                "-",
                "-",
                format!("{}/{}", fmt_ms(o.median_ms), fmt_ms(o.p95_ms)),
                "-",
                "-",
                "-",
                format!("{:.2}x", tract.inference.median / o.median_ms)
            );
        }
    }
    if let Some((w, h)) = input {
        println!(
            "median/p95 of {repeat} calls after {DETECTOR_WARMUP} warm-up calls on a {}x{} RGB \
             frame, model input {w}x{h}; detect_ms: the whole detect() call, frames/s: 1000/its \
             median",
            FRAME.0, FRAME.1
        );
        if ort.is_some() {
            println!(
                "onnxruntime: session.run alone on a prepared input (tract's inference_ms); \
                 tract/ort: the two inference medians at the same thread count"
            );
        }
    }
    Ok(())
}

/// One tract configuration, in this process; prints one line of JSON for the parent.
fn run_detector_single(args: &BenchArgs, path: &Path) -> anyhow::Result<()> {
    let threads = *args
        .threads
        .first()
        .ok_or_else(|| anyhow::anyhow!("no thread count"))?;
    // As in the daemon, where the language model's thread setup limits glibc's malloc arenas.
    lookout_pipeline::memory::limit_arenas();
    let start = Instant::now();
    // `{e}`, not the chain: the detector's messages already name the file and include their
    // cause.
    let detector = Detector::load(
        path,
        &DetectorOptions {
            threads,
            input_size: args.input_size,
            ..Default::default()
        },
    )
    .map_err(|e| {
        let message = e.to_string();
        let hint = if args.input_size.is_none() && message.contains("dynamic size") {
            " (--input-size WIDTHxHEIGHT)"
        } else {
            ""
        };
        anyhow::anyhow!("{message}{hint}")
    })?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    // The speed does not depend on the pixel values.
    let frame = test_image(FRAME.0, FRAME.1)?;
    let thresholds = Thresholds::default();
    let detect = || -> anyhow::Result<_> {
        let t = Instant::now();
        let d = detector.detect(frame.as_raw(), FRAME.0, FRAME.1, &thresholds)?;
        Ok((d, t.elapsed().as_secs_f64() * 1000.0))
    };
    for _ in 0..DETECTOR_WARMUP {
        detect()?;
    }
    let mut runs = Vec::with_capacity(args.repeat());
    for _ in 0..args.repeat() {
        runs.push(detect()?);
    }
    let spread = |f: fn(&(Detections, f64)) -> f64| Spread::of(runs.iter().map(f).collect());
    let figures = TractFigures {
        threads,
        input: detector.input_size(),
        load_ms,
        rss_mb: peak_rss_mb(),
        boxes: runs.last().map_or(0, |(d, _)| d.detections.len()),
        preprocess: spread(|(d, _)| d.timings.preprocess_ms),
        inference: spread(|(d, _)| d.timings.inference_ms),
        postprocess: spread(|(d, _)| d.timings.postprocess_ms),
        total: spread(|&(_, ms)| ms),
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Fails early, and says why, when `python` cannot run the onnxruntime script.
fn check_onnxruntime(python: &Path, script: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        script.is_file(),
        "onnxruntime timing script {} not found (give it with --onnxruntime-script PATH)",
        script.display()
    );
    let out = Command::new(python)
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .with_context(|| format!("running {} (--onnxruntime)", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "{} cannot import onnxruntime and numpy ({}): --onnxruntime needs a Python that has \
             them (pip install onnxruntime numpy)",
            python.display(),
            stderr.lines().last().unwrap_or("no message").trim()
        );
    }
    Ok(())
}

/// onnxruntime's time for `threads` intra-op threads on the same file and input shape.
///
/// The script times `session.run` alone, on a float32 NCHW array made once before the timed
/// runs, with `intra_op_num_threads = threads`, `inter_op_num_threads = 1` and sequential
/// execution, after the same number of warm-up runs. That is what tract's inference figure
/// covers: `Detector::infer` from an already-prepared input (letterbox and normalisation are in
/// preprocess) to the outputs as f32 vectors, with `threads` threads for its matrix products.
/// (tract's figure also includes wrapping the input in a tensor and copying the outputs out,
/// about a millisecond at 640x640; onnxruntime's includes making its output arrays.)
fn run_onnxruntime(
    python: &Path,
    script: &Path,
    detector: &Path,
    threads: usize,
    repeat: usize,
    (w, h): (u32, u32),
) -> anyhow::Result<OrtFigures> {
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg("ort")
        .arg(detector)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--repeat")
        .arg(repeat.to_string())
        .arg("--warmup")
        .arg(DETECTOR_WARMUP.to_string())
        .arg("--input-size")
        .arg(format!("{w}x{h}"));
    let out = checked_output(&mut command, python)
        .with_context(|| format!("onnxruntime with {}", n_threads(threads)))?;
    last_json_line(&out.stdout).with_context(|| {
        format!(
            "reading the figures of onnxruntime with {}",
            n_threads(threads)
        )
    })
}

/// Runs `command` to its end; its error output passed on when it succeeds, made the error when
/// it fails (a detector's own message, naming its file, then reaches the user once).
fn checked_output(command: &mut Command, program: &Path) -> anyhow::Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let message = stderr.trim();
        let message = message.strip_prefix("lookout: ").unwrap_or(message);
        anyhow::bail!(
            "{}",
            if message.is_empty() {
                format!("{} failed ({})", program.display(), out.status)
            } else {
                message.to_string()
            }
        );
    }
    eprint!("{stderr}");
    Ok(out)
}

fn last_json_line<T: for<'de> Deserialize<'de>>(stdout: &[u8]) -> anyhow::Result<T> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("no JSON line in its output: {:?}", text.trim()))?;
    Ok(serde_json::from_str(line)?)
}

/// `model name: …` from /proc/cpuinfo (or the nearest line ARM kernels give).
fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ["model name", "Hardware", "Processor", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key).then(|| format!("{key}: {} ({cpus} CPUs)", v.trim()))
            })
        })
        .unwrap_or_else(|| format!("model name: unknown ({cpus} CPUs)"))
}

fn n_threads(n: usize) -> String {
    if n == 1 {
        "1 thread".to_string()
    } else {
        format!("{n} threads")
    }
}

/// Milliseconds with two decimals below 10, one above.
fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

/// A deterministic picture with detail at every scale, so resizing and slicing do real work.
fn test_image(width: u32, height: u32) -> anyhow::Result<RgbImage> {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = x.wrapping_mul(7) ^ y.wrapping_mul(13);
            data.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, (v % 256) as u8]);
        }
    }
    Ok(RgbImage::from_raw_rgb(width, height, data)?)
}

fn median(repeat: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut values = (0..repeat.max(1))
        .map(|_| f())
        .collect::<anyhow::Result<Vec<_>>>()?;
    values.sort_by(f64::total_cmp);
    Ok(values[values.len() / 2])
}

/// Peak resident set size of this process (VmHWM), in MB.
/// Forgets the first load before the later one is measured: its freed memory goes back to the
/// system and the peak RSS starts again from what is resident now (Linux's `clear_refs` 5).
/// The two loads every model benchmark measures: the first writes the compiled cache, the
/// second maps it.
struct Loads {
    first_ms: f64,
    first_rss: f64,
    load_ms: f64,
}

/// Runs `load` expecting it to write the cache, drops that model, and runs it again expecting
/// it to map the cache; returns the second model.
fn load_twice<T>(load: impl Fn(&str) -> anyhow::Result<(T, f64)>) -> anyhow::Result<(T, Loads)> {
    let (first, first_ms) = load("written")?;
    let first_rss = peak_rss_mb();
    drop(first);
    start_later_load();
    let (model, load_ms) = load("mapped")?;
    Ok((
        model,
        Loads {
            first_ms,
            first_rss,
            load_ms,
        },
    ))
}

fn start_later_load() {
    lookout_pipeline::memory::release_freed_memory();
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("warning: cannot reset the peak RSS ({e}): rss_mb includes the first load");
    }
}

pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
