//! Errors of the loss plugin host. Every message names the plugin file and the problem.

use std::path::PathBuf;

use sod_loss_abi::{BatchError, PluginErrorKind};

/// Why loading, configuring or running a loss plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// Neither a plugin name nor a path to a shared library.
    #[error(
        "'{name}' is not a loss plugin name (letters, digits, '_' and '-') nor a path to a shared library"
    )]
    InvalidName {
        /// What was given.
        name: String,
    },
    /// No plugin file where the name or path points.
    #[error("loss plugin '{name}' not found: {} does not exist{}", path.display(), available_hint(available))]
    NotFound {
        /// The name or path given.
        name: String,
        /// The file looked for.
        path: PathBuf,
        /// Plugin names found in the plugin directory.
        available: Vec<String>,
    },
    /// The dynamic loader refused the file.
    #[error("cannot load loss plugin {}: {source}", path.display())]
    Open {
        /// The plugin file.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The file does not export the entry symbol.
    #[error("{} is not a sod loss plugin: it does not export the symbol `{symbol}` ({source})", path.display())]
    MissingSymbol {
        /// The plugin file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The plugin was built for another ABI version.
    #[error(
        "{origin} was built for sod loss ABI version {found}, but this host speaks versions 1 to {expected}; rebuild the plugin against this version of sod_loss.h / sod-loss-abi"
    )]
    AbiVersion {
        /// The plugin file.
        origin: String,
        /// The version in the plugin's table.
        found: u32,
        /// The version this host implements.
        expected: u32,
    },
    /// The plugin's table breaks the ABI.
    #[error("{origin} has an invalid plugin table: {problem}")]
    InvalidTable {
        /// The plugin file.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// The plugin reported an error (or caught a panic).
    #[error("loss plugin '{plugin}' ({origin}) failed in {operation}: {}: {message}", kind_text(*kind, *status))]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The plugin file.
        origin: String,
        /// `configure`, `requirements` or `compute`.
        operation: &'static str,
        /// The kind of error, if the status code is a known one.
        kind: Option<PluginErrorKind>,
        /// The raw status code.
        status: i32,
        /// The plugin's message.
        message: String,
    },
    /// The batch breaks the ABI's rules; found before calling the plugin.
    #[error("invalid batch for loss '{plugin}': {source}")]
    Batch {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with the batch.
        source: BatchError,
    },
    /// The run or batch does not give the loss what it declared it needs.
    #[error("loss '{plugin}' cannot run here: {problem}")]
    Requirement {
        /// The plugin's name.
        plugin: String,
        /// What is missing.
        problem: String,
    },
    /// The plugin returned output that breaks the ABI.
    #[error("loss plugin '{plugin}' ({origin}) returned invalid output: {problem}")]
    Output {
        /// The plugin's name.
        plugin: String,
        /// The plugin file.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// A `key=value` setting without `=` or with an empty key.
    #[error("setting '{0}' must have the form key=value")]
    Setting(String),
    /// A batch file could not be read or parsed.
    #[error("batch file {}: {problem}", path.display())]
    BatchFile {
        /// The batch file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The directory of the running executable is unknown.
    #[error("cannot find the directory of the running executable: {0}")]
    ExecutableDir(std::io::Error),
}

fn available_hint(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!(" (plugins there: {})", available.join(", "))
    }
}

fn kind_text(kind: Option<PluginErrorKind>, status: i32) -> String {
    match kind {
        Some(kind) => kind.to_string(),
        None => format!("unknown status {status}"),
    }
}
