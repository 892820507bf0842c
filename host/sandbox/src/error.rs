//! Errors of the sandbox's own API (loading tools, configuration). A guest's misbehaviour is never one of
//! these: it is an [`Outcome`](crate::Outcome).

use std::path::PathBuf;

/// Why the sandbox could not load a tool or start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be created with the requested settings.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// The backend cannot serve this sandbox's tools (endpoints unreachable, workers that do not start, other
    /// artifacts), or its settings are wrong.
    #[error("tool backend: {0}")]
    Backend(String),
    /// A tool artifact could not be read.
    #[error("cannot read tool artifact {path}: {source}")]
    ReadArtifact {
        /// The artifact's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A tool artifact is not a valid component, or does not implement the tool world.
    #[error("{path} is not a valid sod tool component: {reason}")]
    InvalidArtifact {
        /// The artifact's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tool's `describe` export failed or returned an unusable description.
    #[error("tool {path} failed to describe itself: {reason}")]
    Describe {
        /// The artifact's path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Two loaded tools have the same name.
    #[error("two tools are named {name:?}: {first} and {second}")]
    DuplicateTool {
        /// The shared name.
        name: String,
        /// The first artifact.
        first: PathBuf,
        /// The second artifact.
        second: PathBuf,
    },
    /// No tool with this name is loaded.
    #[error("unknown tool {name:?}; available: {available}")]
    UnknownTool {
        /// The requested name.
        name: String,
        /// Comma-separated names of the loaded tools.
        available: String,
    },
    /// A tools directory could not be listed.
    #[error("cannot list tools directory {path}: {source}")]
    ToolsDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
