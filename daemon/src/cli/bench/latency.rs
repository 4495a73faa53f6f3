//! `lookout bench --detector FILE --while-describing DIR`: how late the detector's boxes are,
//! from the moment a frame is captured, at the camera's detection rate, first with the machine
//! to itself and then while the language model describes a 1920x1080 frame.
//!
//! Frames are "captured" on a fixed schedule (`--fps`) and the detector, as in the daemon, takes
//! the newest one whenever it is free: the frames captured meanwhile are skipped, and the
//! latency of a processed frame runs from its capture to its boxes. Each niceness of the
//! language model's threads runs in a child process of its own.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lookout_models::Precision;
use lookout_pipeline::detect::{Detector, DetectorOptions, Thresholds};
use lookout_pipeline::engine::{Engine, EngineOptions, Request};
use lookout_pipeline::image::RgbImage;
use lookout_pipeline::threads;
use serde::{Deserialize, Serialize};

use super::{
    BenchArgs, FRAME, Spread, checked_output, cpu_model, default_compiled_cache, last_json_line,
    test_image,
};

/// Nicenesses of the language model's threads compared: the daemon's (with detection on) and
/// none.
const NICENESS: [i32; 2] = [5, 0];

/// One paced run of the detector.
#[derive(Debug, Serialize, Deserialize)]
struct Paced {
    frames: usize,
    skipped: usize,
    latency: Spread,
    fps: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LatencyFigures {
    input: (u32, u32),
    idle: Paced,
    describing: Paced,
    describe_ms: f64,
    encode_ms: f64,
    image_tokens: usize,
}

pub fn run(args: &BenchArgs, detector: &Path, model: &Path) -> anyhow::Result<()> {
    let threads = *args.threads.first().unwrap_or(&1);
    let fps = args.fps;
    anyhow::ensure!(
        fps > 0.0 && fps <= 30.0,
        "--fps must be above 0 and at most 30 (got {fps})"
    );
    println!("{}", cpu_model());
    println!(
        "detector: {}, {threads} thread(s), {fps} fps",
        detector.display()
    );
    println!("language model: {} (q4_0, every core)", model.display());
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for nice in NICENESS {
        let mut child = Command::new(&exe);
        child
            .arg("bench")
            .arg("--detector")
            .arg(detector)
            .arg("--while-describing")
            .arg(model)
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--fps")
            .arg(fps.to_string())
            .arg("--repeat")
            .arg(args.repeat().to_string())
            .arg("--nice")
            .arg(nice.to_string())
            .arg("--single");
        if let Some((w, h)) = args.input_size {
            child.arg("--input-size").arg(format!("{w}x{h}"));
        }
        let out = checked_output(&mut child, &exe)?;
        let figures: LatencyFigures = last_json_line(&out.stdout)?;
        rows.push((nice, figures));
    }
    println!(
        "{:<11} {:>4} {:>7} {:>8} {:>10} {:>9} {:>6}",
        "phase", "nice", "frames", "skipped", "median_ms", "p95_ms", "fps"
    );
    let row = |phase: &str, nice: &str, p: &Paced| {
        println!(
            "{:<11} {:>4} {:>7} {:>8} {:>10.1} {:>9.1} {:>6.2}",
            phase, nice, p.frames, p.skipped, p.latency.median, p.latency.p95, p.fps
        )
    };
    for (nice, f) in &rows {
        row("idle", "-", &f.idle);
        row("describing", &nice.to_string(), &f.describing);
    }
    let (_, first) = &rows[0];
    println!(
        "latency: frame captured -> boxes (the detector takes the newest frame when free); \
         describing: while the language model describes a {}x{} frame ({} image tokens, \
         encoded in {:.1} s, {:.1} s in all, nice {}); target: within two detector periods ({:.0} ms); \
         model input {}x{}",
        FRAME.0,
        FRAME.1,
        first.image_tokens,
        first.encode_ms / 1e3,
        first.describe_ms / 1e3,
        NICENESS[0],
        2e3 / fps,
        first.input.0,
        first.input.1
    );
    Ok(())
}

/// One niceness, in this process; prints one line of JSON for the parent.
pub fn run_single(args: &BenchArgs, detector: &Path, model: &Path) -> anyhow::Result<()> {
    let threads = *args.threads.first().unwrap_or(&1);
    // The daemon's order: the inference threads are lowered as they start, the detector's not.
    threads::set_niceness(args.nice);
    let engine = Engine::load(
        model,
        &EngineOptions {
            precision: Precision::Q4_0,
            threads: None,
            compiled_cache: default_compiled_cache(),
        },
    )?;
    let detector = Detector::load(
        detector,
        &DetectorOptions {
            threads,
            input_size: args.input_size,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let frame = test_image(FRAME.0, FRAME.1)?;
    let period = Duration::from_secs_f64(1.0 / args.fps);
    // Warm up, then the machine to itself.
    for _ in 0..3 {
        detector.detect(frame.as_raw(), FRAME.0, FRAME.1, &Thresholds::default())?;
    }
    let idle = paced(&detector, &frame, period, &|count| count >= args.repeat())?;

    let done = AtomicBool::new(false);
    let (describing, described) = std::thread::scope(|s| {
        let describer = s.spawn(|| {
            threads::lower_this_thread();
            let mut request = Request::new("Describe this image.");
            request.image = Some(frame.clone());
            request.max_tokens = 16;
            let started = Instant::now();
            let d = engine.describe(&request, &mut |_| {});
            done.store(true, Ordering::Relaxed);
            d.map(|d| (d, started.elapsed().as_secs_f64() * 1e3))
        });
        let describing = paced(&detector, &frame, period, &|_| done.load(Ordering::Relaxed));
        let described = describer
            .join()
            .map_err(|_| anyhow::anyhow!("the describing thread panicked"));
        (describing, described)
    });
    let (description, describe_ms) = described??;
    let figures = LatencyFigures {
        input: detector.input_size(),
        idle,
        describing: describing?,
        describe_ms,
        encode_ms: description.timings.encode_ms,
        image_tokens: description.image_tokens,
    };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Runs the detector on frames captured every `period`, the newest one each time it is free,
/// until `stop(frames processed)`.
fn paced(
    detector: &Detector,
    frame: &RgbImage,
    period: Duration,
    stop: &dyn Fn(usize) -> bool,
) -> anyhow::Result<Paced> {
    let start = Instant::now();
    let mut next = 0u64;
    let mut skipped = 0usize;
    let mut latencies = Vec::new();
    while !stop(latencies.len()) {
        let newest = (start.elapsed().as_secs_f64() / period.as_secs_f64()) as u64;
        if newest < next {
            std::thread::sleep(
                (start + period * next as u32).saturating_duration_since(Instant::now()),
            );
            continue;
        }
        skipped += (newest - next) as usize;
        let captured = start + period * newest as u32;
        detector.detect(frame.as_raw(), FRAME.0, FRAME.1, &Thresholds::default())?;
        latencies.push(captured.elapsed().as_secs_f64() * 1e3);
        next = newest + 1;
    }
    let frames = latencies.len();
    Ok(Paced {
        frames,
        skipped,
        latency: Spread::of(latencies),
        fps: frames as f64 / start.elapsed().as_secs_f64(),
    })
}
