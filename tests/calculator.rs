//! The calculator tool, end to end through the sandbox.

use sod_sandbox::{CallOptions, OutcomeKind};
use sod_tests::{shared_sandbox, tool};

fn calc(expression: &str) -> sod_sandbox::Outcome {
    let arguments = serde_json::json!({ "expression": expression }).to_string();
    shared_sandbox().call(&tool("calculator"), &arguments, &CallOptions::default())
}

fn ok(expression: &str) -> String {
    let outcome = calc(expression);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{expression}: {outcome:?}");
    outcome.output
}

#[test]
fn exact_arithmetic() {
    assert_eq!(ok("1 + 2 * 3"), "7");
    assert_eq!(ok("2^100"), "1267650600228229401496703205376");
    assert_eq!(ok("1/3 + 1/6"), "1/2");
    assert_eq!(ok("-(7 // 2) + 7 % 3"), "-2");
    assert_eq!(ok("factorial(25)"), "15511210043330985984000000");
    assert_eq!(ok("gcd(84, 36) + lcm(4, 6)"), "24");
}

#[test]
fn errors_are_tool_errors_with_messages() {
    for expression in ["1/0", "2 +", "foo(3)", "((((1)"] {
        let outcome = calc(expression);
        assert_eq!(
            outcome.kind,
            OutcomeKind::ToolError,
            "{expression}: {outcome:?}"
        );
        assert!(outcome.message.is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn huge_results_are_refused_early_not_by_fuel() {
    let outcome = calc("10^(10^9)");
    assert_eq!(outcome.kind, OutcomeKind::ToolError, "{outcome:?}");
    let outcome = calc("factorial(10^8)");
    assert_eq!(outcome.kind, OutcomeKind::ToolError, "{outcome:?}");
}
