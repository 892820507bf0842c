//! Where a [`crate::Sandbox`]'s calls run when not in this process: `sod serve` endpoints
//! ([`crate::RemoteTools`]) or local worker processes ([`crate::workers::WorkerPool`]).
//!
//! A sandbox with a backend still loads and describes its tools itself, so prompts, schemas and artifact hashes are
//! the same whichever backend runs the calls; before handing a call over it fills in what it would fill in (its run
//! seed) and caps the limits as it would cap them, so the backend's own defaults never reach an outcome. A backend
//! never fails a call: what it cannot serve is an [`crate::OutcomeKind::InfraFault`].

use crate::outcome::Outcome;
use crate::sandbox::CallOptions;

/// Runs a sandbox's calls elsewhere (see the module docs). Shared by every thread calling the sandbox.
pub trait ToolBackend: Send + Sync + std::fmt::Debug {
    /// Runs one call; `options` carries the limits and seed in full. A call that cannot be served is an infra
    /// fault.
    fn call(&self, tool: &str, arguments: &str, options: &CallOptions) -> Outcome;

    /// Releases a session where it lives; whether it existed.
    fn release_session(&self, tool: &str, session: &str) -> bool;

    /// Checks that the backend serves each of `tools` (name, `sha256:` artifact) with that same artifact, so that
    /// its outcomes are the ones the caller's tools would give.
    fn check_artifacts(&self, tools: &[(String, String)]) -> Result<(), String>;
}
