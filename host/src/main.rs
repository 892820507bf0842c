//! `sod`: train small language-model agents that reason with tools.
//!
//! This binary is a thin shell: its modules are private to it and turn command lines into calls of the library
//! crates that do the work:
//! - [`sod_sandbox`]: the deterministic WebAssembly sandbox that runs tools;
//! - [`sod_serve`]: the sandbox over HTTP (SandboxFusion's API);
//! - [`sod_loss`]: loss plugins behind a versioned C ABI;
//! - [`sod_train`]: the trainer (rollouts with tools, rewards, loss plugins, PPO update, checkpoints), SFT and
//!   the code judge's client;
//! - [`sod_model`]: the Qwen3 model, tokenizer, chat template and sampler.
//!
//! Its own modules: [`cli`] (one file per subcommand), [`eval`] (`sod eval`: config, run, verifiable manifest),
//! [`demo`] (the main job), and the process set-up ([`alloc`], [`locate`], [`threads`]).

mod alloc;
mod cli;
mod demo;
mod eval;
mod locate;
mod threads;

fn main() -> std::process::ExitCode {
    alloc::tune_for_tensors();
    cli::run()
}
