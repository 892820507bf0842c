//! `sod bench ...`: speed measurements (the `sod_bench` crate), printed as markdown for docs/benchmarks.md. Each
//! subcommand checks its flags, turns them into the bench's configuration and prints its report.

use clap::{Args, Subcommand};
use sod_sandbox::workers::WorkerPool;
use sod_sandbox::{CallOptions, SandboxConfig};

use super::{Cli, open_sandbox, usage};

/// `sod bench ...`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

mod device;
mod generate;
mod make_model;
mod train_step;

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Latency and throughput of fresh-instance tool calls.
    Sandbox(SandboxBench),
    /// Time and peak memory of one policy update of a Hugging Face model, beside a baseline command.
    TrainStep(train_step::TrainStepBench),
    /// Generation tokens/s with the KV cache, beside a baseline command.
    Generate(generate::GenerateBench),
    /// A device (CUDA) against the CPU on a tiny model: logits, log-probs, generation, update steps.
    Device(device::DeviceBench),
    /// Write a model directory with random weights of a config's shape.
    MakeModel(make_model::MakeModel),
}

#[derive(Debug, Args)]
struct SandboxBench {
    /// Tool to call.
    #[arg(long, default_value = "calculator")]
    tool: String,
    /// Arguments of every call.
    #[arg(long, default_value = r#"{"expression": "(2^64 + 17) * 3 // 7"}"#)]
    arguments: String,
    /// Calls per measurement (after warm-up).
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Thread counts to measure throughput with.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// A shell-free command run as a subprocess per call for comparison (the usual alternative to a
    /// sandbox call); empty to skip.
    #[arg(long, default_value = "python3 -c print((2**64+17)*3//7)")]
    baseline: String,
    /// Subprocess calls for the baseline.
    #[arg(long, default_value_t = 100)]
    baseline_calls: usize,
    /// Fuel limit per call (default: the sandbox default).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit per call in MiB.
    #[arg(long, value_name = "M")]
    memory_mb: Option<u64>,
    /// Bytes of each linear memory kept resident between instances (default: the sandbox default).
    #[arg(long, value_name = "BYTES")]
    keep_resident: Option<usize>,
    /// Bytes of each memory kept resident where the kernel reports written pages (Linux PAGEMAP_SCAN);
    /// 0 turns the scan off (default: the sandbox default).
    #[arg(long, value_name = "BYTES")]
    pagemap_keep_resident: Option<usize>,
    /// Measure throughput through a pool of this many worker processes too (0: skip).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Make instances ahead of their calls (default: the sandbox default).
    #[arg(long)]
    instances_ahead: Option<bool>,
    /// Warm-up calls before measuring.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
}

pub(super) fn run(cli: &Cli, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.command {
        BenchCommand::Sandbox(bench) => sandbox(cli, bench),
        BenchCommand::TrainStep(bench) => train_step::run(bench),
        BenchCommand::Generate(bench) => generate::run(bench),
        BenchCommand::Device(bench) => device::run(bench),
        BenchCommand::MakeModel(args) => make_model::run(args),
    }
}

fn sandbox(cli: &Cli, bench: &SandboxBench) -> anyhow::Result<()> {
    if bench.calls == 0 {
        return Err(usage("--calls must be at least 1"));
    }
    let defaults = SandboxConfig::default();
    let sandbox = open_sandbox(
        cli,
        SandboxConfig {
            memory_keep_resident: bench.keep_resident.unwrap_or(defaults.memory_keep_resident),
            pagemap_keep_resident: match bench.pagemap_keep_resident {
                Some(0) => None,
                Some(bytes) => Some(bytes),
                None => defaults.pagemap_keep_resident,
            },
            instances_ahead: bench.instances_ahead.unwrap_or(defaults.instances_ahead),
            ..defaults
        },
        false,
    )?;
    // An unknown tool is the user's to fix.
    sandbox
        .tool(&bench.tool)
        .map_err(|e| usage(e.to_string()))?;
    let mut limits = sod_sandbox::Limits::default();
    if let Some(fuel) = bench.fuel {
        limits.fuel = fuel;
    }
    if let Some(mb) = bench.memory_mb {
        limits.memory_bytes = mb.saturating_mul(1 << 20);
    }
    let workers = if bench.workers > 0 {
        let tools_dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
        let mut command = WorkerPool::current_exe_command(&tools_dir, 0)?;
        if let Some(ahead) = bench.instances_ahead {
            command.instances_ahead = ahead;
        }
        Some((command, bench.workers))
    } else {
        None
    };
    let config = sod_bench::sandbox::SandboxBench {
        tool: bench.tool.clone(),
        arguments: bench.arguments.clone(),
        calls: bench.calls,
        warmup: bench.warmup,
        threads: bench.threads.clone(),
        options: CallOptions {
            limits: Some(limits),
            ..CallOptions::default()
        },
        baseline: bench.baseline.clone(),
        baseline_calls: bench.baseline_calls,
        workers,
    };
    print!("{}", sod_bench::sandbox::run(&sandbox, &config)?);
    Ok(())
}
