//! `eval.toml`: what an evaluation runs (model, benchmarks, tools, sampling, budgets, seed, output directory).
//!
//! ```toml
//! model = "runs/sod/checkpoints/step-100"
//! tools = ["calculator"]
//! samples = 4                 # k: samples per problem
//! temperature = 0.6
//! top_p = 0.95
//! max_turns = 5
//! max_new_tokens_per_turn = 512
//! max_total_tokens = 4096
//! seed = 0
//! out_dir = "runs/eval"
//!
//! [[datasets]]
//! name = "aime24"
//! path = "../shared/data/benchmarks/aime24.jsonl"
//! kind = "math"               # math | code
//! limit = 10                  # optional: the first 10 problems
//! ```
//!
//! Every value can be overridden on the command line (`sod eval --set model=DIR --set limit=5`); the overrides are
//! recorded in the manifest and applied again by `--verify`. `examples/eval/benchmarks.toml` evaluates on every
//! benchmark of `../shared/data/benchmarks`.
//!
//! Relative paths are resolved against the directory of the config file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use sod_train::ToolLimitsConfig;
use sod_train::config::CodeRewardConfig;

/// How a benchmark's answers are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The final answer is compared with the reference (`sod_train::reward::math_reward`).
    Math,
    /// The program in the final answer is run against the problem's tests by the `judge` tool.
    Code,
}

/// One benchmark of an evaluation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Name in results and summaries (unique within the config).
    pub name: String,
    /// JSONL or Parquet file (see `sod_train::dataset`).
    pub path: PathBuf,
    /// How answers are scored.
    pub kind: DatasetKind,
    /// Evaluate only the first `limit` problems.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// An evaluation, as read from `eval.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Hugging Face directory of the model evaluated.
    pub model: PathBuf,
    /// Benchmarks, evaluated in this order.
    pub datasets: Vec<DatasetConfig>,
    /// Tools offered to the model (names of components in the tools directory).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Tools whose calls keep state across a trajectory's turns.
    #[serde(default = "default_stateful")]
    pub stateful_tools: Vec<String>,
    /// System prompt put before the tool schemas when a problem has none.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Whether the tools' function schemas are rendered into the system prompt (default true); off for models
    /// trained without them, such as the demo's.
    #[serde(default = "yes")]
    pub tool_schemas_in_prompt: bool,
    /// Variables for the chat template (transformers' `apply_chat_template` keyword arguments), e.g.
    /// `{ enable_thinking = false }` for Qwen3.
    #[serde(default)]
    pub chat_template_kwargs: std::collections::BTreeMap<String, toml::Value>,
    /// Evaluate only the first `limit` problems of every dataset (a smoke run, e.g. `--set limit=5`); a dataset's
    /// own `limit` still applies when smaller.
    #[serde(default)]
    pub limit: Option<usize>,
    /// k: samples per problem.
    #[serde(default = "one")]
    pub samples: usize,
    /// The k of each pass@k reported (each at most `samples`); default: 1 and `samples`.
    #[serde(default)]
    pub pass_at: Vec<usize>,
    /// Sampling temperature (0: greedy).
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus sampling.
    #[serde(default = "one_f")]
    pub top_p: f64,
    /// Most assistant turns per trajectory.
    #[serde(default = "max_turns")]
    pub max_turns: usize,
    /// Most tokens per assistant turn.
    #[serde(default = "max_new_tokens")]
    pub max_new_tokens_per_turn: usize,
    /// Most tokens per trajectory, prompt included.
    #[serde(default = "max_total_tokens")]
    pub max_total_tokens: usize,
    /// Seed of sampling and of the tools.
    #[serde(default)]
    pub seed: u64,
    /// Trajectories generated together (results do not depend on it).
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// Where `results.jsonl`, `summary.json` and `manifest.json` go.
    pub out_dir: PathBuf,
    /// Limits of every tool call.
    #[serde(default)]
    pub tool_limits: ToolLimitsConfig,
    /// Where tool calls run: empty (default) for this process; else `sod serve` endpoints
    /// (`["http://host:port", ...]`) that serve the same tool artifacts, checked at start. Outcomes, and so
    /// every result, are the same either way (sod_sandbox::ToolBackend). Not part of the
    /// results: left out of what is recorded of the config.
    #[serde(default, skip_serializing)]
    pub tool_endpoints: Vec<String>,
    /// Where tool calls run, the other way: this many `sod worker` processes on this machine (0, the default:
    /// this process; not with `tool_endpoints`). Results are the same; not recorded with the config.
    #[serde(default, skip_serializing)]
    pub tool_processes: usize,
    /// The dtype the model's decoder layers compute in: `"float32"` (absent: the default) or `"bfloat16"`
    /// (docs/gpu.md). Recorded with the config: it changes the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<sod_model::ComputeDtype>,
    /// Settings of the code reward.
    #[serde(default)]
    pub code_reward: CodeRewardConfig,
}

fn default_stateful() -> Vec<String> {
    sod_train::config::DEFAULT_STATEFUL_TOOLS
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
// The rollout budget's defaults are the trainer's: a model is evaluated as it was trained unless told otherwise.
fn max_turns() -> usize {
    sod_train::config::DEFAULT_MAX_TURNS
}
fn max_new_tokens() -> usize {
    sod_train::config::DEFAULT_MAX_NEW_TOKENS_PER_TURN
}
fn max_total_tokens() -> usize {
    sod_train::config::DEFAULT_MAX_TOTAL_TOKENS
}
fn batch_size() -> usize {
    16
}

impl EvalConfig {
    /// Parses `text` (the content of a config file in `base`), applies the `key=value` overrides (as `sod eval
    /// --set`; see [`sod_train::config::apply_override`]), resolves relative paths against `base` and validates
    /// the result. Paths given in overrides are relative to `base` too.
    pub fn from_toml_str(text: &str, overrides: &[String], base: &Path) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text).context("parsing the eval config")?;
        for item in overrides {
            sod_train::config::apply_override(&mut table, item)?;
        }
        let mut config: EvalConfig = table.try_into().context("parsing the eval config")?;
        config.model = base.join(&config.model);
        config.out_dir = base.join(&config.out_dir);
        for d in &mut config.datasets {
            d.path = base.join(&d.path);
        }
        if let Some(limit) = config.limit {
            for d in &mut config.datasets {
                d.limit = Some(d.limit.map_or(limit, |own| own.min(limit)));
            }
        }
        if config.pass_at.is_empty() {
            config.pass_at = vec![1, config.samples];
            config.pass_at.dedup();
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file, with `key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, overrides, base)
            .with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.datasets.is_empty() {
            bail!("no datasets: add at least one [[datasets]] table");
        }
        if self.limit == Some(0) {
            bail!("limit must be at least 1");
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.datasets {
            if !names.insert(d.name.as_str()) {
                bail!("two datasets are named {:?}", d.name);
            }
            if d.limit == Some(0) {
                bail!("dataset {:?}: limit must be at least 1", d.name);
            }
        }
        if self.samples == 0 {
            bail!("samples must be at least 1");
        }
        if let Some(k) = self.pass_at.iter().find(|&&k| k == 0 || k > self.samples) {
            bail!(
                "pass_at = {k} is outside 1..={} (samples per problem)",
                self.samples
            );
        }
        if self.max_turns == 0 || self.max_new_tokens_per_turn == 0 || self.batch_size == 0 {
            bail!("max_turns, max_new_tokens_per_turn and batch_size must be at least 1");
        }
        let sampling_ok = self.temperature >= 0.0 && self.top_p > 0.0 && self.top_p <= 1.0;
        if !sampling_ok {
            bail!("temperature must be >= 0 and top_p in (0, 1]");
        }
        Ok(())
    }

    /// Whether any benchmark is scored by running code (the `judge` and `python` tools are then needed).
    pub fn has_code(&self) -> bool {
        self.datasets.iter().any(|d| d.kind == DatasetKind::Code)
    }
}
