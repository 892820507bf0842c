//! Command-line interface. Each subcommand lives in its own module; this one parses and dispatches.
//!
//! Exit codes: 0 when the command did its job (a tool call that ended in a limit or a crash still did:
//! its outcome is printed), 1 when it failed, 2 for usage errors (bad flags, bad JSON, unknown names).

mod bench;
mod chat;
mod demo;
mod eval;
mod judge;
mod loss;
mod serve;
mod sft;
mod tools;
mod train;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train small language-model agents that reason with tools.
#[derive(Debug, Parser)]
#[command(name = "sod", version, about, long_about = None)]
pub struct Cli {
    /// Directory of tool components (*.wasm). Default: $SOD_TOOLS_DIR, else target/tools beside the binary.
    #[arg(long, global = true, value_name = "DIR")]
    pub tools_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List and inspect tools.
    Tools(tools::ToolsArgs),
    /// Call one tool once and print its outcome as JSON.
    Tool(tools::ToolArgs),
    /// Run a loss plugin on a recorded batch and print its advantages and metrics.
    Loss(loss::LossArgs),
    /// Serve sandbox calls over stdin/stdout, one JSON line each (used by worker pools).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// Measure speed (results are meant for docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Chat templates: `chat render` shows the text, token ids and trained tokens of a conversation.
    Chat(chat::ChatArgs),
    /// Score solutions against problems' tests (stdin/stdout cases or test programs).
    Judge(judge::JudgeArgs),
    /// Serve the sandbox over HTTP (SandboxFusion's /run_code, /v1/tools); `serve bench` load-tests it.
    Serve(serve::ServeArgs),
    /// Supervised fine-tuning on conversations (JSONL or Parquet, `messages` and `tools`) from sft.toml: the cold
    /// start; writes a Hugging Face directory for `sod train`.
    Sft(sft::SftArgs),
    /// Train a student with tools and a loss plugin (sod, opd, grpo) from a run config (run.toml).
    Train(train::TrainArgs),
    /// The main job: build a teacher and a student, train the student with SOD and OPD, report.
    Demo(demo::DemoArgs),
    /// Evaluate a model with tools on benchmarks (avg@k, pass@k, a manifest); `--verify` reruns and compares.
    Eval(eval::EvalArgs),
}

/// An error that is the user's to fix: printed without a backtrace, exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds a [`UsageError`] inside an `anyhow::Error`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The device a `--device` flag names (cpu, cuda, cuda:N); an unknown or unavailable one is a usage error.
pub(crate) fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    sod_train::device_by_name(name).map_err(|e| usage(e.to_string()))
}

/// Parses the command line, runs the command and maps errors to exit codes.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // Before any work starts a thread (see crate::threads).
    crate::threads::configure(match &cli.command {
        Command::Demo(args) => demo::kernel_threads(args),
        _ => None,
    });
    let result = match &cli.command {
        Command::Tools(args) => tools::list(&cli, args),
        Command::Tool(args) => tools::call(&cli, args),
        Command::Loss(args) => loss::run(args),
        Command::Worker(args) => worker::run(&cli, args),
        Command::Bench(args) => bench::run(&cli, args),
        Command::Chat(args) => chat::run(args),
        Command::Judge(args) => judge::run(&cli, args),
        Command::Serve(args) => serve::run(&cli, args),
        Command::Sft(args) => sft::run(args),
        Command::Train(args) => train::run(&cli, args),
        Command::Demo(args) => demo::run(&cli, args),
        Command::Eval(args) => match eval::run(&cli, args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Opens a sandbox over the tools directory. Tools load on first use; `load_all` loads every one now.
pub(crate) fn open_sandbox(
    cli: &Cli,
    config: sod_sandbox::SandboxConfig,
    load_all: bool,
) -> anyhow::Result<sod_sandbox::Sandbox> {
    let dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
    if !dir.is_dir() {
        anyhow::bail!(
            "tools directory {} does not exist; build the tools with `cargo xtask build-tools` or pass --tools-dir",
            dir.display()
        );
    }
    let sandbox = sod_sandbox::Sandbox::new(sod_sandbox::SandboxConfig {
        tools_dir: Some(dir.clone()),
        ..config
    })?;
    if load_all {
        sandbox.load_tools_dir(&dir)?;
    }
    Ok(sandbox)
}
