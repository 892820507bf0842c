//! Outcome classification: how the end of a call (the tool's return value, its error, a trap, an exit, a
//! refused allocation) becomes the one [`Outcome`] the caller gets. Pure over what the store recorded, so the same
//! call ends the same way however it started (fresh, made ahead, in a session).

use std::collections::BTreeMap;

use wasmtime::{Store, Trap};

use crate::bindings::sod::tool::types::ToolError;
use crate::limits::Limits;
use crate::outcome::{Outcome, OutcomeKind};
use crate::registry::Tool;
use crate::sandbox::Call;
use crate::store::CallState;

/// Truncates `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Turns the result of a call into an [`Outcome`].
pub(crate) fn finish(
    tool: &Tool,
    store: &mut Store<CallState>,
    call: &Call<'_>,
    result: wasmtime::Result<Result<String, ToolError>>,
) -> Outcome {
    let limits = &call.limits;
    let remaining = store.get_fuel().unwrap_or(0);
    let fuel_used = limits.fuel.saturating_sub(remaining);
    let state = store.data();
    let memory_refused = state.limiter.refused;
    let max_output = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
    let mut outcome = Outcome {
        kind: OutcomeKind::Ok,
        output: String::new(),
        message: None,
        error_code: None,
        exit_status: None,
        fuel_used,
        tool: tool.name().to_string(),
        artifact: tool.artifact_hash().to_string(),
        files: BTreeMap::new(),
    };
    if !call.fetch.is_empty() {
        outcome.files = crate::outcome::files_to_base64(&state.vfs.fetch(call.fetch));
    }
    match result {
        Ok(Ok(mut output)) => {
            if output.len() > max_output {
                truncate_utf8(&mut output, max_output);
                outcome.kind = OutcomeKind::OutputTruncated;
                outcome.message = Some(format!("output exceeded {max_output} bytes"));
            } else if memory_refused {
                // The guest survived a refused allocation (e.g. CPython raised MemoryError).
                outcome.kind = OutcomeKind::MemoryLimit;
                outcome.message = Some(format!(
                    "memory limit of {} bytes reached",
                    limits.memory_bytes
                ));
            }
            outcome.output = output;
        }
        Ok(Err(error)) => {
            let (code, message) = match error {
                ToolError::InvalidArguments(message) => ("invalid_arguments", message),
                ToolError::Failed(message) => ("failed", message),
            };
            let mut message = message;
            truncate_utf8(&mut message, max_output);
            outcome.kind = OutcomeKind::ToolError;
            outcome.error_code = Some(code.to_string());
            outcome.message = Some(message);
        }
        Err(error) => {
            let ended = classify_error(&error, memory_refused, limits, state);
            outcome.kind = ended.kind;
            outcome.message = Some(ended.message);
            outcome.exit_status = ended.exit_status;
        }
    }
    outcome
}

/// How a call that did not return ended.
struct Ended {
    kind: OutcomeKind,
    message: String,
    /// The status the guest exited with (`wasi:cli/exit`, WASI preview 1's `proc_exit`), if it exited.
    exit_status: Option<i32>,
}

fn classify_error(
    error: &wasmtime::Error,
    memory_refused: bool,
    limits: &Limits,
    state: &CallState,
) -> Ended {
    let ended = |kind, message| Ended {
        kind,
        message,
        exit_status: None,
    };
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => ended(
                OutcomeKind::TimeLimit,
                format!("fuel limit of {} exhausted", limits.fuel),
            ),
            Trap::Interrupt => ended(
                OutcomeKind::InfraFault,
                format!(
                    "wall-clock backstop of {} ms reached before the fuel limit; the machine is overloaded or the fuel limit is too high for it",
                    limits.wall_ms
                ),
            ),
            _ if memory_refused => ended(
                OutcomeKind::MemoryLimit,
                format!(
                    "memory limit of {} bytes reached ({trap})",
                    limits.memory_bytes
                ),
            ),
            _ => ended(OutcomeKind::Crashed, with_stderr(trap.to_string(), state)),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // The message keeps the status too: it is what a model reads (`Outcome::model_text`), and stored runs
        // carry it.
        return Ended {
            kind: OutcomeKind::Crashed,
            message: with_stderr(format!("the tool exited with status {}", exit.0), state),
            exit_status: Some(exit.0),
        };
    }
    if memory_refused {
        return ended(
            OutcomeKind::MemoryLimit,
            format!(
                "memory limit of {} bytes reached: {error:#}",
                limits.memory_bytes
            ),
        );
    }
    ended(OutcomeKind::InfraFault, format!("{error:#}"))
}

/// Appends the tail of the guest's stderr (a panic message, say) to a trap message.
fn with_stderr(message: String, state: &CallState) -> String {
    let (stderr, _) = state.stderr.contents();
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return message;
    }
    let tail: String = {
        let chars: Vec<char> = stderr.chars().collect();
        let start = chars.len().saturating_sub(2000);
        chars[start..].iter().collect()
    };
    format!("{message}; stderr: {tail}")
}
