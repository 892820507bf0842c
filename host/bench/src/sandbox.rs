//! `sod bench sandbox`: latency and throughput of fresh-instance tool calls (each call a new instance of the
//! tool's component, as a rollout makes them), beside a subprocess per call, the usual alternative to a sandbox.

use std::fmt;
use std::time::{Duration, Instant};

use sod_sandbox::workers::{WorkerCommand, WorkerPool};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, Tool};

use crate::common::{Percentiles, on_threads, percentiles, subprocess_latency};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SandboxBench {
    /// The tool called.
    pub tool: String,
    /// The arguments of every call (JSON).
    pub arguments: String,
    /// Calls per measurement, after the warm-up (at least 1).
    pub calls: usize,
    /// Warm-up calls before each measurement.
    pub warmup: usize,
    /// Thread counts to measure throughput with.
    pub threads: Vec<usize>,
    /// The limits and seed of every call.
    pub options: CallOptions,
    /// A command run as a subprocess per call for comparison (program, then its arguments, split on the first two
    /// spaces so a Python snippet stays whole); empty to skip.
    pub baseline: String,
    /// Subprocess calls for the baseline.
    pub baseline_calls: usize,
    /// Throughput through a pool of worker processes too: how they start, and how many (none: skip).
    pub workers: Option<(WorkerCommand, usize)>,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct SandboxReport {
    pub tool: String,
    pub arguments: String,
    pub calls: usize,
    /// Latency of one call on one thread.
    pub latency: Percentiles,
    /// Calls that ran on an instance made ahead, and instances set aside.
    pub instances_ahead: (u64, u64),
    /// The subprocess baseline: its command and latency.
    pub baseline: Option<(String, Percentiles)>,
    /// Calls per second with each thread count.
    pub throughput: Vec<(usize, f64)>,
    /// Calls per second through the worker pool, and its size.
    pub workers: Option<(usize, f64)>,
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

/// Throughput through a pool of `size` processes, with as many calling threads.
fn pool_throughput(
    bench: &SandboxBench,
    command: &WorkerCommand,
    size: usize,
) -> anyhow::Result<(usize, f64)> {
    let pool = WorkerPool::start(command.clone(), size)?;
    let run = |calls: usize| -> anyhow::Result<()> {
        for _ in 0..calls {
            let outcome = pool.call(&bench.tool, &bench.arguments, &bench.options);
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
    Ok((
        pool.len(),
        (pool.len() * bench.calls) as f64 / start.elapsed().as_secs_f64(),
    ))
}

/// Measures `bench` on `sandbox` (and on its worker pool, if any).
pub fn run(sandbox: &Sandbox, bench: &SandboxBench) -> anyhow::Result<SandboxReport> {
    anyhow::ensure!(bench.calls >= 1, "a sandbox bench needs at least one call");
    let tool = sandbox.tool(&bench.tool)?;
    // Warm-up: page in the compiled code and the pooling allocator's slots.
    timed_calls(
        sandbox,
        &tool,
        &bench.arguments,
        bench.warmup,
        &bench.options,
    )?;
    let mut samples = timed_calls(
        sandbox,
        &tool,
        &bench.arguments,
        bench.calls,
        &bench.options,
    )?;
    let latency = percentiles(&mut samples);
    let instances_ahead = sandbox.instances_ahead_counts();
    let baseline = subprocess_latency(&bench.baseline, bench.baseline_calls)?
        .map(|p| (bench.baseline.clone(), p));
    let mut throughput = Vec::new();
    for &threads in &bench.threads {
        let threads = threads.max(1);
        let start = Instant::now();
        on_threads(threads, || {
            timed_calls(
                sandbox,
                &tool,
                &bench.arguments,
                bench.calls,
                &bench.options,
            )
        })?;
        let calls = (threads * bench.calls) as f64;
        throughput.push((threads, calls / start.elapsed().as_secs_f64()));
    }
    let workers = match &bench.workers {
        Some((command, size)) if *size > 0 => Some(pool_throughput(bench, command, *size)?),
        _ => None,
    };
    Ok(SandboxReport {
        tool: bench.tool.clone(),
        arguments: bench.arguments.clone(),
        calls: bench.calls,
        latency,
        instances_ahead,
        baseline,
        throughput,
        workers,
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The markdown table of docs/benchmarks.md.
impl fmt::Display for SandboxReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "### Fresh-instance call: `{}` {}",
            self.tool, self.arguments
        )?;
        writeln!(f)?;
        writeln!(f, "| measure | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(f, "| calls | {} |", self.calls)?;
        writeln!(
            f,
            "| median latency | {:.1} µs |",
            micros(self.latency.median)
        )?;
        writeln!(f, "| p99 latency | {:.1} µs |", micros(self.latency.p99))?;
        writeln!(f, "| mean latency | {:.1} µs |", micros(self.latency.mean))?;
        let (used, set_aside) = self.instances_ahead;
        writeln!(
            f,
            "| calls on an instance made ahead (set aside) | {used} ({set_aside}) |"
        )?;
        if let Some((command, baseline)) = &self.baseline {
            writeln!(
                f,
                "| baseline `{command}` per call, median | {:.1} µs |",
                micros(baseline.median)
            )?;
            writeln!(f, "| baseline p99 | {:.1} µs |", micros(baseline.p99))?;
        }
        for (threads, rate) in &self.throughput {
            writeln!(
                f,
                "| throughput, {threads} thread{} | {rate:.0} calls/s |",
                if *threads == 1 { "" } else { "s" }
            )?;
        }
        if let Some((size, rate)) = self.workers {
            writeln!(
                f,
                "| throughput, {size} worker process{} | {rate:.0} calls/s |",
                if size == 1 { "" } else { "es" }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_the_rows_docs_quote() {
        let p = Percentiles {
            median: Duration::from_micros(120),
            p99: Duration::from_micros(300),
            mean: Duration::from_micros(150),
        };
        let report = SandboxReport {
            tool: "calculator".into(),
            arguments: "{}".into(),
            calls: 10,
            latency: p,
            instances_ahead: (9, 1),
            baseline: Some(("python3 -c print(1)".into(), p)),
            throughput: vec![(1, 1000.0), (2, 1900.0)],
            workers: Some((2, 1500.0)),
        };
        let text = report.to_string();
        for row in [
            "| median latency | 120.0 µs |",
            "| calls on an instance made ahead (set aside) | 9 (1) |",
            "| baseline `python3 -c print(1)` per call, median | 120.0 µs |",
            "| throughput, 1 thread | 1000 calls/s |",
            "| throughput, 2 threads | 1900 calls/s |",
            "| throughput, 2 worker processes | 1500 calls/s |",
        ] {
            assert!(text.contains(row), "{row} not in\n{text}");
        }
    }
}
