//! The tools offered to the model and how a turn's tool calls are run: parsed, seeded by their call key, run in
//! the trajectory's session for stateful tools, answered in order (see the parent module's docs).

use std::collections::{BTreeMap, BTreeSet};

use sod_sandbox::{CallOptions, Limits, OutcomeKind, Sandbox, Tool};

use crate::error::Result;

/// The tools offered to the model and how they are called.
#[derive(Clone)]
pub struct ToolBox {
    sandbox: Sandbox,
    tools: BTreeMap<String, Tool>,
    schemas: Vec<serde_json::Value>,
    limits: Limits,
    stateful: BTreeSet<String>,
    schemas_in_prompt: bool,
}

/// Longest session id used as is; longer ones are hashed (the python tool accepts at most 256 characters).
const MAX_PLAIN_SESSION_ID: usize = 128;

/// The sandbox session (and python `session` argument) of trajectory `sample` of prompt `prompt_id`:
/// `"{prompt_id}/{sample}"`, or, when that is longer than 128 characters, a SHA-256 digest of the prompt id
/// (32 hex digits) followed by `/{sample}`.
pub fn session_id(prompt_id: &str, sample: u64) -> String {
    let plain = format!("{prompt_id}/{sample}");
    if plain.len() <= MAX_PLAIN_SESSION_ID {
        return plain;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(prompt_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}/{sample}")
}

/// The responses to one assistant turn's tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResponses {
    /// One response text per `<tool_call>` block, in order.
    pub responses: Vec<String>,
    /// `<tool_call>` blocks in the turn.
    pub calls: usize,
    /// Calls that parsed, named a known tool and whose arguments the tool accepted.
    pub valid_calls: usize,
    /// Some call failed in the sandbox itself.
    pub infra_fault: bool,
}

impl ToolBox {
    /// Loads the named tools from the sandbox (`<tools_dir>/<name>.wasm`); every call runs under `limits`. The
    /// stateful tools are [`crate::config::DEFAULT_STATEFUL_TOOLS`] until [`Self::with_stateful_tools`] says
    /// otherwise.
    pub fn new(sandbox: Sandbox, names: &[String], limits: Limits) -> Result<Self> {
        let mut tools = BTreeMap::new();
        let mut schemas = Vec::new();
        for name in names {
            let tool = sandbox.tool(name)?;
            schemas.push(tool.descriptor().function_schema());
            tools.insert(name.clone(), tool);
        }
        Ok(ToolBox {
            sandbox,
            tools,
            schemas,
            limits,
            stateful: crate::config::DEFAULT_STATEFUL_TOOLS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            schemas_in_prompt: true,
        })
    }

    /// Sets which tools keep state across a trajectory's turns (see the module docs). Names of tools not offered
    /// are allowed and have no effect, so one list can serve runs with different tools.
    pub fn with_stateful_tools(mut self, names: &[String]) -> Self {
        self.stateful = names.iter().cloned().collect();
        self
    }

    /// Whether calls of `tool` run in the trajectory's session.
    pub fn is_stateful(&self, tool: &str) -> bool {
        self.stateful.contains(tool)
    }

    /// The sandbox the tools run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Releases the sessions `session` of every stateful tool offered; returns how many existed.
    pub fn release_sessions(&self, session: &str) -> usize {
        self.tools
            .keys()
            .filter(|name| self.is_stateful(name))
            .filter(|name| self.sandbox.release_session(name, session))
            .count()
    }

    /// Whether the tools' function schemas are rendered into the system prompt (the default). A model trained
    /// to call its tools without them can leave them out: the schemas (and the chat template's instructions that
    /// come with them) are then not part of any prompt, which for small models on short tasks is most of every
    /// sequence. The tools are offered and called the same either way.
    pub fn with_schemas_in_prompt(mut self, in_prompt: bool) -> Self {
        self.schemas_in_prompt = in_prompt;
        self
    }

    /// OpenAI-style function schemas, in the configured order, for the chat template; empty when the schemas are
    /// left out of the prompt ([`Self::with_schemas_in_prompt`]).
    pub fn schemas(&self) -> &[serde_json::Value] {
        if self.schemas_in_prompt {
            &self.schemas
        } else {
            &[]
        }
    }

    /// Runs the tool calls of one assistant turn (`turn_text`, as decoded) and returns the response to each.
    /// `call_key_prefix` (`"{prompt_id}/{sample}/{turn}"`) plus the call's index seeds each call. Every call is
    /// stateless; see [`Self::respond_in_session`].
    pub fn respond(&self, turn_text: &str, call_key_prefix: &str) -> ToolResponses {
        self.respond_in_session(turn_text, call_key_prefix, None)
    }

    /// Like [`Self::respond`], with calls of stateful tools in the sandbox session `session` (when given) and
    /// `session` as their `"session"` argument unless the model gave one (see the module docs).
    pub fn respond_in_session(
        &self,
        turn_text: &str,
        call_key_prefix: &str,
        session: Option<&str>,
    ) -> ToolResponses {
        let calls = sod_model::parse_tool_calls(answer_part(turn_text));
        let mut out = ToolResponses {
            responses: Vec::with_capacity(calls.len()),
            calls: calls.len(),
            valid_calls: 0,
            infra_fault: false,
        };
        for (k, call) in calls.into_iter().enumerate() {
            let call = match call {
                Ok(call) => call,
                Err(error) => {
                    out.responses.push(error.to_string());
                    continue;
                }
            };
            let Some(tool) = self.tools.get(&call.name) else {
                let known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
                out.responses.push(format!(
                    "error: there is no tool named {:?}; the tools are: {}.",
                    call.name,
                    if known.is_empty() {
                        "(none)".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
                continue;
            };
            let session = session.filter(|_| self.is_stateful(&call.name));
            let mut arguments = call.arguments;
            if let (Some(id), Some(object)) = (session, arguments.as_object_mut()) {
                object
                    .entry("session")
                    .or_insert_with(|| serde_json::Value::String(id.to_string()));
            }
            let options = CallOptions {
                limits: Some(self.limits),
                seed: None,
                call_key: Some(format!("{call_key_prefix}/{k}")),
                session: session.map(str::to_string),
                ..CallOptions::default()
            };
            let outcome = self.sandbox.call(tool, &arguments.to_string(), &options);
            if outcome.kind == OutcomeKind::InfraFault {
                out.infra_fault = true;
            }
            let rejected = outcome.kind == OutcomeKind::ToolError
                && outcome.error_code.as_deref() == Some("invalid_arguments");
            if !rejected && outcome.kind != OutcomeKind::InfraFault {
                out.valid_calls += 1;
            }
            out.responses.push(outcome.model_text());
        }
        out
    }
}

/// The part of an assistant turn after its reasoning (`</think>`), where tool calls and answers live.
pub(super) fn answer_part(text: &str) -> &str {
    text.rfind("</think>")
        .map_or(text, |i| &text[i + "</think>".len()..])
}
