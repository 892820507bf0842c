//! Training-step throughput on CPU for tiny models:
//! `cargo bench -p sod-train --bench train_step --profile dev` (dependencies are optimised in the dev profile).
//!
//! Writes a student and a teacher (same tokenizer), a two-prompt dataset and a run config into a temporary
//! directory, trains a few SOD steps with the calculator tool, and prints the per-step timing from
//! `metrics.jsonl` (the first step, which compiles/loads the tool, is reported apart). Set `SOD_BENCH_KEEP=DIR` to
//! write the run into DIR and keep it (e.g. to try `sod train --config DIR/run.toml` on it).
//! Sizes: `SOD_BENCH_HIDDEN` (default 64), `SOD_BENCH_LAYERS` (2), `SOD_BENCH_STEPS` (4).

use std::path::{Path, PathBuf};

use candle_core::Device;
use sod_model::{ChatMessage, ChatTemplate, Qwen3Config, write_tiny_model_dir};
use sod_train::{RunConfig, Trainer, TrainerOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn plugin_dir() -> PathBuf {
    let exe_dir = sod_loss::default_plugin_dir().expect("executable directory");
    let wanted = sod_loss::plugin_file_name("sod");
    [
        exe_dir.clone(),
        exe_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    ]
    .into_iter()
    .find(|d| d.join(&wanted).is_file())
    .unwrap_or_else(|| {
        panic!(
            "{wanted} not found near {}: run `cargo build --workspace`",
            exe_dir.display()
        )
    })
}

fn main() {
    let hidden = env_usize("SOD_BENCH_HIDDEN", 64);
    let layers = env_usize("SOD_BENCH_LAYERS", 2);
    let steps = env_usize("SOD_BENCH_STEPS", 4);
    let tools_dir = target_dir().join("tools");
    assert!(
        tools_dir.join("calculator.wasm").is_file(),
        "{} is missing: run `cargo xtask build-tools`",
        tools_dir.join("calculator.wasm").display()
    );
    let temp = tempfile::tempdir().expect("temp dir");
    let root = match std::env::var_os("SOD_BENCH_KEEP") {
        Some(dir) => PathBuf::from(dir),
        None => temp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&root).expect("run dir");

    // Train the tokenizer on the rendered tool prompt so prompts stay short, as a real tokenizer would.
    let sandbox = sod_sandbox::Sandbox::new(sod_sandbox::SandboxConfig {
        tools_dir: Some(tools_dir.clone()),
        ..Default::default()
    })
    .expect("sandbox");
    let schema = sandbox
        .tool("calculator")
        .expect("calculator")
        .descriptor()
        .function_schema();
    let rendered = ChatTemplate::builtin()
        .render(
            &[ChatMessage::system("Use the calculator.")],
            &[schema],
            true,
            &Default::default(),
        )
        .expect("template");
    let corpus = [
        rendered.as_str(),
        "What is 6 * 7? <tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}</tool_call>",
        "<tool_response>42</tool_response> The answer is \\boxed{42}.",
    ];
    let config = Qwen3Config::tiny(1000, hidden, layers);
    write_tiny_model_dir(&root.join("student"), &config, &corpus, 1).expect("student");
    write_tiny_model_dir(&root.join("teacher"), &config, &corpus, 2).expect("teacher");
    std::fs::write(
        root.join("data.jsonl"),
        "{\"id\": \"mul\", \"question\": \"What is 6 * 7?\", \"answer\": 42}\n\
         {\"id\": \"add\", \"question\": \"What is 2 + 3?\", \"answer\": 5}\n",
    )
    .expect("dataset");
    let run_toml = format!(
        r#"student = "student"
teacher = "teacher"
dataset = "data.jsonl"
out_dir = "out"
tools = ["calculator"]
system_prompt = "Use the calculator. Put the final answer in \\boxed{{}}."
steps = {steps}
prompts_per_step = 2
samples_per_prompt = 4
micro_batch = 4
learning_rate = 1e-4
max_turns = 2
max_new_tokens_per_turn = 64
max_total_tokens = 1024
checkpoint_every = 0

[loss]
name = "sod"
"#
    );
    std::fs::write(root.join("run.toml"), &run_toml).expect("run.toml");
    let run = RunConfig::load(&root.join("run.toml"), &[]).expect("config");
    let out_dir = run.out_dir.clone();
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir).expect("clearing the previous bench run");
    }
    let options = TrainerOptions {
        device: Device::Cpu,
        plugin_dir: plugin_dir(),
        tools_dir,
        sandbox_cache_dir: None,
        resume: false,
        progress: false,
        log_every: 0,
        log_label: String::new(),
    };
    let mut trainer = Trainer::new(run, options).expect("trainer");
    trainer.run().expect("run");

    println!(
        "train_step: hidden {hidden}, layers {layers}, {} parameters, 2 prompts x 4 samples, <= 2 turns x 64 tokens",
        config.num_parameters()
    );
    let text = std::fs::read_to_string(out_dir.join(sod_train::METRICS_FILE)).expect("metrics");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for row in &rows {
        let t = &row["timing"];
        println!(
            "  step {}: {} tokens ({} generated), {:.3} s (rollout {:.3} s, update {:.3} s), {:.0} tokens/s",
            row["step"],
            row["tokens"],
            row["generated_tokens"],
            t["step_seconds"].as_f64().unwrap_or(0.0),
            t["rollout_seconds"].as_f64().unwrap_or(0.0),
            t["update_seconds"].as_f64().unwrap_or(0.0),
            t["tokens_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    let later = &rows[1.min(rows.len() - 1)..];
    let tokens: f64 = later
        .iter()
        .map(|r| r["tokens"].as_f64().unwrap_or(0.0))
        .sum();
    let seconds: f64 = later
        .iter()
        .map(|r| r["timing"]["step_seconds"].as_f64().unwrap_or(0.0))
        .sum();
    println!("  steps 2..: {:.0} tokens/s", tokens / seconds.max(1e-9));
}
