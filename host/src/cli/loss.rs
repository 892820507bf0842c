//! `sod loss NAME|PATH --batch BATCH.json [--set key=value ...]`: a debugging aid for plugin authors.

use std::path::PathBuf;

use clap::Args;

use super::usage;

/// `sod loss ...`
#[derive(Debug, Args)]
pub struct LossArgs {
    /// Plugin name (sod, opd, grpo, sft, or another in the plugin directory) or path to a library.
    plugin: String,
    /// The recorded batch: flat arrays `old_logprob`, `teacher_logprob`, `mask`, and per sequence
    /// `seq_offsets` (sequences + 1), `reward`, `group`.
    #[arg(long, value_name = "BATCH.json")]
    batch: PathBuf,
    /// A plugin setting, e.g. `--set delta=0.2`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Directory of plugin libraries. Default: $SOD_PLUGIN_DIR, else beside the `sod` binary.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

pub(super) fn run(args: &LossArgs) -> anyhow::Result<()> {
    let settings = args
        .settings
        .iter()
        .map(|s| sod_loss::parse_setting(s).map_err(|e| usage(e.to_string())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plugin_dir = crate::locate::plugin_dir(args.plugin_dir.as_deref())?;
    let result = sod_loss::run_batch_file(&args.plugin, &plugin_dir, &args.batch, &settings)
        .map_err(|e| usage(e.to_string()))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
