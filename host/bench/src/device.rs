//! `sod bench device`: a device against the CPU on one tiny random model (the same weights on both, from the same
//! seed): logits and log-probs of a batch, greedy and sampled generation with the KV cache, and a few PPO + AdamW
//! update steps. The report holds the differences, the tolerances and whether each check passed. With the CPU as
//! the device both sides are the CPU (the check of the check).

use candle_core::{D, Device, Tensor};
use sod_model::{Qwen3Config, Sampler, SamplingParams, TrainableModel, init_random};
use sod_train::episode::Scored;
use sod_train::rollout::Trajectory;
use sod_train::teacher::score;
use sod_train::update::{Params, UpdateBatch, clip_grad_norm, policy_gradients};

use crate::common::{BENCH_CLIP, Stream, bench_optimizer};

/// Largest absolute difference allowed between the devices' logits and log-probs (f32 with other summation orders:
/// about 1e-6 is seen on the CPU between batch sizes).
const LOGIT_TOLERANCE: f64 = 1e-3;
/// Largest relative difference allowed between the devices' losses at each update step.
const LOSS_TOLERANCE: f64 = 1e-3;

/// What to check.
#[derive(Debug, Clone)]
pub struct DeviceBench {
    /// The device checked against the CPU, and its name in the report.
    pub device: Device,
    pub device_name: String,
    /// Seed of the weights, token ids and samplers.
    pub seed: u64,
    /// Update steps compared (at least 1).
    pub steps: usize,
}

/// The report: one JSON object with the differences, the tolerances, each check and `pass`.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub json: serde_json::Value,
    /// Every check passed.
    pub pass: bool,
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let b = b.to_device(a.device())?;
    Ok(f64::from(
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?,
    ))
}

/// Tokens generated for four prompts, greedily or sampled at temperature 1.
fn generate(
    model: &TrainableModel,
    prompts: &[Vec<u32>],
    temperature: f64,
    seed: u64,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let params = SamplingParams {
        temperature,
        top_p: 1.0,
    };
    let mut samplers = (0..prompts.len())
        .map(|i| Sampler::new(params, seed, "device-check", i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let generations = model
        .model
        .generate_batch(prompts, 32, &[], &mut samplers)?;
    Ok(generations.into_iter().map(|g| g.tokens).collect())
}

/// The loss at each of `steps` updates (lr 1e-3, so that the weights move).
fn losses(
    model: &TrainableModel,
    trajectories: &[Trajectory],
    advantages: &[Vec<f32>],
    steps: usize,
) -> anyhow::Result<Vec<f64>> {
    let scores = score(&model.model, None, trajectories, 2, 1.0, None, None)?;
    let unscored = trajectories.iter().cloned().map(Scored::unscored).collect();
    let (episodes, _) = scores.into_episodes(unscored)?;
    let params = Params::from_varmap(&model.varmap)?;
    let mut optimizer = bench_optimizer(&params)?;
    let batch = UpdateBatch::ppo(&episodes, advantages, BENCH_CLIP, 2);
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (mut grads, stats) = policy_gradients(&model.model, &params, &batch)?;
        clip_grad_norm(&mut grads, 1.0)?;
        optimizer.step(&params, &grads, 1e-3)?;
        out.push(stats.loss);
    }
    Ok(out)
}

/// Runs the checks (an error only when a computation fails: a failed check is in the report).
pub fn run(bench: &DeviceBench) -> anyhow::Result<DeviceReport> {
    anyhow::ensure!(
        bench.steps >= 1,
        "the device check needs at least one update step"
    );
    let device = &bench.device;
    let config = Qwen3Config::tiny(512, 64, 2);
    let cpu = init_random(&config, bench.seed, &Device::Cpu)?;
    let other = init_random(&config, bench.seed, device)?;
    let mut stream = Stream::seeded(bench.seed);
    let vocab = config.vocab_size;

    // 1. Logits and log-probs of a batch of 4 x 48 tokens.
    let batch = stream.token_ids(4 * 48, vocab);
    let logits = |m: &TrainableModel, on: &Device| -> anyhow::Result<Tensor> {
        let input = Tensor::from_vec(batch.clone(), (4, 48), on)?;
        Ok(m.model.forward(&input, None)?)
    };
    let (l_cpu, l_other) = (logits(&cpu, &Device::Cpu)?, logits(&other, device)?);
    let logit_diff = max_abs_diff(&l_cpu, &l_other)?;
    let logprob_diff = max_abs_diff(
        &candle_nn::ops::log_softmax(&l_cpu, D::Minus1)?,
        &candle_nn::ops::log_softmax(&l_other, D::Minus1)?,
    )?;

    // 2. Generation with the KV cache: 4 prompts of 16 tokens, 32 new tokens each.
    let prompts: Vec<Vec<u32>> = (0..4).map(|_| stream.token_ids(16, vocab)).collect();
    let agree = |a: &[Vec<u32>], b: &[Vec<u32>]| -> f64 {
        let same: usize = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.iter().zip(y).take_while(|(p, q)| p == q).count())
            .sum();
        same as f64 / a.iter().map(Vec::len).sum::<usize>().max(1) as f64
    };
    let greedy = agree(
        &generate(&cpu, &prompts, 0.0, bench.seed)?,
        &generate(&other, &prompts, 0.0, bench.seed)?,
    );
    let sampled = agree(
        &generate(&cpu, &prompts, 1.0, bench.seed)?,
        &generate(&other, &prompts, 1.0, bench.seed)?,
    );

    // 3. Update steps on 4 trajectories of 64 tokens (16 of prompt), fixed advantages.
    let trajectories: Vec<Trajectory> = (0..4)
        .map(|i| {
            Trajectory::offline(
                format!("check-{i}"),
                stream.token_ids(64, vocab),
                16,
                vec![1; 48],
            )
        })
        .collect();
    let advantages: Vec<Vec<f32>> = (0..4).map(|_| stream.advantages(48)).collect();
    let loss_cpu = losses(&cpu, &trajectories, &advantages, bench.steps)?;
    let loss_other = losses(&other, &trajectories, &advantages, bench.steps)?;
    let loss_diff = loss_cpu
        .iter()
        .zip(&loss_other)
        // Relative, but not to a loss near zero: the first step's is about 0.003.
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-2))
        .fold(0.0, f64::max);

    let checks = serde_json::json!({
        "logits": logit_diff <= LOGIT_TOLERANCE,
        "logprobs": logprob_diff <= LOGIT_TOLERANCE,
        // Greedy decoding may part where two logits tie within rounding: a quarter of the tokens, counted up to where
        // each sequence parts, must agree.
        "greedy": greedy >= 0.25,
        "losses": loss_diff <= LOSS_TOLERANCE,
    });
    let pass = checks
        .as_object()
        .is_some_and(|c| c.values().all(|v| v == true));
    let json = serde_json::json!({
        "device": bench.device_name,
        "model": {"vocab": config.vocab_size, "hidden": config.hidden_size, "layers": config.num_hidden_layers},
        "logits_max_abs_diff": logit_diff,
        "logprobs_max_abs_diff": logprob_diff,
        "greedy_tokens_agreeing": greedy,
        "sampled_tokens_agreeing": sampled,
        "losses_cpu": loss_cpu,
        "losses_device": loss_other,
        "loss_max_rel_diff": loss_diff,
        "tolerances": {"logits": LOGIT_TOLERANCE, "losses": LOSS_TOLERANCE, "greedy_agreeing": 0.25},
        "checks": checks,
        "pass": pass,
    });
    Ok(DeviceReport { json, pass })
}
