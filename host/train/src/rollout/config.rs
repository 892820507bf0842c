//! [`RolloutConfig`]: what every rollout is set up from — the tools and where they run, the prompt, sampling, the
//! turn and token budgets, the tool limits and the code reward's settings. `sod train` (`run.toml`), `sod eval`
//! (`eval.toml`) and the demo embed this one type, so they share one set of fields, defaults and checks; its keys
//! stand at the top level of those files (`max_turns = 5`, `[tool_limits]`), as they always have.
//!
//! Set-up, in order, each step one method:
//! ```text
//! RolloutConfig ── open_sandbox(tools_dir, cache, seed) ──> Sandbox (its backend: in-process, workers, endpoints)
//!               ── toolbox(&sandbox) ────────────────────> ToolBox (tools, stateful tools, limits, schemas)
//!               ── tokenizer(model_dir) ─────────────────> ChatTokenizer (with the template variables)
//!               ── settings(seed, default temperature) ──> RolloutSettings (budgets and sampling)
//!               ── prompt(messages) ─────────────────────> the conversation a request starts from
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sod_model::{ChatMessage, ChatTokenizer, Role, SamplingParams};
use sod_sandbox::{Limits, Sandbox, SandboxConfig};

use super::{RolloutSettings, ToolBox};
use crate::config::CodeRewardConfig;
use crate::error::{Result, TrainError};

/// The tools whose calls keep state across the turns of a trajectory when no list is configured.
pub const DEFAULT_STATEFUL_TOOLS: &[&str] = &["python"];

/// The sampling temperature of training rollouts when none is configured: on-policy training needs the
/// sampling distribution itself (the log-probs are taken at the rollout temperature).
pub const TRAINING_TEMPERATURE: f64 = 1.0;

/// The sampling temperature of evaluations when none is configured: greedy.
pub const EVALUATION_TEMPERATURE: f64 = 0.0;

/// Limits of every tool call made during rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolLimitsConfig {
    /// Fuel (about one unit per wasm instruction): the deterministic time limit.
    pub fuel: u64,
    /// Bytes of linear memory a call may use.
    pub memory_bytes: u64,
    /// Bytes of tool output kept; the rest is cut and marked.
    pub output_bytes: u64,
    /// File quotas of each call (`[tool_limits.fs]`: `max_bytes`, `max_nodes`, ...; sod_sandbox::FsLimits).
    #[serde(skip_serializing_if = "sod_sandbox::FsLimits::is_default")]
    pub fs: sod_sandbox::FsLimits,
}

impl Default for ToolLimitsConfig {
    fn default() -> Self {
        ToolLimitsConfig {
            fuel: 2_000_000_000,
            memory_bytes: 256 << 20,
            output_bytes: 8 << 10,
            fs: sod_sandbox::FsLimits::default(),
        }
    }
}

impl ToolLimitsConfig {
    /// The sandbox's limits of one call (its wall-clock guard at the sandbox's default).
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_bytes: self.memory_bytes,
            output_bytes: self.output_bytes,
            fs: self.fs,
            ..Limits::default()
        }
    }
}

/// How rollouts run: embedded (flattened) in `RunConfig`, `EvalConfig` and the demo's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Names of the tools offered to the model (`<tools_dir>/<name>.wasm`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Tools whose state lives across a trajectory's turns: their calls run in a sandbox session named after the
    /// trajectory (see [`ToolBox`]), released when the trajectory ends. Default `["python"]`.
    #[serde(default = "defaults::stateful_tools")]
    pub stateful_tools: Vec<String>,
    /// Where tool calls run: empty (default) for this process; else `sod serve` endpoints
    /// (`["http://host:port", ...]`) that serve the same tool artifacts, checked at start. Outcomes, and so
    /// trajectories, rewards and metrics, are the same either way (sod_sandbox::ToolBackend). Not part of the
    /// results: left out of what is recorded of the config.
    #[serde(default, skip_serializing)]
    pub tool_endpoints: Vec<String>,
    /// Where tool calls run, the other way: this many `sod worker` processes on this machine (0, the default:
    /// this process; not with `tool_endpoints`). Results are the same; not recorded with the config.
    #[serde(default, skip_serializing)]
    pub tool_processes: usize,
    /// System prompt put before the tool schemas when a prompt has none of its own; none by default.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Whether the tools' function schemas are rendered into the system prompt (default true). Off for models
    /// trained to call their tools without them (see [`ToolBox::with_schemas_in_prompt`]).
    #[serde(default = "defaults::yes")]
    pub tool_schemas_in_prompt: bool,
    /// Variables for the chat template (transformers' `apply_chat_template` keyword arguments, verl's
    /// `apply_chat_template_kwargs`), e.g. `{ enable_thinking = false }` for Qwen3: every prompt, tool response and
    /// generation prompt of the rollouts is rendered with them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chat_template_kwargs: BTreeMap<String, toml::Value>,
    /// Sampling temperature (0: greedy). Absent: [`TRAINING_TEMPERATURE`] in training, [`EVALUATION_TEMPERATURE`]
    /// in evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    #[serde(default = "defaults::one")]
    pub top_p: f64,
    /// Most assistant turns per trajectory.
    #[serde(default = "defaults::max_turns")]
    pub max_turns: usize,
    /// Most tokens generated per assistant turn.
    #[serde(default = "defaults::max_new_tokens_per_turn")]
    pub max_new_tokens_per_turn: usize,
    /// Most tokens of a whole trajectory (prompt, turns and tool responses).
    #[serde(default = "defaults::max_total_tokens")]
    pub max_total_tokens: usize,
    /// Limits of each tool call.
    #[serde(default)]
    pub tool_limits: ToolLimitsConfig,
    /// Settings of the code reward (a trajectory scored by running its program against the tests).
    #[serde(default)]
    pub code_reward: CodeRewardConfig,
}

mod defaults {
    pub fn yes() -> bool {
        true
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn stateful_tools() -> Vec<String> {
        super::DEFAULT_STATEFUL_TOOLS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    pub fn max_turns() -> usize {
        5
    }
    pub fn max_new_tokens_per_turn() -> usize {
        512
    }
    pub fn max_total_tokens() -> usize {
        4096
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            tools: Vec::new(),
            stateful_tools: defaults::stateful_tools(),
            tool_endpoints: Vec::new(),
            tool_processes: 0,
            system_prompt: None,
            tool_schemas_in_prompt: true,
            chat_template_kwargs: BTreeMap::new(),
            temperature: None,
            top_p: 1.0,
            max_turns: defaults::max_turns(),
            max_new_tokens_per_turn: defaults::max_new_tokens_per_turn(),
            max_total_tokens: defaults::max_total_tokens(),
            tool_limits: ToolLimitsConfig::default(),
            code_reward: CodeRewardConfig::default(),
        }
    }
}

impl RolloutConfig {
    /// Checks every value's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, problem: String| Err(TrainError::Config(format!("{field}: {problem}")));
        for (field, value) in [
            ("max_turns", self.max_turns),
            ("max_new_tokens_per_turn", self.max_new_tokens_per_turn),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.max_total_tokens <= self.max_new_tokens_per_turn {
            return bad(
                "max_total_tokens",
                format!(
                    "{} must exceed max_new_tokens_per_turn = {} (the prompt needs room too)",
                    self.max_total_tokens, self.max_new_tokens_per_turn
                ),
            );
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return bad("temperature", format!("{t} must be >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if self.tool_limits.fuel == 0 || self.tool_limits.memory_bytes == 0 {
            return bad(
                "tool_limits",
                "fuel and memory_bytes must be positive".into(),
            );
        }
        for (field, names) in [
            ("tools", &self.tools),
            ("stateful_tools", &self.stateful_tools),
        ] {
            for (i, name) in names.iter().enumerate() {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return bad(
                        &format!("{field}[{i}]"),
                        format!("{name:?} is not a tool name"),
                    );
                }
                if names[..i].contains(name) {
                    return bad(
                        &format!("{field}[{i}]"),
                        format!("{name:?} is listed twice"),
                    );
                }
            }
        }
        if self.code_reward.fuel_per_test == 0 || self.code_reward.memory_bytes_per_test == 0 {
            return bad(
                "code_reward",
                "fuel_per_test and memory_bytes_per_test must be positive".into(),
            );
        }
        Ok(())
    }

    /// The temperature in force: the configured one, else `default` ([`TRAINING_TEMPERATURE`] or
    /// [`EVALUATION_TEMPERATURE`]).
    pub fn temperature_or(&self, default: f64) -> f64 {
        self.temperature.unwrap_or(default)
    }

    /// The sandbox of the rollouts (and of the code reward): tools from `tools_dir`, compile cache `cache_dir`
    /// (`None`: the default one), tool randomness seeded by `seed`, room for the largest memory limit a call gets,
    /// calls run where `tool_endpoints` / `tool_processes` say.
    pub fn open_sandbox(
        &self,
        tools_dir: &Path,
        cache_dir: Option<&Path>,
        seed: u64,
    ) -> Result<Sandbox> {
        let mut config = SandboxConfig {
            tools_dir: Some(tools_dir.to_path_buf()),
            seed,
            ..SandboxConfig::default()
        };
        if let Some(cache) = cache_dir {
            config.cache_dir = Some(cache.to_path_buf());
        }
        config.max_memory_bytes = config
            .max_memory_bytes
            .max(self.tool_limits.memory_bytes)
            .max(self.code_reward.memory_bytes_per_test);
        Ok(Sandbox::new(config)?.with_backend_from(&self.tool_endpoints, self.tool_processes)?)
    }

    /// The tools offered to the model, from `sandbox`, with their limits, stateful tools and schema setting.
    pub fn toolbox(&self, sandbox: &Sandbox) -> Result<ToolBox> {
        Ok(
            ToolBox::new(sandbox.clone(), &self.tools, self.tool_limits.limits())?
                .with_stateful_tools(&self.stateful_tools)
                .with_schemas_in_prompt(self.tool_schemas_in_prompt),
        )
    }

    /// The chat tokenizer of the model in `model_dir`, rendering with `chat_template_kwargs`.
    pub fn tokenizer(&self, model_dir: &Path) -> Result<ChatTokenizer> {
        Ok(ChatTokenizer::from_dir(model_dir)?.with_template_kwargs(self.template_kwargs()))
    }

    /// `chat_template_kwargs` as the JSON the template sees.
    pub fn template_kwargs(&self) -> serde_json::Map<String, serde_json::Value> {
        crate::config::template_kwargs(&self.chat_template_kwargs)
    }

    /// Budgets and sampling of the rollouts, seeded by `seed`, at the configured temperature or
    /// `default_temperature`.
    pub fn settings(&self, seed: u64, default_temperature: f64) -> RolloutSettings {
        RolloutSettings {
            max_turns: self.max_turns,
            max_new_tokens_per_turn: self.max_new_tokens_per_turn,
            max_total_tokens: self.max_total_tokens,
            sampling: SamplingParams {
                temperature: self.temperature_or(default_temperature),
                top_p: self.top_p,
            },
            seed,
        }
    }

    /// The conversation a rollout of `messages` starts from: `system_prompt` first unless they open with a system
    /// message of their own.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut messages = messages.to_vec();
        if let Some(system) = &self.system_prompt
            && messages.first().is_none_or(|m| m.role != Role::System)
        {
            messages.insert(0, ChatMessage::system(system.clone()));
        }
        messages
    }
}
