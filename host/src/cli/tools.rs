//! `sod tools list` and `sod tool call`.

use clap::{Args, Subcommand};
use sod_sandbox::{CallOptions, Limits, SandboxConfig};

use super::{Cli, open_sandbox, usage};

/// `sod tools ...`
#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    command: ToolsCommand,
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// List the tools: name, version, artifact hash, argument schema.
    List {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `sod tool call NAME JSON`
#[derive(Debug, Args)]
pub struct ToolArgs {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Debug, Subcommand)]
enum ToolCommand {
    /// Call a tool with JSON arguments; prints the outcome as one JSON object.
    Call(CallArgs),
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The tool's name (see `sod tools list`).
    name: String,
    /// The arguments, a JSON object, e.g. '{"expression": "2^64"}'.
    arguments: String,
    /// Fuel limit (deterministic time limit; about 5e9 per second of CPython compute).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "M")]
    memory_mb: Option<u64>,
    /// Output limit in bytes.
    #[arg(long)]
    output_bytes: Option<u64>,
    /// Run seed for the call's randomness.
    #[arg(long)]
    seed: Option<u64>,
    /// Call key for seeding (default: derived from the tool and the arguments).
    #[arg(long)]
    call_key: Option<String>,
    /// Bytes the call's files may take in all, in MiB (default 64).
    #[arg(long, value_name = "M")]
    fs_max_mb: Option<u64>,
    /// Files and directories the call may create (default 10000).
    #[arg(long, value_name = "N")]
    fs_max_files: Option<u64>,
    /// Put a host file into the tool's filesystem before the call: GUEST_PATH=HOST_PATH (repeatable).
    #[arg(long = "file", value_name = "GUEST=HOST")]
    files: Vec<String>,
    /// Read a file back from the tool's filesystem after the call into the outcome's `files` (base64;
    /// repeatable).
    #[arg(long = "fetch", value_name = "GUEST_PATH")]
    fetch: Vec<String>,
}

pub(super) fn list(cli: &Cli, args: &ToolsArgs) -> anyhow::Result<()> {
    let ToolsCommand::List { json } = &args.command;
    let sandbox = open_sandbox(cli, SandboxConfig::default(), true)?;
    let tools = sandbox.tools();
    if *json {
        let rows: Vec<serde_json::Value> = tools
            .iter()
            .map(|tool| {
                let d = tool.descriptor();
                serde_json::json!({
                    "name": d.name,
                    "version": d.version,
                    "description": d.description,
                    "artifact": tool.artifact_hash(),
                    "parameters": d.parameters,
                    "path": tool.path(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<9} {:<20} ARGUMENTS",
        "NAME", "VERSION", "ARTIFACT"
    );
    for tool in &tools {
        let d = tool.descriptor();
        let hash = tool.artifact_hash();
        let short = hash.get(..19).unwrap_or(hash);
        println!(
            "{:<14} {:<9} {:<20} {}",
            d.name,
            d.version,
            short,
            serde_json::to_string(&d.parameters)?
        );
    }
    Ok(())
}

pub(super) fn call(cli: &Cli, args: &ToolArgs) -> anyhow::Result<()> {
    let ToolCommand::Call(args) = &args.command;
    let parsed: serde_json::Value = serde_json::from_str(&args.arguments)
        .map_err(|e| usage(format!("arguments are not valid JSON: {e}")))?;
    if !parsed.is_object() {
        return Err(usage(
            "arguments must be a JSON object, e.g. '{\"expression\": \"1+1\"}'",
        ));
    }
    let mut limits = Limits::default();
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel;
    }
    if let Some(mb) = args.memory_mb {
        limits.memory_bytes = mb.saturating_mul(1 << 20);
    }
    if let Some(bytes) = args.output_bytes {
        limits.output_bytes = bytes;
    }
    if let Some(mb) = args.fs_max_mb {
        limits.fs.max_bytes = mb.saturating_mul(1 << 20);
        limits.fs.max_file_bytes = limits.fs.max_bytes;
    }
    if let Some(files) = args.fs_max_files {
        limits.fs.max_nodes = files;
    }
    let mut files = std::collections::BTreeMap::new();
    for spec in &args.files {
        let (guest, host) = spec
            .split_once('=')
            .ok_or_else(|| usage(format!("--file {spec:?}: expected GUEST_PATH=HOST_PATH")))?;
        let bytes = std::fs::read(host)
            .map_err(|e| usage(format!("--file {spec:?}: cannot read {host:?}: {e}")))?;
        files.insert(guest.to_string(), bytes);
    }
    let sandbox = open_sandbox(cli, SandboxConfig::default(), false)?;
    let tool = sandbox.tool(&args.name).map_err(|e| usage(e.to_string()))?;
    let options = CallOptions {
        limits: Some(limits),
        seed: args.seed,
        call_key: args.call_key.clone(),
        session: None,
        files,
        fetch_files: args.fetch.clone(),
    };
    let outcome = sandbox.call(&tool, &args.arguments, &options);
    println!("{}", outcome.to_json());
    Ok(())
}
