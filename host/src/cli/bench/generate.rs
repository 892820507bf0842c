//! `sod bench generate --model DIR`: generation tokens/s with the KV cache ([`sod_bench::generate`]), beside an
//! optional baseline command; prints one JSON line.

use clap::Args;
use sod_bench::generate::GenerateBench as Bench;

use crate::cli::usage;

/// `sod bench generate ...`
#[derive(Debug, Args)]
pub(super) struct GenerateBench {
    /// Hugging Face model directory (config.json and safetensors weights).
    #[arg(long, value_name = "DIR")]
    model: std::path::PathBuf,
    /// Sequences generated at once.
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Tokens per prompt (uniform random ids from the seed).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated per sequence (no stop token: every sequence runs to the end).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Seed of the prompts and samplers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu, or cuda / cuda:N in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the decoder layers compute in: float32, or bfloat16 over f32 weights.
    #[arg(long, default_value = "float32", value_parser = ["float32", "bfloat16"])]
    compute_dtype: String,
    /// A command measuring the same generation and printing one JSON line with `seconds` (`--model`, `--prompts`,
    /// `--prompt-tokens`, `--new-tokens`, `--temperature` and `--seed` are appended); empty to skip.
    #[arg(long, default_value = "")]
    baseline: String,
}

pub(super) fn run(bench: &GenerateBench) -> anyhow::Result<()> {
    if bench.prompts == 0 || bench.prompt_tokens == 0 || bench.new_tokens == 0 {
        return Err(usage(
            "--prompts, --prompt-tokens and --new-tokens must be at least 1",
        ));
    }
    let config = Bench {
        model: bench.model.clone(),
        prompts: bench.prompts,
        prompt_tokens: bench.prompt_tokens,
        new_tokens: bench.new_tokens,
        temperature: bench.temperature,
        seed: bench.seed,
        device: crate::cli::device(&bench.device)?,
        device_name: bench.device.clone(),
        compute_dtype: super::train_step::compute_dtype(&bench.compute_dtype),
        baseline: bench.baseline.clone(),
    };
    println!("{}", sod_bench::generate::run(&config)?);
    Ok(())
}
