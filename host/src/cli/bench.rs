//! `sod bench ...`: speed measurements, printed as markdown for docs/benchmarks.md.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, SandboxConfig, Tool};

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

/// Runs a baseline command line (a program and its own arguments, split on whitespace) with `args` appended as
/// `--flag value` pairs, its stderr shown, and returns the last JSON line it printed.
fn baseline_json(command: &str, args: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
    let mut words = command.split_whitespace();
    let program = words.next().ok_or_else(|| usage("--baseline is empty"))?;
    let mut child = std::process::Command::new(program);
    child.args(words);
    for (flag, value) in args {
        child.arg(flag).arg(value);
    }
    let output = child
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run the baseline {program:?}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!("the baseline failed with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("the baseline printed no JSON line"))?;
    Ok(serde_json::from_str(line)?)
}

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

/// Latency percentiles of a sorted sample.
pub(crate) struct Percentiles {
    pub median: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

pub(crate) fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort();
    let n = samples.len().max(1);
    let at = |q: f64| {
        samples[((q * (n as f64 - 1.0)).round() as usize).min(samples.len().saturating_sub(1))]
    };
    let total: Duration = samples.iter().sum();
    Percentiles {
        median: at(0.5),
        p99: at(0.99),
        mean: total / n as u32,
    }
}

fn timed_calls(
    sandbox: &Sandbox,
    tool: &Tool,
    arguments: &str,
    calls: usize,
    options: &CallOptions,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let outcome = sandbox.call(tool, arguments, options);
        samples.push(start.elapsed());
        if outcome.kind != OutcomeKind::Ok {
            anyhow::bail!("benchmark call did not succeed: {}", outcome.to_json());
        }
    }
    Ok(samples)
}

/// Times `command` (program then arguments, split on the first two spaces so a Python snippet stays whole)
/// run as a subprocess `calls` times.
fn subprocess_baseline(command: &str, calls: usize) -> anyhow::Result<Option<Percentiles>> {
    let mut parts = command.splitn(3, ' ');
    let Some(program) = parts.next().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let args: Vec<&str> = parts.collect();
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        let output = std::process::Command::new(program).args(&args).output()?;
        samples.push(start.elapsed());
        if !output.status.success() {
            anyhow::bail!(
                "baseline {command:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(Some(percentiles(&mut samples)))
}

/// Runs `work` on `threads` threads at once and returns the first error, if any.
fn on_threads<T: Send>(
    threads: usize,
    work: impl Fn() -> anyhow::Result<T> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(&work)).collect();
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("benchmark thread panicked")))?;
        }
        Ok(())
    })
}

/// Throughput through a pool of `workers` processes, with as many calling threads.
fn pool_throughput(cli: &Cli, bench: &SandboxBench, options: &CallOptions) -> anyhow::Result<f64> {
    let tools_dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
    let mut command = sod_sandbox::workers::WorkerPool::current_exe_command(&tools_dir, 0)?;
    if let Some(ahead) = bench.instances_ahead {
        command.instances_ahead = ahead;
    }
    let pool = sod_sandbox::workers::WorkerPool::start(command, bench.workers)?;
    let run = |calls: usize| -> anyhow::Result<()> {
        for _ in 0..calls {
            let outcome = pool.call(&bench.tool, &bench.arguments, options);
            if outcome.kind != OutcomeKind::Ok {
                anyhow::bail!("benchmark call did not succeed: {}", outcome.to_json());
            }
        }
        Ok(())
    };
    // Warm-up: every worker loads and compiles (or maps from the cache) the tool.
    on_threads(pool.len(), || run(bench.warmup.max(1)))?;
    let start = Instant::now();
    on_threads(pool.len(), || run(bench.calls))?;
    Ok((pool.len() * bench.calls) as f64 / start.elapsed().as_secs_f64())
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
    let tool = sandbox
        .tool(&bench.tool)
        .map_err(|e| usage(e.to_string()))?;
    let mut limits = sod_sandbox::Limits::default();
    if let Some(fuel) = bench.fuel {
        limits.fuel = fuel;
    }
    if let Some(mb) = bench.memory_mb {
        limits.memory_bytes = mb.saturating_mul(1 << 20);
    }
    let options = CallOptions {
        limits: Some(limits),
        ..CallOptions::default()
    };
    // Warm-up: page in the compiled code and the pooling allocator's slots.
    timed_calls(&sandbox, &tool, &bench.arguments, bench.warmup, &options)?;
    let mut samples = timed_calls(&sandbox, &tool, &bench.arguments, bench.calls, &options)?;
    let latency = percentiles(&mut samples);
    println!(
        "### Fresh-instance call: `{}` {}",
        bench.tool, bench.arguments
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| calls | {} |", bench.calls);
    println!(
        "| median latency | {:.1} µs |",
        latency.median.as_secs_f64() * 1e6
    );
    println!(
        "| p99 latency | {:.1} µs |",
        latency.p99.as_secs_f64() * 1e6
    );
    println!(
        "| mean latency | {:.1} µs |",
        latency.mean.as_secs_f64() * 1e6
    );
    let (used, set_aside) = sandbox.instances_ahead_counts();
    println!("| calls on an instance made ahead (set aside) | {used} ({set_aside}) |");
    if let Some(baseline) = subprocess_baseline(&bench.baseline, bench.baseline_calls)? {
        println!(
            "| baseline `{}` per call, median | {:.1} µs |",
            bench.baseline,
            baseline.median.as_secs_f64() * 1e6
        );
        println!(
            "| baseline p99 | {:.1} µs |",
            baseline.p99.as_secs_f64() * 1e6
        );
    }
    for &threads in &bench.threads {
        let threads = threads.max(1);
        let per_thread = bench.calls;
        let start = Instant::now();
        on_threads(threads, || {
            timed_calls(&sandbox, &tool, &bench.arguments, per_thread, &options)
        })?;
        let elapsed = start.elapsed();
        let calls = (threads * per_thread) as f64;
        println!(
            "| throughput, {threads} thread{} | {:.0} calls/s |",
            if threads == 1 { "" } else { "s" },
            calls / elapsed.as_secs_f64()
        );
    }
    if bench.workers > 0 {
        let rate = pool_throughput(cli, bench, &options)?;
        println!(
            "| throughput, {} worker process{} | {rate:.0} calls/s |",
            bench.workers,
            if bench.workers == 1 { "" } else { "es" }
        );
    }
    Ok(())
}
