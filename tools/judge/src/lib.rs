//! `judge`: a sod tool that runs a candidate Python program against tests and returns verdicts.
//!
//! The judge composes tools: every test runs in a fresh instance of the `python` tool, called
//! through the host's `sod:tool/sandbox.call-tool` capability with the test's own fuel and memory
//! limits. The host clamps each run's fuel to what the judge has left and charges it to the
//! judge, so judging never exceeds the judge call's budget: give the judge call at least
//! `tests × fuel_per_test` plus a little for itself (about 10⁷ fuel per test).
//!
//! Arguments ([`Args`]):
//!
//! ```json
//! {"code": "def add(a, b):\n    return a + b\n",
//!  "tests": "assert add(1, 2) == 3\n",
//!  "fuel_per_test": 10000000000, "memory_bytes_per_test": 268435456,
//!  "stop_on_first_failure": false, "float_tolerance": null}
//! ```
//!
//! `tests` is either a test program (a string, run after the candidate in the same namespace:
//! HumanEval's `check(entry_point)`, MBPP's asserts) or a list of `{"input", "output"}`
//! stdin/stdout cases (compared by [`compare::outputs_match`]). The output is a JSON
//! [`Report`]: per-test [`Verdict`]s with details, `passed`/`total`, the first failure and the
//! fuel used. How the judge and the harness talk is in [`harness`].

pub mod compare;
pub mod harness;

use sod_judge_protocol::run::{Ending, RecordError, RunRecord};
pub use sod_judge_protocol::{Args, Case, Report, TestResult, Tests, Verdict};
use sod_tool_sdk::sandbox::{Limits, Outcome, OutcomeKind};
use sod_tool_sdk::{Tool, ToolError};

use harness::{Invocation, Mode};

/// Output limit of one python run; the harness's record stays well below it.
pub const PYTHON_OUTPUT_BYTES: u64 = 64 << 10;
/// Bytes of a test's `detail` kept (the tail of a traceback, the head of anything else).
pub const DETAIL_BYTES: usize = 1500;
/// Bytes of details kept over all the tests of a report; later failures get none, so a report
/// stays small however many tests fail.
pub const REPORT_DETAIL_BYTES: usize = 16 << 10;
/// The tool that runs the candidate.
pub const PYTHON_TOOL: &str = "python";

/// Runs one harness invocation under limits; the real one calls the python tool through the
/// host, tests substitute their own.
pub trait Runner {
    /// Runs `invocation` in a fresh python instance under `limits`.
    fn run(&mut self, invocation: &Invocation<'_>, limits: Limits) -> Outcome;
}

/// The [`Runner`] of the component: `sod:tool/sandbox.call-tool("python", ...)`.
pub struct HostRunner;

impl Runner for HostRunner {
    fn run(&mut self, invocation: &Invocation<'_>, limits: Limits) -> Outcome {
        sod_tool_sdk::sandbox::call_tool(PYTHON_TOOL, &invocation.python_arguments(), limits)
    }
}

/// Validated settings of one judging.
#[derive(Debug, Clone, Copy)]
struct Settings {
    limits: Limits,
    stop_on_first_failure: bool,
    float_tolerance: Option<f64>,
}

fn settings(args: &Args) -> Result<Settings, ToolError> {
    match &args.tests {
        Tests::Program(program) if program.trim().is_empty() => {
            return Err(ToolError::invalid_arguments(
                "`tests` is an empty test program: nothing would be checked",
            ));
        }
        Tests::Cases(cases) if cases.is_empty() => {
            return Err(ToolError::invalid_arguments("`tests` is an empty list"));
        }
        _ => {}
    }
    if let Some(tolerance) = args.float_tolerance
        && !(tolerance.is_finite() && tolerance >= 0.0)
    {
        return Err(ToolError::invalid_arguments(
            "`float_tolerance` must be a finite number >= 0",
        ));
    }
    let fuel = args.fuel_per_test_or_default();
    let memory = args.memory_bytes_per_test_or_default();
    if fuel == 0 || memory == 0 {
        return Err(ToolError::invalid_arguments(
            "`fuel_per_test` and `memory_bytes_per_test` must be positive",
        ));
    }
    Ok(Settings {
        limits: Limits {
            fuel: Some(fuel),
            memory_bytes: Some(memory),
            output_bytes: Some(PYTHON_OUTPUT_BYTES),
        },
        stop_on_first_failure: args.stop_on_first_failure,
        float_tolerance: args.float_tolerance,
    })
}

/// Judges `args.code` against `args.tests`, running every test through `runner`.
pub fn judge(args: &Args, runner: &mut dyn Runner) -> Result<Report, ToolError> {
    let settings = settings(args)?;
    let modes: Vec<(Mode<'_>, Option<&str>)> = match &args.tests {
        Tests::Program(tests) => vec![(Mode::Program { tests }, None)],
        Tests::Cases(cases) => cases
            .iter()
            .map(|case| {
                (
                    Mode::Stdin { input: &case.input },
                    Some(case.output.as_str()),
                )
            })
            .collect(),
    };
    let total = modes.len();
    let mut results: Vec<TestResult> = Vec::with_capacity(total);
    let mut compile_error: Option<String> = None;
    for (index, (mode, expected)) in modes.into_iter().enumerate() {
        let result = match &compile_error {
            // Compiling does not depend on the input: the other tests need not run.
            Some(detail) => TestResult {
                verdict: Verdict::CompileError,
                fuel_used: 0,
                detail: Some(detail.clone()),
            },
            None => {
                let invocation = Invocation::new(&args.code, mode, index);
                let outcome = runner.run(&invocation, settings.limits);
                let result = verdict_of(&outcome, &invocation, expected, &settings);
                if result.verdict == Verdict::CompileError {
                    compile_error = result.detail.clone();
                }
                result
            }
        };
        let failed = result.verdict != Verdict::Accepted;
        results.push(result);
        if failed && settings.stop_on_first_failure {
            break;
        }
    }
    Ok(summarize(results, total))
}

fn summarize(mut tests: Vec<TestResult>, total: usize) -> Report {
    let mut detail_budget = REPORT_DETAIL_BYTES;
    for test in &mut tests {
        if let Some(detail) = &test.detail {
            if detail.len() <= detail_budget {
                detail_budget -= detail.len();
            } else {
                test.detail = None;
                detail_budget = 0;
            }
        }
    }
    let passed = tests
        .iter()
        .filter(|t| t.verdict == Verdict::Accepted)
        .count();
    let first_failure = tests.iter().position(|t| t.verdict != Verdict::Accepted);
    Report {
        verdict: first_failure.map_or(Verdict::Accepted, |i| tests[i].verdict),
        passed,
        total,
        first_failure,
        fuel_used: tests.iter().map(|t| t.fuel_used).sum(),
        tests,
    }
}

/// The verdict of one python run of `invocation`.
fn verdict_of(
    outcome: &Outcome,
    invocation: &Invocation<'_>,
    expected: Option<&str>,
    settings: &Settings,
) -> TestResult {
    let fuel_used = outcome.fuel_used;
    let result = |verdict: Verdict, detail: Option<String>| TestResult {
        verdict,
        fuel_used,
        detail,
    };
    match outcome.kind {
        OutcomeKind::Ok => {}
        OutcomeKind::TimeLimit => {
            return result(Verdict::TimeLimit, Some(head(&outcome.output)));
        }
        OutcomeKind::MemoryLimit => {
            let limit = settings.limits.memory_bytes.unwrap_or_default();
            return result(
                Verdict::MemoryLimit,
                Some(format!("memory limit of {limit} bytes reached")),
            );
        }
        OutcomeKind::Crashed => {
            return result(
                Verdict::RuntimeError,
                Some(head(&format!(
                    "the interpreter crashed: {}",
                    outcome.output
                ))),
            );
        }
        OutcomeKind::OutputTruncated | OutcomeKind::ToolError | OutcomeKind::InfraFault => {
            let kind = match outcome.kind {
                OutcomeKind::OutputTruncated => "output_truncated",
                OutcomeKind::ToolError => "tool_error",
                _ => "infra_fault",
            };
            return result(
                Verdict::InternalError,
                Some(head(&format!(
                    "the python run ended {kind}: {}",
                    outcome.output
                ))),
            );
        }
    }
    let record = match sod_judge_protocol::run::parse_record(&outcome.output, &invocation.tag) {
        Ok(record) => record,
        Err(error @ (RecordError::Missing | RecordError::Repeated(_))) => {
            return result(Verdict::RuntimeError, Some(harness::explain(&error)));
        }
        Err(error @ RecordError::Malformed(_)) => {
            return result(
                Verdict::InternalError,
                Some(head(&harness::explain(&error))),
            );
        }
    };
    match record.status {
        Ending::CompileError => result(Verdict::CompileError, Some(tail(&record.detail))),
        Ending::RuntimeError => result(Verdict::RuntimeError, Some(tail(&record.detail))),
        Ending::MemoryError => {
            let limit = settings.limits.memory_bytes.unwrap_or_default();
            result(
                Verdict::MemoryLimit,
                Some(format!("memory limit of {limit} bytes reached")),
            )
        }
        Ending::AssertionFailed => result(Verdict::WrongAnswer, Some(tail(&record.detail))),
        Ending::BadTests => result(
            Verdict::InternalError,
            Some(tail(&format!(
                "the test program does not compile:\n{}",
                record.detail
            ))),
        ),
        Ending::Ok => match expected {
            None => result(Verdict::Accepted, None),
            Some(expected) => compare_output(&record, expected, settings, result),
        },
    }
}

fn compare_output(
    record: &RunRecord,
    expected: &str,
    settings: &Settings,
    result: impl Fn(Verdict, Option<String>) -> TestResult,
) -> TestResult {
    let got = record.stdout.as_str();
    let accepted = match &record.stdout_sha256 {
        // Only a prefix came back: the harness hashed the whole normalized output.
        Some(digest) => {
            use sha2::Digest;
            let mine = hex::encode(sha2::Sha256::digest(
                compare::normalize(expected).as_bytes(),
            ));
            mine.eq_ignore_ascii_case(digest)
        }
        None => compare::outputs_match(expected, got, settings.float_tolerance),
    };
    if accepted {
        return result(Verdict::Accepted, None);
    }
    let mut diff = compare::short_diff(expected, got, settings.float_tolerance);
    if record.stdout_sha256.is_some() {
        diff = format!(
            "{diff} (the program printed {} bytes; the first {} were compared line by line, the \
             rest by hash)",
            record.stdout_bytes,
            got.len()
        );
    }
    result(Verdict::WrongAnswer, Some(head(&diff)))
}

/// The first [`DETAIL_BYTES`] of `text`, cut on a character boundary.
fn head(text: &str) -> String {
    if text.len() <= DETAIL_BYTES {
        return text.to_string();
    }
    let mut cut = DETAIL_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// The last [`DETAIL_BYTES`] of `text`, starting on a line when one starts near the cut (a traceback's tail
/// holds the innermost frames and the error).
fn tail(text: &str) -> String {
    if text.len() <= DETAIL_BYTES {
        return text.to_string();
    }
    let mut cut = text.len() - DETAIL_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let rest = &text[cut..];
    match rest.find('\n') {
        Some(newline) if newline < 200 && newline + 1 < rest.len() => {
            format!("...\n{}", &rest[newline + 1..])
        }
        _ => format!("...{rest}"),
    }
}

/// The judge tool.
pub struct Judge;

impl Tool for Judge {
    type Args = Args;
    const NAME: &'static str = "judge";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Runs a Python program against tests and returns a JSON \
        report of verdicts (accepted, wrong_answer, time_limit, memory_limit, runtime_error, \
        compile_error). `tests` is either a Python test program run after the code (asserts, \
        HumanEval's check) or a list of {input, output} cases for standard input and output, \
        compared ignoring trailing whitespace. Each test runs in a fresh Python sandbox with \
        its own fuel and memory limits.";

    fn call(args: Args) -> Result<String, ToolError> {
        let report = judge(&args, &mut HostRunner)?;
        serde_json::to_string(&report)
            .map_err(|e| ToolError::failed(format!("cannot serialise the report: {e}")))
    }
}

sod_tool_sdk::export_tool!(Judge);

#[cfg(test)]
mod tests;
