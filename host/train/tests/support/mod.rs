//! Shared helpers of the trainer tests: built artifacts (calculator tool, loss plugins) and a tiny run on disk.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};

use candle_core::Device;
use sod_model::{Qwen3Config, write_tiny_model_dir};
use sod_train::{RunConfig, TrainerOptions};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// ../shared/data/qwen3-tokenizer: the real Qwen3 tokenizer.json and tokenizer_config.json (with its chat template).
pub fn qwen3_tokenizer_dir() -> PathBuf {
    workspace_root().join("../shared/data/qwen3-tokenizer")
}

/// The real Qwen3 tokenizer with its own chat template.
pub fn qwen3_tokenizer() -> sod_model::ChatTokenizer {
    let dir = qwen3_tokenizer_dir();
    sod_model::ChatTokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .expect("the Qwen3 tokenizer")
}

/// The case `name` of transformers' reference renderings (host/model/tests/fixtures/qwen3-chat/renderings.json):
/// `messages`, `tools`, `text`, `ids`, ...
pub fn qwen3_rendering(name: &str) -> serde_json::Value {
    let path = workspace_root().join("host/model/tests/fixtures/qwen3-chat/renderings.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("renderings.json"))
            .expect("JSON");
    record["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no rendering named {name}"))
        .clone()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `target/tools`, checked to hold the calculator.
pub fn tools_dir() -> PathBuf {
    let dir = target_dir().join("tools");
    assert!(
        dir.join("calculator.wasm").is_file(),
        "{} is missing: build the tools first with `cargo xtask build-tools` (or run `cargo xtask test`)",
        dir.join("calculator.wasm").display()
    );
    dir
}

/// The directory with the loss plugin libraries: `cargo test` leaves them in `target/<profile>/deps` (next to the
/// test binary); `cargo build` also copies them one level up.
pub fn plugin_dir() -> PathBuf {
    let exe_dir = sod_loss::default_plugin_dir().expect("test executable directory");
    let wanted = sod_loss::plugin_file_name("sod");
    let candidates = [
        exe_dir.clone(),
        exe_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|dir| dir.join(&wanted).is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the loss plugins are not built: {wanted} is in none of {candidates:?}; run `cargo test -p sod-train` \
                 (it builds them as dev-dependencies) or `cargo build --workspace`"
            )
        })
}

/// Text the tiny tokenizers are trained on: chat markup, tool calls and arithmetic.
pub const CORPUS: &[&str] = &[
    "What is 6 * 7? <tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}</tool_call>",
    "<tool_response>42</tool_response> The answer is \\boxed{42}.",
    "system user assistant tool You may call one or more functions to assist with the user query.",
    "What is 2 + 3? The answer is 5. What is 10 - 4? The answer is 6.",
];

/// The tiny model config of the tests.
pub fn tiny_config() -> Qwen3Config {
    Qwen3Config::tiny(1000, 32, 2)
}

/// The system prompt with the calculator's function schema, as the chat template renders it: training the tokenizer on it keeps the tiny
/// models' prompts short (the test suite's CPU time is mostly forward passes over the prompt).
pub fn tool_prompt_text() -> String {
    let sandbox = sod_sandbox::Sandbox::new(sod_sandbox::SandboxConfig {
        tools_dir: Some(tools_dir()),
        cache_dir: Some(target_dir().join("test-cache")),
        ..sod_sandbox::SandboxConfig::default()
    })
    .expect("sandbox");
    let tool = sandbox.tool("calculator").expect("calculator");
    sod_model::ChatTemplate::builtin()
        .render(
            &[sod_model::ChatMessage::system("Use the calculator.")],
            &[tool.descriptor().function_schema()],
            true,
            &serde_json::Map::new(),
        )
        .expect("rendered system prompt")
}

/// A run directory: student, teacher (same tokenizer, other weights), a two-prompt dataset.
pub struct Fixture {
    /// Keeps the files alive.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Writes the models and the dataset.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema = tool_prompt_text();
        let mut corpus: Vec<&str> = CORPUS.to_vec();
        corpus.push(&schema);
        write_tiny_model_dir(&dir.path().join("student"), &tiny_config(), &corpus, 1)
            .expect("student");
        write_tiny_model_dir(&dir.path().join("teacher"), &tiny_config(), &corpus, 2)
            .expect("teacher");
        std::fs::write(
            dir.path().join("data.jsonl"),
            "{\"id\": \"mul\", \"question\": \"What is 6 * 7?\", \"answer\": \"42\"}\n\
             {\"id\": \"add\", \"question\": \"What is 2 + 3?\", \"answer\": 5}\n",
        )
        .expect("dataset");
        Fixture { dir }
    }

    /// The fixture's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A small run writing to `out`, with extra `key=value` overrides.
    pub fn config(&self, out: &str, overrides: &[&str]) -> RunConfig {
        let text = format!(
            r#"
            student = "student"
            teacher = "teacher"
            dataset = "data.jsonl"
            out_dir = "{out}"
            tools = ["calculator"]
            system_prompt = "Use the calculator. Put the answer in \\boxed{{}}."
            steps = 3
            prompts_per_step = 2
            samples_per_prompt = 2
            micro_batch = 3
            learning_rate = 1e-3
            warmup_steps = 1
            weight_decay = 0.01
            max_turns = 2
            max_new_tokens_per_turn = 16
            max_total_tokens = 1024
            seed = 7
            checkpoint_every = 2

            [loss]
            name = "sod"
            settings = {{ delta = 0.3 }}
            "#
        );
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::from_toml_str(&text, &overrides, self.path()).expect("valid config")
    }
}

/// Trainer options for the tests: CPU, the built plugins and tools, a compile cache under target/.
pub fn options(resume: bool) -> TrainerOptions {
    TrainerOptions {
        device: Device::Cpu,
        plugin_dir: plugin_dir(),
        tools_dir: tools_dir(),
        sandbox_cache_dir: Some(target_dir().join("test-cache")),
        resume,
        progress: false,
        log_every: 0,
        log_label: String::new(),
    }
}

/// The lines of a metrics file with the wall-clock `timing` object removed.
pub fn metrics_without_timing(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("metrics file")
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            value.as_object_mut().expect("object").remove("timing");
            value.to_string()
        })
        .collect()
}
