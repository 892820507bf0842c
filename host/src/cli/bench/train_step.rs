//! `sod bench train-step --model DIR`: the time and peak memory of one policy update of a Hugging Face model on
//! this machine, optionally beside a baseline command that measures the same update and prints one JSON line
//! (host/train/benches/pytorch_train_step.py: PyTorch eager with transformers' Qwen3ForCausalLM).
//!
//! The update, as `sod train` runs it: `trajectories` sequences of `tokens` token ids (uniform from the seed; the
//! first `prompt` are the prompt, the rest generated), their current log-probabilities without gradients (the
//! old log-probs, `teacher::score`), then PPO's clipped surrogate (clip 0.2 below, 0.28 above) with fixed
//! advantages in [-1, 1] over micro-batches with exact gradient accumulation (`update::policy_gradients`: the
//! output head and log-softmax in chunks of logits, never a `[batch, length, vocab]` tensor), the global
//! gradient-norm clip at 1 and one AdamW step (lr 1e-6, weight decay 0.01). Weights are f32 (the trainer's master
//! copy), whatever the files hold. The decoder layers are recomputed in the backward pass (activation
//! checkpointing, `gradient_checkpointing` in run.toml) unless `--no-gradient-checkpointing`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use sod_model::load_model_dir;
use sod_train::episode::Scored;
use sod_train::metrics::peak_rss_mib;
use sod_train::rollout::Trajectory;
use sod_train::teacher::score;
use sod_train::update::{
    AdamW, AdamWConfig, Params, PpoClip, UpdateBatch, clip_grad_norm, policy_gradients,
};

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

/// What one update measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Measured {
    score_s: f64,
    update_s: f64,
    peak_rss_mib: f64,
    grad_norm: f64,
}

/// The update the benches run: AdamW as `sod train` defaults it (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
pub(super) fn bench_optimizer(params: &Params) -> sod_train::Result<AdamW> {
    AdamW::new(
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        params,
    )
}

/// PPO's clip as the paper sets it: 0.2 below, 0.28 above.
pub(super) const BENCH_CLIP: PpoClip = PpoClip {
    low: 0.2,
    high: 0.28,
};

/// The compute dtype a bench's `--compute-dtype` names (clap has checked it is one of the two).
pub(super) fn compute_dtype(name: &str) -> sod_model::ComputeDtype {
    if name == "bfloat16" {
        sod_model::ComputeDtype::Bf16
    } else {
        sod_model::ComputeDtype::F32
    }
}

/// A 64-bit xorshift stream: the benches' token ids and advantages.
pub(super) struct Stream(pub(super) u64);

impl Stream {
    /// A stream seeded by `seed` (never the all-zero state).
    pub(super) fn seeded(seed: u64) -> Self {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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
    let loaded = Instant::now();
    let device = sod_train::device_by_name(&bench.device).map_err(|e| usage(e.to_string()))?;
    let mut model = load_model_dir(&bench.model, &device)?;
    model.model = model
        .model
        .with_compute_dtype(compute_dtype(&bench.compute_dtype));
    let config = model.config.clone();
    if bench.tokens > config.max_position_embeddings {
        return Err(usage(format!(
            "--tokens {} exceeds the model's max_position_embeddings = {}",
            bench.tokens, config.max_position_embeddings
        )));
    }
    eprintln!(
        "loaded {} in {:.1} s: {} parameters, hidden {}, {} layers, vocabulary {}",
        bench.model.display(),
        loaded.elapsed().as_secs_f64(),
        config.num_parameters(),
        config.hidden_size,
        config.num_hidden_layers,
        config.vocab_size
    );
    let mut stream = Stream::seeded(bench.seed);
    let generated = bench.tokens - bench.prompt;
    let trajectories: Vec<Trajectory> = (0..bench.trajectories)
        .map(|i| {
            let tokens = (0..bench.tokens)
                .map(|_| (stream.next() % config.vocab_size as u64) as u32)
                .collect();
            Trajectory::offline(
                format!("bench-{i}"),
                tokens,
                bench.prompt,
                vec![1; generated],
            )
        })
        .collect();
    let advantages: Vec<Vec<f32>> = (0..bench.trajectories)
        .map(|_| {
            (0..generated)
                .map(|_| (stream.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        })
        .collect();

    eprintln!(
        "scoring {} x {} tokens (no gradients)...",
        bench.trajectories, bench.tokens
    );
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
    eprintln!(
        "scored in {score_s:.1} s; the update (forward and backward, about 3 times as long: ETA {:.0} s)...",
        3.0 * score_s
    );
    let params = Params::from_varmap(&model.varmap)?;
    let mut optimizer = bench_optimizer(&params)?;
    let started = Instant::now();
    let batch = UpdateBatch {
        gradient_checkpointing: !bench.no_gradient_checkpointing,
        ..UpdateBatch::ppo(&episodes, &advantages, BENCH_CLIP, bench.micro_batch)
    };
    let (mut grads, _) = policy_gradients(&model.model, &params, &batch)?;
    let grad_norm = clip_grad_norm(&mut grads, 1.0)?;
    optimizer.step(&params, &grads, 1e-6)?;
    let update_s = started.elapsed().as_secs_f64();
    let ours = Measured {
        score_s,
        update_s,
        peak_rss_mib: peak_rss_mib(),
        grad_norm,
    };
    drop((grads, optimizer, params, episodes, model));

    let baseline = if bench.baseline.trim().is_empty() {
        None
    } else {
        eprintln!("baseline: {} ...", bench.baseline);
        Some(run_baseline(bench)?)
    };
    let total = bench.trajectories * bench.tokens;
    println!(
        "One update of {} trajectories x {} tokens ({} generated each), micro-batch {}, {} parameters, sod with{} \
         gradient checkpointing:",
        bench.trajectories,
        bench.tokens,
        generated,
        bench.micro_batch,
        config.num_parameters(),
        if bench.no_gradient_checkpointing {
            "out"
        } else {
            ""
        }
    );
    println!();
    println!("| | score (no grad) | update (fwd + bwd + AdamW) | total | tokens/s | peak memory |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, m: &Measured| {
        let total_s = m.score_s + m.update_s;
        println!(
            "| {name} | {:.1} s | {:.1} s | {total_s:.1} s | {:.0} | {:.0} MiB |",
            m.score_s,
            m.update_s,
            total as f64 / total_s,
            m.peak_rss_mib
        );
    };
    row(&format!("sod (candle, {})", bench.device), &ours);
    if let Some((name, m)) = &baseline {
        row(name, m);
    }
    println!();
    println!(
        "{}",
        serde_json::json!({
            "model": bench.model.display().to_string(),
            "trajectories": bench.trajectories,
            "tokens": bench.tokens,
            "prompt": bench.prompt,
            "micro_batch": bench.micro_batch,
            "device": bench.device,
            "compute_dtype": bench.compute_dtype,
            "gradient_checkpointing": !bench.no_gradient_checkpointing,
            "sod": ours,
            "baseline": baseline.as_ref().map(|(_, m)| m),
        })
    );
    Ok(())
}

/// Runs the baseline command with the bench's shapes and reads its last JSON line.
fn run_baseline(bench: &TrainStepBench) -> anyhow::Result<(String, Measured)> {
    let v = super::baseline_json(
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
