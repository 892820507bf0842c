//! `sod bench train-step`: the time and peak memory of one policy update of a Hugging Face model on this machine,
//! optionally beside a baseline command that measures the same update and prints one JSON line
//! (host/train/benches/pytorch_train_step.py: PyTorch eager with transformers' Qwen3ForCausalLM).
//!
//! The update, as `sod train` runs it: `trajectories` sequences of `tokens` token ids (uniform from the seed; the
//! first `prompt` are the prompt, the rest generated), their current log-probabilities without gradients (the
//! old log-probs, `teacher::score`), then PPO's clipped surrogate (clip 0.2 below, 0.28 above) with fixed
//! advantages in [-1, 1] over micro-batches with exact gradient accumulation (`update::policy_gradients`: the
//! output head and log-softmax in chunks of logits, never a `[batch, length, vocab]` tensor), the global
//! gradient-norm clip at 1 and one AdamW step (lr 1e-6, weight decay 0.01). Weights are f32 (the trainer's master
//! copy), whatever the files hold. The decoder layers are recomputed in the backward pass (activation
//! checkpointing, `gradient_checkpointing` in run.toml) unless it is turned off.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use sod_model::{ComputeDtype, load_model_dir};
use sod_train::episode::Scored;
use sod_train::metrics::peak_rss_mib;
use sod_train::rollout::Trajectory;
use sod_train::teacher::score;
use sod_train::update::{UpdateBatch, clip_grad_norm, policy_gradients};

use crate::Log;
use crate::common::{BENCH_CLIP, Stream, baseline_json, bench_optimizer};

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainStepBench {
    /// Hugging Face model directory (config.json and safetensors weights).
    pub model: PathBuf,
    /// Trajectories in the update (at least 1).
    pub trajectories: usize,
    /// Tokens per trajectory, prompt included.
    pub tokens: usize,
    /// Prompt tokens per trajectory (not trained; at least 1 and below `tokens`).
    pub prompt: usize,
    /// Trajectories per forward/backward pass (at least 1).
    pub micro_batch: usize,
    /// Seed of the token ids and advantages.
    pub seed: u64,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// A command that measures the same update and prints one JSON line with `score_s`, `update_s` and
    /// `peak_rss_mib` (the shape's flags are appended); empty to skip.
    pub baseline: String,
    /// Where the update runs, and its name in the report.
    pub device: Device,
    pub device_name: String,
    /// The dtype the decoder layers compute in.
    pub compute_dtype: ComputeDtype,
}

/// What one update measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub score_s: f64,
    pub update_s: f64,
    pub peak_rss_mib: f64,
    pub grad_norm: f64,
}

/// The update's shape and what sod and the baseline measured.
#[derive(Debug, Clone)]
pub struct TrainStepReport {
    pub bench: TrainStepBench,
    pub parameters: usize,
    pub sod: Measured,
    /// The baseline's name (framework, version, device) and measurement.
    pub baseline: Option<(String, Measured)>,
}

/// Loads the model, runs one update and the baseline.
pub fn run(bench: &TrainStepBench, log: Log) -> anyhow::Result<TrainStepReport> {
    anyhow::ensure!(
        bench.trajectories >= 1 && bench.micro_batch >= 1,
        "an update needs at least one trajectory and a micro-batch of at least one"
    );
    anyhow::ensure!(
        bench.prompt >= 1 && bench.prompt < bench.tokens,
        "the prompt ({}) must be between 1 and the tokens ({}) - 1",
        bench.prompt,
        bench.tokens
    );
    let loaded = Instant::now();
    let mut model = load_model_dir(&bench.model, &bench.device)?;
    model.model = model.model.with_compute_dtype(bench.compute_dtype);
    let config = model.config.clone();
    anyhow::ensure!(
        bench.tokens <= config.max_position_embeddings,
        "{} tokens exceed the model's max_position_embeddings = {}",
        bench.tokens,
        config.max_position_embeddings
    );
    log(&format!(
        "loaded {} in {:.1} s: {} parameters, hidden {}, {} layers, vocabulary {}",
        bench.model.display(),
        loaded.elapsed().as_secs_f64(),
        config.num_parameters(),
        config.hidden_size,
        config.num_hidden_layers,
        config.vocab_size
    ));
    let mut stream = Stream::seeded(bench.seed);
    let generated = bench.tokens - bench.prompt;
    let trajectories: Vec<Trajectory> = (0..bench.trajectories)
        .map(|i| {
            let tokens = stream.token_ids(bench.tokens, config.vocab_size);
            Trajectory::offline(
                format!("bench-{i}"),
                tokens,
                bench.prompt,
                vec![1; generated],
            )
        })
        .collect();
    let advantages: Vec<Vec<f32>> = (0..bench.trajectories)
        .map(|_| stream.advantages(generated))
        .collect();

    log(&format!(
        "scoring {} x {} tokens (no gradients)...",
        bench.trajectories, bench.tokens
    ));
    let started = Instant::now();
    let scores = score(
        &model.model,
        None,
        &trajectories,
        bench.micro_batch,
        1.0,
        None,
        None,
    )?;
    let score_s = started.elapsed().as_secs_f64();
    let (episodes, _) =
        scores.into_episodes(trajectories.into_iter().map(Scored::unscored).collect())?;
    log(&format!(
        "scored in {score_s:.1} s; the update (forward and backward, about 3 times as long: ETA {:.0} s)...",
        3.0 * score_s
    ));
    let params = sod_train::update::Params::from_varmap(&model.varmap)?;
    let mut optimizer = bench_optimizer(&params)?;
    let started = Instant::now();
    let batch = UpdateBatch {
        gradient_checkpointing: bench.gradient_checkpointing,
        ..UpdateBatch::ppo(&episodes, &advantages, BENCH_CLIP, bench.micro_batch)
    };
    let (mut grads, _) = policy_gradients(&model.model, &params, &batch)?;
    let grad_norm = clip_grad_norm(&mut grads, 1.0)?;
    optimizer.step(&params, &grads, 1e-6)?;
    let update_s = started.elapsed().as_secs_f64();
    let sod = Measured {
        score_s,
        update_s,
        peak_rss_mib: peak_rss_mib(),
        grad_norm,
    };
    drop((grads, optimizer, params, episodes, model));

    let baseline = if bench.baseline.trim().is_empty() {
        None
    } else {
        log(&format!("baseline: {} ...", bench.baseline));
        Some(run_baseline(bench)?)
    };
    Ok(TrainStepReport {
        bench: bench.clone(),
        parameters: config.num_parameters(),
        sod,
        baseline,
    })
}

/// Runs the baseline command with the bench's shapes and reads its last JSON line.
fn run_baseline(bench: &TrainStepBench) -> anyhow::Result<(String, Measured)> {
    let v = baseline_json(
        &bench.baseline,
        &[
            ("--model", bench.model.display().to_string()),
            ("--trajectories", bench.trajectories.to_string()),
            ("--tokens", bench.tokens.to_string()),
            ("--prompt", bench.prompt.to_string()),
            ("--micro-batch", bench.micro_batch.to_string()),
            ("--seed", bench.seed.to_string()),
        ],
    )?;
    let line = v.to_string();
    let number = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| anyhow::anyhow!("the baseline's JSON has no number {key:?}: {line}"))
    };
    let name = match (v.get("framework"), v.get("torch")) {
        (Some(f), Some(t)) => format!(
            "{} {} (eager, {})",
            f.as_str().unwrap_or("baseline"),
            t.as_str().unwrap_or(""),
            v.get("device").and_then(|d| d.as_str()).unwrap_or("cpu")
        ),
        _ => "baseline".to_string(),
    };
    Ok((
        name,
        Measured {
            score_s: number("score_s")?,
            update_s: number("update_s")?,
            peak_rss_mib: number("peak_rss_mib")?,
            grad_norm: number("grad_norm").unwrap_or(f64::NAN),
        },
    ))
}

impl TrainStepReport {
    /// The JSON line docs/benchmarks.md and the GPU bundle read.
    pub fn json(&self) -> serde_json::Value {
        let b = &self.bench;
        serde_json::json!({
            "model": b.model.display().to_string(),
            "trajectories": b.trajectories,
            "tokens": b.tokens,
            "prompt": b.prompt,
            "micro_batch": b.micro_batch,
            "device": b.device_name,
            "compute_dtype": b.compute_dtype,
            "gradient_checkpointing": b.gradient_checkpointing,
            "sod": self.sod,
            "baseline": self.baseline.as_ref().map(|(_, m)| m),
        })
    }
}

/// The markdown table, then the JSON line.
impl fmt::Display for TrainStepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.bench;
        let generated = b.tokens - b.prompt;
        writeln!(
            f,
            "One update of {} trajectories x {} tokens ({} generated each), micro-batch {}, {} parameters, sod \
             with{} gradient checkpointing:",
            b.trajectories,
            b.tokens,
            generated,
            b.micro_batch,
            self.parameters,
            if b.gradient_checkpointing { "" } else { "out" }
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| | score (no grad) | update (fwd + bwd + AdamW) | total | tokens/s | peak memory |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        let total = (b.trajectories * b.tokens) as f64;
        let mut row = |name: &str, m: &Measured| {
            let total_s = m.score_s + m.update_s;
            writeln!(
                f,
                "| {name} | {:.1} s | {:.1} s | {total_s:.1} s | {:.0} | {:.0} MiB |",
                m.score_s,
                m.update_s,
                total / total_s,
                m.peak_rss_mib
            )
        };
        row(&format!("sod (candle, {})", b.device_name), &self.sod)?;
        if let Some((name, m)) = &self.baseline {
            row(name, m)?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.json())
    }
}
