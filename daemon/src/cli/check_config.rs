//! `lookout check-config FILE`: validates a configuration without starting anything.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    /// The TOML configuration file to check (LOOKOUT__* variables apply too).
    pub file: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    println!("{}", lookout::app::check(&args.file)?);
    Ok(())
}
