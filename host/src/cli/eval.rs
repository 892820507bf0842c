//! `sod eval --config eval.toml` evaluates a model with tools on benchmarks (see [`sod_eval`]) and prints the
//! summary; `sod eval --verify MANIFEST` reruns a finished evaluation and reports whether every input and every
//! result is byte-identical (exit code 0) or names what changed (exit code 1).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Cli, usage};
use sod_eval::{CodeVersion, EvalOptions, run_eval, verify};

/// `sod eval ...`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The evaluation config (TOML).
    #[arg(
        long,
        value_name = "EVAL.toml",
        conflicts_with = "verify",
        required_unless_present = "verify"
    )]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set model=runs/sod/checkpoints/step-100 --set samples=4` (repeatable;
    /// recorded in the manifest and applied again by `--verify`).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "verify")]
    overrides: Vec<String>,
    /// Rerun the evaluation of a manifest.json and compare.
    #[arg(long, value_name = "MANIFEST")]
    verify: Option<PathBuf>,
    /// Device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs the command; `Ok(false)` when a verification found differences.
pub(super) fn run(cli: &Cli, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let device = super::device(&args.device)?;
    let options = EvalOptions {
        tools_dir: crate::locate::tools_dir(cli.tools_dir.as_deref()),
        device,
        code_version: CodeVersion::detect(),
    };
    let log = |line: &str| eprintln!("{line}");
    if let Some(manifest) = &args.verify {
        if !manifest.is_file() {
            return Err(usage(format!("{} is not a file", manifest.display())));
        }
        let report = verify(manifest, &options, &log)?;
        print!("{report}");
        return Ok(if report.identical() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let config = args
        .config
        .as_ref()
        .ok_or_else(|| usage("--config or --verify is required"))?;
    if !options.tools_dir.is_dir() {
        return Err(usage(format!(
            "tools directory {} does not exist; build the tools with `cargo xtask build-tools` or pass --tools-dir",
            options.tools_dir.display()
        )));
    }
    let outcome = run_eval(config, &args.overrides, &options, &log)?;
    println!(
        "{}",
        serde_json::json!({
            "out_dir": outcome.out_dir.display().to_string(),
            "summary": outcome.summary,
        })
    );
    Ok(ExitCode::SUCCESS)
}
