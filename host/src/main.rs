//! `sod`: train small language-model agents that reason with tools.
//!
//! This binary is a thin shell: its modules are private to it and turn command lines into calls of the library
//! crates that do the work:
//! - [`sod_sandbox`]: the deterministic WebAssembly sandbox that runs tools;
//! - [`sod_serve`]: the sandbox over HTTP (SandboxFusion's API);
//! - [`sod_loss`]: loss plugins behind a versioned C ABI;
//! - [`sod_train`]: the trainer (rollouts with tools, rewards, loss plugins, PPO update, checkpoints), SFT and
//!   the code judge's client;
//! - [`sod_model`]: the Qwen3 model, tokenizer, chat template and sampler;
//! - [`sod_eval`]: `sod eval` (config, run, verifiable manifest);
//! - [`sod_demo`]: the main job (`sod demo`);
//! - [`sod_bench`]: `sod bench`'s measurements.
//!
//! Its own modules: [`cli`] (one file per subcommand: flags to a typed config, then one library call) and the
//! process set-up ([`alloc`], [`locate`], [`threads`]).

mod alloc;
mod cli;
mod locate;
mod threads;

fn main() -> std::process::ExitCode {
    alloc::tune_for_tensors();
    cli::run()
}
