//! `sod bench train-step --model DIR`: the time and peak memory of one policy update of a Hugging Face model
//! ([`sod_bench::train_step`] says what the update is), beside an optional baseline command.

use std::path::PathBuf;

use clap::Args;
use sod_bench::train_step::TrainStepBench as Bench;

use crate::cli::usage;

/// `sod bench train-step ...`
#[derive(Debug, Args)]
pub(super) struct TrainStepBench {
    /// Hugging Face model directory (config.json and safetensors weights).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Trajectories in the update.
    #[arg(long, default_value_t = 8)]
    trajectories: usize,
    /// Tokens per trajectory (prompt included).
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    /// Prompt tokens per trajectory (not trained).
    #[arg(long, default_value_t = 128)]
    prompt: usize,
    /// Trajectories per forward/backward pass.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Seed of the token ids and advantages.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep every layer's activations for the backward pass instead of recomputing each layer there (activation
    /// checkpointing, the default here: at Qwen3-0.6B's size and 1k tokens the kept activations alone are about
    /// 9 GiB).
    #[arg(long)]
    no_gradient_checkpointing: bool,
    /// A command that measures the same update and prints one JSON line with `score_s`, `update_s` and
    /// `peak_rss_mib` (`--model`, `--trajectories`, `--tokens`, `--prompt`, `--micro-batch` and `--seed` are
    /// appended), e.g. `.venv-torch/bin/python host/train/benches/pytorch_train_step.py step --threads 2`; empty to
    /// skip.
    #[arg(long, default_value = "")]
    baseline: String,
    /// Device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the decoder layers compute in: float32, or bfloat16 over f32 weights.
    #[arg(long, default_value = "float32", value_parser = ["float32", "bfloat16"])]
    compute_dtype: String,
}

/// The compute dtype a bench's `--compute-dtype` names (clap has checked it is one of the two).
pub(super) fn compute_dtype(name: &str) -> sod_model::ComputeDtype {
    if name == "bfloat16" {
        sod_model::ComputeDtype::Bf16
    } else {
        sod_model::ComputeDtype::F32
    }
}

pub(super) fn run(bench: &TrainStepBench) -> anyhow::Result<()> {
    if bench.trajectories == 0 || bench.micro_batch == 0 {
        return Err(usage("--trajectories and --micro-batch must be at least 1"));
    }
    if bench.prompt == 0 || bench.prompt >= bench.tokens {
        return Err(usage(format!(
            "--prompt {} must be between 1 and --tokens {} - 1",
            bench.prompt, bench.tokens
        )));
    }
    let config = Bench {
        model: bench.model.clone(),
        trajectories: bench.trajectories,
        tokens: bench.tokens,
        prompt: bench.prompt,
        micro_batch: bench.micro_batch,
        seed: bench.seed,
        gradient_checkpointing: !bench.no_gradient_checkpointing,
        baseline: bench.baseline.clone(),
        device: crate::cli::device(&bench.device)?,
        device_name: bench.device.clone(),
        compute_dtype: compute_dtype(&bench.compute_dtype),
    };
    let report = sod_bench::train_step::run(&config, &|line| eprintln!("{line}"))?;
    print!("{report}");
    Ok(())
}
