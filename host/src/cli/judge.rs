//! `sod judge`: scores a file of solutions against a file of problems with the `judge` tool.
//!
//! The files, the parallel judge calls, the result rows and the summary are
//! [`sod_train::judging`]'s (see there for the formats); this file reads the command line and
//! shows progress.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sod_judge_protocol::{DEFAULT_FUEL_PER_TEST, Verdict};
use sod_sandbox::{Sandbox, SandboxConfig, Tool};
use sod_train::judging::{self, BatchSettings, Summary};

use super::{Cli, open_sandbox, usage};

/// `sod judge --problems FILE --solutions FILE`
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// Problems, JSON Lines `{id, prompt, entry_point, tests}` (see shared/data/benchmarks).
    #[arg(long, value_name = "FILE")]
    problems: PathBuf,
    /// Solutions, JSON Lines `{id, completion}` or `{id, code}`.
    #[arg(long, value_name = "FILE")]
    solutions: PathBuf,
    /// Solutions judged at once. Default: the number of CPUs.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Write `results.jsonl` (one row per solution, in input order) and `summary.json` here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Fuel of each test (deterministic time limit; 5e9 is about one second of CPython).
    #[arg(long, value_name = "FUEL", default_value_t = DEFAULT_FUEL_PER_TEST)]
    fuel_per_test: u64,
    /// Memory of each test in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    memory_mb: u64,
    /// Stop judging a solution at its first failing test.
    #[arg(long)]
    stop_on_first_failure: bool,
    /// Accept numbers written with a point or an exponent within this absolute or relative error.
    #[arg(long, value_name = "T")]
    float_tolerance: Option<f64>,
    /// Run seed (the randomness each program sees derives from it and the solution's id).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A one-line progress bar on a terminal's stderr; silent otherwise.
struct Progress {
    total: usize,
    done: usize,
    passed: usize,
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            passed: 0,
            started: Instant::now(),
            last_draw: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, passed: bool) {
        self.done += 1;
        self.passed += usize::from(passed);
        let due = self
            .last_draw
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(100));
        if self.enabled && (due || self.done == self.total) {
            self.draw();
            self.last_draw = Some(Instant::now());
        }
    }

    fn draw(&self) {
        const WIDTH: usize = 30;
        let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        let bar: String = "#".repeat(filled) + &".".repeat(WIDTH - filled);
        let mut stderr = std::io::stderr().lock();
        // A progress bar that cannot be drawn is not worth failing the run for.
        let _ = write!(
            stderr,
            "\rjudging [{bar}] {}/{} solutions, {} passed, {:.0}s",
            self.done,
            self.total,
            self.passed,
            self.started.elapsed().as_secs_f64()
        );
        if self.done == self.total {
            let _ = writeln!(stderr);
        }
        let _ = stderr.flush();
    }
}

/// Loads a tool now, with a hint when it is missing.
fn load(sandbox: &Sandbox, name: &str) -> anyhow::Result<Tool> {
    sandbox.tool(name).with_context(|| {
        format!("cannot load the `{name}` tool; build the tools with `cargo xtask build-tools`")
    })
}

pub(super) fn run(cli: &Cli, args: &JudgeArgs) -> anyhow::Result<()> {
    if args.fuel_per_test == 0 || args.memory_mb == 0 {
        return Err(usage("--fuel-per-test and --memory-mb must be positive"));
    }
    if let Some(tolerance) = args.float_tolerance
        && !(tolerance.is_finite() && tolerance >= 0.0)
    {
        return Err(usage("--float-tolerance must be a finite number >= 0"));
    }
    let problems = judging::read_problems(&args.problems).map_err(|e| usage(e.0))?;
    let solutions = judging::read_solutions(&args.solutions, &problems).map_err(|e| usage(e.0))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, 256);
    let settings = BatchSettings {
        fuel_per_test: args.fuel_per_test,
        memory_bytes_per_test: args.memory_mb.saturating_mul(1 << 20),
        stop_on_first_failure: args.stop_on_first_failure,
        float_tolerance: args.float_tolerance,
        seed: args.seed,
    };
    let config = SandboxConfig {
        // Each job holds a judge instance and a python instance.
        max_instances: u32::try_from(jobs * 2 + 8).unwrap_or(u32::MAX).max(128),
        max_memory_bytes: settings.memory_bytes_per_test.max(4 << 30),
        seed: args.seed,
        ..SandboxConfig::default()
    };
    let sandbox = open_sandbox(cli, config, false)?;
    // Load both tools before the first call: loading python (compiling it the first time) must
    // not happen inside a judge call, under its wall-clock backstop.
    let judge = load(&sandbox, "judge")?;
    load(&sandbox, "python")?;

    let started = Instant::now();
    let progress = Mutex::new(Progress::new(solutions.len()));
    let done = |row: &judging::ResultRow| {
        progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .advance(row.report.verdict == Verdict::Accepted);
    };
    let rows = judging::judge_all(
        &sandbox, &judge, &problems, &solutions, &settings, jobs, &done,
    )
    .map_err(|e| usage(e.0))?;
    let elapsed = started.elapsed();
    let summary = Summary::of(&rows);
    if let Some(dir) = &args.out {
        judging::write_results(dir, &rows, &summary)?;
    }
    let breakdown: Vec<String> = summary
        .verdicts
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect();
    eprintln!(
        "judged {} solutions in {:.1}s with {jobs} job(s): {}",
        rows.len(),
        elapsed.as_secs_f64(),
        breakdown.join(", ")
    );
    let unsolved = judging::unsolved(&problems, &solutions);
    if unsolved > 0 {
        eprintln!("note: {unsolved} problem(s) have no solution and are not counted");
    }
    let errors = summary.count(Verdict::InternalError);
    if errors > 0 {
        eprintln!(
            "warning: {errors} solution(s) could not be judged (internal_error): see their `tests` details"
        );
    }
    println!("passed {}/{}", summary.passed, summary.total);
    Ok(())
}
