//! Worker processes give the same outcomes as in-process calls, keep sessions on one worker, and answer
//! malformed requests with a fault instead of dying.

use std::path::PathBuf;

use sod_sandbox::workers::{WorkerCommand, WorkerPool, serve_requests};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, SandboxConfig};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn tools_dir() -> PathBuf {
    let dir = target_dir().join("tools");
    assert!(
        dir.join("calculator.wasm").is_file(),
        "{} lacks the tools: run `cargo xtask build-tools` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

fn config() -> SandboxConfig {
    SandboxConfig {
        tools_dir: Some(tools_dir()),
        cache_dir: Some(target_dir().join("test-cache")),
        ..SandboxConfig::default()
    }
}

fn pool(workers: usize) -> WorkerPool {
    let command = WorkerCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_sod")),
        tools_dir: tools_dir(),
        seed: 0,
        cache_dir: Some(target_dir().join("test-cache")),
        instances_ahead: true,
        max_memory_bytes: None,
    };
    WorkerPool::start(command, workers).expect("workers start")
}

#[test]
fn worker_outcomes_equal_in_process_outcomes() {
    let sandbox = Sandbox::new(config()).expect("sandbox");
    let pool = pool(2);
    let calls = [
        r#"{"expression": "2^100 // 3"}"#,
        r#"{"expression": "1/0"}"#,
        r#"{"expression": "((("}"#,
    ];
    for arguments in calls {
        let expected = sandbox.call(
            &sandbox.tool("calculator").expect("tool"),
            arguments,
            &CallOptions::default(),
        );
        // Several calls, so both workers answer some.
        for _ in 0..3 {
            let got = pool.call("calculator", arguments, &CallOptions::default());
            assert_eq!(got.to_json(), expected.to_json());
        }
    }
    let unknown = pool.call("no-such-tool", "{}", &CallOptions::default());
    assert_eq!(unknown.kind, OutcomeKind::InfraFault);
    assert!(unknown.message.unwrap_or_default().contains("unknown tool"));
}

#[test]
fn sessions_stay_on_one_worker() {
    let pool = pool(2);
    let options = CallOptions {
        session: Some("worker-session".to_string()),
        ..CallOptions::default()
    };
    let set = pool.call(
        "python",
        r#"{"code": "x = 41", "session": "worker-session"}"#,
        &options,
    );
    assert_eq!(set.kind, OutcomeKind::Ok, "{set:?}");
    let read = pool.call(
        "python",
        r#"{"code": "print(x + 1)", "session": "worker-session"}"#,
        &options,
    );
    assert_eq!(read.output.trim(), "42", "{read:?}");
    assert!(pool.release_session("python", "worker-session"));
    assert!(!pool.release_session("python", "worker-session"));
}

#[test]
fn malformed_requests_get_a_fault_and_the_worker_goes_on() {
    let sandbox = Sandbox::new(config()).expect("sandbox");
    let input = "not json\n{\"op\":\"call\",\"tool\":\"calculator\",\"arguments\":\"{\\\"expression\\\":\\\"6*7\\\"}\"}\n";
    let mut output = Vec::new();
    serve_requests(&sandbox, input.as_bytes(), &mut output).expect("serve");
    let lines: Vec<serde_json::Value> = String::from_utf8(output)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "infra_fault");
    assert_eq!(lines[1]["kind"], "ok");
    assert_eq!(lines[1]["output"], "42");
}

#[test]
fn files_travel_to_workers_and_back() {
    let sandbox = Sandbox::new(config()).expect("sandbox");
    let pool = pool(1);
    let options = CallOptions {
        files: [("in.bin".to_string(), vec![0u8, 1, 2, 250])]
            .into_iter()
            .collect(),
        fetch_files: vec!["out.bin".to_string()],
        ..CallOptions::default()
    };
    let arguments = r#"{"code": "_ = open('out.bin', 'wb').write(bytes(reversed(open('in.bin', 'rb').read())))"}"#;
    let expected = sandbox.call(&sandbox.tool("python").expect("tool"), arguments, &options);
    assert_eq!(expected.kind, OutcomeKind::Ok, "{expected:?}");
    assert_eq!(expected.files["out.bin"], "+gIBAA==");
    let got = pool.call("python", arguments, &options);
    assert_eq!(got.to_json(), expected.to_json());
}
