//! The demo's rollouts and greedy evaluations: one rollout configuration (the calculator, the system prompt, the
//! budgets) for the evaluations and the on-policy runs alike, and the per-problem record of each evaluation.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sod_model::{ChatTokenizer, Qwen3};
use sod_sandbox::Sandbox;
use sod_train::rollout::{RolloutConfig, RolloutSettings, ToolBox};

use super::gold::{self, SYSTEM_PROMPT};
use super::tasks::Task;

use super::settings::*;

/// Measured behaviour of a model on the test split (greedy decoding, with the calculator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Problems evaluated.
    pub problems: usize,
    /// Fraction answered exactly right.
    pub accuracy: f64,
    /// Tool calls that parsed, named the calculator and were accepted, over all tool calls (0 without calls).
    pub valid_tool_call_fraction: f64,
    /// Mean tool calls per problem.
    pub mean_tool_calls: f64,
    /// Mean assistant turns (steps) per problem.
    pub mean_steps: f64,
    /// Fraction of trajectories ended by a budget.
    pub truncated_fraction: f64,
}

/// Whether the calculator's schema is rendered into the demo's prompts, in the gold conversations, the on-policy
/// runs and the evaluations alike. No: the models learn the call format from the gold trajectories, and with the
/// schema nine in ten tokens of every sequence would be the same tool description (see
/// `ToolBox::with_schemas_in_prompt`).
pub(super) const TOOL_SCHEMAS_IN_PROMPT: bool = false;

/// The toolbox of every rollout of the demo: the calculator of [`rollout_config`].
pub(super) fn calculator_toolbox(
    settings: &DemoSettings,
    sandbox: &Sandbox,
) -> anyhow::Result<ToolBox> {
    Ok(rollout_config(settings).toolbox(sandbox)?)
}

/// How every rollout of the demo runs, one definition for the on-policy runs (at their temperature) and the
/// greedy evaluations: the calculator (schemas left out of the prompt, as [`TOOL_SCHEMAS_IN_PROMPT`] says), the
/// demo's system prompt, its per-turn budget and 1 024 tokens in all; every other setting at its default.
pub(super) fn rollout_config(settings: &DemoSettings) -> RolloutConfig {
    RolloutConfig {
        tools: vec!["calculator".to_string()],
        tool_schemas_in_prompt: TOOL_SCHEMAS_IN_PROMPT,
        system_prompt: Some(SYSTEM_PROMPT.to_string()),
        max_new_tokens_per_turn: settings.max_new_tokens_per_turn,
        max_total_tokens: 1024,
        ..RolloutConfig::default()
    }
}

/// The demo's rollout budget and sampling at `temperature` (0: the greedy evaluations).
pub(super) fn rollout_settings(settings: &DemoSettings, temperature: f64) -> RolloutSettings {
    rollout_config(settings).settings(settings.seed, temperature)
}

/// One test problem as a model answered it (a line of `eval/<model>.jsonl` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedProblem {
    /// Task id.
    pub id: String,
    /// The expected answer.
    pub answer: String,
    /// The answer the model gave (`\boxed{}`, else its last number), if any.
    pub given: Option<String>,
    /// Whether `given` is right (and the trajectory ended normally).
    pub correct: bool,
    /// Assistant turns.
    pub turns: usize,
    /// Tool calls, and those that were valid.
    pub tool_calls: usize,
    /// Valid tool calls.
    pub valid_tool_calls: usize,
    /// Ended by a budget.
    pub truncated: bool,
    /// The whole conversation after the prompt, as the model saw it (its turns and the calculator's responses).
    pub transcript: String,
}

/// Greedy evaluation of `model` on `tasks`, calling the calculator through `toolbox`: the summary and each problem.
pub fn evaluate(
    model: &Qwen3,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &DemoSettings,
    tasks: &[Task],
) -> anyhow::Result<(Evaluation, Vec<EvaluatedProblem>)> {
    let requests = gold::requests(tasks, "");
    let trajectories = sod_train::rollout::rollout_chunked(
        model,
        tokenizer,
        toolbox,
        &rollout_settings(settings, 0.0),
        &requests,
        32,
    )?;
    let problems: Vec<EvaluatedProblem> = tasks
        .iter()
        .zip(&trajectories)
        .map(|(task, t)| {
            let (correct, given) = gold::solved(task, t);
            Ok(EvaluatedProblem {
                id: task.id.clone(),
                answer: task.answer.clone(),
                given,
                correct,
                turns: t.turns,
                tool_calls: t.tool_calls,
                valid_tool_calls: t.valid_tool_calls,
                truncated: t.truncated(),
                transcript: tokenizer.decode(t.response_tokens(), false)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = tasks.len().max(1) as f64;
    let calls: usize = problems.iter().map(|p| p.tool_calls).sum();
    let valid: usize = problems.iter().map(|p| p.valid_tool_calls).sum();
    let evaluation = Evaluation {
        problems: tasks.len(),
        accuracy: problems.iter().filter(|p| p.correct).count() as f64 / n,
        valid_tool_call_fraction: if calls == 0 {
            0.0
        } else {
            valid as f64 / calls as f64
        },
        mean_tool_calls: calls as f64 / n,
        mean_steps: problems.iter().map(|p| p.turns as f64).sum::<f64>() / n,
        truncated_fraction: problems.iter().filter(|p| p.truncated).count() as f64 / n,
    };
    Ok((evaluation, problems))
}

/// The demo's test split with what its evaluations need: every model the demo measures (cold start, teachers,
/// each on-policy run's student) is evaluated on it the same way and recorded under the run directory.
#[derive(Clone, Copy)]
pub(super) struct TestSet<'a> {
    pub tokenizer: &'a ChatTokenizer,
    pub toolbox: &'a ToolBox,
    pub settings: &'a DemoSettings,
    pub tasks: &'a [Task],
    /// The run directory: each evaluation's problems go to `<out_dir>/eval/<name>.jsonl`.
    pub out_dir: &'a Path,
}

impl TestSet<'_> {
    /// Evaluates `model` greedily, writes each problem to `<out_dir>/eval/<name>.jsonl`, and returns the summary
    /// and which problems it solved.
    pub(super) fn evaluate_and_record(
        &self,
        name: &str,
        model: &Qwen3,
    ) -> anyhow::Result<(Evaluation, Vec<bool>)> {
        let (evaluation, problems) = evaluate(
            model,
            self.tokenizer,
            self.toolbox,
            self.settings,
            self.tasks,
        )?;
        let dir = self.out_dir.join("eval");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lines: String = problems
            .iter()
            .map(|p| serde_json::to_string(p).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        let file = dir.join(format!("{name}.jsonl"));
        std::fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
        Ok((evaluation, problems.iter().map(|p| p.correct).collect()))
    }
}
