//! `lookout run`: the daemon.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML configuration file; without it, defaults and LOOKOUT__* variables apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    lookout::app::run(args.config)
}
