//! `lookout ask`: typed answers to questions about one image (yes/no, a choice, a number, short
//! text), the image encoded once for all of them; one line per question, JSON with `--json`.

use std::path::PathBuf;

use clap::Args;
use lookout_pipeline::answer::{AnswerKind, Question};
use lookout_pipeline::engine::Cancel;

use super::model_args::{ModelArgs, read_image};

#[derive(Args, Debug)]
pub struct AskArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image the questions are about (JPEG, PNG or WebP); without it they are asked text-only.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// A question, asked verbatim (repeat for several; each takes the --answer at its place).
    #[arg(long = "question", required = true)]
    pub questions: Vec<String>,
    /// The answer type of the question at the same place: yes_no, number, text or
    /// choice:a,b,c. Without any, every answer is text.
    #[arg(long = "answer", value_parser = parse_kind)]
    pub answers: Vec<AnswerKind>,
    /// Most slices to cut the image into (default: the checkpoint's `max_slice_nums`).
    #[arg(long)]
    pub max_slices: Option<usize>,
    /// One JSON object per question, one per line.
    #[arg(long)]
    pub json: bool,
}

fn parse_kind(s: &str) -> Result<AnswerKind, String> {
    s.parse()
}

pub fn run(args: AskArgs) -> anyhow::Result<()> {
    let kinds = match args.answers.len() {
        0 => vec![AnswerKind::Text(lookout_pipeline::answer::TEXT_TOKENS); args.questions.len()],
        n if n == args.questions.len() => args.answers.clone(),
        n => anyhow::bail!(
            "{} --question but {n} --answer: give one answer type per question (or none for text)",
            args.questions.len()
        ),
    };
    let questions: Vec<Question> = args
        .questions
        .iter()
        .zip(kinds)
        .map(|(text, kind)| Question {
            text: text.clone(),
            kind,
        })
        .collect();
    let image = read_image(args.image.as_deref())?;
    let engine = args.model.load()?;
    let answers = engine.answer(
        image.as_ref(),
        args.max_slices,
        &questions,
        &Cancel::default(),
    )?;
    for answer in &answers {
        if args.json {
            println!("{}", serde_json::to_string(answer)?);
        } else {
            println!(
                "{}  ->  {}  (confidence {:.2})",
                answer.question, answer.value, answer.confidence
            );
        }
    }
    if !args.json
        && let Some(first) = answers.first()
    {
        let t = &first.timings;
        let own: f64 = answers.iter().map(|a| a.timings.question_ms).sum();
        eprintln!(
            "encode {:.0} ms, shared prefix {} tokens in {:.0} ms, {} question(s) in {:.0} ms",
            t.encode_ms,
            t.shared_tokens,
            t.shared_prefill_ms,
            answers.len(),
            own
        );
    }
    Ok(())
}
