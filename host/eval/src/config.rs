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
use sod_train::RewardKind;
use sod_train::config::RolloutConfig;

/// One benchmark of an evaluation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Name in results and summaries (unique within the config).
    pub name: String,
    /// JSONL or Parquet file (see `sod_train::dataset`).
    pub path: PathBuf,
    /// How answers are scored: `math` (the final answer against the reference) or `code` (the program in the
    /// final answer against the problem's tests, by the `judge` tool).
    pub kind: RewardKind,
    /// Evaluate only the first `limit` problems.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// An evaluation, as read from `eval.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalConfig {
    /// Hugging Face directory of the model evaluated.
    pub model: PathBuf,
    /// Benchmarks, evaluated in this order.
    pub datasets: Vec<DatasetConfig>,
    /// How rollouts run, as in training: tools and where they run, prompt, sampling (`temperature`: absent means
    /// greedy), budgets, tool limits, `code_reward`; its keys stand at the top level of `eval.toml`.
    #[serde(flatten)]
    pub rollout: RolloutConfig,
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
    /// Seed of sampling and of the tools.
    #[serde(default)]
    pub seed: u64,
    /// Trajectories generated together (results do not depend on it).
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// Where `results.jsonl`, `summary.json` and `manifest.json` go.
    pub out_dir: PathBuf,
    /// The dtype the model's decoder layers compute in: `"float32"` (absent: the default) or `"bfloat16"`
    /// (docs/gpu.md). Recorded with the config: it changes the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<sod_model::ComputeDtype>,
    /// Keys no field took: refused (the flattened rollout settings leave serde unable to reject them itself).
    #[serde(flatten)]
    pub unknown: std::collections::BTreeMap<String, toml::Value>,
}

fn one() -> usize {
    1
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
        if let Some(key) = self.unknown.keys().next() {
            bail!("unknown field `{key}` (a typo? see EvalConfig's fields)");
        }
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
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        self.rollout.validate()?;
        Ok(())
    }

    /// Whether any benchmark is scored by running code (the `judge` and `python` tools are then needed).
    pub fn has_code(&self) -> bool {
        self.datasets.iter().any(|d| d.kind == RewardKind::Code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sod_train::config::{EVALUATION_TEMPERATURE, TRAINING_TEMPERATURE};

    const MINIMAL: &str = "model = \"m\"\nout_dir = \"o\"\n[[datasets]]\nname = \"d\"\npath = \"d.jsonl\"\nkind = \"math\"\n";

    fn load(overrides: &[&str]) -> anyhow::Result<EvalConfig> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        EvalConfig::from_toml_str(MINIMAL, &overrides, Path::new("/e"))
    }

    #[test]
    fn rollout_keys_are_the_trainers_and_typos_are_refused() {
        let c = load(&[]).unwrap();
        // The trainer's rollout defaults, but greedy unless told otherwise.
        assert_eq!(c.rollout, RolloutConfig::default());
        assert_eq!(c.rollout.temperature_or(EVALUATION_TEMPERATURE), 0.0);
        let run = sod_train::RunConfig::new("s".into(), "d".into(), "o".into(), 1);
        assert_eq!(run.temperature(), TRAINING_TEMPERATURE);
        assert_eq!(run.rollout, c.rollout);
        // The same keys, at the top level, with the same checks.
        let set = load(&["max_turns=2", "tool_limits.fuel=7", "temperature=0.6"]).unwrap();
        assert_eq!(
            (set.rollout.max_turns, set.rollout.tool_limits.fuel),
            (2, 7)
        );
        assert_eq!(set.rollout.temperature, Some(0.6));
        assert!(
            load(&["max_turns=0"])
                .unwrap_err()
                .to_string()
                .contains("max_turns")
        );
        let typo = load(&["max_turn=3"]).unwrap_err().to_string();
        assert!(typo.contains("max_turn"), "{typo}");
        let nested = format!("{:#}", load(&["tool_limits.fule=3"]).unwrap_err());
        assert!(nested.contains("fule"), "{nested}");
    }
}
