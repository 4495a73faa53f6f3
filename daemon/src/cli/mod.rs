//! Command-line interface: one module per subcommand.

mod ask;
mod bench;
mod check_config;
mod describe;
mod detect;
mod model_args;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lookout",
    version,
    about = "Local vision-language model for cameras"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Describe an image, or chat without one, with a local model.
    Describe(describe::DescribeArgs),
    /// Ask typed questions about an image: yes/no, a choice, a number or short text.
    Ask(ask::AskArgs),
    /// Find objects in an image with an ONNX detector.
    Detect(detect::DetectArgs),
    /// Measure a model (load time, peak memory, prefill and decode speed), or an ONNX detector
    /// beside onnxruntime.
    Bench(bench::BenchArgs),
    /// Run the daemon: cameras in, descriptions and answers out over MQTT.
    Run(run::RunArgs),
    /// Check a configuration file without starting anything.
    CheckConfig(check_config::CheckConfigArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Run(_)) {
        // One-shot commands print their results; logs (load phases, the cache) only at
        // warnings unless RUST_LOG asks for more. `run` sets its level from its config.
        lookout::logging::init("warn");
    }
    match cli.command {
        Command::Describe(args) => describe::run(args),
        Command::Ask(args) => ask::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Run(args) => run::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
