//! `sod sft --config sft.toml [--set key=value ...] [--device cpu|cuda] [--resume]`: supervised fine-tuning on the
//! user's conversations (see `sod_train::sft::run`), printing a JSON summary whose `model` is the Hugging Face
//! directory to give `sod train` as its student.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use sod_train::sft::run::{SftRunConfig, SftRunOptions, run_sft};

use super::train::classify;

/// `sod sft ...`
#[derive(Debug, Args)]
pub struct SftArgs {
    /// The settings (TOML): model, data, out_dir, epochs or steps, batch sizes, learning-rate schedule...
    #[arg(long, value_name = "SFT.toml")]
    config: PathBuf,
    /// Overrides a setting, e.g. `--set epochs=3` or `--set learning_rate=2e-5`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue from the latest checkpoint in the config's out_dir.
    #[arg(long)]
    resume: bool,
}

pub(super) fn run(args: &SftArgs) -> anyhow::Result<()> {
    let config = SftRunConfig::load(&args.config, &args.overrides).map_err(classify)?;
    let options = SftRunOptions {
        device: sod_train::device_by_name(&args.device).map_err(classify)?,
        resume: args.resume,
        progress: std::io::stderr().is_terminal(),
        log_every: 10,
    };
    let summary = run_sft(&config, &options).map_err(classify)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
