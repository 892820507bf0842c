//! Gold trajectories: each task solved the intended way, one calculator call per step, with the responses of the
//! real calculator in the sandbox, as conversations in the rollout's format.

use anyhow::{Context, bail};
use sod_model::{ChatMessage, ToolCall};
use sod_sandbox::{CallOptions, OutcomeKind, Sandbox, Tool};

use super::tasks::Task;

/// The system prompt of every demo conversation. The tool schemas are not rendered after it: the models learn the
/// calculator's call format from the gold trajectories.
pub const SYSTEM_PROMPT: &str = "Solve the problem with the calculator, one step per call. Give the final answer as \\boxed{N}.";

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
    let mut messages = vec![
        ChatMessage::system(SYSTEM_PROMPT),
        ChatMessage::user(task.question.clone()),
    ];
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
        messages.push(ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall {
                name: "calculator".to_string(),
                arguments: serde_json::json!({ "expression": step.expression }),
            }],
        ));
        messages.push(ChatMessage::tool(output));
    }
    messages.push(ChatMessage::assistant(final_turn(&task.answer)));
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
}
