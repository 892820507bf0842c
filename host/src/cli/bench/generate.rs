//! `sod bench generate --model DIR`: generation tokens/s with the KV cache (batched prefill, then one token per
//! sequence per step, as rollouts run it), optionally beside a baseline command that measures the same shapes and
//! prints one JSON line (host/train/benches/pytorch_generate.py: transformers' `generate`).

use std::time::Instant;

use clap::Args;
use sod_model::{Sampler, SamplingParams, load_model_dir};

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
    let device = sod_train::device_by_name(&bench.device).map_err(|e| usage(e.to_string()))?;
    let mut model = load_model_dir(&bench.model, &device)?;
    model.model = model
        .model
        .with_compute_dtype(super::train_step::compute_dtype(&bench.compute_dtype));
    let vocab = model.config.vocab_size as u64;
    let mut stream = super::train_step::Stream::seeded(bench.seed);
    let prompts: Vec<Vec<u32>> = (0..bench.prompts)
        .map(|_| {
            (0..bench.prompt_tokens)
                .map(|_| (stream.next() % vocab) as u32)
                .collect()
        })
        .collect();
    let params = SamplingParams {
        temperature: bench.temperature,
        top_p: 1.0,
    };
    let samplers = || {
        (0..bench.prompts)
            .map(|i| Sampler::new(params, bench.seed, "bench", i as u64))
            .collect::<Result<Vec<_>, _>>()
    };
    // A short warm-up (kernels loaded, caches allocated), then the measured run.
    model
        .model
        .generate_batch(&prompts, 2, &[], &mut samplers()?)?;
    let started = Instant::now();
    let generated =
        model
            .model
            .generate_batch(&prompts, bench.new_tokens, &[], &mut samplers()?)?;
    let seconds = started.elapsed().as_secs_f64();
    let tokens: usize = generated.iter().map(|g| g.tokens.len()).sum();
    let baseline = if bench.baseline.trim().is_empty() {
        None
    } else {
        Some(run_baseline(bench)?)
    };
    println!(
        "{}",
        serde_json::json!({
            "model": bench.model.display().to_string(),
            "device": bench.device,
            "compute_dtype": bench.compute_dtype,
            "prompts": bench.prompts,
            "prompt_tokens": bench.prompt_tokens,
            "new_tokens": bench.new_tokens,
            "temperature": bench.temperature,
            "sod": {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens as f64 / seconds},
            "baseline": baseline,
        })
    );
    Ok(())
}

fn run_baseline(bench: &GenerateBench) -> anyhow::Result<serde_json::Value> {
    super::baseline_json(
        &bench.baseline,
        &[
            ("--model", bench.model.display().to_string()),
            ("--prompts", bench.prompts.to_string()),
            ("--prompt-tokens", bench.prompt_tokens.to_string()),
            ("--new-tokens", bench.new_tokens.to_string()),
            ("--temperature", bench.temperature.to_string()),
            ("--seed", bench.seed.to_string()),
        ],
    )
}
