//! sod: train small language-model agents that reason with tools.
//!
//! This crate is the `sod` binary's library: command-line commands over the crates that do the work:
//! - [`sod_sandbox`]: the deterministic WebAssembly sandbox that runs tools;
//! - [`sod_loss`]: loss plugins behind a versioned C ABI;
//! - [`sod_train`]: the trainer (rollouts with tools, rewards, loss plugins, PPO update, checkpoints).

pub mod alloc;
pub mod cli;
pub mod demo;
pub mod eval;
pub mod locate;
pub mod serve;
pub mod threads;

pub use sod_loss as loss;
pub use sod_sandbox as sandbox;
pub use sod_train as train;
