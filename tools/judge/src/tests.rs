//! Native tests of the judge's logic, with a scripted runner in place of the python tool.
//! The harness itself runs under the real python tool in `tests/judge.rs`.

use super::*;
use sod_judge_protocol::{DEFAULT_FUEL_PER_TEST, DEFAULT_MEMORY_BYTES_PER_TEST};

/// A runner that answers every run with what `script` says, and records the runs.
struct Scripted<F> {
    script: F,
    runs: Vec<(String, Limits)>,
}

impl<F: FnMut(&Invocation<'_>) -> (OutcomeKind, String)> Runner for Scripted<F> {
    fn run(&mut self, invocation: &Invocation<'_>, limits: Limits) -> Outcome {
        self.runs.push((invocation.tag.clone(), limits));
        let (kind, output) = (self.script)(invocation);
        Outcome {
            kind,
            output,
            fuel_used: 1000,
        }
    }
}

fn scripted<F: FnMut(&Invocation<'_>) -> (OutcomeKind, String)>(script: F) -> Scripted<F> {
    Scripted {
        script,
        runs: Vec::new(),
    }
}

/// The record line the harness would write: `fields` over those of a run that printed nothing.
fn record(invocation: &Invocation<'_>, fields: serde_json::Value) -> (OutcomeKind, String) {
    let mut record = serde_json::json!({"status": "ok", "return_code": 0, "stdout": "",
        "stdout_bytes": 0, "stderr": "", "detail": "", "notes": []});
    for (key, value) in fields.as_object().into_iter().flatten() {
        record[key] = value.clone();
    }
    (OutcomeKind::Ok, format!("{}{record}\n", invocation.tag))
}

/// A scripted program that prints the input doubled, line by line (as integers).
fn doubler(invocation: &Invocation<'_>) -> (OutcomeKind, String) {
    let Mode::Stdin { input } = invocation.mode else {
        panic!("stdin mode expected");
    };
    let out: String = input
        .lines()
        .map(|l| format!("{}\n", l.trim().parse::<i64>().unwrap_or(0) * 2))
        .collect();
    record(
        invocation,
        serde_json::json!({"status": "ok", "detail": "", "stdout": out, "stdout_bytes": out.len()}),
    )
}

fn args(value: serde_json::Value) -> Args {
    serde_json::from_value(value).expect("valid arguments")
}

fn cases(pairs: &[(&str, &str)]) -> serde_json::Value {
    pairs
        .iter()
        .map(|(i, o)| serde_json::json!({"input": i, "output": o}))
        .collect()
}

#[test]
fn describes_itself() {
    let descriptor = sod_tool_sdk::describe::<Judge>();
    assert_eq!(descriptor.name, "judge");
    let schema: serde_json::Value = serde_json::from_str(&descriptor.parameters).expect("JSON");
    assert_eq!(schema["required"], serde_json::json!(["code", "tests"]));
    assert!(
        schema["properties"]["tests"]["anyOf"].is_array(),
        "{schema}"
    );
}

#[test]
fn stdin_cases_compare_outputs() {
    let mut runner = scripted(doubler);
    let a = args(serde_json::json!({
        "code": "print(int(input()) * 2)",
        "tests": cases(&[("1\n", "2\n"), ("5", "10  \r\n"), ("7\n", "15\n")]),
    }));
    let report = judge(&a, &mut runner).expect("report");
    assert_eq!(report.passed, 2);
    assert_eq!(report.total, 3);
    assert_eq!(report.verdict, Verdict::WrongAnswer);
    assert_eq!(report.first_failure, Some(2));
    assert_eq!(report.fuel_used, 3000);
    let verdicts: Vec<Verdict> = report.tests.iter().map(|t| t.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Accepted, Verdict::Accepted, Verdict::WrongAnswer]
    );
    assert_eq!(
        report.tests[2].detail.as_deref(),
        Some(r#"line 1: expected "15", got "14""#)
    );
    assert_eq!(report.tests[0].detail, None);
    // Every test ran under the default limits, each with its own tag.
    assert_eq!(runner.runs.len(), 3);
    for (_, limits) in &runner.runs {
        assert_eq!(limits.fuel, Some(DEFAULT_FUEL_PER_TEST));
        assert_eq!(limits.memory_bytes, Some(DEFAULT_MEMORY_BYTES_PER_TEST));
        assert_eq!(limits.output_bytes, Some(PYTHON_OUTPUT_BYTES));
    }
    assert_ne!(runner.runs[0].0, runner.runs[1].0);
}

#[test]
fn stop_on_first_failure_skips_the_rest() {
    let mut runner = scripted(doubler);
    let a = args(serde_json::json!({
        "code": "x",
        "tests": cases(&[("1", "2"), ("2", "5"), ("3", "6")]),
        "stop_on_first_failure": true,
        "fuel_per_test": 123,
        "memory_bytes_per_test": 456,
    }));
    let report = judge(&a, &mut runner).expect("report");
    assert_eq!((report.passed, report.total), (1, 3));
    assert_eq!(report.tests.len(), 2);
    assert_eq!(runner.runs.len(), 2);
    assert_eq!(runner.runs[0].1.fuel, Some(123));
    assert_eq!(runner.runs[0].1.memory_bytes, Some(456));
}

#[test]
fn float_tolerance_is_passed_to_the_comparison() {
    let reply = |invocation: &Invocation<'_>| {
        record(
            invocation,
            serde_json::json!({"status": "ok", "detail": "", "stdout": "0.3333333\n", "stdout_bytes": 10}),
        )
    };
    let strict = args(serde_json::json!({"code": "x", "tests": cases(&[("", "0.333333333")])}));
    let loose = args(serde_json::json!({
        "code": "x", "tests": cases(&[("", "0.333333333")]), "float_tolerance": 1e-6,
    }));
    assert_eq!(
        judge(&strict, &mut scripted(reply))
            .expect("report")
            .verdict,
        Verdict::WrongAnswer
    );
    assert_eq!(
        judge(&loose, &mut scripted(reply)).expect("report").verdict,
        Verdict::Accepted
    );
}

#[test]
fn long_outputs_are_compared_by_hash() {
    use sha2::Digest;
    let full = "1\n".repeat(50_000);
    let digest = hex::encode(sha2::Sha256::digest(compare::normalize(&full).as_bytes()));
    let reply = |invocation: &Invocation<'_>| {
        record(
            invocation,
            serde_json::json!({"status": "ok", "detail": "", "stdout": "1\n1\n",
                               "stdout_bytes": 100_000, "stdout_sha256": digest}),
        )
    };
    let same = args(serde_json::json!({"code": "x", "tests": cases(&[("", &full)])}));
    assert_eq!(
        judge(&same, &mut scripted(reply)).expect("report").verdict,
        Verdict::Accepted
    );
    let other = "1\n".repeat(49_999) + "2\n";
    let differs = args(serde_json::json!({"code": "x", "tests": cases(&[("", &other)])}));
    let report = judge(&differs, &mut scripted(reply)).expect("report");
    assert_eq!(report.verdict, Verdict::WrongAnswer);
    let detail = report.tests[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("100000 bytes"), "{detail}");
}

#[test]
fn outcome_kinds_map_to_verdicts() {
    let cases_of = |kind: OutcomeKind, output: &str| {
        let output = output.to_string();
        let a = args(serde_json::json!({"code": "x", "tests": cases(&[("", "1")])}));
        judge(
            &a,
            &mut scripted(move |_: &Invocation<'_>| (kind, output.clone())),
        )
        .expect("report")
        .tests
        .remove(0)
    };
    let t = cases_of(OutcomeKind::TimeLimit, "fuel limit of 10 exhausted");
    assert_eq!(t.verdict, Verdict::TimeLimit);
    assert_eq!(t.detail.as_deref(), Some("fuel limit of 10 exhausted"));
    let m = cases_of(OutcomeKind::MemoryLimit, "anything");
    assert_eq!(m.verdict, Verdict::MemoryLimit);
    assert_eq!(
        m.detail.as_deref(),
        Some("memory limit of 268435456 bytes reached")
    );
    assert_eq!(
        cases_of(OutcomeKind::Crashed, "wasm trap: call stack exhausted").verdict,
        Verdict::RuntimeError
    );
    for kind in [
        OutcomeKind::InfraFault,
        OutcomeKind::ToolError,
        OutcomeKind::OutputTruncated,
    ] {
        assert_eq!(
            cases_of(kind, "x").verdict,
            Verdict::InternalError,
            "{kind:?}"
        );
    }
    // An ok run without a record: the program stopped or fooled the harness.
    let r = cases_of(OutcomeKind::Ok, "1\n");
    assert_eq!(r.verdict, Verdict::RuntimeError);
    assert!(
        r.detail
            .as_deref()
            .unwrap_or_default()
            .contains("did not report"),
        "{r:?}"
    );
}

#[test]
fn forged_records_are_rejected() {
    let a = args(serde_json::json!({"code": "x", "tests": "check(f)"}));
    let report = judge(
        &a,
        &mut scripted(|invocation: &Invocation<'_>| {
            let line = format!(
                "{}{}\n",
                invocation.tag,
                serde_json::json!({"status": "ok", "detail": ""})
            );
            (OutcomeKind::Ok, format!("{line}{line}"))
        }),
    )
    .expect("report");
    assert_eq!(report.verdict, Verdict::RuntimeError);
    assert!(
        report.tests[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("forged"),
        "{report:?}"
    );
}

#[test]
fn harness_statuses_map_to_verdicts() {
    let status_of = |status: &'static str, detail: &'static str| {
        let a = args(serde_json::json!({"code": "x", "tests": "check(f)"}));
        judge(
            &a,
            &mut scripted(move |invocation: &Invocation<'_>| {
                record(
                    invocation,
                    serde_json::json!({"status": status, "detail": detail}),
                )
            }),
        )
        .expect("report")
    };
    let ok = status_of("ok", "");
    assert_eq!(ok.verdict, Verdict::Accepted);
    assert_eq!((ok.passed, ok.total, ok.first_failure), (1, 1, None));
    assert_eq!(
        status_of("assertion_failed", "AssertionError").verdict,
        Verdict::WrongAnswer
    );
    assert_eq!(
        status_of("runtime_error", "ZeroDivisionError").verdict,
        Verdict::RuntimeError
    );
    assert_eq!(
        status_of("compile_error", "SyntaxError").verdict,
        Verdict::CompileError
    );
    assert_eq!(
        status_of("memory_error", "MemoryError").verdict,
        Verdict::MemoryLimit
    );
    assert_eq!(
        status_of("bad_tests", "SyntaxError").verdict,
        Verdict::InternalError
    );
}

#[test]
fn a_compile_error_decides_every_test_after_one_run() {
    let mut runner = scripted(|invocation: &Invocation<'_>| {
        record(
            invocation,
            serde_json::json!({"status": "compile_error", "detail": "SyntaxError: invalid syntax",
                               "stdout": "", "stdout_bytes": 0}),
        )
    });
    let a = args(serde_json::json!({"code": "def f(:", "tests": cases(&[("1", "1"), ("2", "2")])}));
    let report = judge(&a, &mut runner).expect("report");
    assert_eq!(runner.runs.len(), 1);
    assert_eq!(report.tests.len(), 2);
    assert!(
        report
            .tests
            .iter()
            .all(|t| t.verdict == Verdict::CompileError)
    );
    assert_eq!(report.tests[1].fuel_used, 0);
}

#[test]
fn details_are_bounded() {
    let long = "x".repeat(10_000);
    let many: Vec<(&str, &str)> = (0..40).map(|_| ("", "1")).collect();
    let a = args(serde_json::json!({"code": "x", "tests": cases(&many)}));
    let report = judge(
        &a,
        &mut scripted(|invocation: &Invocation<'_>| {
            record(
                invocation,
                serde_json::json!({"status": "runtime_error", "detail": format!("{long}\nValueError: boom\n"),
                                   "stdout": "", "stdout_bytes": 0}),
            )
        }),
    )
    .expect("report");
    let first = report.tests[0].detail.as_deref().unwrap_or_default();
    assert!(
        first.ends_with("xxx\nValueError: boom\n"),
        "the tail is kept: {first}"
    );
    assert!(first.len() <= DETAIL_BYTES + 8);
    assert!(first.len() >= DETAIL_BYTES - 8);
    let kept: usize = report
        .tests
        .iter()
        .filter_map(|t| t.detail.as_ref())
        .map(String::len)
        .sum();
    assert!(kept <= REPORT_DETAIL_BYTES, "{kept}");
    assert!(report.tests.last().is_some_and(|t| t.detail.is_none()));
}

#[test]
fn invalid_arguments_are_rejected() {
    let rejected =
        |value: serde_json::Value| match sod_tool_sdk::invoke::<Judge>(&value.to_string()) {
            Err(ToolError::InvalidArguments(message)) => message,
            other => panic!("expected invalid arguments for {value}, got {other:?}"),
        };
    assert!(rejected(serde_json::json!({"code": "x", "tests": []})).contains("empty list"));
    assert!(
        rejected(serde_json::json!({"code": "x", "tests": "  "})).contains("empty test program")
    );
    assert!(
        rejected(serde_json::json!({"code": "x", "tests": "t", "float_tolerance": -1.0}))
            .contains("float_tolerance")
    );
    assert!(
        rejected(serde_json::json!({"code": "x", "tests": "t", "fuel_per_test": 0}))
            .contains("positive")
    );
    assert!(rejected(serde_json::json!({"code": "x", "tests": 3})).contains("tests"));
    assert!(rejected(serde_json::json!({"tests": "t"})).contains("code"));
}

#[test]
fn traceback_tails_start_on_a_line() {
    let traceback = format!(
        "Traceback (most recent call last):\n{}ValueError: boom\n",
        "  File \"<solution>\", line 3, in f\n    return f(n - 1)\n".repeat(100)
    );
    let kept = tail(&traceback);
    assert!(kept.starts_with("...\n  "), "{kept}");
    assert!(kept.ends_with("ValueError: boom\n"));
    assert!(kept.len() <= DETAIL_BYTES + 4);
    assert_eq!(tail("short\n"), "short\n");
    assert_eq!(head("short"), "short");
    let long = "é".repeat(2000);
    assert!(head(&long).ends_with("..."));
    assert!(head(&long).len() <= DETAIL_BYTES + 3);
}
