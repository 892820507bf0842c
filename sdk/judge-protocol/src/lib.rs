//! The judge tool's wire format, its call budget, and the protocol of a Python program run inside
//! the python tool: one definition shared by the judge guest (`tools/judge`, built for
//! wasm32-wasip2), the code reward (`sod_train::reward::CodeReward`), `sod judge`
//! (`sod_train::judging`) and `POST /run_code` (`sod::serve::run_code`).
//!
//! - [`Args`], [`Tests`], [`Case`]: what the judge is called with.
//! - [`Report`], [`TestResult`], [`Verdict`]: what it answers.
//! - [`CallBudget`]: the limits a judge call needs to cover its tests.
//! - [`run`]: how a wrapped Python program's stdout, stderr and exit status come back through the
//!   python tool's output text (the Python side is `python/sod_run.py`).
//!
//! The serialised names are stable: trainers and stored results key on them.

pub mod run;

use serde::{Deserialize, Serialize};

/// Fuel of one test when the arguments name none: about 2 s of CPython compute at the host's
/// documented rate of 5·10⁹ fuel per second.
pub const DEFAULT_FUEL_PER_TEST: u64 = 10_000_000_000;
/// Memory of one test when the arguments name none: 256 MiB.
pub const DEFAULT_MEMORY_BYTES_PER_TEST: u64 = 256 << 20;
/// Fuel the judge itself may spend per test (building the harness, comparing outputs), on top of
/// the tests' own fuel; measured use is far below it.
pub const JUDGE_FUEL_PER_TEST: u64 = 200_000_000;
/// Fuel the judge itself may spend per call, on top of the per-test allowance.
pub const JUDGE_FUEL_BASE: u64 = 1_000_000_000;
/// Output limit of a judge call: its JSON report.
pub const REPORT_BYTES: u64 = 4 << 20;

/// Arguments of the judge.
///
/// `T` is the type of `tests`: the judge reads them as [`Tests`]; the host passes the tests of a
/// dataset row through as they are (`serde_json::Value`), so the arguments' bytes (and the call
/// key and seed derived from them) are those of the row. Fields serialise in declaration order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Args"))]
#[serde(deny_unknown_fields)]
pub struct Args<T = Tests> {
    /// The candidate: a complete Python program (for HumanEval, the prompt followed by the
    /// completion).
    pub code: String,
    /// The tests: a Python test program run after the candidate in the same namespace (e.g.
    /// HumanEval's `check(entry_point)` or MBPP's asserts), or a list of stdin/stdout cases.
    pub tests: T,
    /// Fuel of each test (deterministic time limit; 5e9 is about one second of CPython).
    /// Default 1e10.
    #[serde(default)]
    pub fuel_per_test: Option<u64>,
    /// Memory of each test in bytes. Default 256 MiB.
    #[serde(default)]
    pub memory_bytes_per_test: Option<u64>,
    /// Stop after the first test that is not accepted. Default false.
    #[serde(default)]
    pub stop_on_first_failure: bool,
    /// Stdin/stdout tests: accept numbers written with a point or an exponent within this
    /// absolute or relative error. Default: outputs must match exactly (up to trailing
    /// whitespace and line endings).
    // Left out when `None`, as the host always wrote it; the schema still says `default: null`
    // (schemars drops it for a field that skips serialising). Not a doc comment: that would
    // change the description the model sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("default" = null)))]
    pub float_tolerance: Option<f64>,
}

/// The tests of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Tests {
    /// A Python test program; the candidate passes when it runs to completion.
    Program(String),
    /// Stdin/stdout cases; each is one test.
    Cases(Vec<Case>),
}

/// One stdin/stdout test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Standard input of the program.
    pub input: String,
    /// The expected standard output.
    pub output: String,
}

/// A set of tests whose size the judge's budget depends on.
pub trait TestSet {
    /// Tests the judge counts: one for a test program, one per stdin/stdout case.
    fn count(&self) -> usize;
}

impl<T: TestSet + ?Sized> TestSet for &T {
    fn count(&self) -> usize {
        (**self).count()
    }
}

impl TestSet for Tests {
    fn count(&self) -> usize {
        match self {
            Tests::Program(_) => 1,
            Tests::Cases(cases) => cases.len(),
        }
    }
}

/// Tests as a dataset row holds them: a list is a list of cases, anything else one test program.
impl TestSet for serde_json::Value {
    fn count(&self) -> usize {
        match self {
            serde_json::Value::Array(cases) => cases.len(),
            _ => 1,
        }
    }
}

impl<T> Args<T> {
    /// Fuel of each test, the default when the arguments name none.
    pub fn fuel_per_test_or_default(&self) -> u64 {
        self.fuel_per_test.unwrap_or(DEFAULT_FUEL_PER_TEST)
    }

    /// Memory of each test in bytes, the default when the arguments name none.
    pub fn memory_bytes_per_test_or_default(&self) -> u64 {
        self.memory_bytes_per_test
            .unwrap_or(DEFAULT_MEMORY_BYTES_PER_TEST)
    }
}

impl<T: TestSet> Args<T> {
    /// The limits of the judge call with these arguments, serialised in `arguments_len` bytes;
    /// `fuel_per_second` is the host's rate (`sod_sandbox::Limits::FUEL_PER_SECOND`).
    pub fn call_budget(&self, arguments_len: usize, fuel_per_second: u64) -> CallBudget {
        CallBudget::new(
            self.fuel_per_test_or_default(),
            self.memory_bytes_per_test_or_default(),
            self.tests.count(),
            arguments_len,
            fuel_per_second,
        )
    }
}

/// The limits of one judge call: the tests' budget plus the judge's own allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// `tests × (fuel_per_test + JUDGE_FUEL_PER_TEST) + JUDGE_FUEL_BASE`.
    pub fuel: u64,
    /// The tests' memory (a child's is clamped to its caller's), raised for large arguments, which
    /// the judge holds a few copies of.
    pub memory_bytes: u64,
    /// [`REPORT_BYTES`].
    pub output_bytes: u64,
    /// A generous wall-clock backstop: fuel is the real limit.
    pub wall_ms: u64,
}

impl CallBudget {
    /// The budget of a judge call running `tests` tests of `fuel_per_test` fuel and
    /// `memory_bytes_per_test` bytes each, with `arguments_len` bytes of arguments.
    pub fn new(
        fuel_per_test: u64,
        memory_bytes_per_test: u64,
        tests: usize,
        arguments_len: usize,
        fuel_per_second: u64,
    ) -> Self {
        let tests = tests as u64;
        let fuel = fuel_per_test
            .saturating_add(JUDGE_FUEL_PER_TEST)
            .saturating_mul(tests)
            .saturating_add(JUDGE_FUEL_BASE);
        let seconds_per_test = (fuel_per_test / fuel_per_second.max(1)).saturating_add(1);
        let wall_ms_per_test = seconds_per_test.saturating_mul(20_000).max(60_000);
        CallBudget {
            fuel,
            memory_bytes: memory_bytes_per_test.max(
                (arguments_len as u64)
                    .saturating_mul(8)
                    .saturating_add(64 << 20),
            ),
            output_bytes: REPORT_BYTES,
            wall_ms: wall_ms_per_test
                .saturating_mul(tests)
                .saturating_add(60_000),
        }
    }
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The test passed.
    Accepted,
    /// The output differs from the expected one, or an assertion of the test program failed.
    WrongAnswer,
    /// The test ran out of fuel.
    TimeLimit,
    /// The test exceeded its memory limit.
    MemoryLimit,
    /// The program raised an exception, exited with a non-zero status, crashed the
    /// interpreter or interfered with the judge's harness.
    RuntimeError,
    /// The program does not compile (a `SyntaxError`).
    CompileError,
    /// The test could not be judged (the sandbox failed, or the test program itself is
    /// broken): not the candidate's fault; trainers drop such results.
    InternalError,
}

impl Verdict {
    /// The stable name (`accepted`, `wrong_answer`, ...), as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::WrongAnswer => "wrong_answer",
            Verdict::TimeLimit => "time_limit",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::RuntimeError => "runtime_error",
            Verdict::CompileError => "compile_error",
            Verdict::InternalError => "internal_error",
        }
    }
}

/// The result of one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// How the test ended.
    pub verdict: Verdict,
    /// Fuel the test's python run used (0 for a test decided without running it).
    pub fuel_used: u64,
    /// What went wrong: a short diff (`wrong_answer`), the tail of the traceback
    /// (`runtime_error`, and `wrong_answer` of a test program), the syntax error
    /// (`compile_error`), the limit that was hit. Absent for accepted tests, and for failures
    /// past the report's budget of details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The judge's output: the verdict of every test that ran and a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `accepted` when every test passed, else the verdict of the first failing test.
    pub verdict: Verdict,
    /// Tests accepted.
    pub passed: usize,
    /// Tests of the problem (a test program counts as one).
    pub total: usize,
    /// Index of the first test not accepted, if any.
    pub first_failure: Option<usize>,
    /// Fuel used by all the tests' runs.
    pub fuel_used: u64,
    /// Results in test order. Shorter than `total` when the judge stopped at the first failure.
    pub tests: Vec<TestResult>,
}

impl Report {
    /// The first test the judge could not judge (`internal_error`), with its index.
    pub fn internal_error(&self) -> Option<(usize, &TestResult)> {
        self.tests
            .iter()
            .enumerate()
            .find(|(_, t)| t.verdict == Verdict::InternalError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as the judge wrote it before this crate existed (docs/judge.md).
    const REPORT: &str = r#"{"verdict":"wrong_answer","passed":1,"total":2,"first_failure":1,"fuel_used":101093412,"tests":[{"verdict":"accepted","fuel_used":50592555},{"verdict":"wrong_answer","fuel_used":50500857,"detail":"line 1: expected \"365\", got \"366\""}]}"#;

    #[test]
    fn reports_round_trip_byte_for_byte() {
        let report: Report = serde_json::from_str(REPORT).expect("report");
        assert_eq!(report.verdict, Verdict::WrongAnswer);
        assert_eq!(report.first_failure, Some(1));
        assert_eq!(report.tests[0].detail, None);
        assert_eq!(serde_json::to_string(&report).expect("JSON"), REPORT);
        let accepted = r#"{"verdict":"accepted","passed":1,"total":1,"first_failure":null,"fuel_used":9,"tests":[]}"#;
        let report: Report = serde_json::from_str(accepted).expect("report");
        assert_eq!(serde_json::to_string(&report).expect("JSON"), accepted);
    }

    #[test]
    fn verdict_names_are_the_serialised_ones() {
        let all = [
            (Verdict::Accepted, "accepted"),
            (Verdict::WrongAnswer, "wrong_answer"),
            (Verdict::TimeLimit, "time_limit"),
            (Verdict::MemoryLimit, "memory_limit"),
            (Verdict::RuntimeError, "runtime_error"),
            (Verdict::CompileError, "compile_error"),
            (Verdict::InternalError, "internal_error"),
        ];
        for (verdict, name) in all {
            assert_eq!(verdict.as_str(), name);
            assert_eq!(
                serde_json::to_string(&verdict).expect("JSON"),
                format!("\"{name}\"")
            );
        }
        assert!(serde_json::from_str::<Verdict>("\"fine\"").is_err());
    }

    #[test]
    fn arguments_serialise_as_the_host_wrote_them() {
        // What `sod judge` wrote with `json!` (insertion order) before this crate existed.
        let cli = r#"{"code":"print(1)","tests":[{"input":"","output":"1"}],"fuel_per_test":10000000000,"memory_bytes_per_test":268435456,"stop_on_first_failure":false,"float_tolerance":1e-6}"#;
        let args = Args {
            code: "print(1)".to_string(),
            tests: Tests::Cases(vec![Case {
                input: String::new(),
                output: "1".to_string(),
            }]),
            fuel_per_test: Some(10_000_000_000),
            memory_bytes_per_test: Some(256 << 20),
            stop_on_first_failure: false,
            float_tolerance: Some(1e-6),
        };
        assert_eq!(serde_json::to_string(&args).expect("JSON"), cli);
        assert_eq!(serde_json::from_str::<Args>(cli).expect("args"), args);
        // The code reward's arguments: a test program, no tolerance (the field is left out).
        let reward = r#"{"code":"def f(): pass\n","tests":"check(f)","fuel_per_test":5,"memory_bytes_per_test":7,"stop_on_first_failure":true}"#;
        let args: Args<serde_json::Value> = serde_json::from_str(reward).expect("args");
        assert_eq!(args.tests.count(), 1);
        assert_eq!(serde_json::to_string(&args).expect("JSON"), reward);
        // The judge rejects fields it does not know.
        assert!(serde_json::from_str::<Args>(r#"{"code":"","tests":"t","x":1}"#).is_err());
        let minimal: Args = serde_json::from_str(r#"{"code":"","tests":"t"}"#).expect("args");
        assert_eq!(minimal.fuel_per_test_or_default(), DEFAULT_FUEL_PER_TEST);
        assert_eq!(
            minimal.memory_bytes_per_test_or_default(),
            DEFAULT_MEMORY_BYTES_PER_TEST
        );
    }

    #[test]
    fn the_budget_is_the_one_both_hosts_computed() {
        const FUEL_PER_SECOND: u64 = 5_000_000_000;
        // Three cases of 1e10 fuel and 256 MiB with 1000 bytes of arguments.
        let budget = CallBudget::new(10_000_000_000, 256 << 20, 3, 1000, FUEL_PER_SECOND);
        assert_eq!(
            budget,
            CallBudget {
                fuel: 31_600_000_000,
                memory_bytes: 268_435_456,
                output_bytes: 4_194_304,
                // (1e10 / 5e9 + 1) s × 20 s per s = 60 s per test, 3 tests, plus 60 s.
                wall_ms: 240_000,
            }
        );
        // Large arguments raise the judge's own memory, never below the tests'.
        let budget = CallBudget::new(10_000_000_000, 256 << 20, 1, 100 << 20, FUEL_PER_SECOND);
        assert_eq!(budget.memory_bytes, (800 << 20) + (64 << 20));
        assert_eq!(budget.fuel, 11_200_000_000);
        // A long test: 4e10 fuel is 9 s, so 180 s of wall clock for it.
        let budget = CallBudget::new(40_000_000_000, 1 << 20, 2, 10, FUEL_PER_SECOND);
        assert_eq!(budget.fuel, 81_400_000_000);
        assert_eq!(budget.memory_bytes, (64 << 20) + 80);
        assert_eq!(budget.wall_ms, 2 * 180_000 + 60_000);
        // A short test still gets a minute of wall clock (0.2 s of fuel would be 20 s).
        let budget = CallBudget::new(1_000_000_000, 1 << 20, 1, 10, FUEL_PER_SECOND);
        assert_eq!(budget.wall_ms, 60_000 + 60_000);
        // Absurd requests saturate instead of overflowing.
        let budget = CallBudget::new(u64::MAX, u64::MAX, usize::MAX, usize::MAX, FUEL_PER_SECOND);
        assert_eq!((budget.fuel, budget.wall_ms), (u64::MAX, u64::MAX));
        // The arguments' own test count drives it.
        let args: Args<serde_json::Value> = serde_json::from_str(
            r#"{"code":"","tests":[{"input":"","output":""},{"input":"","output":""}],"fuel_per_test":10000000000}"#,
        )
        .expect("args");
        assert_eq!(
            args.call_budget(1000, FUEL_PER_SECOND).fuel,
            2 * (10_000_000_000 + JUDGE_FUEL_PER_TEST) + JUDGE_FUEL_BASE
        );
    }
}
