//! `sod worker`: serves sandbox calls over stdin/stdout for a [`sod_sandbox::workers::WorkerPool`].

use clap::Args;
use sod_sandbox::SandboxConfig;

use super::{Cli, open_sandbox};

/// `sod worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Run seed of this worker's sandbox.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Make each tool's next instance ahead of its call (see `SandboxConfig::instances_ahead`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    instances_ahead: bool,
    /// Largest memory limit a call may ask for, in bytes (`SandboxConfig::max_memory_bytes`). Default: the
    /// sandbox's default.
    #[arg(long)]
    max_memory_bytes: Option<u64>,
}

pub(super) fn run(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<()> {
    let defaults = SandboxConfig::default();
    let sandbox = open_sandbox(
        cli,
        SandboxConfig {
            seed: args.seed,
            instances_ahead: args.instances_ahead,
            max_memory_bytes: args.max_memory_bytes.unwrap_or(defaults.max_memory_bytes),
            ..defaults
        },
        false,
    )?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    sod_sandbox::workers::serve_requests(&sandbox, stdin, stdout)?;
    Ok(())
}
