//! `lookout`: a local vision-language model for cameras.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
