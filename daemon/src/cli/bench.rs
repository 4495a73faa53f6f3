//! `lookout bench`: speed and memory of the language model on a checkpoint, printed as figures.
//!
//! Each (precision, threads) configuration runs in a child process of its own so that its peak
//! RSS is its own and not the high-water mark of an earlier configuration.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use lookout_models::{Checkpoint, Precision};
use lookout_pipeline::engine::{Engine, EngineOptions};
use lookout_pipeline::image::RgbImage;
use lookout_pipeline::qwen35::{LmOptions, Qwen35};
use lookout_pipeline::threads::set_threads;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory (a Hugging Face checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Precisions to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,q4_0")]
    pub weights: Vec<Precision>,
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Timed repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Measure image encoding instead (MiniCPM-V checkpoints): one 448x448 slice and a
    /// 1920x1080 frame cut into at most 1, 4 and 9 slices; peak RSS then covers the whole model
    /// describing that frame (encode and prefill).
    #[arg(long)]
    pub vision: bool,
    /// Run one configuration in this process (used by the parent run).
    #[arg(long, hide = true)]
    pub single: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.single {
        return run_single(&args);
    }
    if args.vision {
        println!(
            "{:<7} {:>3} {:>9} {:>9} {:>13} {:>14} {:>14} {:>14}",
            "weights",
            "thr",
            "load_ms",
            "rss_mb",
            "448x448_ms",
            "1080p/1_ms",
            "1080p/4_ms",
            "1080p/9_ms"
        );
    } else {
        println!(
            "{:<7} {:>3} {:>9} {:>9} {:>12} {:>12} {:>12} {:>13}",
            "weights",
            "thr",
            "load_ms",
            "rss_mb",
            "prefill64/s",
            "prefill512/s",
            "decode@64/s",
            "decode@1024/s"
        );
    }
    let exe = std::env::current_exe()?;
    for &precision in &args.weights {
        for &threads in &args.threads {
            let status = Command::new(&exe)
                .arg("bench")
                .arg("--model")
                .arg(&args.model)
                .arg("--weights")
                .arg(precision.to_string())
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--repeat")
                .arg(args.repeat.to_string())
                .arg("--single")
                .args(args.vision.then_some("--vision"))
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
    let start = Instant::now();
    let checkpoint = Checkpoint::open(&args.model)?;
    let lm = Qwen35::load(&checkpoint, &LmOptions::new(precision))?;
    drop(checkpoint);
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;

    // Deterministic token ids spread over the vocabulary; speed does not depend on the values.
    let vocab = lm.config.vocab_size as u64;
    let ids: Vec<u32> = (0..1024u64)
        .map(|i| ((i * 2_654_435_761) % vocab) as u32)
        .collect();

    let prefill = |len: usize| -> anyhow::Result<f64> {
        median(args.repeat, || {
            let mut state = lm.new_state()?;
            let embeds = lm.embed(&ids[..len])?;
            let t = Instant::now();
            lm.forward(&mut state, &embeds)?;
            Ok(len as f64 / t.elapsed().as_secs_f64())
        })
    };
    let decode_at = |context: usize| -> anyhow::Result<f64> {
        let mut state = lm.new_state()?;
        lm.forward(&mut state, &lm.embed(&ids[..context])?)?;
        let steps = 16;
        median(args.repeat, || {
            let t = Instant::now();
            for i in 0..steps {
                lm.forward(&mut state, &lm.embed(&ids[i..i + 1])?)?;
            }
            Ok(steps as f64 / t.elapsed().as_secs_f64())
        })
    };
    let p64 = prefill(64)?;
    let p512 = prefill(512)?;
    let d64 = decode_at(64)?;
    let d1024 = decode_at(1024 - 16 * args.repeat)?;
    println!(
        "{:<7} {:>3} {:>9.0} {:>9.0} {:>12.1} {:>12.1} {:>12.2} {:>13.2}",
        precision.to_string(),
        threads,
        load_ms,
        peak_rss_mb(),
        p64,
        p512,
        d64,
        d1024
    );
    Ok(())
}

fn run_vision(args: &BenchArgs, precision: Precision, threads: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let engine = Engine::load(
        &args.model,
        &EngineOptions {
            precision,
            threads: Some(threads),
        },
    )?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let slice = test_image(448, 448)?;
    let frame = test_image(1920, 1080)?;
    let encode = |image: &RgbImage, max_slices: usize| -> anyhow::Result<f64> {
        median(args.repeat, || {
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
        "{:<7} {:>3} {:>9.0} {:>9.0} {:>13.0} {:>14.0} {:>14.0} {:>14.0}",
        precision.to_string(),
        threads,
        load_ms,
        peak_rss_mb(),
        one_slice,
        f1?,
        f4?,
        f9?
    );
    Ok(())
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
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
