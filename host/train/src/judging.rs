//! Judging code with the `judge` tool from the host: the call (arguments and limits, shared by the
//! code reward and `sod judge`) and the batch judging behind `sod judge` (its problem and solution
//! files, parallel calls, result rows and summary).
//!
//! Problems are JSON Lines in the schema of the shared benchmarks, `{id, prompt, entry_point,
//! tests}`, where `tests` is a Python test program or a list of `{input, output}` stdin/stdout
//! cases. A solution row is `{id, code}` (a whole program) or `{id, completion}`: appended to the
//! problem's prompt when the problem has an entry point (HumanEval: the prompt is the function's
//! signature and docstring), used as the whole program otherwise. Several rows may share an id
//! (several samples of one problem); each is judged on its own.
//!
//! Every solution is one call of the `judge` tool, which runs each test in a fresh instance of
//! the `python` tool. Calls run on `jobs` threads; each has a call key derived from the
//! solution's id and sample number, so results do not depend on the number of threads, the
//! order in which calls finish or the machine's load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::Value;
use sod_judge_protocol::{Args, Report, TestSet, Verdict};
use sod_sandbox::{CallOptions, Limits, Outcome, OutcomeKind, Sandbox, Tool};

use crate::error::{Result, TrainError};

/// The judge tool's arguments, serialised, and the limits its call needs to cover every test
/// ([`sod_judge_protocol::CallBudget`]).
pub fn judge_call<T: Serialize + TestSet>(args: &Args<T>) -> (String, Limits) {
    // Strings, numbers and JSON values always serialise.
    let arguments = serde_json::to_string(args).unwrap_or_default();
    let budget = args.call_budget(arguments.len(), Limits::FUEL_PER_SECOND);
    let limits = Limits {
        fuel: budget.fuel,
        memory_bytes: budget.memory_bytes,
        output_bytes: budget.output_bytes,
        wall_ms: budget.wall_ms,
        ..Limits::default()
    };
    (arguments, limits)
}

/// A problem file or solution file that cannot be judged; the message names the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// A problem: its prompt, whether it has an entry point, and its tests as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The prompt (HumanEval: imports, signature and docstring); empty when the row has none.
    pub prompt: String,
    /// Whether a completion continues the prompt (the row names an entry point).
    pub has_entry_point: bool,
    /// The tests, passed to the judge as the row holds them.
    pub tests: Value,
}

/// One solution to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// The problem's id.
    pub id: String,
    /// Rows of the same id before this one.
    pub sample: usize,
    /// The whole program.
    pub code: String,
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
fn read_jsonl(path: &Path) -> std::result::Result<Vec<(usize, Value)>, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError(format!("cannot read {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), index + 1);
        let row: Value = serde_json::from_str(line)
            .map_err(|e| InputError(format!("{at}: not a JSON object: {e}")))?;
        if !row.is_object() {
            return Err(InputError(format!("{at}: not a JSON object")));
        }
        rows.push((index + 1, row));
    }
    Ok(rows)
}

/// The problems of a JSON Lines file, by id.
pub fn read_problems(path: &Path) -> std::result::Result<HashMap<String, Problem>, InputError> {
    let mut problems = HashMap::new();
    for (line, row) in read_jsonl(path)? {
        let at = || format!("{}:{line}", path.display());
        let id =
            row_id(&row).ok_or_else(|| InputError(format!("{}: missing `id` (a string)", at())))?;
        let tests = row.get("tests").cloned().unwrap_or(Value::Null);
        let judgeable = match &tests {
            Value::String(program) => !program.trim().is_empty(),
            Value::Array(cases) => !cases.is_empty(),
            _ => false,
        };
        if !judgeable {
            return Err(InputError(format!(
                "{}: `tests` must be a test program or a non-empty list of {{input, output}}",
                at()
            )));
        }
        let prompt = match row.get("prompt") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(prompt)) => prompt.clone(),
            Some(_) => return Err(InputError(format!("{}: `prompt` must be a string", at()))),
        };
        let has_entry_point =
            matches!(row.get("entry_point"), Some(Value::String(e)) if !e.is_empty());
        let problem = Problem {
            prompt,
            has_entry_point,
            tests,
        };
        if problems.insert(id.clone(), problem).is_some() {
            return Err(InputError(format!("{}: duplicate problem id {id:?}", at())));
        }
    }
    Ok(problems)
}

/// The solutions of a JSON Lines file, in file order, each a whole program for its problem.
pub fn read_solutions(
    path: &Path,
    problems: &HashMap<String, Problem>,
) -> std::result::Result<Vec<Solution>, InputError> {
    let mut samples: HashMap<String, usize> = HashMap::new();
    let mut solutions = Vec::new();
    for (line, row) in read_jsonl(path)? {
        let at = || format!("{}:{line}", path.display());
        let id =
            row_id(&row).ok_or_else(|| InputError(format!("{}: missing `id` (a string)", at())))?;
        let problem = problems
            .get(&id)
            .ok_or_else(|| InputError(format!("{}: no problem has id {id:?}", at())))?;
        let text = |field: &str| match row.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(InputError(format!("{}: `{field}` must be a string", at()))),
        };
        let code = match (text("code")?, text("completion")?) {
            (Some(code), None) => code,
            (None, Some(completion)) if problem.has_entry_point => {
                format!("{}{completion}", problem.prompt)
            }
            (None, Some(completion)) => completion,
            (Some(_), Some(_)) => {
                return Err(InputError(format!(
                    "{}: give either `code` or `completion`, not both",
                    at()
                )));
            }
            (None, None) => {
                return Err(InputError(format!(
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

/// How every solution of a batch is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Fuel of each test.
    pub fuel_per_test: u64,
    /// Memory of each test in bytes.
    pub memory_bytes_per_test: u64,
    /// Stop judging a solution at its first failing test.
    pub stop_on_first_failure: bool,
    /// Accept numbers within this absolute or relative error.
    pub float_tolerance: Option<f64>,
    /// Run seed (the randomness each program sees derives from it and the solution's id).
    pub seed: u64,
}

impl BatchSettings {
    /// The judge's arguments for one solution.
    pub fn arguments<'a>(&self, problem: &'a Problem, solution: &Solution) -> Args<&'a Value> {
        Args {
            code: solution.code.clone(),
            tests: &problem.tests,
            fuel_per_test: Some(self.fuel_per_test),
            memory_bytes_per_test: Some(self.memory_bytes_per_test),
            stop_on_first_failure: self.stop_on_first_failure,
            float_tolerance: self.float_tolerance,
        }
    }
}

/// The result of one solution: the judge's report, or one standing for the call that did not
/// finish (with `error` saying why). One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultRow {
    /// The problem's id.
    pub id: String,
    /// The solution's sample number.
    pub sample: usize,
    /// The judge's report.
    #[serde(flatten)]
    pub report: Report,
    /// Why the judge call gave no report; absent when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result row of `solution`, whose problem has `tests` tests, from its judge call's outcome.
pub fn result_row(solution: &Solution, tests: usize, outcome: &Outcome) -> ResultRow {
    let report = match outcome.kind {
        OutcomeKind::Ok => serde_json::from_str::<Report>(&outcome.output).ok(),
        _ => None,
    };
    let (report, error) = match report {
        Some(report) => (report, None),
        None => {
            // The judge itself did not finish: its whole budget ran out, or the sandbox failed.
            let verdict = match outcome.kind {
                OutcomeKind::TimeLimit => Verdict::TimeLimit,
                OutcomeKind::MemoryLimit => Verdict::MemoryLimit,
                _ => Verdict::InternalError,
            };
            let message = outcome
                .message
                .clone()
                .unwrap_or_else(|| "the judge's report is not a JSON object".to_string());
            let report = Report {
                verdict,
                passed: 0,
                total: tests,
                first_failure: Some(0),
                fuel_used: outcome.fuel_used,
                tests: Vec::new(),
            };
            let error = format!("judge call ended {}: {message}", outcome.kind);
            (report, Some(error))
        }
    };
    ResultRow {
        id: solution.id.clone(),
        sample: solution.sample,
        report,
        error,
    }
}

/// Judges every solution with `judge` on `jobs` threads (at least one); rows come back in
/// solution order. `done` is told of each row as it is ready (from the thread that made it).
pub fn judge_all(
    sandbox: &Sandbox,
    judge: &Tool,
    problems: &HashMap<String, Problem>,
    solutions: &[Solution],
    settings: &BatchSettings,
    jobs: usize,
    done: &(dyn Fn(&ResultRow) + Sync),
) -> std::result::Result<Vec<ResultRow>, InputError> {
    let mut work = Vec::with_capacity(solutions.len());
    for solution in solutions {
        let problem = problems
            .get(&solution.id)
            .ok_or_else(|| InputError(format!("no problem has id {:?}", solution.id)))?;
        work.push((solution, problem));
    }
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<ResultRow>>> = Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                // Each thread takes the next solution: a slow one does not hold up the rest.
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(solution, problem)) = work.get(index) else {
                        break;
                    };
                    let (arguments, limits) = judge_call(&settings.arguments(problem, solution));
                    let options = CallOptions {
                        limits: Some(limits),
                        seed: Some(settings.seed),
                        call_key: Some(format!("judge/{}/{}", solution.id, solution.sample)),
                        ..CallOptions::default()
                    };
                    let outcome = sandbox.call(judge, &arguments, &options);
                    let row = result_row(solution, problem.tests.count(), &outcome);
                    done(&row);
                    rows.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(row);
                }
            });
        }
    });
    // Every index below `work.len()` was taken by exactly one thread, which filled it.
    Ok(rows
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

/// Counts over the rows of a batch: `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Solutions accepted.
    pub passed: usize,
    /// Solutions judged.
    pub total: usize,
    /// Solutions by verdict name.
    pub verdicts: BTreeMap<&'static str, usize>,
}

impl Summary {
    /// The counts of `rows`.
    pub fn of(rows: &[ResultRow]) -> Self {
        let mut verdicts = BTreeMap::new();
        for row in rows {
            *verdicts.entry(row.report.verdict.as_str()).or_default() += 1;
        }
        Summary {
            passed: verdicts
                .get(Verdict::Accepted.as_str())
                .copied()
                .unwrap_or(0),
            total: rows.len(),
            verdicts,
        }
    }

    /// Solutions of `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.verdicts.get(verdict.as_str()).copied().unwrap_or(0)
    }
}

/// Problems that no solution is for (they are not counted).
pub fn unsolved(problems: &HashMap<String, Problem>, solutions: &[Solution]) -> usize {
    let solved: HashSet<&str> = solutions.iter().map(|s| s.id.as_str()).collect();
    problems.len().saturating_sub(solved.len())
}

/// Writes `results.jsonl` (one row per solution, in input order) and `summary.json` into `dir`.
pub fn write_results(dir: &Path, rows: &[ResultRow], summary: &Summary) -> Result<()> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| TrainError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut text = String::new();
    for row in rows {
        // Rows are strings, numbers and lists of them: they always serialise.
        text.push_str(&serde_json::to_string(row).unwrap_or_default());
        text.push('\n');
    }
    let results = dir.join("results.jsonl");
    std::fs::write(&results, text).map_err(io("writing", &results))?;
    let path = dir.join("summary.json");
    let summary = serde_json::to_string_pretty(summary).unwrap_or_default();
    std::fs::write(&path, format!("{summary}\n")).map_err(io("writing", &path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn settings() -> BatchSettings {
        BatchSettings {
            fuel_per_test: 10_000_000_000,
            memory_bytes_per_test: 256 << 20,
            stop_on_first_failure: false,
            float_tolerance: None,
            seed: 0,
        }
    }

    #[test]
    fn completions_follow_the_prompt_only_with_an_entry_point() {
        let dir = tempfile::tempdir().expect("scratch directory");
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
        assert_eq!(problems["io"].tests.count(), 1);
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
        assert_eq!(unsolved(&problems, &solutions[..1]), 1);
        assert_eq!(unsolved(&problems, &solutions), 0);
    }

    #[test]
    fn bad_rows_are_errors_with_their_line() {
        let dir = tempfile::tempdir().expect("scratch directory");
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
            (r#"{"id": "a", "code": 3}"#, "`code` must be a string"),
            (r#"{"code": "x"}"#, "missing `id`"),
            ("[1]", "not a JSON object"),
            ("{", "not a JSON object"),
        ] {
            let path = write(dir.path(), "s.jsonl", &format!("\n{text}\n"));
            let message = read_solutions(&path, &problems).expect_err(text).0;
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("s.jsonl:2"), "{message}");
        }
        for (text, expected) in [
            (r#"{"id": "b", "tests": []}"#, "`tests` must be"),
            (r#"{"id": "b", "tests": "  "}"#, "`tests` must be"),
            (r#"{"id": "b", "tests": 7}"#, "`tests` must be"),
            (
                r#"{"id": "b", "tests": "t", "prompt": 1}"#,
                "`prompt` must be",
            ),
            (
                "{\"id\": \"b\", \"tests\": \"t\"}\n{\"id\": \"b\", \"tests\": \"t\"}",
                "duplicate problem id",
            ),
        ] {
            let path = write(dir.path(), "bad.jsonl", text);
            let message = read_problems(&path).expect_err(text).0;
            assert!(message.contains(expected), "{message}");
        }
        let missing = read_problems(&dir.path().join("none.jsonl")).expect_err("missing");
        assert!(missing.0.starts_with("cannot read"), "{missing}");
    }

    #[test]
    fn arguments_carry_the_settings_and_the_budget_covers_every_test() {
        let problem = Problem {
            prompt: String::new(),
            has_entry_point: false,
            tests: serde_json::json!([{"input": "", "output": "1"}, {"input": "2", "output": "2"}]),
        };
        let solution = Solution {
            id: "x".into(),
            sample: 0,
            code: "print(1)".into(),
        };
        let batch = BatchSettings {
            float_tolerance: Some(1e-6),
            ..settings()
        };
        let (arguments, limits) = judge_call(&batch.arguments(&problem, &solution));
        // The bytes `sod judge` wrote before the protocol crate (json!, insertion order).
        assert_eq!(
            arguments,
            r#"{"code":"print(1)","tests":[{"input":"","output":"1"},{"input":"2","output":"2"}],"fuel_per_test":10000000000,"memory_bytes_per_test":268435456,"stop_on_first_failure":false,"float_tolerance":1e-6}"#
        );
        assert_eq!(
            limits.fuel,
            2 * (10_000_000_000 + sod_judge_protocol::JUDGE_FUEL_PER_TEST)
                + sod_judge_protocol::JUDGE_FUEL_BASE
        );
        assert_eq!(limits.memory_bytes, 256 << 20);
        assert_eq!(limits.output_bytes, sod_judge_protocol::REPORT_BYTES);
        assert_eq!(limits.wall_ms, 2 * 60_000 + 60_000);
        assert_eq!(limits.fs, Limits::default().fs);
    }

    fn outcome(kind: OutcomeKind, output: &str, message: Option<&str>) -> Outcome {
        Outcome {
            kind,
            output: output.to_string(),
            message: message.map(str::to_string),
            fuel_used: 5,
            ..Outcome::infra_fault("judge", String::new())
        }
    }

    #[test]
    fn rows_are_the_report_or_stand_for_the_failed_call() {
        let solution = Solution {
            id: "p".into(),
            sample: 2,
            code: String::new(),
        };
        let failed = outcome(
            OutcomeKind::TimeLimit,
            "",
            Some("fuel limit of 5 exhausted"),
        );
        let row = result_row(&solution, 4, &failed);
        // The bytes of a row before the protocol crate.
        assert_eq!(
            serde_json::to_string(&row).expect("JSON"),
            r#"{"id":"p","sample":2,"verdict":"time_limit","passed":0,"total":4,"first_failure":0,"fuel_used":5,"tests":[],"error":"judge call ended time_limit: fuel limit of 5 exhausted"}"#
        );
        let report = r#"{"verdict":"wrong_answer","passed":0,"total":1,"first_failure":0,"fuel_used":9,"tests":[{"verdict":"wrong_answer","fuel_used":9,"detail":"d"}]}"#;
        let row = result_row(&solution, 1, &outcome(OutcomeKind::Ok, report, None));
        assert_eq!(row.error, None);
        assert_eq!(
            serde_json::to_string(&row).expect("JSON"),
            format!("{{\"id\":\"p\",\"sample\":2,{}", &report[1..])
        );
        // A report that is not one is the judge's failure, not the program's.
        let row = result_row(
            &solution,
            3,
            &outcome(OutcomeKind::Ok, "{\"verdict\":1}", None),
        );
        assert_eq!(row.report.verdict, Verdict::InternalError);
        assert_eq!(row.report.total, 3);
        assert!(
            row.error
                .as_deref()
                .unwrap_or_default()
                .contains("not a JSON object")
        );

        let summary = Summary::of(&[row.clone(), result_row(&solution, 4, &failed), row]);
        assert_eq!(
            serde_json::to_string(&summary).expect("JSON"),
            r#"{"passed":0,"total":3,"verdicts":{"internal_error":2,"time_limit":1}}"#
        );
        assert_eq!(summary.count(Verdict::InternalError), 2);
        assert_eq!(summary.count(Verdict::Accepted), 0);
    }
}
