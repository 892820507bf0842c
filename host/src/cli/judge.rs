//! `sod judge`: scores a file of solutions against a file of problems with the `judge` tool.
//!
//! Problems are JSON Lines in the schema of the shared benchmarks, `{id, prompt, entry_point,
//! tests}`, where `tests` is a Python test program or a list of `{input, output}` stdin/stdout
//! cases. A solution row is `{id, code}` (a whole program) or `{id, completion}`: appended to the
//! problem's prompt when the problem has an entry point (HumanEval: the prompt is the function's
//! signature and docstring), used as the whole program otherwise. Several rows may share an id
//! (several samples of one problem); each is judged on its own.
//!
//! Every solution is one call of the `judge` tool, which runs each test in a fresh instance of
//! the `python` tool. Calls run on `--jobs` threads; each has a call key derived from the
//! solution's id and sample number, so results do not depend on the number of threads, the
//! order in which calls finish or the machine's load.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use sod_sandbox::{CallOptions, Limits, Outcome, OutcomeKind, Sandbox, SandboxConfig, Tool};

use super::{Cli, open_sandbox, usage};

/// Fuel the judge itself may spend per test (building the harness, comparing outputs), on top
/// of the tests' own fuel; measured use is far below it.
const JUDGE_FUEL_PER_TEST: u64 = 200_000_000;
/// Fuel the judge itself may spend per call, on top of the per-test allowance.
const JUDGE_FUEL_BASE: u64 = 1_000_000_000;
/// Output limit of a judge call: its JSON report.
const REPORT_BYTES: u64 = 4 << 20;

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
    #[arg(long, value_name = "FUEL", default_value_t = 10_000_000_000)]
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

/// A problem: its prompt, whether it has an entry point, and its tests as given.
#[derive(Debug)]
struct Problem {
    prompt: String,
    has_entry_point: bool,
    tests: Value,
    test_count: usize,
}

/// One solution to judge.
#[derive(Debug)]
struct Solution {
    id: String,
    sample: usize,
    code: String,
}

/// The `id` of a row as text (ids may be strings or numbers).
fn row_id(row: &Value) -> Option<String> {
    match row.get("id")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The JSON objects of a JSON Lines file, with their line numbers; blank lines are skipped.
fn read_jsonl(path: &Path) -> anyhow::Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(line).map_err(|e| {
            usage(format!(
                "{}:{}: not a JSON object: {e}",
                path.display(),
                index + 1
            ))
        })?;
        if !row.is_object() {
            return Err(usage(format!(
                "{}:{}: not a JSON object",
                path.display(),
                index + 1
            )));
        }
        rows.push((index + 1, row));
    }
    Ok(rows)
}

fn read_problems(path: &Path) -> anyhow::Result<HashMap<String, Problem>> {
    let mut problems = HashMap::new();
    for (line, row) in read_jsonl(path)? {
        let at = || format!("{}:{line}", path.display());
        let id = row_id(&row).ok_or_else(|| usage(format!("{}: missing `id` (a string)", at())))?;
        let tests = row.get("tests").cloned().unwrap_or(Value::Null);
        let test_count = match &tests {
            Value::String(program) if !program.trim().is_empty() => 1,
            Value::Array(cases) if !cases.is_empty() => cases.len(),
            _ => {
                return Err(usage(format!(
                    "{}: `tests` must be a test program or a non-empty list of {{input, output}}",
                    at()
                )));
            }
        };
        let prompt = match row.get("prompt") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(prompt)) => prompt.clone(),
            Some(_) => return Err(usage(format!("{}: `prompt` must be a string", at()))),
        };
        let has_entry_point =
            matches!(row.get("entry_point"), Some(Value::String(e)) if !e.is_empty());
        let problem = Problem {
            prompt,
            has_entry_point,
            tests,
            test_count,
        };
        if problems.insert(id.clone(), problem).is_some() {
            return Err(usage(format!("{}: duplicate problem id {id:?}", at())));
        }
    }
    Ok(problems)
}

fn read_solutions(
    path: &Path,
    problems: &HashMap<String, Problem>,
) -> anyhow::Result<Vec<Solution>> {
    let mut samples: HashMap<String, usize> = HashMap::new();
    let mut solutions = Vec::new();
    for (line, row) in read_jsonl(path)? {
        let at = || format!("{}:{line}", path.display());
        let id = row_id(&row).ok_or_else(|| usage(format!("{}: missing `id` (a string)", at())))?;
        let problem = problems
            .get(&id)
            .ok_or_else(|| usage(format!("{}: no problem has id {id:?}", at())))?;
        let text = |field: &str| match row.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(usage(format!("{}: `{field}` must be a string", at()))),
        };
        let code = match (text("code")?, text("completion")?) {
            (Some(code), None) => code,
            (None, Some(completion)) if problem.has_entry_point => {
                format!("{}{completion}", problem.prompt)
            }
            (None, Some(completion)) => completion,
            (Some(_), Some(_)) => {
                return Err(usage(format!(
                    "{}: give either `code` or `completion`, not both",
                    at()
                )));
            }
            (None, None) => {
                return Err(usage(format!(
                    "{}: a solution needs `code` or `completion`",
                    at()
                )));
            }
        };
        let sample = samples.entry(id.clone()).or_default();
        solutions.push(Solution {
            id,
            sample: *sample,
            code,
        });
        *sample += 1;
    }
    Ok(solutions)
}

/// Limits of the judge call for a problem with `tests` tests and `arguments_len` bytes of
/// arguments: the tests' budget plus the judge's own allowance. Its memory limit is the tests'
/// (a child's is clamped to its caller's), raised for large arguments, which the judge holds a
/// few copies of. The wall-clock backstop is generous: fuel is the real limit.
fn judge_limits(args: &JudgeArgs, tests: usize, arguments_len: usize) -> Limits {
    let tests_u64 = tests as u64;
    let fuel = args
        .fuel_per_test
        .saturating_add(JUDGE_FUEL_PER_TEST)
        .saturating_mul(tests_u64)
        .saturating_add(JUDGE_FUEL_BASE);
    let seconds_per_test = args.fuel_per_test / Limits::FUEL_PER_SECOND + 1;
    let wall_ms_per_test = seconds_per_test.saturating_mul(20_000).max(60_000);
    Limits {
        fuel,
        memory_bytes: args.memory_mb.saturating_mul(1 << 20).max(
            (arguments_len as u64)
                .saturating_mul(8)
                .saturating_add(64 << 20),
        ),
        output_bytes: REPORT_BYTES,
        wall_ms: wall_ms_per_test
            .saturating_mul(tests_u64)
            .saturating_add(60_000),
        ..Limits::default()
    }
}

/// The judge tool's arguments for one solution.
fn judge_arguments(args: &JudgeArgs, problem: &Problem, solution: &Solution) -> String {
    let mut arguments = json!({
        "code": solution.code,
        "tests": problem.tests,
        "fuel_per_test": args.fuel_per_test,
        "memory_bytes_per_test": args.memory_mb.saturating_mul(1 << 20),
        "stop_on_first_failure": args.stop_on_first_failure,
    });
    if let Some(tolerance) = args.float_tolerance {
        arguments["float_tolerance"] = json!(tolerance);
    }
    arguments.to_string()
}

/// The result row of one solution: the judge's report, or why there is none.
fn result_row(solution: &Solution, tests: usize, outcome: &Outcome) -> Value {
    let mut row = json!({"id": solution.id, "sample": solution.sample});
    let report = if outcome.kind == OutcomeKind::Ok {
        serde_json::from_str::<Value>(&outcome.output)
            .ok()
            .filter(Value::is_object)
    } else {
        None
    };
    match report {
        Some(Value::Object(report)) => {
            for (key, value) in report {
                row[key] = value;
            }
        }
        _ => {
            // The judge itself did not finish: its whole budget ran out, or the sandbox failed.
            let verdict = match outcome.kind {
                OutcomeKind::TimeLimit => "time_limit",
                OutcomeKind::MemoryLimit => "memory_limit",
                _ => "internal_error",
            };
            let message = outcome
                .message
                .clone()
                .unwrap_or_else(|| "the judge's report is not a JSON object".to_string());
            row["verdict"] = json!(verdict);
            row["passed"] = json!(0);
            row["total"] = json!(tests);
            row["first_failure"] = json!(0);
            row["fuel_used"] = json!(outcome.fuel_used);
            row["tests"] = json!([]);
            row["error"] = json!(format!("judge call ended {}: {message}", outcome.kind));
        }
    }
    row
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
    let problems = read_problems(&args.problems)?;
    let solutions = read_solutions(&args.solutions, &problems)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, 256);
    let config = SandboxConfig {
        // Each job holds a judge instance and a python instance.
        max_instances: u32::try_from(jobs * 2 + 8).unwrap_or(u32::MAX).max(128),
        max_memory_bytes: args.memory_mb.saturating_mul(1 << 20).max(4 << 30),
        seed: args.seed,
        ..SandboxConfig::default()
    };
    let sandbox = open_sandbox(cli, config, false)?;
    // Load both tools before the first call: loading python (compiling it the first time) must
    // not happen inside a judge call, under its wall-clock backstop.
    let judge = load(&sandbox, "judge")?;
    load(&sandbox, "python")?;

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<Value>>> = Mutex::new(vec![None; solutions.len()]);
    let progress = Mutex::new(Progress::new(solutions.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(solutions.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(solution) = solutions.get(index) else {
                        break;
                    };
                    let Some(problem) = problems.get(&solution.id) else {
                        break;
                    };
                    let arguments = judge_arguments(args, problem, solution);
                    let options = CallOptions {
                        limits: Some(judge_limits(args, problem.test_count, arguments.len())),
                        seed: Some(args.seed),
                        call_key: Some(format!("judge/{}/{}", solution.id, solution.sample)),
                        ..CallOptions::default()
                    };
                    let outcome = sandbox.call(&judge, &arguments, &options);
                    let row = result_row(solution, problem.test_count, &outcome);
                    let passed = row["verdict"] == "accepted";
                    rows.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(row);
                    progress
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .advance(passed);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let rows: Vec<Value> = rows
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    if rows.len() != solutions.len() {
        anyhow::bail!(
            "only {} of {} solutions were judged",
            rows.len(),
            solutions.len()
        );
    }

    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        let verdict = row["verdict"].as_str().unwrap_or("internal_error");
        *verdicts.entry(verdict.to_string()).or_default() += 1;
    }
    let passed = verdicts.get("accepted").copied().unwrap_or(0);
    let unsolved = problems.len().saturating_sub(
        solutions
            .iter()
            .map(|s| s.id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len(),
    );
    if let Some(dir) = &args.out {
        write_results(dir, &rows, passed, &verdicts)?;
    }
    let breakdown: Vec<String> = verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    eprintln!(
        "judged {} solutions in {:.1}s with {jobs} job(s): {}",
        rows.len(),
        elapsed.as_secs_f64(),
        breakdown.join(", ")
    );
    if unsolved > 0 {
        eprintln!("note: {unsolved} problem(s) have no solution and are not counted");
    }
    if let Some(errors) = verdicts.get("internal_error") {
        eprintln!(
            "warning: {errors} solution(s) could not be judged (internal_error): see their `tests` details"
        );
    }
    println!("passed {passed}/{}", rows.len());
    Ok(())
}

fn write_results(
    dir: &Path,
    rows: &[Value],
    passed: usize,
    verdicts: &BTreeMap<String, usize>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    let results = dir.join("results.jsonl");
    std::fs::write(&results, text)
        .with_context(|| format!("cannot write {}", results.display()))?;
    let summary = json!({"passed": passed, "total": rows.len(), "verdicts": verdicts});
    let path = dir.join("summary.json");
    std::fs::write(
        &path,
        format!("{}\n", serde_json::to_string_pretty(&summary)?),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> JudgeArgs {
        JudgeArgs {
            problems: PathBuf::new(),
            solutions: PathBuf::new(),
            jobs: None,
            out: None,
            fuel_per_test: 10_000_000_000,
            memory_mb: 256,
            stop_on_first_failure: false,
            float_tolerance: None,
            seed: 0,
        }
    }

    /// A scratch directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("sod-judge-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch directory");
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn completions_follow_the_prompt_only_with_an_entry_point() {
        let dir = Scratch::new("completions");
        let problems = write(
            dir.path(),
            "p.jsonl",
            concat!(
                r#"{"id": "he", "prompt": "def f():\n", "entry_point": "f", "tests": "check(f)"}"#,
                "\n\n",
                r#"{"id": "io", "prompt": "Read a number.", "entry_point": null, "tests": [{"input": "1", "output": "1"}]}"#,
                "\n"
            ),
        );
        let problems = read_problems(&problems).expect("problems");
        assert_eq!(problems["io"].test_count, 1);
        let solutions = write(
            dir.path(),
            "s.jsonl",
            concat!(
                r#"{"id": "he", "completion": "    return 1\n"}"#,
                "\n",
                r#"{"id": "io", "completion": "print(input())"}"#,
                "\n",
                r#"{"id": "he", "code": "def f():\n    return 2\n"}"#,
                "\n"
            ),
        );
        let solutions = read_solutions(&solutions, &problems).expect("solutions");
        assert_eq!(solutions[0].code, "def f():\n    return 1\n");
        assert_eq!(solutions[1].code, "print(input())");
        assert_eq!(solutions[2].code, "def f():\n    return 2\n");
        let samples: Vec<usize> = solutions.iter().map(|s| s.sample).collect();
        assert_eq!(samples, [0, 0, 1]);
    }

    #[test]
    fn bad_rows_are_usage_errors_with_their_line() {
        let dir = Scratch::new("bad-rows");
        let problems = write(
            dir.path(),
            "p.jsonl",
            r#"{"id": "a", "tests": "assert True"}"#,
        );
        let problems = read_problems(&problems).expect("problems");
        for (text, expected) in [
            (r#"{"id": "zz", "code": "x"}"#, "no problem has id"),
            (r#"{"id": "a"}"#, "needs `code` or `completion`"),
            (r#"{"id": "a", "code": "x", "completion": "y"}"#, "not both"),
            (r#"{"code": "x"}"#, "missing `id`"),
            ("[1]", "not a JSON object"),
            ("{", "not a JSON object"),
        ] {
            let path = write(dir.path(), "s.jsonl", &format!("\n{text}\n"));
            let err = read_solutions(&path, &problems).expect_err(text);
            assert!(err.downcast_ref::<super::super::UsageError>().is_some());
            let message = err.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("s.jsonl:2"), "{message}");
        }
        let bad = write(dir.path(), "bad.jsonl", r#"{"id": "b", "tests": []}"#);
        assert!(read_problems(&bad).is_err());
        let twice = write(
            dir.path(),
            "twice.jsonl",
            "{\"id\": \"b\", \"tests\": \"t\"}\n{\"id\": \"b\", \"tests\": \"t\"}\n",
        );
        assert!(
            read_problems(&twice)
                .expect_err("duplicate")
                .to_string()
                .contains("duplicate")
        );
    }

    #[test]
    fn the_judge_budget_covers_every_test() {
        let limits = judge_limits(&args(), 3, 1000);
        assert_eq!(
            limits.fuel,
            3 * (10_000_000_000 + JUDGE_FUEL_PER_TEST) + JUDGE_FUEL_BASE
        );
        assert_eq!(limits.memory_bytes, 256 << 20);
        // Large arguments raise the judge's own memory limit, never below the tests'.
        assert_eq!(
            judge_limits(&args(), 1, 100 << 20).memory_bytes,
            (800 << 20) + (64 << 20)
        );
        assert!(limits.wall_ms >= 3 * 60_000);
        let arguments: Value = serde_json::from_str(&judge_arguments(
            &JudgeArgs {
                float_tolerance: Some(1e-6),
                ..args()
            },
            &Problem {
                prompt: String::new(),
                has_entry_point: false,
                tests: json!([{"input": "", "output": "1"}]),
                test_count: 1,
            },
            &Solution {
                id: "x".into(),
                sample: 0,
                code: "print(1)".into(),
            },
        ))
        .expect("JSON");
        assert_eq!(arguments["float_tolerance"], 1e-6);
        assert_eq!(arguments["memory_bytes_per_test"], 256 << 20);
        assert_eq!(arguments["tests"][0]["output"], "1");
    }

    #[test]
    fn failed_judge_calls_become_rows() {
        let solution = Solution {
            id: "p".into(),
            sample: 2,
            code: String::new(),
        };
        let outcome = Outcome {
            kind: OutcomeKind::TimeLimit,
            output: String::new(),
            message: Some("fuel limit of 5 exhausted".into()),
            error_code: None,
            exit_status: None,
            fuel_used: 5,
            tool: "judge".into(),
            artifact: String::new(),
            files: Default::default(),
        };
        let row = result_row(&solution, 4, &outcome);
        assert_eq!(row["verdict"], "time_limit");
        assert_eq!(row["total"], 4);
        assert_eq!(row["sample"], 2);
        assert!(
            row["error"]
                .as_str()
                .unwrap_or_default()
                .contains("fuel limit")
        );
        let ok = Outcome {
            kind: OutcomeKind::Ok,
            output: r#"{"verdict":"accepted","passed":1,"total":1,"first_failure":null,"fuel_used":9,"tests":[]}"#.into(),
            ..outcome
        };
        let row = result_row(&solution, 1, &ok);
        assert_eq!(row["verdict"], "accepted");
        assert_eq!(row["id"], "p");
        assert_eq!(row["fuel_used"], 9);
    }
}
