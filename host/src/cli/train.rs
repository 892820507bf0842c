//! `sod train --config run.toml [--loss NAME|PATH] [--set key=value ...] [--device cpu|cuda] [--resume]`:
//! trains the student of a run config (see `sod_train::config`), writing `metrics.jsonl` and checkpoints into the
//! config's `out_dir`, and prints a JSON summary.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use sod_train::{RunConfig, TrainError, Trainer, TrainerOptions};

use super::{Cli, usage};

/// `sod train ...`
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run config (TOML).
    #[arg(long, value_name = "RUN.toml")]
    config: PathBuf,
    /// Loss plugin: sod, opd, grpo (or another in the plugin directory) or a path to a library; overrides
    /// `loss.name`.
    #[arg(long, value_name = "NAME|PATH")]
    loss: Option<String>,
    #[command(flatten)]
    run: RunFlags,
    /// Directory of plugin libraries. Default: $SOD_PLUGIN_DIR, else beside the `sod` binary.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

/// The flags `sod train` and `sod sft` share: overrides of the config, the device, and resuming.
#[derive(Debug, Args)]
pub(super) struct RunFlags {
    /// Overrides a config value, e.g. `--set steps=10`; dotted keys reach tables (`--set loss.settings.delta=0.2`);
    /// repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(super) overrides: Vec<String>,
    /// Device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    /// Continue from the latest checkpoint in the config's out_dir.
    #[arg(long)]
    pub(super) resume: bool,
}

/// Errors the user fixes by changing the config or the flags: exit code 2.
fn is_usage(err: &TrainError) -> bool {
    matches!(
        err,
        TrainError::Config(_)
            | TrainError::Dataset { .. }
            | TrainError::DatasetRow { .. }
            | TrainError::DatasetFile { .. }
            | TrainError::TeacherMismatch(_)
            | TrainError::Resume(_)
            | TrainError::Device(_)
            | TrainError::Loss(_)
    )
}

pub(super) fn classify(err: TrainError) -> anyhow::Error {
    if is_usage(&err) {
        usage(err.to_string())
    } else {
        anyhow::Error::new(err)
    }
}

pub(super) fn run(cli: &Cli, args: &TrainArgs) -> anyhow::Result<()> {
    let mut overrides = args.run.overrides.clone();
    if let Some(loss) = &args.loss {
        overrides.push(format!("loss.name={loss:?}"));
    }
    let config = RunConfig::load(&args.config, &overrides).map_err(classify)?;
    let device = sod_train::device_by_name(&args.run.device).map_err(classify)?;
    let tools_dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
    if !config.rollout.tools.is_empty() && !tools_dir.is_dir() {
        return Err(usage(format!(
            "tools directory {} does not exist; build the tools with `cargo xtask build-tools` or pass --tools-dir",
            tools_dir.display()
        )));
    }
    let options = TrainerOptions {
        device,
        plugin_dir: crate::locate::plugin_dir(args.plugin_dir.as_deref())?,
        tools_dir,
        sandbox_cache_dir: None,
        resume: args.run.resume,
        progress: std::io::stderr().is_terminal(),
        log_every: 8,
        log_label: String::new(),
    };
    let mut trainer = Trainer::new(config, options).map_err(classify)?;
    let summary = trainer.run().map_err(classify)?;
    println!(
        "{}",
        serde_json::json!({
            "step": summary.step,
            "checkpoint": summary.checkpoint.map(|p| p.display().to_string()),
            "last": summary.last,
        })
    );
    Ok(())
}
