//! `sod:tool/sandbox`: the capability that lets a tool call other tools under its own budget.
//!
//! A child call runs in a fresh instance of the named tool. Its fuel is clamped to what the caller has
//! left and charged to the caller afterwards, so a composed call never exceeds the caller's limit; its
//! memory and output limits are clamped to the caller's.

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use crate::bindings::sod::tool::sandbox::{
    Limits as WitLimits, Outcome as WitOutcome, OutcomeKind as WitOutcomeKind,
};
use crate::limits::Limits;
use crate::outcome::OutcomeKind;
use crate::sandbox::{CallOptions, MAX_CALL_DEPTH};
use crate::store::CallState;

/// The WIT interface this module implements.
const INTERFACE: &str = "sod:tool/sandbox@0.1.0";

pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut instance = linker.instance(INTERFACE)?;
    instance.func_wrap_async(
        "call-tool",
        |mut caller: StoreContextMut<'_, CallState>,
         (name, arguments, requested): (String, String, WitLimits)| {
            Box::new(async move {
                let outcome = call_child(&mut caller, &name, &arguments, requested).await?;
                Ok((outcome,))
            })
        },
    )?;
    Ok(())
}

fn refusal(kind: WitOutcomeKind, message: String) -> WitOutcome {
    WitOutcome {
        kind,
        output: message,
        fuel_used: 0,
    }
}

async fn call_child(
    caller: &mut StoreContextMut<'_, CallState>,
    name: &str,
    arguments: &str,
    requested: WitLimits,
) -> wasmtime::Result<WitOutcome> {
    let remaining = caller.get_fuel()?;
    let state = caller.data_mut();
    let Some(sandbox) = state.sandbox.upgrade() else {
        return Ok(refusal(
            WitOutcomeKind::InfraFault,
            "the sandbox is shutting down".to_string(),
        ));
    };
    if state.identity.depth + 1 > MAX_CALL_DEPTH {
        return Ok(refusal(
            WitOutcomeKind::ToolError,
            format!("tools may nest at most {MAX_CALL_DEPTH} calls deep"),
        ));
    }
    let tool = match sandbox.tool_async(name).await {
        Ok(tool) => tool,
        Err(err) => return Ok(refusal(WitOutcomeKind::ToolError, err.to_string())),
    };
    let parent = state.limits;
    let limits = Limits {
        fuel: requested.fuel.unwrap_or(remaining).min(remaining),
        memory_bytes: requested
            .memory_bytes
            .unwrap_or(parent.memory_bytes)
            .min(parent.memory_bytes),
        output_bytes: requested
            .output_bytes
            .unwrap_or(parent.output_bytes)
            .min(parent.output_bytes),
        wall_ms: parent.wall_ms,
        // A child gets its own empty file tree, under the caller's file quotas.
        fs: parent.fs,
    };
    state.child_calls += 1;
    let options = CallOptions {
        limits: Some(limits),
        seed: Some(state.identity.seed),
        call_key: Some(format!(
            "{}/child-{}",
            state.identity.call_key, state.child_calls
        )),
        session: None,
        ..CallOptions::default()
    };
    let depth = state.identity.depth + 1;
    let outcome = Box::pin(sandbox.call_async(&tool, arguments, &options, depth)).await;
    drop(sandbox);
    // Charge the child's fuel to the caller. Running out here traps the caller with OutOfFuel on its
    // next instruction, exactly as if it had spent the fuel itself.
    caller.set_fuel(remaining.saturating_sub(outcome.fuel_used))?;
    let kind = match outcome.kind {
        OutcomeKind::Ok => WitOutcomeKind::Ok,
        OutcomeKind::ToolError => WitOutcomeKind::ToolError,
        OutcomeKind::TimeLimit => WitOutcomeKind::TimeLimit,
        OutcomeKind::MemoryLimit => WitOutcomeKind::MemoryLimit,
        OutcomeKind::OutputTruncated => WitOutcomeKind::OutputTruncated,
        OutcomeKind::Crashed => WitOutcomeKind::Crashed,
        OutcomeKind::InfraFault => WitOutcomeKind::InfraFault,
    };
    let output = match outcome.kind {
        OutcomeKind::Ok | OutcomeKind::OutputTruncated | OutcomeKind::MemoryLimit => outcome.output,
        _ => outcome.message.unwrap_or_default(),
    };
    Ok(WitOutcome {
        kind,
        output,
        fuel_used: outcome.fuel_used,
    })
}
