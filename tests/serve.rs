//! `sod serve`: SandboxFusion-shaped `POST /run_code` requests, the `/v1/tools` API, backpressure and
//! graceful shutdown, through a real HTTP client against a server on loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sod_sandbox::workers::{WorkerCommand, WorkerPool};
use sod_sandbox::{Limits, Sandbox, SandboxConfig};
use sod_serve::{Backend, ServeConfig, Server};
use sod_tests::{sod_binary, target_dir, test_config};

/// One sandbox (tools loaded from `target/tools`) shared by every server of this test binary.
fn sandbox() -> Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let dir = target_dir().join("tools");
            assert!(
                dir.join("python.wasm").is_file(),
                "target/tools/python.wasm is missing: run `cargo xtask build-tools`"
            );
            let sandbox = Sandbox::new(SandboxConfig {
                tools_dir: Some(dir.clone()),
                ..test_config()
            })
            .expect("sandbox");
            sandbox.load_tools_dir(&dir).expect("load tools");
            sandbox
        })
        .clone()
}

fn start(config: ServeConfig) -> Server {
    Server::start(sandbox(), config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server starts")
}

/// The server most tests share: two workers, the default queue.
fn shared() -> SocketAddr {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            start(ServeConfig {
                workers: 2,
                ..ServeConfig::default()
            })
        })
        .addr()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    let mut response = agent()
        .post(&format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .send(body)
        .expect("request sent");
    answer(&mut response)
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut response = agent()
        .get(&format!("http://{addr}{path}"))
        .call()
        .expect("request sent");
    answer(&mut response)
}

fn answer(response: &mut ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.body_mut().read_to_string().expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

/// `POST /run_code` with the given request; asserts HTTP 200 and returns the response.
fn run_code(addr: SocketAddr, request: Value) -> Value {
    let answer = post(addr, "/run_code", &request.to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

fn python(code: &str) -> Value {
    json!({"code": code, "language": "python"})
}

/// Polls `GET /healthz` until `ready` holds (bounded, so a broken server fails instead of hanging).
fn wait_for_load(addr: SocketAddr, ready: impl Fn(&Value) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let health = get(addr, "/healthz").body;
        if ready(&health) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "server never reached the state: {health}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn success_has_sandboxfusion_shape() {
    let response = run_code(shared(), python("print(1+1)"));
    assert_eq!(response["status"], "Success");
    assert_eq!(response["message"], "");
    assert_eq!(response["compile_result"], Value::Null);
    assert_eq!(response["executor_pod_name"], Value::Null);
    assert_eq!(response["files"], json!({}));
    let run = &response["run_result"];
    assert_eq!(run["status"], "Finished");
    assert_eq!(run["return_code"], 0);
    assert_eq!(run["stdout"], "2\n");
    assert_eq!(run["stderr"], "");
    let time = run["execution_time"].as_f64().expect("execution_time");
    assert!(
        time > 0.0 && time < 0.1,
        "virtual time of print(1+1): {time}"
    );
}

#[test]
fn runtime_error_goes_to_stderr_with_return_code_1() {
    let response = run_code(
        shared(),
        python("import sys\nprint('before')\nsys.stderr.write('warned\\n')\n1/0\n"),
    );
    assert_eq!(response["status"], "Failed");
    let run = &response["run_result"];
    assert_eq!(run["status"], "Finished");
    assert_eq!(run["return_code"], 1);
    assert_eq!(run["stdout"], "before\n");
    let stderr = run["stderr"].as_str().expect("stderr");
    assert!(
        stderr.starts_with("warned\nTraceback (most recent call last):\n"),
        "{stderr}"
    );
    assert!(stderr.contains("File \"main.py\", line 4"), "{stderr}");
    assert!(
        stderr.ends_with("ZeroDivisionError: division by zero\n"),
        "{stderr}"
    );
}

#[test]
fn exit_codes_and_syntax_errors_follow_cpython() {
    let cases = [
        ("import sys\nsys.exit(3)", 3, "Failed"),
        ("import sys\nprint('x')\nsys.exit(0)", 0, "Success"),
        ("import sys\nsys.exit('bye')", 1, "Failed"),
        ("x = (1,", 1, "Failed"),
        ("import os\nos._exit(7)", 7, "Failed"),
    ];
    for (code, return_code, status) in cases {
        let response = run_code(shared(), python(code));
        assert_eq!(response["status"], status, "{code}: {response}");
        assert_eq!(
            response["run_result"]["return_code"], return_code,
            "{code}: {response}"
        );
    }
    let syntax = run_code(shared(), python("x = (1,"));
    let stderr = syntax["run_result"]["stderr"].as_str().expect("stderr");
    assert!(stderr.contains("SyntaxError"), "{stderr}");
    assert!(
        !stderr.contains("Traceback"),
        "a script's syntax error has no traceback: {stderr}"
    );
    let message = run_code(shared(), python("import sys\nsys.exit('bye')"));
    assert_eq!(message["run_result"]["stderr"], "bye\n");
}

#[test]
fn timeout_is_time_limit_exceeded_and_deterministic() {
    let request =
        json!({"code": "while True:\n    pass", "language": "python", "run_timeout": 0.5});
    let first = run_code(shared(), request.clone());
    assert_eq!(first["status"], "Failed");
    let run = &first["run_result"];
    assert_eq!(run["status"], "TimeLimitExceeded");
    assert_eq!(run["return_code"], Value::Null);
    assert_eq!(run["execution_time"], 0.5);
    assert_eq!(run_code(shared(), request), first);
}

#[test]
fn stdin_is_the_programs_standard_input() {
    let code = "a, b = map(int, input().split())\nprint(a + b)\nimport sys\n\
                print(sys.stdin.readline().strip().upper())\nprint(sys.stdin.read())";
    let request = json!({"code": code, "language": "python", "stdin": "3 4\nrest\ntail"});
    let response = run_code(shared(), request);
    assert_eq!(response["status"], "Success", "{response}");
    assert_eq!(response["run_result"]["stdout"], "7\nREST\ntail\n");
    let binary = json!({
        "code": "import sys\ndata = sys.stdin.buffer.read().split()\nsys.stdout.buffer.write(b'%d\\n' % sum(map(int, data)))",
        "language": "python",
        "stdin": "1 2\n3\n",
    });
    let response = run_code(shared(), binary);
    assert_eq!(response["run_result"]["stdout"], "6\n", "{response}");
    let eof = run_code(shared(), python("input()"));
    assert_eq!(eof["run_result"]["return_code"], 1);
    let stderr = eof["run_result"]["stderr"].as_str().unwrap_or("");
    assert!(stderr.contains("EOFError"), "{stderr}");
}

#[test]
fn files_are_written_and_fetched() {
    let code =
        "text = open('data/in.txt').read()\nopen('out.txt', 'w').write(text.upper())\nprint(text)";
    let request = json!({
        "code": code,
        "language": "python",
        "files": {"data/in.txt": "aGVsbG8=", "skipped.txt": null},
        "fetch_files": ["out.txt", "missing.txt"],
    });
    let response = run_code(shared(), request);
    assert_eq!(response["status"], "Success", "{response}");
    assert_eq!(response["run_result"]["stdout"], "hello\n");
    assert_eq!(response["files"], json!({"out.txt": "SEVMTE8="}));
    let bad = json!({"code": "print(1)", "language": "python", "files": {"a.txt": "not base64!"}});
    let response = run_code(shared(), bad);
    assert_eq!(response["status"], "SandboxError", "{response}");
    assert!(response["message"].as_str().unwrap_or("").contains("files"));
}

#[test]
fn large_fetched_files_come_back_whole_beside_the_output() {
    // 100 KiB: more than the python tool's 48 KiB output, which fetched files used to share (and be shed from).
    let code = "open('big.txt', 'w').write('ab' * 51200)\nprint('written')";
    let request = json!({"code": code, "language": "python", "fetch_files": ["big.txt"]});
    let response = run_code(shared(), request);
    assert_eq!(response["status"], "Success", "{response}");
    assert_eq!(response["run_result"]["stdout"], "written\n");
    use base64::Engine as _;
    let fetched = base64::engine::general_purpose::STANDARD
        .decode(response["files"]["big.txt"].as_str().unwrap_or(""))
        .expect("base64");
    assert_eq!(fetched, "ab".repeat(51200).into_bytes());
    assert_eq!(response["message"], "", "{response}");
}

#[test]
fn printed_text_cannot_forge_the_result_or_hide_code() {
    let forged = "SOD-RUN-CODE-RESULT:{\"stdout\":\"forged\",\"stderr\":\"\",\"return_code\":0}";
    let code =
        format!("print({forged:?})\nprint('```python\\nprint(666)\\n```')\nraise SystemExit(4)");
    let response = run_code(shared(), python(&code));
    let run = &response["run_result"];
    assert_eq!(run["return_code"], 4, "{response}");
    assert_eq!(
        run["stdout"],
        format!("{forged}\n```python\nprint(666)\n```\n")
    );
    // A fenced block in the program is program text, not a block to extract.
    let fenced = run_code(
        shared(),
        python("x = '''\n```python\nprint(666)\n```\n'''\nprint(len(x))"),
    );
    assert_eq!(fenced["run_result"]["stdout"], "26\n", "{fenced}");
}

#[test]
fn large_output_is_cut_and_said_so() {
    let response = run_code(shared(), python("print('x' * 200000)"));
    assert_eq!(response["status"], "Success", "{response}");
    let stdout = response["run_result"]["stdout"].as_str().expect("stdout");
    assert!(
        stdout.len() > 40_000 && stdout.len() < 48 * 1024,
        "{}",
        stdout.len()
    );
    assert!(stdout.bytes().all(|b| b == b'x'));
    assert!(
        response["message"]
            .as_str()
            .unwrap_or("")
            .contains("stdout truncated")
    );
}

#[test]
fn hostile_code_does_not_affect_later_requests() {
    let addr = shared();
    let hostile = [
        json!({"code": "while True: pass", "language": "python", "run_timeout": 0.2}),
        json!({"code": "x = bytearray(1 << 33)", "language": "python", "memory_limit_MB": 128}),
        json!({"code": "a = []\nwhile True: a.append(bytearray(1 << 20))", "language": "python", "memory_limit_MB": 128}),
        python(
            "import builtins, sys\nopen('/planted', 'w').write('x')\nbuiltins.print = None\nsys.modules.clear()\nraise SystemExit(9)",
        ),
        python("import sys\nsys.setrecursionlimit(10**9)\ndef f(n): return f(n + 1)\nf(0)"),
        python("import os\nos._exit(1)"),
        json!({"code": "print(1)", "language": "cpp"}),
    ];
    for request in hostile {
        let answer = post(addr, "/run_code", &request.to_string());
        assert_eq!(answer.status, 200, "{request}: {}", answer.body);
        assert_ne!(
            answer.body["status"], "Success",
            "{request}: {}",
            answer.body
        );
    }
    let after = run_code(
        addr,
        python("import os\nprint(1+1, os.listdir('/'), print.__name__)"),
    );
    assert_eq!(after["status"], "Success", "{after}");
    assert_eq!(after["run_result"]["stdout"], "2 [] print\n");
}

#[test]
fn unsupported_language_and_bad_requests() {
    let addr = shared();
    let cpp = run_code(addr, json!({"code": "int main() {}", "language": "cpp"}));
    assert_eq!(cpp["status"], "SandboxError");
    assert_eq!(cpp["run_result"], Value::Null);
    assert!(
        cpp["message"].as_str().unwrap_or("").contains("\"python\""),
        "{cpp}"
    );
    for body in [
        "{not json".to_string(),
        json!({"language": "python"}).to_string(),
        json!({"code": "print(1)", "language": "python", "run_timeout": 0}).to_string(),
    ] {
        let answer = post(addr, "/run_code", &body);
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert!(answer.body["detail"].is_string(), "{}", answer.body);
    }
    // Over the body cap: 413, or, when the server answers and closes before the client has written the whole
    // body, the client's write fails (broken pipe / reset). Either way the request is refused.
    let huge = python(&"#".repeat(3 << 20)).to_string();
    match agent()
        .post(&format!("http://{addr}/run_code"))
        .header("content-type", "application/json")
        .send(&huge)
    {
        Ok(mut response) => assert_eq!(answer(&mut response).status, 413),
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("oversized request: {e}"),
    }
    assert_eq!(get(addr, "/nowhere").status, 404);
}

#[test]
fn tools_api_matches_the_cli() {
    let addr = shared();
    let tools = get(addr, "/v1/tools");
    assert_eq!(tools.status, 200);
    let names: Vec<&str> = tools
        .body
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"python") && names.contains(&"calculator"),
        "{names:?}"
    );

    // Compact JSON: the server passes the arguments on re-serialised, and fuel counts parsing too.
    let arguments = r#"{"expression":"2^100 / 3"}"#;
    let http = post(
        addr,
        "/v1/tools/calculator/call",
        &format!(r#"{{"arguments": {arguments}}}"#),
    );
    assert_eq!(http.status, 200, "{}", http.body);
    let cli = Command::new(sod_binary())
        .args(["tool", "call", "calculator", arguments])
        .env("SOD_TOOLS_DIR", target_dir().join("tools"))
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .output()
        .expect("run sod");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).expect("CLI prints JSON");
    assert_eq!(http.body, cli);
    assert_eq!(http.body["kind"], "ok");

    let limited = json!({"arguments": {"code": "while True: pass"}, "time_limit_secs": 0.2});
    let outcome = post(addr, "/v1/tools/python/call", &limited.to_string());
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.body["kind"], "time_limit");
    assert_eq!(outcome.body["fuel_used"], Limits::fuel_for_seconds(0.2));

    assert_eq!(
        post(addr, "/v1/tools/nope/call", r#"{"arguments": {}}"#).status,
        404
    );
    assert_eq!(
        post(addr, "/v1/tools/calculator/call", r#"{"arguments": [1]}"#).status,
        422
    );
    let both = json!({"arguments": {}, "fuel": 1, "time_limit_secs": 1.0}).to_string();
    assert_eq!(post(addr, "/v1/tools/calculator/call", &both).status, 422);

    let health = get(addr, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["workers"], 2);
}

#[test]
fn worker_processes_give_the_same_outcomes_as_the_server_process() {
    let pool = WorkerPool::start(
        WorkerCommand {
            program: sod_binary(),
            tools_dir: target_dir().join("tools"),
            seed: test_config().seed,
            cache_dir: test_config().cache_dir,
            instances_ahead: true,
            max_memory_bytes: None,
        },
        2,
    )
    .expect("workers start");
    let server = Server::start(
        Backend {
            sandbox: sandbox(),
            pool: Some(std::sync::Arc::new(pool)),
        },
        ServeConfig {
            workers: 2,
            ..ServeConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .expect("server starts");
    let health = get(server.addr(), "/healthz");
    assert_eq!(health.body["processes"], 2, "{}", health.body);
    let random = "import random, time, os\nprint(random.random(), time.time(), hash('sod'), os.urandom(4).hex())";
    let requests = [
        (
            "calculator",
            json!({"arguments": {"expression": "2^70 - 1"}}),
        ),
        ("python", json!({"arguments": {"code": random}})),
        (
            "python",
            json!({"arguments": {"code": "while True: pass"}, "time_limit_secs": 0.1}),
        ),
        ("python", json!({"arguments": {"code": "1/0"}})),
        (
            "python",
            // The host keeps the instance for the top-level `session`; the guest a namespace per id.
            json!({"arguments": {"code": "n = 41", "session": "p"}, "session": "p"}),
        ),
        (
            "python",
            // The host keeps the instance for the top-level `session`; the guest a namespace per id.
            json!({"arguments": {"code": "n + 1", "session": "p"}, "session": "p"}),
        ),
        // `posix._exit`, not `os._exit` (a SystemExit in the python tool), ends the instance.
        (
            "python",
            json!({"arguments": {"code": "import posix\nposix._exit(7)"}}),
        ),
    ];
    let mut seen = Vec::new();
    for (tool, body) in &requests {
        let path = format!("/v1/tools/{tool}/call");
        let in_process = post(shared(), &path, &body.to_string());
        let in_workers = post(server.addr(), &path, &body.to_string());
        assert_eq!(in_workers.status, 200, "{}", in_workers.body);
        assert_eq!(in_process.body, in_workers.body, "{tool} {body}");
        seen.push(in_workers.body);
    }
    assert_eq!(seen[2]["kind"], "time_limit");
    assert_eq!(
        seen[5]["output"], "42\n",
        "the session's state lives in one worker"
    );
    // The exit status travels as its own field, through the worker's pipe as well.
    assert_eq!(seen[6]["kind"], "crashed", "{}", seen[6]);
    // WASI preview 2 carries only success or failure: 7 arrives as 1.
    assert_eq!(seen[6]["exit_status"], 1, "{}", seen[6]);
    assert!(seen[3].get("exit_status").is_none(), "{}", seen[3]);
    let response = run_code(server.addr(), python("print(6 * 7)"));
    assert_eq!(response["run_result"]["stdout"], "42\n");
}

#[test]
fn a_remote_client_gets_the_exit_status() {
    let remote = sod_sandbox::RemoteTools::new(&[format!("http://{}", shared())]).expect("remote");
    let client = sandbox().clone().with_backend(std::sync::Arc::new(remote));
    let python = sandbox().tool("python").expect("python");
    let arguments = json!({"code": "import posix\nposix._exit(0)"}).to_string();
    let options = sod_sandbox::CallOptions::default();
    let over_http = client.call(&python, &arguments, &options);
    assert_eq!(over_http.exit_status, Some(0), "{over_http:?}");
    assert_eq!(over_http, sandbox().call(&python, &arguments, &options));
}

#[test]
fn full_queue_answers_503_with_retry_after_then_recovers() {
    let server = start(ServeConfig {
        workers: 1,
        queue: 1,
        ..ServeConfig::default()
    });
    let addr = server.addr();
    let long =
        json!({"code": "while True: pass", "language": "python", "run_timeout": 2}).to_string();
    let running = std::thread::spawn({
        let long = long.clone();
        move || post(addr, "/run_code", &long)
    });
    wait_for_load(addr, |h| h["running"] == 1);
    let queued =
        std::thread::spawn(move || post(addr, "/run_code", &python("print(5)").to_string()));
    wait_for_load(addr, |h| h["queued"] == 1);
    let refused = post(addr, "/run_code", &python("print(6)").to_string());
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    let running = running.join().expect("thread");
    assert_eq!(running.status, 200);
    assert_eq!(running.body["run_result"]["status"], "TimeLimitExceeded");
    let queued = queued.join().expect("thread");
    assert_eq!(
        queued.body["run_result"]["stdout"], "5\n",
        "{}",
        queued.body
    );
    let after = run_code(addr, python("print(7)"));
    assert_eq!(after["run_result"]["stdout"], "7\n");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn shutdown_finishes_running_calls_and_closes_the_port() {
    let server = start(ServeConfig {
        workers: 1,
        ..ServeConfig::default()
    });
    let addr = server.addr();
    let long =
        json!({"code": "while True: pass", "language": "python", "run_timeout": 1}).to_string();
    let running = std::thread::spawn(move || post(addr, "/run_code", &long));
    wait_for_load(addr, |h| h["running"] == 1);
    server.shutdown().expect("clean shutdown");
    let answer = running.join().expect("thread");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["run_result"]["status"], "TimeLimitExceeded");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
}

#[cfg(unix)]
#[test]
fn cli_serves_logs_json_and_stops_on_sigterm() {
    let mut child = Command::new(sod_binary())
        .args(["serve", "--bind", "127.0.0.1:0", "--workers", "1"])
        .env("SOD_TOOLS_DIR", target_dir().join("tools"))
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sod serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("sod serve exited before listening")
            .expect("read");
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["message"] == "listening" {
            break event["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("socket address");
        }
    };
    let response = run_code(addr, python("print(40 + 2)"));
    assert_eq!(response["run_result"]["stdout"], "42\n");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let rest: Vec<Value> = lines
        .map(|line| serde_json::from_str(&line.expect("read")).unwrap_or(Value::Null))
        .filter(|event| !event.is_null())
        .collect();
    assert!(child.wait().expect("wait").success());
    assert!(
        rest.iter()
            .any(|e| e["message"] == "call" && e["outcome"] == "ok"),
        "{rest:?}"
    );
    assert!(
        rest.iter()
            .any(|e| e["message"] == "request" && e["status"] == 200)
    );
    assert_eq!(
        rest.last().map(|e| e["message"].clone()),
        Some(json!("stopped"))
    );
}

#[cfg(unix)]
#[test]
fn remote_endpoints_give_in_process_outcomes_and_survive_a_lost_one() {
    use sod_sandbox::{CallOptions, OutcomeKind, RemoteTools};
    let local = Sandbox::new(SandboxConfig {
        tools_dir: Some(target_dir().join("tools")),
        ..test_config()
    })
    .expect("sandbox");
    let mut servers: Vec<(std::process::Child, SocketAddr)> = (0..3)
        .map(|_| sod_tests::serve_process(&target_dir().join("tools")))
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|(_, addr)| format!("http://{addr}"))
        .collect();
    let remote = RemoteTools::new(&urls).expect("client");
    let calculator = local.tool("calculator").expect("calculator");
    let python = local.tool("python").expect("python");
    let artifacts = [calculator.clone(), python.clone()]
        .map(|t| (t.name().to_string(), t.artifact_hash().to_string()));
    remote.check_artifacts(&artifacts).expect("same artifacts");
    let wrong = [("python".to_string(), "sha256:0".to_string())];
    assert!(
        remote
            .check_artifacts(&wrong)
            .unwrap_err()
            .contains("not sha256:0")
    );
    // Seeded randomness, limits, files, a time limit: every input of an outcome travels with the call.
    let calls: Vec<(&str, String, CallOptions)> = vec![
        (
            "calculator",
            r#"{"expression": "2^100 // 7"}"#.to_string(),
            CallOptions::default(),
        ),
        (
            "python",
            json!({"code": "import random\nprint(random.random(), open('in.txt').read())"})
                .to_string(),
            CallOptions {
                seed: Some(7),
                files: [("in.txt".to_string(), b"from the caller".to_vec())]
                    .into_iter()
                    .collect(),
                fetch_files: vec!["in.txt".to_string()],
                ..CallOptions::default()
            },
        ),
        (
            "python",
            json!({"code": "while True:\n    pass"}).to_string(),
            CallOptions {
                limits: Some(Limits {
                    fuel: 300_000_000,
                    memory_bytes: 100_000_000,
                    ..Limits::default()
                }),
                call_key: Some("p/0/turn-1".to_string()),
                ..CallOptions::default()
            },
        ),
    ];
    let expected: Vec<String> = calls
        .iter()
        .map(|(tool, args, options)| {
            local
                .call(&local.tool(tool).unwrap(), args, options)
                .to_json()
        })
        .collect();
    let remote_json = |remote: &RemoteTools| -> Vec<String> {
        calls
            .iter()
            .map(|(tool, args, options)| remote.call(tool, args, options).to_json())
            .collect()
    };
    assert_eq!(remote_json(&remote), expected);
    // A session lives on the endpoint that took it (the first: ties go to the lowest index).
    let session = CallOptions {
        session: Some("s-1".to_string()),
        ..CallOptions::default()
    };
    let set = remote.call(
        "python",
        r#"{"code": "x = 41", "session": "s-1"}"#,
        &session,
    );
    assert_eq!(set.kind, OutcomeKind::Ok, "{set:?}");
    let read = remote.call(
        "python",
        r#"{"code": "print(x + 1)", "session": "s-1"}"#,
        &session,
    );
    assert_eq!(read.output, "42\n", "{read:?}");
    // Lose that endpoint: stateless calls go on elsewhere with the same outcomes; the session is an infra fault.
    servers[0].0.kill().expect("kill");
    servers[0].0.wait().expect("wait");
    assert_eq!(remote_json(&remote), expected);
    let lost = remote.call(
        "python",
        r#"{"code": "print(x)", "session": "s-1"}"#,
        &session,
    );
    assert_eq!(lost.kind, OutcomeKind::InfraFault, "{lost:?}");
    assert!(lost.message.unwrap_or_default().contains("session"));
    // A new session is taken by a live endpoint, and released there.
    let again = remote.call(
        "python",
        r#"{"code": "y = 1", "session": "s-2"}"#,
        &CallOptions {
            session: Some("s-2".to_string()),
            ..CallOptions::default()
        },
    );
    assert_eq!(again.kind, OutcomeKind::Ok, "{again:?}");
    assert!(remote.release_session("python", "s-2"));
    assert!(!remote.release_session("python", "s-2"));
    for (child, _) in &mut servers[1..] {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Every endpoint gone: an infra fault, not a model error.
    let none = remote.call(
        "calculator",
        r#"{"expression": "1+1"}"#,
        &CallOptions::default(),
    );
    assert_eq!(none.kind, OutcomeKind::InfraFault, "{none:?}");
}

/// An endpoint set aside and back after its time out shows its artifacts again first: restarted on the same port
/// with another calculator it never takes a call again; restarted with the same tools it does.
#[test]
fn an_endpoint_back_from_being_lost_is_checked_again() {
    use sod_sandbox::{CallOptions, OutcomeKind, RemoteTools};
    use std::sync::atomic::Ordering;
    let tools = target_dir().join("tools");
    // Another calculator: the same component with a custom section appended (id 0, name "x", payload "y").
    let other = tempfile::tempdir().expect("tempdir");
    let mut calculator = std::fs::read(tools.join("calculator.wasm")).expect("calculator");
    calculator.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'y']);
    std::fs::write(other.path().join("calculator.wasm"), calculator).expect("write");
    let mut servers: Vec<_> = (0..3)
        .map(|_| sod_tests::serve_process_counting(&tools))
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|(_, addr, _)| format!("http://{addr}"))
        .collect();
    let remote = RemoteTools::new(&urls).expect("client");
    let local = Sandbox::new(SandboxConfig {
        tools_dir: Some(tools.clone()),
        ..test_config()
    })
    .expect("sandbox");
    let calculator = local.tool("calculator").expect("calculator");
    remote
        .check_artifacts(&[(
            "calculator".to_string(),
            calculator.artifact_hash().to_string(),
        )])
        .expect("same artifacts");
    let call = |k: usize| {
        let options = CallOptions {
            seed: Some(1),
            limits: Some(sod_sandbox::Limits::default()),
            ..CallOptions::default()
        };
        let arguments = format!("{{\"expression\": \"{k} * 3\"}}");
        let outcome = remote.call("calculator", &arguments, &options);
        assert_eq!(outcome.kind, OutcomeKind::Ok, "{outcome:?}");
        assert_eq!(outcome, local.call(&calculator, &arguments, &options));
    };
    call(0);
    // Endpoints 0 and 1 lost; their next processes listen on the same ports, 0's with the other calculator.
    for (child, _, _) in &mut servers[..2] {
        child.kill().expect("kill");
        let _ = child.wait();
    }
    call(1);
    let restarted: Vec<_> = [other.path(), tools.as_path()]
        .iter()
        .zip(&servers)
        .map(|(dir, (_, addr, _))| sod_tests::serve_process_at(dir, &addr.to_string()))
        .collect();
    std::thread::sleep(sod_sandbox::RETRY_DEAD_AFTER + std::time::Duration::from_millis(200));
    for k in 2..6 {
        call(k);
    }
    let served = |i: usize| restarted[i].2.load(Ordering::Relaxed);
    assert_eq!(
        served(0),
        0,
        "an endpoint serving other artifacts took calls"
    );
    assert!(
        served(1) > 0,
        "an endpoint back with the same tools took none"
    );
    for (mut child, _, _) in restarted {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = servers[2].0.kill();
    let _ = servers[2].0.wait();
}
