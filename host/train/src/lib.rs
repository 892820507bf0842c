//! `sod-train`: sod's trainer. One optimiser step follows the data through these modules, in order:
//!
//! 1. [`dataset`]: prompts with reference answers, visited in a seeded order;
//! 2. [`rollout`]: the student generates turns, tool calls run in the sandbox, tool responses are appended with
//!    mask 0, until a final answer or a budget;
//! 3. [`reward`]: the final answer is scored against the reference;
//! 4. [`teacher`]: teacher and current-student log-probs of every generated token at the rollout temperature, and
//!    the full-distribution [`divergence`] between them where the loss asks for one, without gradients;
//! 5. [`advantage`]: the trajectories become the loss plugin's flat batch; the plugin (SOD, OPD, GRPO...) returns
//!    per-token advantages and, for a full-distribution loss, per-token divergence weights;
//! 6. [`update`]: PPO's clipped surrogate plus the weighted divergence, with exact gradient accumulation and
//!    chunked logits, grad-norm clipping, AdamW with warm-up;
//! 7. [`checkpoint`]: Hugging Face checkpoints plus optimiser state for bit-identical resumption;
//!
//! with [`metrics`] (JSONL per step), [`config`] (`run.toml`) and [`trainer`] (the loop tying them together).
//! [`sft`] is the offline counterpart (the cold start): supervised fine-tuning on conversations rendered as the
//! chat template renders them, which is how rollouts lay them out; [`sft::run`] is `sod sft`.

#![warn(missing_docs)]

pub mod advantage;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod divergence;
pub mod episode;
pub mod error;
pub mod judging;
pub mod metrics;
pub mod reward;
pub mod rollout;
pub mod sft;
pub mod teacher;
pub mod trainer;
pub mod update;

pub use config::{LossConfig, RewardKind, RunConfig, ToolLimitsConfig};
pub use error::{Result, TrainError};
pub use metrics::StepMetrics;
pub use trainer::{METRICS_FILE, RunSummary, Trainer, TrainerOptions};
pub use update::device_by_name;
