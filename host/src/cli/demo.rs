//! `sod demo [--out DIR] [--seed S] [--quick | --full [--seeds N]]`: the main job. Builds (or reuses from
//! `runs/demo-cache/`) teachers and a student trained on gold (and recovery) calculator trajectories, measures the
//! teachers on the student's own prefixes, trains the student with OPD and with SOD from the same start, evaluates
//! every run, prints a table and writes a report into the run directory. `--full` runs the whole grid (both
//! teachers, GRPO alone, the null-signal control) over several seeds; an interrupted one continues where it
//! stopped when started again with the same `--out`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::{Cli, usage};
use sod_demo::pipeline::{DemoOptions, DemoPaths, run_demo};
use sod_demo::report::{table, take_over_table, verdict, write_report};
use sod_demo::settings::DemoSettings;

/// `sod demo ...`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run directory. Default: runs/demo-<unix time>.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of the tasks, models, data order and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A shorter run: the same (cached) models, fewer on-policy steps.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The whole grid: gold-only and recovery teachers x every arm, GRPO alone and the null-signal control, for
    /// `--seeds` seeds (about 30 on-policy runs: over an hour on two cores).
    #[arg(long)]
    full: bool,
    /// Seeds of the on-policy runs (default: 3 with --full, else 1).
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// Read every setting (sizes, steps, learning rates) from this JSON file instead; `--print-settings` writes
    /// one to start from. `--seed` and `--quick` are then ignored.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "full"])]
    settings: Option<PathBuf>,
    /// Print the settings this run would use, as JSON, and exit.
    #[arg(long)]
    print_settings: bool,
    /// Where trained models are cached, by a hash of their settings.
    #[arg(long, value_name = "DIR", default_value = "runs/demo-cache")]
    cache: PathBuf,
    /// Jobs at once (model builds, evaluations, on-policy runs), each on one core. Default: the available cores.
    /// Results do not depend on it.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Directory of plugin libraries. Default: $SOD_PLUGIN_DIR, else beside the `sod` binary.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Run the tool calls on this `sod serve` endpoint (`http://host:port`; repeatable) instead of in this
    /// process. Results do not depend on it (docs/serve.md).
    #[arg(long = "tool-endpoint", value_name = "URL")]
    tool_endpoints: Vec<String>,
    /// Run the tool calls in this many `sod worker` processes instead of in this process. Results do not
    /// depend on it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        conflicts_with = "tool_endpoints"
    )]
    tool_processes: usize,
    /// Device of the on-policy runs: cpu, or cuda / cuda:N in a build with the `cuda` feature (model builds and
    /// evaluations stay on the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Jobs at once: `--jobs`, else the available cores.
fn jobs(args: &DemoArgs) -> anyhow::Result<usize> {
    match args.jobs {
        Some(0) => Err(usage("--jobs must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Threads per kernel for the process (see [`crate::threads`]): one when jobs run side by side, each on its own
/// core; `None` (all cores) otherwise.
pub(super) fn kernel_threads(args: &DemoArgs) -> Option<usize> {
    jobs(args).ok().filter(|&n| n > 1).map(|_| 1)
}

pub(super) fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let settings = match &args.settings {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
            serde_json::from_str::<DemoSettings>(&text)
                .map_err(|e| usage(format!("{}: not demo settings: {e}", file.display())))?
        }
        None if args.quick => DemoSettings::quick(args.seed),
        None if args.full => DemoSettings::full(args.seed),
        None => DemoSettings::standard(args.seed),
    };
    let settings = match args.seeds {
        Some(0) => return Err(usage("--seeds must be at least 1")),
        Some(seeds) if args.settings.is_none() => DemoSettings { seeds, ..settings },
        _ => settings,
    };
    if args.print_settings {
        println!("{}", serde_json::to_string_pretty(&settings)?);
        return Ok(());
    }
    let out_dir = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("runs/demo-{now}"))
        }
    };
    if out_dir.join("report.md").exists() {
        return Err(usage(format!(
            "{} already holds a demo run; choose another --out",
            out_dir.display()
        )));
    }
    let tools_dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
    if !tools_dir.join("calculator.wasm").is_file() {
        return Err(usage(format!(
            "{} has no calculator.wasm; build the tools with `cargo xtask build-tools` or pass --tools-dir",
            tools_dir.display()
        )));
    }
    let plugin_dir = crate::locate::plugin_dir(args.plugin_dir.as_deref())?;
    for plugin in ["sod", "opd", "grpo"] {
        let file = plugin_dir.join(sod_loss::plugin_file_name(plugin));
        if !file.is_file() {
            return Err(usage(format!(
                "loss plugin {} is missing; build the workspace first (`cargo build --workspace`, or run \
                 `cargo xtask demo`) or pass --plugin-dir",
                file.display()
            )));
        }
    }
    let paths = DemoPaths {
        out_dir: out_dir.clone(),
        cache_root: args.cache.clone(),
        tools_dir,
        plugin_dir,
    };
    let started = std::time::Instant::now();
    let log = |line: &str| eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
    let jobs = jobs(args)?;
    let options = DemoOptions {
        progress: std::io::stderr().is_terminal(),
        jobs,
        tool_endpoints: args.tool_endpoints.clone(),
        tool_processes: args.tool_processes,
        device: super::device(&args.device)?,
    };
    let outcome = run_demo(&settings, &paths, options, &log)?;
    write_report(&outcome, &out_dir)?;
    println!();
    print!("{}", table(&outcome));
    println!();
    print!("{}", take_over_table(&outcome));
    println!();
    println!("{}", verdict(&outcome));
    println!(
        "Report: {} (plots: accuracy_bars.png, reward.png, accuracy.png, kl.png); total {:.0} s.",
        out_dir.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
