//! sod's tool sandbox: runs tools, WebAssembly components implementing `sdk/wit/tool.wit`, with WASI
//! preview 2, deterministically and under resource limits.
//!
//! Capabilities first: a tool sees its own files in memory (as `/`: [`vfs`], sorted listings, virtual
//! timestamps, quotas; the caller may put files in and fetch them back), captured stdout and stderr, virtual
//! clocks, seeded randomness, and, if its world imports `sod:tool/sandbox`, the ability to call other loaded
//! tools under its own budget. No environment, arguments, stdin, network, or host files.
//!
//! Every call is a pure function of (tool artifact, arguments, limits, seed, call key): time limits
//! count fuel, not wall-clock time; clocks are virtual; randomness is seeded; NaNs are canonical. Every
//! way a call can end is an [`Outcome`]; the host never panics because of what a guest did.
//!
//! ```no_run
//! use sod_sandbox::{CallOptions, Sandbox, SandboxConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let calculator = sandbox.load_tool("target/tools/calculator.wasm".as_ref())?;
//! let outcome = sandbox.call(&calculator, r#"{"expression": "2^100"}"#, &CallOptions::default());
//! println!("{}", outcome.to_json());
//! # Ok(()) }
//! ```

mod backend;
mod bindings;
mod cache;
mod clock;
mod compose;
mod error;
mod limiter;
mod limits;
mod outcome;
mod pipe;
mod random;
mod remote;
mod sandbox;
mod state;
pub mod vfs;
pub mod workers;

pub use backend::ToolBackend;
pub use cache::default_cache_dir;
pub use clock::{EPOCH_UNIX_SECONDS, TICK_NANOS};
pub use error::SandboxError;
pub use limits::Limits;
pub use outcome::{Outcome, OutcomeKind, files_from_base64, files_to_base64};
pub use remote::{RETRY_DEAD_AFTER, RemoteTools};
pub use sandbox::{
    CallOptions, Descriptor, MAX_CALL_DEPTH, Sandbox, SandboxConfig, Tool, call_key_for,
};
pub use vfs::FsLimits;
