//! The sandbox's guarantees, checked against a deliberately hostile tool: every misbehaviour ends as the
//! right outcome, reruns are byte-identical, and the host stays healthy.

use sod_sandbox::{CallOptions, Limits, OutcomeKind, Sandbox};
use sod_tests::{artifact, shared_sandbox, test_config, tool};

fn hostile(mode: &str) -> String {
    serde_json::json!({ "mode": mode }).to_string()
}

fn call(arguments: &str, limits: Option<Limits>) -> sod_sandbox::Outcome {
    let options = CallOptions {
        limits,
        ..CallOptions::default()
    };
    shared_sandbox().call(&tool("hostile"), arguments, &options)
}

fn small_fuel() -> Limits {
    Limits {
        fuel: 50_000_000,
        ..Limits::default()
    }
}

#[test]
fn echo_is_ok() {
    let outcome = call(r#"{"mode": "echo", "text": "hello"}"#, None);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert_eq!(outcome.output, "hello");
    assert!(outcome.fuel_used > 0);
    assert!(outcome.artifact.starts_with("sha256:"));
}

#[test]
fn infinite_loop_is_time_limit_with_the_same_fuel_every_run() {
    let first = call(&hostile("loop"), Some(small_fuel()));
    assert_eq!(first.kind, OutcomeKind::TimeLimit, "{first:?}");
    assert_eq!(first.fuel_used, small_fuel().fuel);
    for _ in 0..2 {
        assert_eq!(
            call(&hostile("loop"), Some(small_fuel())).to_json(),
            first.to_json()
        );
    }
}

#[test]
fn memory_bomb_is_memory_limit() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let outcome = call(&hostile("alloc"), Some(limits));
    assert_eq!(outcome.kind, OutcomeKind::MemoryLimit, "{outcome:?}");
}

#[test]
fn returned_flood_is_truncated_to_the_output_limit() {
    let limits = Limits {
        output_bytes: 1000,
        ..Limits::default()
    };
    let outcome = call(&hostile("flood"), Some(limits));
    assert_eq!(
        outcome.kind,
        OutcomeKind::OutputTruncated,
        "{:?}",
        outcome.message
    );
    assert_eq!(outcome.output, "x".repeat(1000));
}

#[test]
fn stdout_flood_does_not_crash_the_tool() {
    let outcome = call(&hostile("print_flood"), None);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert_eq!(outcome.output, "printed");
}

#[test]
fn panic_is_crashed_and_the_next_call_works() {
    let outcome = call(&hostile("panic"), None);
    assert_eq!(outcome.kind, OutcomeKind::Crashed, "{outcome:?}");
    let message = outcome.message.unwrap_or_default();
    assert!(message.contains("panicked on purpose"), "{message}");
    let next = call(r#"{"mode": "echo", "text": "still here"}"#, None);
    assert_eq!(next.kind, OutcomeKind::Ok);
    assert_eq!(next.output, "still here");
}

#[test]
fn stack_overflow_and_exit_are_crashes() {
    let overflow = call(&hostile("stack"), None);
    assert_eq!(overflow.kind, OutcomeKind::Crashed, "{overflow:?}");
    assert_eq!(overflow.exit_status, None);
    assert!(!overflow.to_json().contains("exit_status"), "{overflow:?}");
    let exit = call(&hostile("exit"), None);
    assert_eq!(exit.kind, OutcomeKind::Crashed, "{exit:?}");
    // WASI preview 2 carries only success or failure: exit(3) arrives as status 1.
    assert_eq!(exit.exit_status, Some(1), "{exit:?}");
    assert!(exit.to_json().contains(r#""exit_status":1"#), "{exit:?}");
    assert!(
        exit.message
            .unwrap_or_default()
            .contains("exited with status 1")
    );
}

#[test]
fn malformed_arguments_are_tool_errors() {
    for arguments in [
        "not json",
        r#"{"mode": 5}"#,
        r#"{"mode": "nope"}"#,
        r#"{"other": 1}"#,
    ] {
        let outcome = call(arguments, None);
        assert_eq!(
            outcome.kind,
            OutcomeKind::ToolError,
            "{arguments}: {outcome:?}"
        );
        assert_eq!(outcome.error_code.as_deref(), Some("invalid_arguments"));
    }
    let failed = call(r#"{"mode": "fail", "text": "why"}"#, None);
    assert_eq!(failed.kind, OutcomeKind::ToolError);
    assert_eq!(failed.error_code.as_deref(), Some("failed"));
}

#[test]
fn sleep_advances_virtual_time_without_blocking() {
    let started = std::time::Instant::now();
    let outcome = call(&hostile("sleep"), None);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert!(
        outcome.output.starts_with("slept 3600.0"),
        "{}",
        outcome.output
    );
    // Not a timing assertion on the guest: a real one-hour sleep would never get here at all.
    assert!(started.elapsed().as_secs() < 600);
}

#[test]
fn time_and_randomness_are_reproducible_and_keyed_by_seed() {
    let time = call(&hostile("time"), None);
    assert_eq!(time.kind, OutcomeKind::Ok);
    let secs: u128 = time
        .output
        .split(' ')
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert_eq!(
        secs / 1_000_000_000,
        u128::from(sod_sandbox::EPOCH_UNIX_SECONDS)
    );
    assert_eq!(call(&hostile("time"), None).to_json(), time.to_json());

    let random = call(&hostile("random"), None);
    assert_eq!(call(&hostile("random"), None).output, random.output);
    let reseeded = shared_sandbox().call(
        &tool("hostile"),
        &hostile("random"),
        &CallOptions {
            seed: Some(99),
            ..CallOptions::default()
        },
    );
    assert_ne!(reseeded.output, random.output);
}

#[test]
fn no_files_outside_scratch_no_env_no_args() {
    let outcome = call(r#"{"mode": "read_file", "text": "/etc/passwd"}"#, None);
    assert_eq!(outcome.kind, OutcomeKind::ToolError, "{outcome:?}");
    let escape = call(
        r#"{"mode": "read_file", "text": "../../../../etc/passwd"}"#,
        None,
    );
    assert_eq!(escape.kind, OutcomeKind::ToolError, "{escape:?}");
    let scratch = call(&hostile("write_file"), None);
    assert_eq!(scratch.output, "scratch works", "{scratch:?}");
    let env = call(&hostile("env"), None);
    assert_eq!(env.output, "vars=[] args=[]", "{env:?}");
}

#[test]
fn identical_in_a_second_process_sandbox() {
    // A fresh sandbox (engine, pool, caches) stands in for a second process here; the CLI test runs
    // the `sod` binary twice for the cross-process check.
    let other = Sandbox::new(test_config()).expect("sandbox");
    let hostile_tool = other
        .load_tool(&artifact("test-tools/hostile.wasm"))
        .expect("load");
    for mode in ["echo", "time", "random", "loop"] {
        let limits = Some(small_fuel());
        let options = CallOptions {
            limits,
            ..CallOptions::default()
        };
        let a = other.call(&hostile_tool, &hostile(mode), &options);
        let b = call(&hostile(mode), limits);
        assert_eq!(a.to_json(), b.to_json(), "mode {mode}");
    }
}

#[test]
fn composed_calls_are_charged_to_the_caller() {
    let arguments = serde_json::json!({
        "mode": "call",
        "text": "hostile",
        "arguments": r#"{"mode":"echo","text":"inner"}"#,
    })
    .to_string();
    let outcome = call(&arguments, None);
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    let parts: Vec<&str> = outcome.output.split('|').collect();
    assert!(parts[0].ends_with("Ok"), "{}", parts[0]);
    assert_eq!(parts[2], "inner");
    let child_fuel: u64 = parts[1].parse().expect("fuel");
    assert!(outcome.fuel_used > child_fuel);

    // A child that loops forever can use at most what the caller has left: the caller ends in
    // time_limit with exactly its own budget used.
    let looping = serde_json::json!({
        "mode": "call",
        "text": "hostile",
        "arguments": r#"{"mode":"loop"}"#,
    })
    .to_string();
    let outcome = call(&looping, Some(small_fuel()));
    assert_eq!(outcome.fuel_used, small_fuel().fuel, "{outcome:?}");
}

#[test]
fn sessions_keep_an_instance_and_release_it() {
    let sandbox = shared_sandbox();
    let options = CallOptions {
        session: Some("session-test".to_string()),
        ..CallOptions::default()
    };
    let first = sandbox.call(
        &tool("hostile"),
        r#"{"mode": "echo", "text": "a"}"#,
        &options,
    );
    assert_eq!(first.kind, OutcomeKind::Ok);
    assert!(sandbox.release_session("hostile", "session-test"));
    assert!(!sandbox.release_session("hostile", "session-test"));
}

#[test]
fn calls_from_many_threads_agree() {
    let expected = call(&hostile("random"), None).to_json();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| call(&hostile("random"), None).to_json()))
            .collect();
        for handle in handles {
            assert_eq!(handle.join().expect("thread"), expected);
        }
    });
}

#[test]
fn a_composed_call_may_load_its_child_tool_lazily() {
    // Regression: loading the child inside the caller's call used to start a nested async runtime and
    // abort the host process.
    let sandbox = Sandbox::new(sod_sandbox::SandboxConfig {
        tools_dir: Some(sod_tests::target_dir().join("tools")),
        ..test_config()
    })
    .expect("sandbox");
    let hostile_tool = sandbox
        .load_tool(&artifact("test-tools/hostile.wasm"))
        .expect("load");
    assert!(!sandbox.tool_names().contains(&"calculator".to_string()));
    let arguments = serde_json::json!({
        "mode": "call",
        "text": "calculator",
        "arguments": r#"{"expression":"6*7"}"#,
    })
    .to_string();
    let outcome = sandbox.call(&hostile_tool, &arguments, &CallOptions::default());
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert!(outcome.output.ends_with("|42"), "{}", outcome.output);
    assert!(sandbox.tool_names().contains(&"calculator".to_string()));

    let missing =
        serde_json::json!({"mode": "call", "text": "no-such-tool", "arguments": "{}"}).to_string();
    let outcome = sandbox.call(&hostile_tool, &missing, &CallOptions::default());
    assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
    assert!(
        outcome.output.contains("unknown tool"),
        "{}",
        outcome.output
    );
}

#[test]
fn looking_up_tools_from_async_code_needs_no_executor() {
    // Regression: `sod serve` looks tools up inside HTTP handlers; a lookup must not start a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sandbox = shared_sandbox();
        assert_eq!(
            sandbox.tool("calculator").expect("loaded").name(),
            "calculator"
        );
        assert!(sandbox.tool("no-such-tool").is_err());
    });
}

/// A Rust guest's seeded hash keys (`wasi:random/insecure-seed`), clocks, output cap, memory and fuel limits:
/// the same outcome on an instance made ahead of its call as on one made at the call.
#[test]
fn instances_made_ahead_match_fresh_ones_for_a_rust_guest() {
    let make = |ahead: bool| {
        let sandbox = Sandbox::new(sod_sandbox::SandboxConfig {
            instances_ahead: ahead,
            ..test_config()
        })
        .expect("sandbox");
        let hostile = sandbox
            .load_tool(&artifact("test-tools/hostile.wasm"))
            .expect("hostile");
        (sandbox, hostile)
    };
    let ((ahead, on_ahead), (fresh, on_fresh)) = (make(true), make(false));
    let defaults = Limits::default();
    let cases = [
        ("random", None, None),
        ("random", Some(99), None),
        ("time", None, None),
        ("echo", Some(3), None),
        (
            "print_flood",
            None,
            Some(Limits {
                output_bytes: 100,
                ..defaults
            }),
        ),
        (
            "alloc",
            None,
            Some(Limits {
                memory_bytes: 4 << 20,
                ..defaults
            }),
        ),
        ("loop", None, Some(small_fuel())),
    ];
    for round in 0..3 {
        for (mode, seed, limits) in cases {
            let options = CallOptions {
                seed,
                limits,
                ..CallOptions::default()
            };
            let a = ahead.call(&on_ahead, &hostile(mode), &options);
            let f = fresh.call(&on_fresh, &hostile(mode), &options);
            assert_eq!(a, f, "round {round}: {mode} {options:?}");
        }
    }
    assert!(ahead.instances_ahead_counts().0 > 0);
}
