//! The one result type of a tool call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a call ended. The serialised names are stable: trainers, judges and stored runs key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The tool returned output.
    Ok,
    /// The tool rejected the call (bad arguments, or a request it cannot complete).
    ToolError,
    /// The call ran out of fuel: the deterministic time limit.
    TimeLimit,
    /// The call hit its memory limit.
    MemoryLimit,
    /// The output exceeded its byte limit; `output` holds the kept prefix.
    OutputTruncated,
    /// The guest trapped (a bug or a deliberate abort in the tool or the code it ran).
    Crashed,
    /// The sandbox itself failed (wall-clock backstop, host I/O error, missing artifact).
    /// Never the model's fault: trainers drop such trajectories instead of penalising them.
    InfraFault,
}

impl OutcomeKind {
    /// The stable name used in JSON (`ok`, `tool_error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::ToolError => "tool_error",
            OutcomeKind::TimeLimit => "time_limit",
            OutcomeKind::MemoryLimit => "memory_limit",
            OutcomeKind::OutputTruncated => "output_truncated",
            OutcomeKind::Crashed => "crashed",
            OutcomeKind::InfraFault => "infra_fault",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one tool call: a pure function of (tool artifact, arguments, limits, seed, call key)
/// in deterministic mode, except for `infra_fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How the call ended.
    pub kind: OutcomeKind,
    /// The tool's output; for `output_truncated` the kept prefix; empty when the tool produced none.
    pub output: String,
    /// Why the call did not end `ok`: the tool's error, the trap, or the limit that was hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `tool_error`: `invalid_arguments` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// For `crashed` by the guest exiting (`wasi:cli/exit`, WASI preview 1's `proc_exit`, CPython's `os._exit`):
    /// the status it exited with, as the host received it. Left out when the guest did not exit, so that outcomes
    /// of every other kind serialise as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Fuel consumed by the call, including fuel charged for child calls.
    pub fuel_used: u64,
    /// Name of the tool that ran.
    pub tool: String,
    /// `sha256:<hex>` of the tool's artifact: the provenance of this result.
    pub artifact: String,
    /// The files the call asked to fetch ([`crate::CallOptions::fetch_files`]) that exist after it, path to
    /// standard base64 of the contents. Left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// Files as they travel in JSON (an outcome's `files`, `sod serve` requests, the worker protocol): path to
/// standard base64 of the contents.
pub fn files_to_base64(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    use base64::Engine as _;
    files
        .iter()
        .map(|(path, bytes)| {
            (
                path.clone(),
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
        })
        .collect()
}

/// [`files_to_base64`] undone; the error names the first file that is not valid base64.
pub fn files_from_base64<'a>(
    files: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine as _;
    files
        .into_iter()
        .map(|(path, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|bytes| (path.clone(), bytes))
                .map_err(|e| format!("{path:?} is not valid base64: {e}"))
        })
        .collect()
}

impl Outcome {
    /// A call the sandbox could not run (`tool` by name; no artifact ran): never the model's fault.
    pub fn infra_fault(tool: &str, message: String) -> Outcome {
        Outcome {
            kind: OutcomeKind::InfraFault,
            output: String::new(),
            message: Some(message),
            error_code: None,
            exit_status: None,
            fuel_used: 0,
            tool: tool.to_string(),
            artifact: String::new(),
            files: BTreeMap::new(),
        }
    }

    /// Whether the tool produced its full output.
    pub fn is_ok(&self) -> bool {
        self.kind == OutcomeKind::Ok
    }

    /// The text a model sees as the tool's response. Limits and faults become short, plain messages.
    pub fn model_text(&self) -> String {
        match self.kind {
            OutcomeKind::Ok => self.output.clone(),
            OutcomeKind::OutputTruncated => {
                format!("{}\n[output truncated]", self.output)
            }
            OutcomeKind::ToolError => format!("Error: {}", self.message.as_deref().unwrap_or("")),
            OutcomeKind::TimeLimit => {
                let mut text = self.output.clone();
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("Error: time limit exceeded");
                text
            }
            OutcomeKind::MemoryLimit => {
                if self.output.is_empty() {
                    "Error: memory limit exceeded".to_string()
                } else {
                    self.output.clone()
                }
            }
            OutcomeKind::Crashed => format!(
                "Error: the tool crashed: {}",
                self.message.as_deref().unwrap_or("unknown trap")
            ),
            OutcomeKind::InfraFault => {
                "Error: the sandbox failed; this call was not run".to_string()
            }
        }
    }

    /// One-line JSON, the form `sod tool call` prints and tests compare byte for byte.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
