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

/// `args` followed by `--set S` for each of `sets`.
fn with_sets<'a>(args: &[&'a str], sets: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    for set in sets {
        all.extend(["--set", set.as_str()]);
    }
    all
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

/// The python program of the next test: files in a scrambled order, what `os` reports of them, a 2 GB
/// write attempt, and a file to fetch.
const FILES_PROGRAM: &str = "import errno, os\n\
for name in ['zeta', 'Alpha', '10', '9']:\n    open(name, 'w').write(name)\n\
os.mkdir('d')\n\
print(os.listdir('.'), [(os.stat(n).st_ino, os.stat(n).st_mtime_ns) for n in os.listdir('.')])\n\
try:\n    with open('big.bin', 'wb') as f:\n        for _ in range(2048):\n            f.write(b'z' * (1 << 20))\n\
except OSError as e:\n    print('stopped', errno.errorcode[e.errno])\n\
_ = open('out.txt', 'w').write(open('in.txt').read().upper())";

#[test]
fn tool_files_are_the_same_whatever_the_hosts_temporary_directory_and_never_reach_it() {
    let input = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(input.path(), "from the host").expect("write");
    let file_arg = format!("in.txt={}", input.path().display());
    let arguments = serde_json::json!({ "code": FILES_PROGRAM }).to_string();
    // A temporary directory on the disk and, where the machine has one, on tmpfs.
    let disk = tempfile::tempdir_in(target_dir()).expect("disk tempdir");
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).expect("tmpfs tempdir"));
    let mut outputs = Vec::new();
    for dir in std::iter::once(disk.path()).chain(tmpfs.as_ref().map(|d| d.path())) {
        let mut child = Command::new(sod_binary())
            .args([
                "tool", "call", "python", &arguments, "--file", &file_arg, "--fetch", "out.txt",
            ])
            .env("SOD_TOOLS_DIR", target_dir().join("tools"))
            .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
            .env("TMPDIR", dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sod");
        // Watch the directory while the call runs: nothing may appear in it, not even for a moment.
        let mut seen = std::collections::BTreeSet::new();
        while child.try_wait().expect("wait").is_none() {
            seen.extend(
                std::fs::read_dir(dir)
                    .expect("read tempdir")
                    .flatten()
                    .map(|e| e.path()),
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let output = child.wait_with_output().expect("output");
        assert!(output.status.success(), "{}", stderr(&output));
        seen.extend(
            std::fs::read_dir(dir)
                .expect("read tempdir")
                .flatten()
                .map(|e| e.path()),
        );
        assert!(
            seen.is_empty(),
            "the call wrote {seen:?} under {}",
            dir.display()
        );
        outputs.push(stdout(&output));
    }
    let outcome: serde_json::Value = serde_json::from_str(&outputs[0]).expect("JSON");
    assert_eq!(outcome["kind"], "ok", "{outcome}");
    let printed = outcome["output"].as_str().unwrap_or("");
    // Sorted names; inodes in creation order (the host's in.txt first).
    let listing = "['10', '9', 'Alpha', 'd', 'in.txt', 'zeta'] [(5, ";
    assert!(printed.starts_with(listing), "{printed}");
    assert!(printed.ends_with("stopped EIO\n"), "{printed}");
    assert_eq!(outcome["files"]["out.txt"], "RlJPTSBUSEUgSE9TVA==");
    if let Some(tmpfs_output) = outputs.get(1) {
        assert_eq!(tmpfs_output, &outputs[0], "tmpfs and disk differ");
    }
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

/// `sod eval` with the committed benchmark config (every benchmark of ../shared/data, a smoke-sized slice of each,
/// a tiny model), then `sod eval --verify`: identical, and a changed tool artifact is named with exit code 1.
#[test]
fn eval_runs_the_committed_benchmark_config_and_verify_names_a_changed_tool() {
    let config = sod_tests::workspace_root().join("examples/eval/benchmarks.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("model");
    let corpus = [
        "What is 2 + 2? <tool_call>{\"name\": \"python\", \"arguments\": {\"code\": \"print(2+2)\"}}</tool_call> \\boxed{4}",
        "def add(a, b):\n    return a + b\n",
    ];
    sod_model::write_tiny_model_dir(
        &model,
        &sod_model::Qwen3Config::tiny(320, 16, 1),
        &corpus,
        1,
    )
    .expect("tiny model");
    // A private copy of the tools, so that one can be changed without touching the shared build.
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).expect("tools dir");
    for name in ["python.wasm", "judge.wasm"] {
        std::fs::copy(target_dir().join("tools").join(name), tools.join(name)).expect("copy tool");
    }
    let out = dir.path().join("eval");
    let sets = [
        format!("model={}", model.display()),
        format!("out_dir={}", out.display()),
        "limit=1".to_string(),
        "samples=1".to_string(),
        "max_new_tokens_per_turn=6".to_string(),
        "max_turns=2".to_string(),
    ];
    let run = |args: &[&str]| {
        Command::new(sod_binary())
            .args(args)
            .env("SOD_TOOLS_DIR", &tools)
            .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
            .output()
            .expect("run sod")
    };
    let mut args = vec!["eval", "--config", config.to_str().expect("utf-8 path")];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    for name in [
        "aime24",
        "aime25",
        "math500",
        "gsm8k",
        "humaneval",
        "livecodebench",
    ] {
        assert_eq!(printed["summary"][name]["problems"], 1, "{name}: {printed}");
    }
    let manifest = out.join("manifest.json");
    let manifest_arg = manifest.to_str().expect("utf-8 path");
    let output = run(&["eval", "--verify", manifest_arg]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("identical"), "{}", stdout(&output));

    // The same evaluation with its tool calls in two worker processes, and on one and on three `sod serve`
    // processes: the same results, byte for byte.
    let same_results = |other: &std::path::Path, what: &str| {
        for file in ["results.jsonl", "summary.json"] {
            let local = std::fs::read(out.join(file)).expect("local results");
            let there = std::fs::read(other.join(file)).expect("results");
            assert!(
                local == there,
                "{file} differs between in-process tools and {what}"
            );
        }
    };
    let workers_out = dir.path().join("eval-workers");
    let workers_sets = [
        format!("out_dir={}", workers_out.display()),
        "tool_processes=2".to_string(),
    ];
    let output = run(&with_sets(&args, &workers_sets));
    assert!(output.status.success(), "{}", stderr(&output));
    same_results(&workers_out, "two worker processes");
    for count in [1, 3] {
        let mut servers: Vec<_> = (0..count)
            .map(|_| sod_tests::serve_process(&tools))
            .collect();
        let endpoints: Vec<String> = servers
            .iter()
            .map(|(_, addr)| format!("\"http://{addr}\""))
            .collect();
        let remote_out = dir.path().join(format!("eval-remote-{count}"));
        let remote_sets = [
            format!("out_dir={}", remote_out.display()),
            format!("tool_endpoints=[{}]", endpoints.join(", ")),
        ];
        let output = run(&with_sets(&args, &remote_sets));
        for (child, _) in &mut servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(output.status.success(), "{}", stderr(&output));
        same_results(&remote_out, &format!("{count} sod serve endpoints"));
    }
    // Both backends at once: a usage error naming them.
    let both_sets = [
        format!("out_dir={}", dir.path().join("eval-both").display()),
        "tool_processes=2".to_string(),
        "tool_endpoints=[\"http://127.0.0.1:1\"]".to_string(),
    ];
    let output = run(&with_sets(&args, &both_sets));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("tool_endpoints and tool_processes both set"),
        "{}",
        stderr(&output)
    );
    // Three endpoints, the first (which takes every call while the others are idle) killed while the run goes on:
    // its calls are stateless here (no stateful tools), so they go on elsewhere and the results stay the same.
    let mut servers: Vec<_> = (0..3)
        .map(|_| sod_tests::serve_process_counting(&tools))
        .collect();
    let endpoints: Vec<String> = servers
        .iter()
        .map(|(_, addr, _)| format!("\"http://{addr}\""))
        .collect();
    let killed_out = dir.path().join("eval-killed");
    let killed_sets = [
        format!("out_dir={}", killed_out.display()),
        format!("tool_endpoints=[{}]", endpoints.join(", ")),
        "stateful_tools=[]".to_string(),
    ];
    let killed_args = with_sets(&args, &killed_sets);
    let stateless_out = dir.path().join("eval-stateless");
    let stateless_sets = [
        format!("out_dir={}", stateless_out.display()),
        "stateful_tools=[]".to_string(),
    ];
    let stateless_args = with_sets(&args, &stateless_sets);
    let output = run(&stateless_args);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut eval = Command::new(sod_binary())
        .args(&killed_args)
        .env("SOD_TOOLS_DIR", &tools)
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sod eval");
    // Kill it once it has served a call (or the run ended first: then the comparison below is all that is checked).
    while servers[0].2.load(std::sync::atomic::Ordering::Relaxed) == 0
        && eval.try_wait().expect("wait").is_none()
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mid_run = eval.try_wait().expect("wait").is_none();
    servers[0].0.kill().expect("kill");
    let _ = servers[0].0.wait();
    eprintln!("the first endpoint killed while the run went on: {mid_run}");
    let output = eval.wait_with_output().expect("eval");
    let later: usize = servers[1..]
        .iter()
        .map(|(_, _, calls)| calls.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    eprintln!("calls served by the other endpoints: {later}");
    for (child, _, _) in &mut servers[1..] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(output.status.success(), "{}", stderr(&output));
    for file in ["results.jsonl", "summary.json"] {
        let local = std::fs::read(stateless_out.join(file)).expect("local results");
        let remote = std::fs::read(killed_out.join(file)).expect("remote results");
        assert!(
            local == remote,
            "{file} differs after losing an endpoint (killed mid-run: {mid_run})"
        );
    }
    // The setting is honoured: an endpoint nothing listens on stops the run before it starts, with a clear error.
    let dead_sets = [
        format!("out_dir={}", dir.path().join("eval-dead").display()),
        "tool_endpoints=[\"http://127.0.0.1:1\"]".to_string(),
    ];
    let dead_args = with_sets(&args, &dead_sets);
    let output = run(&dead_args);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot reach http://127.0.0.1:1"),
        "{}",
        stderr(&output)
    );

    // A different judge artifact: named, exit code 1.
    let mut judge = std::fs::read(tools.join("judge.wasm")).expect("judge");
    // A custom section (id 0, 3 bytes: name "x", payload "y"): a valid component with a different hash.
    judge.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'y']);
    std::fs::write(tools.join("judge.wasm"), judge).expect("write judge");
    let output = run(&["eval", "--verify", manifest_arg]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("judge"), "{}", stdout(&output));
}

/// `sod chat render` on every reference rendering of the real Qwen3 template (made by transformers,
/// host/model/tests/fixtures/qwen3-chat): the same text and ids; the mask trains tokens only where an
/// assistant message is; bad messages are usage errors.
#[test]
fn chat_render_matches_transformers_on_the_qwen3_fixtures() {
    let root = sod_tests::workspace_root();
    let model = root.join("../shared/data/qwen3-tokenizer");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("host/model/tests/fixtures/qwen3-chat/renderings.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let render = |messages: &std::path::Path, flags: &[&str]| {
        let mut args = vec![
            "chat",
            "render",
            "--model",
            model.to_str().unwrap(),
            "--messages",
            messages.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        sod(&args)
    };
    for case in record["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let file = dir.path().join(format!("{name}.json"));
        // One row of an SFT dataset: messages and tools together.
        let row = serde_json::json!({"messages": case["messages"], "tools": case["tools"]});
        std::fs::write(&file, row.to_string()).unwrap();
        let mut flags = Vec::new();
        if case["add_generation_prompt"] == true {
            flags.push("--add-generation-prompt");
        }
        if case["enable_thinking"] == false {
            flags.push("--no-thinking");
        }
        let output = render(&file, &flags);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let rendered: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(rendered["text"], case["text"], "{name}");
        assert_eq!(rendered["ids"], case["ids"], "{name}");
        let mask = rendered["assistant_mask"].as_array().unwrap();
        assert_eq!(mask.len(), case["ids"].as_array().unwrap().len(), "{name}");
        let has_assistant = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "assistant");
        assert_eq!(mask.iter().any(|m| m == 1), has_assistant, "{name}");
    }
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"role": "wizard", "content": "hi"}]"#).unwrap();
    let output = render(&bad, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("bad messages"),
        "{}",
        stderr(&output)
    );
}

/// `sod sft` on the committed example conversations (a tiny model with its own tokenizer): the loss falls, and the
/// model it writes is what `sod train` takes as its student and `sod eval` evaluates; a bad setting is a usage
/// error naming it.
#[test]
fn sft_writes_a_model_that_train_and_eval_take() {
    let root = sod_tests::workspace_root();
    let example = root.join("examples/sft");
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("base");
    let conversations = std::fs::read_to_string(example.join("conversations.jsonl")).unwrap();
    let corpus: Vec<&str> = conversations.lines().take(40).collect();
    sod_model::write_tiny_model_dir(&base, &sod_model::Qwen3Config::tiny(400, 16, 1), &corpus, 1)
        .expect("tiny model");
    let out = dir.path().join("sft");
    let config = example.join("sft.toml");
    let sets = [
        format!("model={}", base.display()),
        format!("out_dir={}", out.display()),
        "epochs=0.5".to_string(),
        "batch_size=10".to_string(),
        "micro_batch=5".to_string(),
        "learning_rate=1e-2".to_string(),
    ];
    let mut args = vec!["sft", "--config", config.to_str().unwrap()];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let output = sod(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    assert_eq!(
        (summary["step"].as_u64(), summary["conversations"].as_u64()),
        (Some(10), Some(200))
    );
    let (first, last) = (
        summary["first_loss"].as_f64().unwrap(),
        summary["last"]["loss"].as_f64().unwrap(),
    );
    assert!(last < 0.8 * first, "{first} -> {last}");
    let model = summary["model"].as_str().unwrap().to_string();

    // sod train: one on-policy GRPO step from it, with the calculator.
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"What is 6 * 7 + 1?\", \"answer\": \"43\"}\n",
    )
    .unwrap();
    let run = dir.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "student = {model:?}\ndataset = {data:?}\nout_dir = {:?}\ntools = [\"calculator\"]\nsteps = 1\n\
             prompts_per_step = 1\nsamples_per_prompt = 2\nmax_turns = 2\nmax_new_tokens_per_turn = 8\n\
             [loss]\nname = \"grpo\"\n",
            dir.path().join("train")
        ),
    )
    .unwrap();
    let output = sod(&["train", "--config", run.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The same step with its tool calls on a `sod serve` process: the same metrics (timings aside) and weights.
    let (mut server, addr) = sod_tests::serve_process(&target_dir().join("tools"));
    let remote_out = dir.path().join("train-remote");
    let output = sod(&[
        "train",
        "--config",
        run.to_str().unwrap(),
        "--set",
        &format!("out_dir={}", remote_out.display()),
        "--set",
        &format!("tool_endpoints=[\"http://{addr}\"]"),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics = |dir: &std::path::Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics");
        text.lines()
            .map(|line| {
                let mut row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line).expect("metrics row");
                let timing = |k: &str| {
                    ["timing", "time", "secs", "seconds", "per_s", "rss", "eta"]
                        .iter()
                        .any(|t| k.contains(t))
                };
                row.retain(|k, _| !timing(k));
                serde_json::Value::Object(row)
            })
            .collect()
    };
    assert_eq!(metrics(&remote_out), metrics(&dir.path().join("train")));
    // And in two worker processes.
    let workers_out = dir.path().join("train-workers");
    let output = sod(&[
        "train",
        "--config",
        run.to_str().unwrap(),
        "--set",
        &format!("out_dir={}", workers_out.display()),
        "--set",
        "tool_processes=2",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(metrics(&workers_out), metrics(&dir.path().join("train")));
    // Mixed precision: the same step with bf16 products over the f32 weights runs and writes finite metrics.
    let bf16_out = dir.path().join("train-bf16");
    let output = sod(&[
        "train",
        "--config",
        run.to_str().unwrap(),
        "--set",
        &format!("out_dir={}", bf16_out.display()),
        "--set",
        "compute_dtype=\"bfloat16\"",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let bf16 = metrics(&bf16_out);
    assert!(
        bf16[0]["loss"].as_f64().is_some_and(f64::is_finite),
        "{:?}",
        bf16[0]
    );
    let dead = sod(&[
        "train",
        "--config",
        run.to_str().unwrap(),
        "--set",
        &format!("out_dir={}", dir.path().join("train-dead").display()),
        "--set",
        "tool_endpoints=[\"http://127.0.0.1:1\"]",
    ]);
    assert!(!dead.status.success());
    assert!(stderr(&dead).contains("cannot reach"), "{}", stderr(&dead));

    // sod eval: one gsm8k problem with the calculator.
    let eval = dir.path().join("eval.toml");
    std::fs::write(
        &eval,
        format!(
            "model = {model:?}\ntools = [\"calculator\"]\nsamples = 1\nlimit = 1\nmax_turns = 2\n\
             max_new_tokens_per_turn = 8\nout_dir = {:?}\n[[datasets]]\nname = \"gsm8k\"\npath = {:?}\nkind = \"math\"\n",
            dir.path().join("eval"),
            root.join("../shared/data/benchmarks/gsm8k_test.jsonl")
        ),
    )
    .unwrap();
    let output = sod(&["eval", "--config", eval.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    assert_eq!(printed["summary"]["gsm8k"]["problems"], 1, "{printed}");

    // A bad setting: a usage error that names it; the output directory is not touched.
    let mut bad = args.clone();
    bad.extend(["--set", "micro_batch=50"]);
    let output = sod(&bad);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("micro_batch"),
        "{}",
        stderr(&output)
    );
}

/// The GPU bundle's benches run on the CPU build: the device check against itself passes with zero differences; a
/// random model of a config's shape is written and generates; asking for CUDA in a CPU build is a usage error.
#[test]
fn device_check_make_model_and_generate_benches_run_on_the_cpu() {
    let output = sod(&["bench", "device", "--device", "cpu"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["pass"], true, "{report}");
    assert_eq!(report["logits_max_abs_diff"], 0.0, "{report}");
    assert_eq!(report["losses_cpu"], report["losses_device"], "{report}");
    assert_eq!(report["losses_cpu"].as_array().map(Vec::len), Some(4));

    let cuda = sod(&["bench", "device", "--device", "cuda"]);
    assert_eq!(cuda.status.code(), Some(2), "{}", stderr(&cuda));
    assert!(
        stderr(&cuda).contains("`cuda` feature"),
        "{}",
        stderr(&cuda)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let mut shape = serde_json::to_value(sod_model::Qwen3Config::tiny(300, 32, 1)).expect("config");
    shape["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
    std::fs::write(&config, shape.to_string()).expect("write config");
    let model = dir.path().join("model");
    let made = sod(&[
        "bench",
        "make-model",
        "--config",
        config.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    for compute in ["float32", "bfloat16"] {
        let generated = sod(&[
            "bench",
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompts",
            "2",
            "--prompt-tokens",
            "5",
            "--new-tokens",
            "3",
            "--compute-dtype",
            compute,
        ]);
        assert!(generated.status.success(), "{}", stderr(&generated));
        let line: serde_json::Value = serde_json::from_str(&stdout(&generated)).expect("JSON line");
        assert_eq!(line["sod"]["tokens"], 6, "{line}");
        assert_eq!(line["compute_dtype"], compute, "{line}");
    }
}
