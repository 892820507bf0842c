//! `sod sft --config sft.toml [--set key=value ...] [--device cpu|cuda] [--resume]`: supervised fine-tuning on the
//! user's conversations (see `sod_train::sft::run`), printing a JSON summary whose `model` is the Hugging Face
//! directory to give `sod train` as its student.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use sod_train::sft::run::{SftRunConfig, SftRunOptions, run_sft};

use super::train::{RunFlags, classify};

/// `sod sft ...`
#[derive(Debug, Args)]
pub struct SftArgs {
    /// The settings (TOML): model, data, out_dir, epochs or steps, batch sizes, learning-rate schedule...
    #[arg(long, value_name = "SFT.toml")]
    config: PathBuf,
    #[command(flatten)]
    run: RunFlags,
}

pub(super) fn run(args: &SftArgs) -> anyhow::Result<()> {
    let config = SftRunConfig::load(&args.config, &args.run.overrides).map_err(classify)?;
    let options = SftRunOptions {
        device: sod_train::device_by_name(&args.run.device).map_err(classify)?,
        resume: args.run.resume,
        progress: std::io::stderr().is_terminal(),
        log_every: 10,
    };
    let summary = run_sft(&config, &options).map_err(classify)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
