//! The run configuration: `run.toml`, command-line overrides (`--set key=value`) and validation.
//!
//! ```toml
//! student = "models/qwen3-0.6b"        # Hugging Face model directory (trained)
//! teacher = "models/qwen3-8b"          # optional; needed by sod and opd
//! dataset = "data/math.jsonl"          # JSONL or Parquet (verl layout), see crate::dataset
//! out_dir = "runs/sod-math"
//! tools = ["calculator", "python"]
//! stateful_tools = ["python"]          # the default: calls keep state across a trajectory's turns
//! reward = "math"                      # math | code (the judge tool runs the example's tests)
//! steps = 200
//! prompts_per_step = 8
//! samples_per_prompt = 4
//!
//! [loss]
//! name = "sod"                         # sod | opd | grpo | a path to a plugin library
//! settings = { delta = 0.3 }
//! ```
//!
//! Relative paths are relative to the directory of the config file. Every other field has a default (see
//! [`RunConfig`]). Unknown fields are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
pub use crate::rollout::config::{
    DEFAULT_STATEFUL_TOOLS, EVALUATION_TEMPERATURE, RolloutConfig, TRAINING_TEMPERATURE,
    ToolLimitsConfig,
};

/// How trajectories are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The final answer (last `\boxed{}`, else "answer is X", else the last number) equals the reference answer,
    /// as a string or as an exact rational (see [`crate::reward`]).
    Math,
    /// The last fenced Python block of the final answer (else the whole answer) is run against the example's tests
    /// by the `judge` tool (see [`crate::reward::CodeReward`] and [`CodeRewardConfig`]).
    Code,
}

/// Settings of the code reward (`reward = "code"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeRewardConfig {
    /// Reward the fraction of tests passed instead of 1 for all and 0 otherwise.
    pub partial_credit: bool,
    /// Fuel of each test (deterministic time limit; 5e9 is about one second of CPython).
    pub fuel_per_test: u64,
    /// Memory of each test in bytes.
    pub memory_bytes_per_test: u64,
}

impl Default for CodeRewardConfig {
    fn default() -> Self {
        CodeRewardConfig {
            partial_credit: false,
            fuel_per_test: 10_000_000_000,
            memory_bytes_per_test: 256 << 20,
        }
    }
}

/// Which loss plugin computes the advantages, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// A plugin name (`sod`, `opd`, `grpo`, looked up in the plugin directory) or a path to a plugin library.
    pub name: String,
    /// Settings handed to the plugin as key/value strings; the plugin rejects unknown keys.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            name: "sod".to_string(),
            settings: BTreeMap::new(),
        }
    }
}

impl LossConfig {
    /// The settings as the plugin ABI takes them: strings as they are, numbers and booleans in TOML syntax.
    pub fn settings_pairs(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect()
    }
}

/// A training run, as read from `run.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Hugging Face directory of the student (the model trained).
    pub student: PathBuf,
    /// Hugging Face directory of the teacher; must share the student's tokenizer.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// JSONL dataset (see [`crate::dataset`]).
    pub dataset: PathBuf,
    /// Where metrics (`metrics.jsonl`) and checkpoints (`checkpoints/step-N/`) go.
    pub out_dir: PathBuf,
    /// How trajectories are scored (the code reward's settings: `code_reward`, part of the rollout settings).
    #[serde(default = "defaults::reward")]
    pub reward: RewardKind,
    /// How rollouts run: tools and where they run, prompt, sampling (`temperature`: absent means 1), budgets, tool
    /// limits, `code_reward`. Its keys stand at the top level of `run.toml` (see [`RolloutConfig`]).
    #[serde(flatten)]
    pub rollout: RolloutConfig,
    /// The loss plugin and its settings.
    #[serde(default)]
    pub loss: LossConfig,
    /// Optimiser steps to train for.
    pub steps: u64,
    /// Prompts sampled per optimiser step.
    #[serde(default = "defaults::prompts_per_step")]
    pub prompts_per_step: usize,
    /// Trajectories per prompt (the GRPO group size).
    #[serde(default = "defaults::samples_per_prompt")]
    pub samples_per_prompt: usize,
    /// Trajectories per forward/backward pass; gradients are accumulated over micro-batches.
    #[serde(default = "defaults::micro_batch")]
    pub micro_batch: usize,
    /// Peak learning rate of AdamW.
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// Steps of linear warm-up from `learning_rate / warmup_steps` to `learning_rate`. Absent: a tenth of `steps`
    /// or 10, whichever is smaller (see [`RunConfig::warmup`]): a fresh AdamW's first updates move every weight by
    /// about the learning rate whatever the gradient's size, so a run without warm-up starts with full-size
    /// steps in the direction of a noisy gradient's sign. Set 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Decoupled AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    #[serde(default = "defaults::max_grad_norm")]
    pub max_grad_norm: f64,
    /// AdamW beta1.
    #[serde(default = "defaults::beta1")]
    pub adam_beta1: f64,
    /// AdamW beta2.
    #[serde(default = "defaults::beta2")]
    pub adam_beta2: f64,
    /// AdamW epsilon.
    #[serde(default = "defaults::adam_eps")]
    pub adam_eps: f64,
    /// PPO clip below 1: ratios under `1 - clip_low` stop pushing down.
    #[serde(default = "defaults::clip_low")]
    pub clip_low: f64,
    /// PPO clip above 1: ratios over `1 + clip_high` stop pushing up.
    #[serde(default = "defaults::clip_high")]
    pub clip_high: f64,
    /// Temperature of the student's and the teacher's distributions in a full-distribution divergence (a loss
    /// with `signal = full`); absent: the rollout `temperature`, as verl and TRL's distillation trainers do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence_temperature: Option<f64>,
    /// Run seed: data order, sampling and tool randomness derive from it.
    #[serde(default)]
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: only at the end). The last step is always saved.
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Recompute each decoder layer in the update's backward pass instead of keeping every layer's activations
    /// (activation checkpointing: one layer's activations at a time, for one more forward pass). Default off.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Write every trajectory of every this many steps to `out_dir/rollouts/step-N.jsonl` (0: never): its id, reward,
    /// how it ended, its tool calls, the decoded response and the dataset row's other columns (`extra_info`,
    /// `agent_name`, ...), as verl's `rollout_data_dir` does.
    #[serde(default)]
    pub rollouts_every: u64,
    /// The dtype checkpoints' weights are written in: `"float32"`, `"bfloat16"` or `"float16"`. Absent: the
    /// student's own (bf16 in, bf16 out); the trainer's f32 master weights then go into the trainer state, so that
    /// resuming is exact either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dtype: Option<sod_model::SaveDtype>,
    /// The dtype the student's and the teacher's decoder layers compute in: `"float32"` (absent: the default) or
    /// `"bfloat16"` (mixed precision: f32 master weights, optimiser state, softmax and log-probs; docs/gpu.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<sod_model::ComputeDtype>,
    /// The null-signal control: shuffle the distillation signal across the batch's generated tokens (a seeded
    /// permutation per step), so the run keeps the signal's magnitudes but loses what it says about each token.
    /// For a sampled-token loss the per-token gaps `log pT - log pS_old` are permuted; for a full-distribution
    /// loss, the teacher's next-token distributions. A run that learns as much with it on learned nothing from
    /// the teacher. Off by default.
    #[serde(default)]
    pub null_signal: bool,
    /// Keys no field took (the flattened rollout settings leave serde unable to reject them itself): refused by
    /// [`RunConfig::validate`], so a typo never silently falls back to a default.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, toml::Value>,
}

mod defaults {
    use super::RewardKind;

    pub fn reward() -> RewardKind {
        RewardKind::Math
    }
    pub fn prompts_per_step() -> usize {
        8
    }
    pub fn samples_per_prompt() -> usize {
        4
    }
    pub fn micro_batch() -> usize {
        4
    }
    pub fn learning_rate() -> f64 {
        1e-6
    }
    pub fn max_grad_norm() -> f64 {
        1.0
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.999
    }
    pub fn adam_eps() -> f64 {
        1e-8
    }
    pub fn clip_low() -> f64 {
        0.2
    }
    pub fn clip_high() -> f64 {
        0.28
    }
    pub fn checkpoint_every() -> u64 {
        50
    }
}

/// Warm-up steps of a run of `steps` steps when the config names none: a tenth, at most 10.
pub fn default_warmup(steps: u64) -> u64 {
    (steps / 10).min(10)
}

impl RunConfig {
    /// The warm-up steps in force: `warmup_steps`, or [`default_warmup`].
    pub fn warmup(&self) -> u64 {
        self.warmup_steps
            .unwrap_or_else(|| default_warmup(self.steps))
    }

    /// A run of `steps` steps training `student` on `dataset` into `out_dir`, every other field at its default
    /// (as a config file naming only these four would have it); adjust the fields, then [`Self::validate`].
    pub fn new(student: PathBuf, dataset: PathBuf, out_dir: PathBuf, steps: u64) -> Self {
        let mut table = toml::Table::new();
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
        table.insert("student".into(), path(&student));
        table.insert("dataset".into(), path(&dataset));
        table.insert("out_dir".into(), path(&out_dir));
        table.insert("steps".into(), toml::Value::Integer(steps as i64));
        let mut config: RunConfig = table
            .try_into()
            .expect("the four required fields make a complete config");
        // Paths as given, not as re-read through a string.
        (config.student, config.dataset, config.out_dir) = (student, dataset, out_dir);
        config
    }

    /// Reads `path`, applies `overrides` (`key=value`, dotted keys for tables: `loss.settings.delta=0.3`; the
    /// value is TOML, or a plain string when it does not parse as TOML), resolves relative paths against the
    /// file's directory and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io("reading", path))?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::from_toml_str(&text, overrides, base)
    }

    /// Like [`Self::load`] with the text of the file; relative paths are resolved against `base`.
    pub fn from_toml_str(text: &str, overrides: &[String], base: &Path) -> Result<Self> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let mut config: RunConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.student);
        resolve(&mut self.dataset);
        resolve(&mut self.out_dir);
        if let Some(t) = &mut self.teacher {
            resolve(t);
        }
        // A loss given as a relative path (not a bare plugin name) is a file next to the config too.
        if self.loss.name.contains('/') && Path::new(&self.loss.name).is_relative() {
            self.loss.name = base.join(&self.loss.name).display().to_string();
        }
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, problem: String| Err(TrainError::Config(format!("{field}: {problem}")));
        if let Some(key) = self.unknown.keys().next() {
            return bad(key, "unknown field (a typo? see RunConfig's fields)".into());
        }
        self.rollout.validate()?;
        let positive_count = [
            ("steps", self.steps as usize),
            ("prompts_per_step", self.prompts_per_step),
            ("samples_per_prompt", self.samples_per_prompt),
            ("micro_batch", self.micro_batch),
        ];
        for (field, value) in positive_count {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        let finite_positive = [
            ("learning_rate", self.learning_rate),
            ("max_grad_norm", self.max_grad_norm),
            ("clip_high", self.clip_high),
            ("adam_eps", self.adam_eps),
        ];
        for (field, value) in finite_positive {
            if !(value.is_finite() && value > 0.0) {
                return bad(field, format!("{value} must be a positive number"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("{} must be >= 0", self.weight_decay),
            );
        }
        if !(self.clip_low > 0.0 && self.clip_low < 1.0) {
            return bad("clip_low", format!("{} must be in (0, 1)", self.clip_low));
        }
        for (field, beta) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, format!("{beta} must be in [0, 1)"));
            }
        }
        let temperature = self.temperature();
        if !(temperature.is_finite() && temperature > 0.0) {
            return bad(
                "temperature",
                format!(
                    "{temperature} must be positive: on-policy training needs the sampling distribution's log-probs"
                ),
            );
        }
        if let Some(t) = self.divergence_temperature
            && !(t.is_finite() && t > 0.0)
        {
            return bad("divergence_temperature", format!("{t} must be positive"));
        }
        if self.loss.name.is_empty() {
            return bad("loss.name", "must name a plugin or a plugin file".into());
        }
        Ok(())
    }

    /// The rollouts' sampling temperature: the configured one, else [`TRAINING_TEMPERATURE`].
    pub fn temperature(&self) -> f64 {
        self.rollout.temperature_or(TRAINING_TEMPERATURE)
    }

    /// The config as TOML (paths as resolved), for the record kept beside the metrics.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// A TOML table of chat-template variables (`chat_template_kwargs`) as the JSON the template sees.
pub fn template_kwargs(
    table: &BTreeMap<String, toml::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    // A table of TOML values always serialises to a JSON object.
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Sets `key=value` in `table` (a `--set` override): dotted keys create or enter sub-tables; the value is read as a
/// TOML value (`3`, `true`, `[1, 2]`, `"text"`), and a bare word that is not one (a path, a name) as a string.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let (key, raw) = item.split_once('=').ok_or_else(|| {
        TrainError::Config(format!("override {item:?} is not of the form key=value"))
    })?;
    let key = key.trim();
    let raw = raw.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!(
            "override key {key:?} is not a dotted name"
        )));
    }
    // Parse the value as a TOML value by wrapping it; a bare word (a path, a name) stays a string.
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = parts.split_last().expect("split of a non-empty key");
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            TrainError::Config(format!("override {key:?}: {part:?} is not a table"))
        })?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        student = "s"
        dataset = "d.jsonl"
        out_dir = "out"
        steps = 3
    "#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = RunConfig::from_toml_str(MINIMAL, &[], Path::new("/runs")).unwrap();
        assert_eq!(c.student, PathBuf::from("/runs/s"));
        assert_eq!(c.loss.name, "sod");
        assert_eq!((c.clip_low, c.clip_high), (0.2, 0.28));
        assert_eq!(c.samples_per_prompt, 4);
        assert_eq!(c.rollout.stateful_tools, ["python"]);
        assert_eq!(c.reward, RewardKind::Math);
        assert!(!c.rollout.code_reward.partial_credit);
        assert_eq!(c.temperature(), 1.0);
        assert_eq!(c.rollout.max_turns, 5);
        // Warm-up: a tenth of the steps, at most 10, unless set.
        assert_eq!(c.warmup(), 0);
        let long =
            RunConfig::from_toml_str(MINIMAL, &["steps=200".into()], Path::new("/")).unwrap();
        assert_eq!(long.warmup(), 10);
        let mid = RunConfig::from_toml_str(MINIMAL, &["steps=64".into()], Path::new("/")).unwrap();
        assert_eq!(mid.warmup(), 6);
        let none = RunConfig::from_toml_str(
            MINIMAL,
            &["steps=64".into(), "warmup_steps=0".into()],
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(none.warmup(), 0);
        assert!(!c.null_signal);
    }

    #[test]
    fn code_reward_and_stateful_tools_are_configurable() {
        let c = RunConfig::from_toml_str(
            MINIMAL,
            &[
                "reward=\"code\"".into(),
                "code_reward.partial_credit=true".into(),
                "stateful_tools=[]".into(),
            ],
            Path::new("/runs"),
        )
        .unwrap();
        assert_eq!(c.reward, RewardKind::Code);
        assert!(c.rollout.code_reward.partial_credit);
        assert!(c.rollout.stateful_tools.is_empty());
    }

    #[test]
    fn overrides_set_nested_and_typed_values() {
        let c = RunConfig::from_toml_str(
            MINIMAL,
            &[
                "loss.name=grpo".into(),
                "loss.settings.delta=0.3".into(),
                "steps=7".into(),
                "teacher=/models/t".into(),
            ],
            Path::new("/runs"),
        )
        .unwrap();
        assert_eq!(c.loss.name, "grpo");
        assert_eq!(c.steps, 7);
        assert_eq!(c.teacher, Some(PathBuf::from("/models/t")));
        assert_eq!(
            c.loss.settings_pairs(),
            vec![("delta".to_string(), "0.3".to_string())]
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = |extra: &[&str]| {
            let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            RunConfig::from_toml_str(MINIMAL, &overrides, Path::new("."))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["clip_low=1.5"]).contains("clip_low"));
        assert!(err(&["samples_per_prompt=0"]).contains("samples_per_prompt"));
        assert!(
            err(&["max_total_tokens=10", "max_new_tokens_per_turn=16"])
                .contains("max_total_tokens")
        );
        assert!(err(&["tools=[\"a b\"]"]).contains("tools[0]"));
        assert!(err(&["stateful_tools=[\"py\", \"py\"]"]).contains("stateful_tools[1]"));
        assert!(err(&["code_reward.fuel_per_test=0"]).contains("code_reward"));
        assert!(err(&["reward=\"judge\""]).contains("reward"));
        assert!(err(&["stepz=1"]).contains("stepz"));
        assert!(err(&["steps"]).contains("key=value"));
    }
}
