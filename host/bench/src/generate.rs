//! `sod bench generate`: generation tokens/s with the KV cache (batched prefill, then one token per sequence per
//! step, as rollouts run it), optionally beside a baseline command that measures the same shapes and prints one
//! JSON line (host/train/benches/pytorch_generate.py: transformers' `generate`).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use sod_model::{ComputeDtype, Sampler, SamplingParams, load_model_dir};

use crate::common::{Stream, baseline_json};

/// What to measure.
#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// Hugging Face model directory (config.json and safetensors weights).
    pub model: PathBuf,
    /// Sequences generated at once (at least 1).
    pub prompts: usize,
    /// Tokens per prompt (uniform random ids from the seed; at least 1).
    pub prompt_tokens: usize,
    /// Tokens generated per sequence (no stop token: every sequence runs to the end; at least 1).
    pub new_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Seed of the prompts and samplers.
    pub seed: u64,
    /// Where it runs, and its name in the report.
    pub device: Device,
    pub device_name: String,
    /// The dtype the decoder layers compute in.
    pub compute_dtype: ComputeDtype,
    /// A command measuring the same generation and printing one JSON line with `seconds` (the shape's flags are
    /// appended); empty to skip.
    pub baseline: String,
}

/// Generates and returns the report's JSON line (sod's seconds, tokens and tokens/s, and the baseline's line).
pub fn run(bench: &GenerateBench) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        bench.prompts >= 1 && bench.prompt_tokens >= 1 && bench.new_tokens >= 1,
        "generation needs at least one prompt, one prompt token and one new token"
    );
    let mut model = load_model_dir(&bench.model, &bench.device)?;
    model.model = model.model.with_compute_dtype(bench.compute_dtype);
    let vocab = model.config.vocab_size;
    let mut stream = Stream::seeded(bench.seed);
    let prompts: Vec<Vec<u32>> = (0..bench.prompts)
        .map(|_| stream.token_ids(bench.prompt_tokens, vocab))
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
    Ok(serde_json::json!({
        "model": bench.model.display().to_string(),
        "device": bench.device_name,
        "compute_dtype": bench.compute_dtype,
        "prompts": bench.prompts,
        "prompt_tokens": bench.prompt_tokens,
        "new_tokens": bench.new_tokens,
        "temperature": bench.temperature,
        "sod": {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens as f64 / seconds},
        "baseline": baseline,
    }))
}

fn run_baseline(bench: &GenerateBench) -> anyhow::Result<serde_json::Value> {
    baseline_json(
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
