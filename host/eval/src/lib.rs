//! `sod eval`: a model with tools on math and code benchmarks, reproducibly.
//!
//! A run ([`run_eval`]) reads an `eval.toml` ([`EvalConfig`]), rolls out `samples` trajectories per problem with
//! the same rollout code as training, scores them (math answers against the reference, programs with the `judge`
//! tool) and writes into the config's `out_dir`:
//! - `results.jsonl`: per problem, its rewards, avg@k, pass@k (unbiased estimator, [`pass_at_k`]) and samples;
//! - `summary.json`: the same aggregated per benchmark and over all;
//! - `manifest.json` ([`Manifest`]): the SHA-256 of every model file, each tool's artifact hash, each dataset
//!   file, the config text, the seed, the code version (the commit the binary was built from, [`CodeVersion`]),
//!   and the hashes of the two files above.
//!
//! [`verify`] recomputes the input hashes, names those that changed, reruns the evaluation into a temporary
//! directory and compares `results.jsonl` byte for byte, naming the first problem that differs.

pub mod config;
pub mod manifest;
pub mod run;

#[cfg(test)]
mod tests;

pub use config::EvalConfig;
pub use manifest::{CodeVersion, EvalOptions, EvalRun, Manifest, VerifyReport, run_eval, verify};
pub use run::pass_at_k;
