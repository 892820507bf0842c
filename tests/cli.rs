//! The `sod` command line: listing tools, calling them, and its errors and exit codes.

use std::process::{Command, Output};

use sod_tests::{sod_binary, target_dir};

fn sod(args: &[&str]) -> Output {
    Command::new(sod_binary())
        .args(args)
        .env("SOD_TOOLS_DIR", target_dir().join("tools"))
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .output()
        .expect("run sod")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn tools_list_json_describes_the_calculator() {
    let output = sod(&["tools", "list", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let tools: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let calculator = tools
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["name"] == "calculator"))
        .expect("calculator listed");
    assert!(
        calculator["artifact"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:")
    );
    assert_eq!(calculator["parameters"]["type"], "object");
    assert!(calculator["parameters"]["properties"]["expression"].is_object());

    let table = sod(&["tools", "list"]);
    assert!(table.status.success());
    assert!(stdout(&table).contains("calculator"));
}

#[test]
fn tool_call_prints_one_json_outcome_identically_in_two_processes() {
    let args = [
        "tool",
        "call",
        "calculator",
        r#"{"expression": "2^100 + 1"}"#,
    ];
    let first = sod(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&first)).expect("JSON");
    assert_eq!(outcome["kind"], "ok");
    assert_eq!(outcome["output"], "1267650600228229401496703205377");
    let second = sod(&args);
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn guest_failures_are_outcomes_not_cli_errors() {
    let output = sod(&["tool", "call", "calculator", r#"{"expression": "1/0"}"#]);
    assert!(output.status.success(), "{}", stderr(&output));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(outcome["kind"], "tool_error");
    let limited = sod(&[
        "tool",
        "call",
        "calculator",
        r#"{"expression": "2^100"}"#,
        "--fuel",
        "1000",
    ]);
    assert!(limited.status.success());
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&limited)).expect("JSON");
    assert_eq!(outcome["kind"], "time_limit");
    assert_eq!(outcome["fuel_used"], 1000);
}

#[test]
fn unknown_tool_and_bad_json_are_usage_errors() {
    let unknown = sod(&["tool", "call", "no-such-tool", "{}"]);
    assert_eq!(unknown.status.code(), Some(2));
    let message = stderr(&unknown);
    assert!(
        message.contains("unknown tool \"no-such-tool\""),
        "{message}"
    );
    assert!(
        message.contains("calculator"),
        "lists the available tools: {message}"
    );

    let bad = sod(&["tool", "call", "calculator", "{expression"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
}
