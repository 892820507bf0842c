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

// Module map (who owns what; each module's docs say more):
// - `sandbox`: settings, the public `Sandbox` handle, the call path every call takes, backend hand-over.
// - `engine`: the wasmtime engine's configuration, the linker (which capability serves which interface), the
//   wall-clock backstop's ticker.
// - `store`: what a call's store holds, how it is made, and `bind`, the one place a call's limits and identity
//   are set; its docs hold the lifecycle map of a store (made -> bound -> run -> dropped or kept).
// - `registry`: loading, describing and finding tools (`Tool`, `Descriptor`).
// - `ahead`: instances made ahead of their calls, and the background thread that makes and drops them.
// - `session`: instances kept across calls of a session.
// - `classify`: how a call's end becomes its `Outcome`.
// - capabilities, one interface each with its own `add_to_linker`: `clock`, `random`, `vfs`, `compose`; and
//   `limiter`, `pipe` (memory and output bounds the guest can see).
// - `outcome`, `limits`, `error`: the types of the API; `backend`, `remote`, `workers`: calls run elsewhere.
mod ahead;
mod backend;
mod bindings;
mod cache;
mod classify;
mod clock;
mod compose;
mod engine;
mod error;
mod limiter;
mod limits;
mod outcome;
mod pipe;
mod random;
mod registry;
mod remote;
mod sandbox;
mod session;
mod store;
pub mod vfs;
pub mod workers;

pub use backend::ToolBackend;
pub use cache::default_cache_dir;
pub use clock::{EPOCH_UNIX_SECONDS, TICK_NANOS};
pub use error::SandboxError;
pub use limits::Limits;
pub use outcome::{Outcome, OutcomeKind, files_from_base64, files_to_base64};
pub use registry::{Descriptor, Tool};
pub use remote::{RETRY_DEAD_AFTER, RemoteTools};
pub use sandbox::{CallOptions, MAX_CALL_DEPTH, Sandbox, SandboxConfig, call_key_for};
pub use vfs::FsLimits;
