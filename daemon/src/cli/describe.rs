//! `lookout describe`: one prompt (and optionally one image) through the model, text streamed to
//! stdout as it is generated, or a single JSON object with `--json`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use lookout_pipeline::engine::{Cancel, Request};
use lookout_pipeline::sampler::SamplingParams;

use super::model_args::{ModelArgs, read_image};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image to describe (JPEG, PNG or WebP); without it the model chats text-only.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Most slices to cut the image into (default: the checkpoint's `max_slice_nums`; 0 or 1
    /// encodes the overview image only).
    #[arg(long)]
    pub max_slices: Option<usize>,
    /// The question or instruction.
    #[arg(long, default_value = "Describe this image.")]
    pub prompt: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let image = read_image(args.image.as_deref())?;
    let engine = args.model.load()?;
    let request = Request {
        prompt: args.prompt.clone(),
        image,
        max_slices: args.max_slices,
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        cancel: Cancel::default(),
    };
    let stdout = std::io::stdout();
    let description = if args.json {
        engine.describe(&request, &mut |_| {})?
    } else {
        let mut out = stdout.lock();
        let d = engine.describe(&request, &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        writeln!(out)?;
        d
    };
    if args.json {
        println!("{}", serde_json::to_string(&description)?);
    } else {
        let t = &description.timings;
        eprintln!(
            "load {:.0} ms, encode {:.0} ms, prefill {} tokens in {:.0} ms ({:.1} tok/s), \
             decode {} tokens in {:.0} ms ({:.1} tok/s), stop: {:?}",
            t.load_ms,
            t.encode_ms,
            description.prompt_tokens,
            t.prefill_ms,
            t.prefill_tokens_per_s,
            description.tokens.len(),
            t.decode_ms,
            t.decode_tokens_per_s,
            description.stop_reason
        );
    }
    Ok(())
}
