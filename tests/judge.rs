//! The judge tool (tools/judge) end to end: each test runs in a fresh python tool instance called
//! through `sod:tool/sandbox.call-tool`; and `sod judge` over the shared benchmark files.
//!
//! The benchmark files are read from `$SOD_BENCHMARKS_DIR`, else `../shared/data/benchmarks`
//! beside the workspace.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};
use sod_sandbox::{CallOptions, Limits, Outcome, OutcomeKind, Sandbox, Tool};
use sod_tests::{artifact, sod_binary, target_dir, test_config, workspace_root};

/// A sandbox with the judge and the python tool loaded (python first: the judge calls it).
fn judge_tool() -> &'static (Sandbox, Tool) {
    static JUDGE: OnceLock<(Sandbox, Tool)> = OnceLock::new();
    JUDGE.get_or_init(|| {
        let sandbox = Sandbox::new(test_config()).expect("sandbox");
        sandbox
            .load_tool(&artifact("tools/python.wasm"))
            .expect("load tools/python.wasm");
        let judge = sandbox
            .load_tool(&artifact("tools/judge.wasm"))
            .expect("load tools/judge.wasm");
        (sandbox, judge)
    })
}

/// Limits of a judge call with `tests` tests of `fuel` each.
fn limits_for(tests: u64, fuel: u64) -> Limits {
    Limits {
        fuel: tests * (fuel + 200_000_000) + 1_000_000_000,
        memory_bytes: 256 << 20,
        output_bytes: 1 << 20,
        wall_ms: 600_000,
        ..Limits::default()
    }
}

fn call_judge(arguments: &Value, limits: Limits) -> Outcome {
    let (sandbox, judge) = judge_tool();
    let options = CallOptions {
        limits: Some(limits),
        call_key: Some("judge-test".to_string()),
        ..CallOptions::default()
    };
    sandbox.call(judge, &arguments.to_string(), &options)
}

/// Judges and returns the report, asserting the judge call itself succeeded.
fn report(arguments: Value) -> Value {
    let tests = arguments["tests"].as_array().map_or(1, Vec::len) as u64;
    let fuel = arguments["fuel_per_test"]
        .as_u64()
        .unwrap_or(10_000_000_000);
    let outcome = call_judge(&arguments, limits_for(tests, fuel));
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:#?}");
    serde_json::from_str(&outcome.output).expect("the report is JSON")
}

fn verdicts(report: &Value) -> Vec<String> {
    report["tests"]
        .as_array()
        .map(|tests| {
            tests
                .iter()
                .map(|t| t["verdict"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn detail(report: &Value, test: usize) -> String {
    report["tests"][test]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn benchmarks_dir() -> PathBuf {
    let dir = std::env::var_os("SOD_BENCHMARKS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data/benchmarks"));
    assert!(
        dir.join("humaneval.jsonl").is_file(),
        "benchmark files not found in {}: set SOD_BENCHMARKS_DIR",
        dir.display()
    );
    dir
}

fn read_jsonl(name: &str) -> Vec<Value> {
    let path = benchmarks_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn problem(file: &str, id: &str) -> Value {
    read_jsonl(file)
        .into_iter()
        .find(|row| row["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {file}"))
}

// ---- stdin/stdout problems from the benchmarks, hand-written solutions ----

#[test]
fn livecodebench_second_largest() {
    let problem = problem("livecodebench_v5_stdin.jsonl", "lcb-v5-2408-2501-0");
    let correct = "n = int(input())\na = list(map(int, input().split()))\n\
                   second = sorted(a)[-2]\nprint(a.index(second) + 1)\n";
    let r = report(json!({"code": correct, "tests": problem["tests"]}));
    assert_eq!(r["verdict"], "accepted", "{r}");
    assert_eq!(r["passed"], r["total"]);
    assert_eq!(r["total"], 2);
    assert_eq!(r["first_failure"], Value::Null);

    // The index of the largest instead of the second largest.
    let wrong =
        "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(max(a)) + 1)\n";
    let r = report(json!({"code": wrong, "tests": problem["tests"]}));
    assert_eq!(r["verdict"], "wrong_answer", "{r}");
    assert_eq!(r["passed"], 0);
    assert_eq!(r["first_failure"], 0);
    assert_eq!(detail(&r, 0), r#"line 1: expected "3", got "1""#);
}

#[test]
fn livecodebench_leap_years_with_fast_io_idioms() {
    let problem = problem("livecodebench_v5_stdin.jsonl", "lcb-v5-2408-2501-1");
    // sys.stdin.buffer and sys.stdout.write, as competitive programmers write them.
    let correct = "import sys\ny = int(sys.stdin.buffer.readline())\n\
                   leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)\n\
                   sys.stdout.write(str(366 if leap else 365) + '\\n')\n";
    assert_eq!(
        report(json!({"code": correct, "tests": problem["tests"]}))["verdict"],
        "accepted"
    );
    // open(0) reads standard input too; the main guard runs (__name__ is __main__).
    let open_zero = concat!(
        "def main():\n",
        "    y = int(open(0).read())\n",
        "    print(366 if y % 4 == 0 and (y % 100 or y % 400 == 0) else 365)\n",
        "if __name__ == '__main__':\n",
        "    main()\n",
    );
    assert_eq!(
        report(json!({"code": open_zero, "tests": problem["tests"]}))["verdict"],
        "accepted"
    );
    // Forgets the 100/400 rule: wrong exactly for the years divisible by 100 but not by 400;
    // 1900 is added so that at least one test tells them apart.
    let mut tests = problem["tests"].as_array().cloned().unwrap_or_default();
    tests.push(json!({"input": "1900\n", "output": "365\n"}));
    let expected: Vec<&str> = tests
        .iter()
        .map(|test| {
            let year: u32 = test["input"]
                .as_str()
                .unwrap_or("")
                .trim()
                .parse()
                .expect("a year");
            if year.is_multiple_of(100) && !year.is_multiple_of(400) {
                "wrong_answer"
            } else {
                "accepted"
            }
        })
        .collect();
    let naive = "y = int(input())\nprint(366 if y % 4 == 0 else 365)\n";
    let r = report(json!({"code": naive, "tests": tests}));
    assert_eq!(verdicts(&r), expected, "{r}");
    let accepted = expected.iter().filter(|v| **v == "accepted").count();
    assert_eq!(r["passed"].as_u64(), Some(accepted as u64));
    assert_eq!(r["total"].as_u64(), Some(tests.len() as u64));
    let first = expected.iter().position(|v| *v != "accepted");
    assert_eq!(r["first_failure"].as_u64(), first.map(|i| i as u64));
    assert_eq!(
        r["tests"][first.unwrap_or(0)]["detail"],
        r#"line 1: expected "365", got "366""#
    );
}

#[test]
fn codeforces_min_max_and_stop_on_first_failure() {
    let problem = problem("codeforces_samples.jsonl", "codeforces-rllm-0");
    let correct = concat!(
        "t = int(input())\n",
        "for _ in range(t):\n",
        "    x, y = map(int, input().split())\n",
        "    print(min(x, y), max(x, y))\n",
    );
    assert_eq!(
        report(json!({"code": correct, "tests": problem["tests"]}))["verdict"],
        "accepted"
    );
    // Trailing spaces and CRLF line ends are tolerated.
    let sloppy = concat!(
        "t = int(input())\n",
        "for _ in range(t):\n",
        "    x, y = map(int, input().split())\n",
        "    print(min(x, y), max(x, y), end=' \\r\\n')\n",
    );
    assert_eq!(
        report(json!({"code": sloppy, "tests": problem["tests"]}))["verdict"],
        "accepted"
    );
    let unsorted = "t = int(input())\nfor _ in range(t):\n    print(input())\n";
    let mut tests = problem["tests"].as_array().cloned().unwrap_or_default();
    tests.extend([
        json!({"input": "1\n5 6\n", "output": "5 6\n"}),
        json!({"input": "1\n7 6\n", "output": "6 7\n"}),
    ]);
    let r = report(json!({"code": unsorted, "tests": tests}));
    assert_eq!(verdicts(&r), ["wrong_answer", "accepted", "wrong_answer"]);
    assert_eq!(detail(&r, 0), r#"line 2: expected "4 8", got "8 4""#);
    let r = report(json!({"code": unsorted, "tests": tests, "stop_on_first_failure": true}));
    assert_eq!(verdicts(&r), ["wrong_answer"]);
    assert_eq!(
        (r["passed"].as_u64(), r["total"].as_u64()),
        (Some(0), Some(3))
    );
}

// ---- limits ----

#[test]
fn infinite_loop_is_a_time_limit_within_the_judges_budget() {
    let fuel = 2_000_000_000;
    let arguments = json!({
        "code": "n = int(input())\nwhile True:\n    n += 1\n",
        "tests": [{"input": "1\n", "output": "2\n"}, {"input": "2\n", "output": "3\n"}],
        "fuel_per_test": fuel,
    });
    let limits = limits_for(2, fuel);
    let outcome = call_judge(&arguments, limits);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:#?}");
    let r: Value = serde_json::from_str(&outcome.output).expect("JSON");
    assert_eq!(verdicts(&r), ["time_limit", "time_limit"], "{r}");
    assert!(detail(&r, 0).contains("fuel"), "{r}");
    // Each test used its whole budget, the judge was charged for both, and stayed within its own.
    for test in r["tests"].as_array().into_iter().flatten() {
        assert!(test["fuel_used"].as_u64() >= Some(fuel), "{test}");
    }
    assert!(outcome.fuel_used >= 2 * fuel);
    assert!(outcome.fuel_used <= limits.fuel);
}

#[test]
fn a_judge_budget_smaller_than_the_tests_ends_the_judge_call() {
    // The child's fuel is clamped to what the judge has left: the run cannot exceed the caller.
    let arguments = json!({
        "code": "while True:\n    pass\n",
        "tests": "assert True\n",
        "fuel_per_test": 5_000_000_000u64,
    });
    let limits = Limits {
        fuel: 1_000_000_000,
        ..limits_for(1, 0)
    };
    let outcome = call_judge(&arguments, limits);
    assert_eq!(outcome.kind, OutcomeKind::TimeLimit, "{outcome:#?}");
    assert!(outcome.fuel_used <= limits.fuel);
}

#[test]
fn memory_bomb_is_a_memory_limit() {
    let bombs = [
        "x = [0] * (10 ** 9)\n",
        "s = 'a'\nwhile True:\n    s += s\n",
        "b = []\nwhile True:\n    b.append(bytearray(1 << 20))\n",
    ];
    for bomb in bombs {
        let r = report(json!({
            "code": bomb,
            "tests": [{"input": "", "output": ""}],
            "memory_bytes_per_test": 64 << 20,
        }));
        assert_eq!(verdicts(&r), ["memory_limit"], "{bomb}: {r}");
        assert_eq!(detail(&r, 0), "memory limit of 67108864 bytes reached");
    }
}

// ---- verdicts of test programs ----

#[test]
fn test_program_verdicts() {
    let tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\
                 check(add)\n";
    let cases = [
        ("def add(a, b):\n    return a + b\n", "accepted", ""),
        (
            "def add(a, b):\n    return a * b\n",
            "wrong_answer",
            "assert candidate(2, 3) == 5",
        ),
        (
            "def add(a, b):\n    return a / 0\n",
            "runtime_error",
            "ZeroDivisionError",
        ),
        (
            "def add(a, b)\n    return a + b\n",
            "compile_error",
            "SyntaxError",
        ),
        (
            "def add(a, b):\n  return a\n    + b\n",
            "compile_error",
            "IndentationError",
        ),
        (
            "def add(a, b):\n    return a + b\nadd(1)\n",
            "runtime_error",
            "TypeError",
        ),
        (
            "def add(a, b):\n    return a + b\nimport sys\nsys.exit(0)\n",
            "runtime_error",
            "exited before",
        ),
        (
            "def add(a, b):\n    return a + b\nprint('Traceback (most recent call last):')\n",
            "accepted",
            "",
        ),
        // An assert inside the candidate is the candidate's error, not a failed test.
        (
            "def add(a, b):\n    assert a > 0, 'positive only'\n    return a + b\n",
            "runtime_error",
            "positive only",
        ),
        (
            "def add(a, b):\n    while True:\n        pass\n",
            "time_limit",
            "fuel",
        ),
    ];
    for (code, verdict, needle) in cases {
        let r = report(json!({"code": code, "tests": tests, "fuel_per_test": 1_000_000_000u64}));
        assert_eq!(r["verdict"], verdict, "{code}\n{r}");
        assert_eq!(r["total"], 1);
        assert!(detail(&r, 0).contains(needle), "{code}\n{r}");
    }
    // A test program that does not compile is the problem's fault.
    let r = report(
        json!({"code": "def add(a, b):\n    return a + b\n", "tests": "assert add(1, 1) ==\n"}),
    );
    assert_eq!(r["verdict"], "internal_error", "{r}");
}

#[test]
fn stdin_program_verdicts() {
    let tests = json!([{"input": "4\n", "output": "16\n"}]);
    let cases = [
        ("print(int(input()) ** 2)\n", "accepted", String::new()),
        (
            "import sys\nprint(int(input()) ** 2)\nsys.exit()\n",
            "accepted",
            String::new(),
        ),
        (
            "print(int(input()) ** 2)\nexit(0)\n",
            "accepted",
            String::new(),
        ),
        (
            "print(int(input()) ** 2)\nimport sys\nsys.exit(3)\n",
            "runtime_error",
            "status 3".into(),
        ),
        (
            "print(int(input()) ** 2)\nraise ValueError('late')\n",
            "runtime_error",
            "ValueError: late".into(),
        ),
        (
            "print(int(input() ** 2)\n",
            "compile_error",
            "SyntaxError".into(),
        ),
        (
            "import sys\nprint(16, file=sys.stderr)\n",
            "wrong_answer",
            "no output".into(),
        ),
        ("input()\ninput()\n", "runtime_error", "EOFError".into()),
        (
            "import sys\nsys.stdout.close()\n",
            "wrong_answer",
            "no output".into(),
        ),
    ];
    for (code, verdict, needle) in cases {
        let r = report(json!({"code": code, "tests": tests}));
        assert_eq!(r["verdict"], verdict, "{code}\n{r}");
        assert!(detail(&r, 0).contains(&needle), "{code}\n{r}");
    }
    // A compile error decides the other tests without running them.
    let two = json!([{"input": "1\n", "output": "1\n"}, {"input": "2\n", "output": "4\n"}]);
    let r = report(json!({"code": "print(", "tests": two}));
    assert_eq!(verdicts(&r), ["compile_error", "compile_error"]);
    assert_eq!(r["tests"][1]["fuel_used"], 0);
}

#[test]
fn float_tolerance() {
    let tests = json!([{"input": "3\n", "output": "0.333333333\n"}]);
    let code = "print(round(1 / int(input()), 5))\n";
    assert_eq!(
        report(json!({"code": code, "tests": tests}))["verdict"],
        "wrong_answer"
    );
    assert_eq!(
        report(json!({"code": code, "tests": tests, "float_tolerance": 1e-4}))["verdict"],
        "accepted"
    );
    assert_eq!(
        report(json!({"code": code, "tests": tests, "float_tolerance": 1e-7}))["verdict"],
        "wrong_answer"
    );
}

#[test]
fn long_outputs_are_compared_whole() {
    let expected: String = (0..30_000).map(|i| format!("{i}\n")).collect();
    let tests = json!([{"input": "30000\n", "output": expected}]);
    let r =
        report(json!({"code": "for i in range(int(input())):\n    print(i)\n", "tests": tests}));
    assert_eq!(r["verdict"], "accepted", "{r}");
    // Wrong only in the last line, far past the part that is returned verbatim.
    let r = report(json!({
        "code": "n = int(input())\nfor i in range(n):\n    print(i if i < n - 1 else -1)\n",
        "tests": tests,
    }));
    assert_eq!(r["verdict"], "wrong_answer", "{r}");
    assert!(detail(&r, 0).contains("by hash"), "{r}");
}

#[test]
fn programs_cannot_forge_the_harness_report() {
    // Printing something that looks like a report does nothing: the tag is unknown.
    let fake = "print('sod-judge:00000000000000000000000000000000:{\"status\": \"ok\", \"detail\": \"\"}')\n\
                raise SystemExit(1)\n";
    let r = report(json!({"code": fake, "tests": "assert False\n"}));
    assert_eq!(r["verdict"], "runtime_error", "{r}");
    // A program that digs the tag and the output stream out of the harness's frame and writes a
    // report of its own is caught: the harness still reports, and two reports are rejected.
    let forger = "import sys\nframe = sys._getframe(1)\nreport = frame.f_locals['report']\n\
                  report.status, report.detail = 'ok', ''\nreport.send()\n\
                  raise SystemExit(0)\n";
    let r = report(json!({"code": forger, "tests": "assert False\n"}));
    assert_eq!(r["verdict"], "runtime_error", "{r}");
    assert!(detail(&r, 0).contains("forged"), "{r}");
}

#[test]
fn verdicts_are_deterministic() {
    let arguments = json!({
        "code": "import random\nrandom.seed()\nprint(random.random() < 2)\nprint(len({object() for _ in range(3)}))\n",
        "tests": [{"input": "", "output": "True\n3\n"}, {"input": "x", "output": "True\n3\n"}],
    });
    let first = call_judge(&arguments, limits_for(2, 10_000_000_000));
    assert_eq!(first.kind, OutcomeKind::Ok, "{first:#?}");
    for _ in 0..2 {
        assert_eq!(call_judge(&arguments, limits_for(2, 10_000_000_000)), first);
    }
}

// ---- `sod judge` over HumanEval ----

fn sod_judge(args: &[&str]) -> Output {
    Command::new(sod_binary())
        .arg("judge")
        .args(args)
        .env("SOD_TOOLS_DIR", target_dir().join("tools"))
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .stdin(Stdio::null())
        .output()
        .expect("run sod judge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `rows` as JSON Lines into `dir/name`.
fn write_jsonl(dir: &std::path::Path, name: &str, rows: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let body: String = rows.iter().map(|row| format!("{row}\n")).collect();
    std::fs::write(&path, body).expect("write JSON Lines");
    path
}

fn results(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

/// A copy of every reference solution whose body only returns None.
fn broken_humaneval(reference: &[Value]) -> Vec<Value> {
    reference
        .iter()
        .map(|row| json!({"id": row["id"], "completion": "    return None\n"}))
        .collect()
}

#[test]
fn humaneval_reference_solutions_pass_and_broken_copies_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = benchmarks_dir().join("humaneval.jsonl");
    let reference = read_jsonl("humaneval_reference.jsonl");
    assert_eq!(reference.len(), 164);
    let mut solutions = reference.clone();
    solutions.extend(broken_humaneval(&reference));
    let solutions = write_jsonl(dir.path(), "solutions.jsonl", &solutions);
    let out = dir.path().join("out");
    let output = sod_judge(&[
        "--problems",
        problems.to_str().expect("UTF-8 path"),
        "--solutions",
        solutions.to_str().expect("UTF-8 path"),
        "--jobs",
        "2",
        "--out",
        out.to_str().expect("UTF-8 path"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).ends_with("passed 164/328\n"),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 328);
    for (row, expected) in rows.iter().zip(&reference) {
        assert_eq!(row["id"], expected["id"]);
        assert_eq!(row["sample"], 0);
        assert_eq!(row["verdict"], "accepted", "{row}");
        assert_eq!(
            (row["passed"].as_u64(), row["total"].as_u64()),
            (Some(1), Some(1))
        );
    }
    for row in &rows[164..] {
        assert_eq!(row["sample"], 1);
        assert_ne!(row["verdict"], "accepted", "{row}");
        assert!(
            ["wrong_answer", "runtime_error"].contains(&row["verdict"].as_str().unwrap_or("")),
            "{row}"
        );
    }
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("summary.json")).expect("summary.json"),
    )
    .expect("JSON");
    assert_eq!(summary["passed"], 164);
    assert_eq!(summary["total"], 328);
    assert_eq!(summary["verdicts"]["accepted"], 164);
}

/// A process that keeps one CPU busy until it is killed.
struct BusyLoop(std::process::Child);

impl BusyLoop {
    fn start() -> Self {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start a busy loop");
        BusyLoop(child)
    }
}

impl Drop for BusyLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sod_judge_results_are_identical_across_runs_jobs_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let problems = benchmarks_dir().join("humaneval.jsonl");
    // A deterministic subset: every 8th reference solution and every 8th broken copy, plus a
    // few that fail in other ways.
    let reference = read_jsonl("humaneval_reference.jsonl");
    let mut solutions: Vec<Value> = reference.iter().step_by(8).cloned().collect();
    solutions.extend(broken_humaneval(&reference).into_iter().skip(4).step_by(8));
    solutions.push(json!({"id": "HumanEval/0", "completion": "    while True:\n        pass\n"}));
    solutions
        .push(json!({"id": "HumanEval/1", "completion": "    return [x for x in range(10**9)]\n"}));
    solutions.push(json!({"id": "HumanEval/2", "completion": "    return number %\n"}));
    let solutions = write_jsonl(dir.path(), "solutions.jsonl", &solutions);
    let run = |name: &str, jobs: &str| {
        let out = dir.path().join(name);
        let output = sod_judge(&[
            "--problems",
            problems.to_str().expect("UTF-8 path"),
            "--solutions",
            solutions.to_str().expect("UTF-8 path"),
            "--jobs",
            jobs,
            "--fuel-per-test",
            "3000000000",
            "--memory-mb",
            "128",
            "--out",
            out.to_str().expect("UTF-8 path"),
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        (
            std::fs::read(out.join("results.jsonl")).expect("results.jsonl"),
            text(&output.stdout),
        )
    };
    let (first, stdout) = run("one", "1");
    let (second, _) = run("two", "2");
    let (third, _) = {
        let _load = BusyLoop::start();
        run("three", "3")
    };
    assert!(
        first == second,
        "results differ between --jobs 1 and --jobs 2"
    );
    assert!(
        first == third,
        "results differ under CPU load with --jobs 3"
    );
    let rows = results(&dir.path().join("one"));
    let last: Vec<&str> = rows[rows.len() - 3..]
        .iter()
        .map(|row| row["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(last, ["time_limit", "memory_limit", "compile_error"]);
    let accepted = rows
        .iter()
        .filter(|row| row["verdict"] == "accepted")
        .count();
    assert_eq!(accepted, reference.iter().step_by(8).count());
    assert!(
        stdout.ends_with(&format!("passed {accepted}/{}\n", rows.len())),
        "{stdout}"
    );
}
