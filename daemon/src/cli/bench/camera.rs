//! `lookout bench --camera CLIP --model DIR [--sensors N]`: standing questions on a replayed
//! clip, through the daemon's own code: the sensor schedule decides when they are asked, and
//! each trigger runs the same sensor job as `lookout run`, once on the camera's saved look
//! (slices and state reused) and once from nothing. Per trigger it prints slices encoded and
//! reused, encode, prefill and answer times of both, and how far the reused answers are from the
//! fresh ones (the same value, and the largest difference of an option's log probability).
//! Then a follow-up question about the unchanged last frame.
//!
//! Every frame of the clip is decoded first; frame `i` is taken as captured at `i / --fps`
//! seconds, so that the replay does not depend on how long the model takes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lookout_models::Precision;
use lookout_pipeline::answer::Answer;
use lookout_pipeline::engine::{Cancel, Engine, EngineOptions};

use super::{BenchArgs, cpu_model, default_compiled_cache};
use lookout::camera::Frame;
use lookout::camera::gst::Running;
use lookout::camera::sensors::SensorSchedule;
use lookout::camera::source::Source;
use lookout::config::CameraConfig;
use lookout::config::sensor::SensorConfig;
use lookout::jobs::{Job, JobKind, JobResult, Looks, Output, sense};

/// Standing questions of the kind users ask their cameras, asked in turn.
const QUESTIONS: [&str; 8] = [
    "Is there a person in the picture? Answer yes or no.",
    "Is the garage door open? Answer yes or no.",
    "Is there a car in the driveway? Answer yes or no.",
    "Is it raining? Answer yes or no.",
    "Is a light on? Answer yes or no.",
    "Is there an animal? Answer yes or no.",
    "Is the gate closed? Answer yes or no.",
    "Is there a package at the door? Answer yes or no.",
];

/// Every frame of `clip`, decoded to RGB.
fn decode(clip: &Path) -> anyhow::Result<Vec<Frame>> {
    lookout::camera::gst::init()?;
    let description = format!(
        "gst:filesrc location=\"{}\" ! decodebin ! videoconvert ! appsink name=sink sync=false",
        clip.display()
    );
    let source = Source::parse(&description)?;
    let running = Running::start_every_frame(&source)?;
    let mut frames = Vec::new();
    loop {
        match running.pull(Duration::from_secs(5))? {
            Some(frame) => frames.push(frame),
            None if running.is_eos() => break,
            None => anyhow::bail!(
                "{}: no frame within 5 s after frame {}",
                clip.display(),
                frames.len()
            ),
        }
    }
    anyhow::ensure!(!frames.is_empty(), "{}: no frames", clip.display());
    Ok(frames)
}

/// Figures of one sensor job.
struct Run {
    wall_ms: f64,
    answers: Vec<Answer>,
}

fn run_sense(engine: &Engine, looks: &mut Looks, job: Job) -> anyhow::Result<Run> {
    let names = match &job.kind {
        JobKind::Sense { sensors, .. } => sensors.clone(),
        _ => unreachable!("a sensor job"),
    };
    let started = Instant::now();
    let JobResult { outcome, .. } = sense(engine, looks, job, &names, &Cancel::default());
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let Ok(Output::Sensors(answers)) = outcome else {
        anyhow::bail!("the sensor job made no answers")
    };
    let answers = answers
        .into_iter()
        .map(|a| a.answer.map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    Ok(Run { wall_ms, answers })
}

/// Encode, shared prefill and the questions' own time of a run, as printed.
fn split(run: &Run) -> (f64, f64, f64) {
    let first = &run.answers[0].timings;
    let questions: f64 = run.answers.iter().map(|a| a.timings.question_ms).sum();
    (first.encode_ms, first.shared_prefill_ms, questions)
}

pub fn run(args: &BenchArgs, clip: &Path, model: &Path) -> anyhow::Result<()> {
    let fps = args.fps;
    anyhow::ensure!(
        fps > 0.0 && fps <= 60.0,
        "--fps must be above 0 and at most 60 (got {fps})"
    );
    let sensors = args.sensors;
    anyhow::ensure!(
        (1..=QUESTIONS.len()).contains(&sensors),
        "--sensors must be 1 to {} (got {sensors})",
        QUESTIONS.len()
    );
    let precision = match args.weights.as_slice() {
        [one] => *one,
        _ => Precision::Q4_0,
    };
    let threads = args.threads.iter().copied().max().unwrap_or(2);
    println!("{}", cpu_model());
    let frames = decode(clip)?;
    println!(
        "clip: {} ({} frames of {}x{} at {fps} fps)",
        clip.display(),
        frames.len(),
        frames[0].width,
        frames[0].height
    );
    let engine = Engine::load(
        model,
        &EngineOptions {
            precision,
            threads: Some(threads),
            compiled_cache: default_compiled_cache(),
        },
    )?;
    let camera = Arc::new(CameraConfig {
        name: "bench".into(),
        source: "testsrc".into(),
        scene_change: args.scene_change,
        scene_min_gap: 0.0,
        reuse_threshold: args.reuse_threshold,
        sensors: QUESTIONS[..sensors]
            .iter()
            .enumerate()
            .map(|(i, q)| SensorConfig {
                name: format!("q{i}"),
                question: q.to_string(),
                answer: "yes_no".into(),
                ..SensorConfig::default()
            })
            .collect(),
        ..CameraConfig::default()
    });
    println!(
        "model: {} ({precision}, {threads} threads), {sensors} yes/no sensors, scene_change {}, reuse_threshold {}",
        model.display(),
        camera.scene_change,
        camera.reuse_threshold
    );
    println!(
        "{:>5} {:<12} {:>7} {:>6} | {:>9} {:>10} {:>11} {:>9} | {:>9} {:>10} {:>9} | {:>6} {:>9}",
        "frame",
        "trigger",
        "encoded",
        "reused",
        "encode_ms",
        "prefill_ms",
        "answers_ms",
        "total_ms",
        "encode_ms",
        "prefill_ms",
        "total_ms",
        "agree",
        "max_dlogp"
    );
    println!(
        "{:>33} | {:^42} | {:^31} |",
        "", "with reuse (the daemon)", "without reuse"
    );
    let mut schedule = SensorSchedule::new(&camera);
    let mut looks = Looks::default();
    let t0 = Instant::now();
    let (mut reused_total, mut encoded_total, mut agree, mut asked) = (0, 0, 0, 0);
    let mut worst = 0.0f64;
    let mut last_asked = None;
    for (i, frame) in frames.iter().enumerate() {
        let now = t0 + Duration::from_secs_f64(i as f64 / fps);
        let Some(due) = schedule.due(&camera, frame, now) else {
            continue;
        };
        let job = Job {
            id: format!("frame-{i}"),
            camera: camera.clone(),
            kind: JobKind::Sense {
                sensors: due.sensors,
                trigger: due.trigger.into(),
            },
            frame: frame.clone(),
            queued: SystemTime::now(),
        };
        last_asked = Some(frame.clone());
        let with = run_sense(&engine, &mut looks, job.clone())?;
        let without = run_sense(&engine, &mut Looks::default(), job)?;
        let reuse = with.answers[0].timings.reuse.unwrap_or_default();
        encoded_total += reuse.slices_encoded;
        reused_total += reuse.slices_reused;
        let mut frame_agree = 0;
        for (a, b) in with.answers.iter().zip(&without.answers) {
            asked += 1;
            if a.value == b.value {
                agree += 1;
                frame_agree += 1;
            }
            for (option, lp) in &a.logprobs {
                worst = worst.max((lp - b.logprobs[option]).abs());
            }
        }
        let (we, wp, wq) = split(&with);
        let (oe, op, _) = split(&without);
        let frame_worst = with
            .answers
            .iter()
            .zip(&without.answers)
            .flat_map(|(a, b)| a.logprobs.iter().map(|(o, lp)| (lp - b.logprobs[o]).abs()))
            .fold(0.0f64, f64::max);
        println!(
            "{i:>5} {:<12} {:>7} {:>6} | {we:>9.0} {wp:>10.0} {wq:>11.0} {:>9.0} | {oe:>9.0} {:>10.0} {:>9.0} | {:>6} {frame_worst:>9.2e}",
            due.trigger,
            reuse.slices_encoded,
            reuse.slices_reused,
            with.wall_ms,
            op,
            without.wall_ms,
            format!("{frame_agree}/{}", with.answers.len()),
        );
    }
    println!(
        "slices encoded {encoded_total}, reused {reused_total}; answers agreeing with no reuse {agree}/{asked}; largest log-probability difference {worst:.2e}"
    );
    // A question about the frame last asked about, unchanged: the saved look answers it.
    let last = last_asked.expect("the first frame is always asked about");
    let job = Job {
        id: "follow-up".into(),
        camera: camera.clone(),
        kind: JobKind::Sense {
            sensors: vec!["q0".into()],
            trigger: "follow-up".into(),
        },
        frame: last,
        queued: SystemTime::now(),
    };
    let follow_up = run_sense(&engine, &mut looks, job)?;
    let reuse = follow_up.answers[0].timings.reuse.unwrap_or_default();
    println!(
        "follow-up question on the unchanged frame: {:.0} ms (slices encoded {}, prefix reused {})",
        follow_up.wall_ms, reuse.slices_encoded, reuse.prefix_reused
    );
    Ok(())
}
