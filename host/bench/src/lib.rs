//! `sod bench ...`: measurements of this machine, each beside what a user would pick instead, written for
//! docs/benchmarks.md. Speed is measured here, never in timed unit tests.
//!
//! Each module takes a typed configuration (the `sod` binary turns its flags into one, after checking them),
//! runs, and returns a report that prints as the markdown table or JSON line the docs quote:
//! - [`sandbox`]: fresh-instance tool calls, latency and throughput on threads and worker processes, beside a
//!   subprocess per call (`python3 -c ...`);
//! - [`train_step`]: one policy update of a Hugging Face model (score, then PPO over micro-batches and AdamW),
//!   time and peak memory, beside a baseline command (PyTorch with transformers);
//! - [`generate`]: generation tokens/s with the KV cache, beside a baseline command (transformers' `generate`);
//! - [`device`]: a device (CUDA) against the CPU on a tiny random model, with tolerances: a check, not a speed.
//!
//! What they share (percentiles, a baseline command's JSON line, the seeded stream of token ids, the update's
//! optimizer and clip) is in [`common`].

pub mod common;
pub mod device;
pub mod generate;
pub mod sandbox;
pub mod train_step;

/// Receives progress lines (the binary prints them to stderr).
pub type Log<'a> = &'a dyn Fn(&str);
