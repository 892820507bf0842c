//! Gold trajectories: each task solved the intended way, one calculator call per step, with the responses of the
//! real calculator in the sandbox, as conversations in the rollout's format.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use sod_model::{ChatMessage, ToolCall};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, Tool};

use super::tasks::Task;

/// The system prompt of every demo conversation. The tool schemas are not rendered after it: the models learn the
/// calculator's call format from the gold trajectories.
pub const SYSTEM_PROMPT: &str = "Solve the problem with the calculator, one step per call. Give the final answer as \\boxed{N}.";

/// The prompt of `task` in every demo conversation: the system prompt and the question.
pub fn prompt(task: &Task) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(SYSTEM_PROMPT),
        ChatMessage::user(task.question.clone()),
    ]
}

/// One greedy-or-sampled rollout request per task (sample 0, group = its index), prompt ids `{prefix}{task id}`.
pub fn requests(tasks: &[Task], prefix: &str) -> Vec<sod_train::rollout::RolloutRequest> {
    tasks
        .iter()
        .enumerate()
        .map(|(i, task)| sod_train::rollout::RolloutRequest {
            prompt_id: format!("{prefix}{}", task.id),
            sample_index: 0,
            group: i as u32,
            messages: prompt(task),
            prompt_tokens: None,
        })
        .collect()
}

/// Whether a trajectory of `task` ended normally with its answer; also the answer given, if any.
pub fn solved(task: &Task, t: &sod_train::rollout::Trajectory) -> (bool, Option<String>) {
    let given = sod_train::reward::extract_answer(&t.final_text);
    let right = !t.truncated()
        && !t.infra_fault
        && given
            .as_deref()
            .is_some_and(|answer| super::tasks::is_correct(task, answer));
    (right, given)
}

/// The final assistant turn of a solved task.
pub fn final_turn(answer: &str) -> String {
    format!("The answer is \\boxed{{{answer}}}.")
}

/// The calculator tool and what it answers.
pub struct Calculator<'a> {
    sandbox: &'a Sandbox,
    tool: Tool,
}

impl<'a> Calculator<'a> {
    /// Loads `calculator` from the sandbox's tools directory.
    pub fn new(sandbox: &'a Sandbox) -> anyhow::Result<Self> {
        let tool = sandbox
            .tool("calculator")
            .context("loading the calculator tool")?;
        Ok(Calculator { sandbox, tool })
    }

    /// The sandbox it runs in.
    pub fn sandbox(&self) -> &'a Sandbox {
        self.sandbox
    }

    /// The OpenAI-style function schema of the calculator.
    pub fn schema(&self) -> serde_json::Value {
        self.tool.descriptor().function_schema()
    }

    /// The calculator's text for `expression`, as a rollout would append it; an error unless the call succeeded.
    pub fn evaluate(&self, expression: &str, call_key: &str) -> anyhow::Result<String> {
        let arguments = serde_json::json!({ "expression": expression }).to_string();
        let options = CallOptions {
            call_key: Some(call_key.to_string()),
            ..CallOptions::default()
        };
        let outcome = self.sandbox.call(&self.tool, &arguments, &options);
        if outcome.kind != OutcomeKind::Ok {
            bail!(
                "the calculator did not evaluate {expression:?}: {}",
                outcome.model_text()
            );
        }
        Ok(outcome.model_text())
    }
}

/// The gold conversation of `task`: system prompt, question, one assistant turn with a calculator call per step
/// followed by the calculator's real response, and a final turn with the boxed answer. Fails if the calculator's
/// result differs from the task's expected step result.
pub fn gold_conversation(
    calculator: &Calculator<'_>,
    task: &Task,
) -> anyhow::Result<Vec<ChatMessage>> {
    let mut messages = prompt(task);
    for (k, step) in task.steps.iter().enumerate() {
        let output = calculator.evaluate(&step.expression, &format!("gold/{}/{k}", task.id))?;
        if output.trim() != step.result.to_string() {
            bail!(
                "task {}: the calculator says {} = {output:?}, the task expects {}",
                task.id,
                step.expression,
                step.result
            );
        }
        messages.push(call_turn(&step.expression));
        messages.push(ChatMessage::tool(output));
    }
    messages.push(ChatMessage::assistant(final_turn(&task.answer)));
    Ok(messages)
}

/// One calculator turn: an assistant message with a single call of `expression`.
fn call_turn(expression: &str) -> ChatMessage {
    ChatMessage::assistant_with_tool_calls(
        "",
        vec![ToolCall {
            name: "calculator".to_string(),
            arguments: serde_json::json!({ "expression": expression }),
        }],
    )
}

/// `expression` with one digit of one operand changed (never to a leading zero), chosen by `pick`: a miscopied
/// number, the student's commonest slip on these problems.
pub fn miscopy(expression: &str, pick: u64) -> String {
    let digits: Vec<usize> = expression
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    if digits.is_empty() {
        return expression.to_string();
    }
    let at = digits[(pick % digits.len() as u64) as usize];
    let bytes = expression.as_bytes();
    let leading = at == 0 || !bytes[at - 1].is_ascii_digit();
    let old = bytes[at] - b'0';
    // A different digit, 1..=9 in a leading position (so that the number keeps its length).
    let choices: Vec<u8> = (u8::from(leading)..=9).filter(|&d| d != old).collect();
    let new = choices[((pick / 31) % choices.len() as u64) as usize];
    let mut out = expression.to_string();
    out.replace_range(at..=at, &char::from(b'0' + new).to_string());
    out
}

/// A recovery conversation of `task` (the DAgger/DART idea): gold up to a step chosen by the task id, where a
/// call with a miscopied number gets the real calculator's (wrong) answer, then the step redone correctly and
/// gold to the end. The wrong turn has `weight: 0`: a model trained on it learns to recover from such a prefix,
/// not to make the slip.
pub fn recovery_conversation(
    calculator: &Calculator<'_>,
    task: &Task,
) -> anyhow::Result<Vec<ChatMessage>> {
    let digest = Sha256::digest(format!("sod-demo-recovery-v1/{}", task.id));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let pick = u64::from_le_bytes(bytes);
    let at = (pick % task.steps.len() as u64) as usize;
    let gold = gold_conversation(calculator, task)?;
    // Messages: system, user, then (call, response) per step, then the answer.
    let split = 2 + 2 * at;
    let step = &task.steps[at];
    let wrong = miscopy(&step.expression, pick >> 8);
    let wrong_output = calculator.evaluate(&wrong, &format!("recovery/{}/{at}", task.id))?;
    if wrong_output.trim() == step.result.to_string() {
        // The slip did not change the result (it cannot for these operations, but a task family might allow it):
        // there is nothing to recover from.
        return Ok(gold);
    }
    let mut slip = call_turn(&wrong);
    slip.weight = Some(0);
    let mut messages = gold[..split].to_vec();
    messages.push(slip);
    messages.push(ChatMessage::tool(wrong_output));
    messages.extend_from_slice(&gold[split..]);
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_turn_is_boxed() {
        let text = final_turn("123");
        assert_eq!(
            sod_train::reward::extract_answer(&text).as_deref(),
            Some("123")
        );
    }

    #[test]
    fn miscopies_change_one_digit_and_keep_lengths() {
        for pick in 0..500u64 {
            for expression in ["4817*36", "123+9", "70-1"] {
                let wrong = miscopy(expression, pick);
                assert_eq!(wrong.len(), expression.len());
                let changed = wrong
                    .chars()
                    .zip(expression.chars())
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(changed, 1, "{expression} -> {wrong}");
                for number in wrong.split(|c: char| !c.is_ascii_digit()) {
                    assert!(number.len() < 2 || !number.starts_with('0'), "{wrong}");
                }
            }
        }
    }
}
