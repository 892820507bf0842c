//! The math the built-in losses share, kept in one place: step derivation, GRPO group
//! normalisation (with the DAPO overlong penalty), and the OPD/SOD token advantages.
//!
//! Everything here is deterministic and independent of the order of sequences in a batch:
//! sums over several sequences are taken in sorted order, so a permuted batch gives bit-identical
//! advantages and metrics (permuted the same way).

use crate::batch::BatchView;
use crate::ffi::{SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_FLAG_TRUNCATED, SOD_LOSS_NO_STEP};
use crate::plugin::{MetricSink, PluginError};
use crate::settings::Settings;
use crate::{DivergenceKind, DivergenceSpec, Requirements};

/// Derives step indices from a loss mask: within each sequence, every maximal run of mask-1
/// tokens is one step, numbered from 0; mask-0 tokens (prompt, tool output, padding) get
/// [`SOD_LOSS_NO_STEP`]. Leading prompt tokens therefore open no step.
///
/// # Panics
/// If the offsets do not index into `mask` (validate the batch first).
pub fn derive_step_indices(mask: &[u8], seq_offsets: &[u64]) -> Vec<u32> {
    let mut steps = vec![SOD_LOSS_NO_STEP; mask.len()];
    for bounds in seq_offsets.windows(2) {
        let range = bounds[0] as usize..bounds[1] as usize;
        let mut next_step = 0u32;
        let mut in_step = false;
        for (step, &m) in steps[range.clone()].iter_mut().zip(&mask[range]) {
            if m == 1 {
                *step = next_step;
                in_step = true;
            } else if in_step {
                in_step = false;
                next_step += 1;
            }
        }
    }
    steps
}

/// Whether a sequence takes no part in the loss: infrastructure faults always, truncated
/// sequences when `drop_truncated` is set. Such sequences get advantage 0 everywhere and are left
/// out of group statistics.
pub fn is_dropped(flags: u32, drop_truncated: bool) -> bool {
    flags & SOD_LOSS_FLAG_INFRA_FAULT != 0
        || (drop_truncated && flags & SOD_LOSS_FLAG_TRUNCATED != 0)
}

/// The sum of `values`, taken in sorted order so that the result does not depend on the order
/// the values came in.
pub fn order_independent_sum(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.iter().sum()
}

/// The mean of `values`, summed in sorted order (see [`order_independent_sum`]); 0 for no values.
pub fn order_independent_mean(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    order_independent_sum(values) / values.len() as f64
}

/// DAPO's soft overlong punishment, added to the reward of long responses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlongPenalty {
    /// Maximum response length (generated tokens).
    pub max_len: u64,
    /// Length of the soft zone before `max_len` where the penalty ramps from 0 to `-factor`.
    pub buffer_len: u64,
    /// Size of the full penalty.
    pub factor: f64,
}

impl OverlongPenalty {
    /// The penalty for a response of `len` generated tokens: 0 up to `max_len - buffer_len`,
    /// then linear down to `-factor` at `max_len`, and `-factor` beyond.
    pub fn penalty(&self, len: u64) -> f64 {
        let soft_start = self.max_len - self.buffer_len;
        if len <= soft_start {
            0.0
        } else if len <= self.max_len {
            -self.factor * (len - soft_start) as f64 / self.buffer_len as f64
        } else {
            -self.factor
        }
    }
}

/// Settings of the GRPO outcome term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoConfig {
    /// Divide by the group's standard deviation (plus `std_eps`); off gives Dr. GRPO's
    /// mean-centred advantages.
    pub normalize_std: bool,
    /// Added to the standard deviation before dividing.
    pub std_eps: f64,
    /// The DAPO overlong penalty, if enabled.
    pub overlong: Option<OverlongPenalty>,
    /// Treat truncated sequences like infrastructure faults (advantage 0, out of the statistics).
    pub drop_truncated: bool,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            normalize_std: true,
            std_eps: 1e-6,
            overlong: None,
            drop_truncated: false,
        }
    }
}

impl GrpoConfig {
    /// Reads `normalize_std`, `std_eps`, `overlong_max_len`, `overlong_buffer_len`,
    /// `overlong_factor` and `drop_truncated`.
    pub fn from_settings(settings: &mut Settings) -> Result<Self, PluginError> {
        let defaults = GrpoConfig::default();
        let normalize_std = settings.take_bool("normalize_std", defaults.normalize_std)?;
        let std_eps =
            settings.take_f64_at_least("std_eps", defaults.std_eps, 0.0, !normalize_std)?;
        let max_len = settings.take_u64("overlong_max_len")?;
        let buffer_len = settings.take_u64("overlong_buffer_len")?;
        let factor = settings.take_f64_at_least("overlong_factor", 1.0, 0.0, true)?;
        let overlong = match (max_len, buffer_len) {
            (None, None) => None,
            (Some(max_len), Some(buffer_len)) => {
                if buffer_len == 0 || buffer_len > max_len {
                    return Err(PluginError::config(format!(
                        "setting 'overlong_buffer_len' = {buffer_len} must be between 1 and overlong_max_len = {max_len}"
                    )));
                }
                Some(OverlongPenalty {
                    max_len,
                    buffer_len,
                    factor,
                })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(PluginError::config(
                    "the overlong penalty needs both 'overlong_max_len' and 'overlong_buffer_len'",
                ));
            }
        };
        let drop_truncated = settings.take_bool("drop_truncated", defaults.drop_truncated)?;
        Ok(GrpoConfig {
            normalize_std,
            std_eps,
            overlong,
            drop_truncated,
        })
    }
}

/// Reads `min_group_size` (at least 1), or `default`.
pub fn take_min_group_size(settings: &mut Settings, default: u32) -> Result<u32, PluginError> {
    match settings.take_u64("min_group_size")? {
        None => Ok(default),
        Some(size) if size >= 1 && size <= u64::from(u32::MAX) => Ok(size as u32),
        Some(size) => Err(PluginError::config(format!(
            "setting 'min_group_size' = {size} must be between 1 and {}",
            u32::MAX
        ))),
    }
}

/// Per-sequence GRPO results and batch statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoOutcome {
    /// Advantage per sequence (0 for dropped sequences).
    pub advantages: Vec<f64>,
    /// Whether each sequence was dropped (see [`is_dropped`]).
    pub dropped: Vec<bool>,
    /// Mean shaped reward over the sequences used.
    pub reward_mean: f64,
    /// Number of groups among the sequences used.
    pub groups: usize,
    /// Groups whose shaped rewards are all equal (no outcome signal).
    pub zero_variance_groups: usize,
    /// Mean overlong penalty over the sequences used (0 when disabled).
    pub overlong_penalty_mean: f64,
}

impl GrpoOutcome {
    /// Emits `reward_mean`, `groups`, `zero_variance_groups`, `dropped_sequences`, and
    /// `overlong_penalty_mean` when the penalty is enabled.
    pub fn emit(
        &self,
        config: &GrpoConfig,
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        metrics.emit("reward_mean", self.reward_mean)?;
        metrics.emit("groups", self.groups as f64)?;
        metrics.emit("zero_variance_groups", self.zero_variance_groups as f64)?;
        let dropped = self.dropped.iter().filter(|&&d| d).count();
        metrics.emit("dropped_sequences", dropped as f64)?;
        if config.overlong.is_some() {
            metrics.emit("overlong_penalty_mean", self.overlong_penalty_mean)?;
        }
        Ok(())
    }
}

/// Number of generated (mask 1) tokens of each sequence.
pub fn generated_lengths(batch: &BatchView<'_>) -> Vec<u64> {
    batch
        .sequences()
        .map(|range| batch.mask[range].iter().map(|&m| u64::from(m)).sum())
        .collect()
}

/// GRPO outcome advantages: each sequence's shaped reward (reward plus overlong penalty) minus
/// its group's mean, divided by the group's population standard deviation plus `std_eps` when
/// `normalize_std` is on. A group of one sample gets exactly 0.
pub fn grpo_advantages(batch: &BatchView<'_>, config: &GrpoConfig) -> GrpoOutcome {
    let sequences = batch.num_sequences();
    let dropped: Vec<bool> = batch
        .flags
        .iter()
        .map(|&f| is_dropped(f, config.drop_truncated))
        .collect();
    let penalties: Vec<f64> = match &config.overlong {
        Some(overlong) => generated_lengths(batch)
            .into_iter()
            .map(|len| overlong.penalty(len))
            .collect(),
        None => vec![0.0; sequences],
    };
    let shaped: Vec<f64> = (0..sequences)
        .map(|i| f64::from(batch.reward[i]) + penalties[i])
        .collect();

    // Sorting by (group, shaped reward) makes every sum below independent of batch order.
    let mut used: Vec<usize> = (0..sequences).filter(|&i| !dropped[i]).collect();
    used.sort_unstable_by(|&a, &b| {
        batch.group[a]
            .cmp(&batch.group[b])
            .then(shaped[a].total_cmp(&shaped[b]))
    });

    let mut advantages = vec![0.0; sequences];
    let mut groups = 0;
    let mut zero_variance_groups = 0;
    let mut reward_sum = 0.0;
    for members in used.chunk_by(|&a, &b| batch.group[a] == batch.group[b]) {
        groups += 1;
        let n = members.len() as f64;
        let sum: f64 = members.iter().map(|&i| shaped[i]).sum();
        reward_sum += sum;
        let mean = sum / n;
        let variance = members
            .iter()
            .map(|&i| (shaped[i] - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = variance.sqrt();
        if members.iter().all(|&i| shaped[i] == shaped[members[0]]) {
            zero_variance_groups += 1;
        }
        let scale = if config.normalize_std {
            std + config.std_eps
        } else {
            1.0
        };
        for &i in members {
            let centred = shaped[i] - mean;
            // scale is 0 only for a zero-variance group with std_eps 0, where every centred
            // reward is 0: give 0, not 0/0.
            advantages[i] = if scale > 0.0 { centred / scale } else { 0.0 };
        }
    }
    let mut used_penalties: Vec<f64> = used.iter().map(|&i| penalties[i]).collect();
    GrpoOutcome {
        advantages,
        dropped,
        reward_mean: if used.is_empty() {
            0.0
        } else {
            reward_sum / used.len() as f64
        },
        groups,
        zero_variance_groups,
        overlong_penalty_mean: order_independent_mean(&mut used_penalties),
    }
}

/// Which step each step's divergence is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightReference {
    /// The paper's and the authors' code: `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)`, which
    /// telescopes to `min((d_1 + eps) / (d_k + eps), 1 + delta)`: every step is compared with the first.
    First,
    /// A departure from the authors' code: `w_k = min((d_{k-1} + eps) / (d_k + eps), 1 + delta)`, each step
    /// compared with the one before it.
    Adjacent,
}

/// The SOD step-weight parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepWeighting {
    /// Added to each step divergence before taking ratios.
    pub eps: f64,
    /// Weights are capped at `1 + delta`.
    pub delta: f64,
    /// Which step a step is compared with (default [`WeightReference::First`]).
    pub reference: WeightReference,
}

impl Default for StepWeighting {
    fn default() -> Self {
        StepWeighting {
            eps: 1e-6,
            delta: 0.2,
            reference: WeightReference::First,
        }
    }
}

/// Mean of `values` over the generated tokens of each step of one sequence: `means[k]` for step index `k`.
pub fn step_means(
    values: impl Iterator<Item = f64>,
    mask: &[u8],
    steps: &[u32],
    means: &mut Vec<f64>,
) {
    means.clear();
    let mut counts: Vec<u32> = Vec::new();
    for ((value, &m), &step) in values.zip(mask).zip(steps) {
        if m == 0 {
            continue;
        }
        let step = step as usize;
        if step == means.len() {
            means.push(0.0);
            counts.push(0);
        }
        means[step] += value;
        counts[step] += 1;
    }
    for (d, &count) in means.iter_mut().zip(&counts) {
        *d /= f64::from(count);
    }
}

/// SOD step weights from step divergences: `w_1 = 1` and, with [`WeightReference::First`],
/// `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)`, the product running over the
/// uncapped ratios; with [`WeightReference::Adjacent`], `w_k = min((d_{k-1} + eps) / (d_k + eps), 1 + delta)`.
pub fn sod_weights(divergences: &[f64], weighting: &StepWeighting, weights: &mut Vec<f64>) {
    weights.clear();
    let cap = 1.0 + weighting.delta;
    let mut product = 1.0f64;
    for (k, &d) in divergences.iter().enumerate() {
        if k == 0 {
            weights.push(1.0);
            continue;
        }
        let ratio = (divergences[k - 1] + weighting.eps) / (d + weighting.eps);
        match weighting.reference {
            WeightReference::First => {
                product *= ratio;
                weights.push(product.min(cap));
            }
            WeightReference::Adjacent => weights.push(ratio.min(cap)),
        }
    }
}

/// What the distillation term is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// The paper's: the sampled token's `log pT - log pS_old`, added to the advantage (policy gradient through
    /// the PPO surrogate); `d_k` is the step mean of `|log pS_old - log pT|`.
    Sampled,
    /// A divergence over the whole distribution (or the teacher's top-k) at every generated position,
    /// differentiated directly by the host; the plugin weights it per token (`c * w_k`), and `d_k` is the step
    /// mean of the same divergence.
    Full(DivergenceSpec),
}

/// Settings of the distillation losses (OPD, and SOD when `step_weighting` is set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillConfig {
    /// Coefficient of the distillation term.
    pub c: f64,
    /// Weight of the GRPO outcome term.
    pub grpo_weight: f64,
    /// The GRPO term's settings.
    pub grpo: GrpoConfig,
    /// SOD step weights; `None` is OPD (every weight 1).
    pub step_weighting: Option<StepWeighting>,
    /// Sampled-token or full-distribution distillation.
    pub signal: Signal,
}

impl DistillConfig {
    /// Reads `c` (default 1), `grpo_weight` (default 1), `signal` (`sampled`, the default, or `full`; with
    /// `full` also `divergence` = `reverse_kl` (default) | `forward_kl` | `jsd`, `beta` (JSD, default 0.5, in
    /// (0, 1)) and `top_k` (default 0: the whole vocabulary)) and the GRPO settings; with `step_weighted`
    /// (SOD) also `eps` (default 1e-6, > 0), `delta` (default 0.2, >= 0) and `reference` (`first`, the
    /// default, or `adjacent`).
    pub fn from_settings(
        settings: &mut Settings,
        step_weighted: bool,
    ) -> Result<Self, PluginError> {
        let c = settings.take_f64("c", 1.0)?;
        let grpo_weight = settings.take_f64("grpo_weight", 1.0)?;
        let step_weighting = if step_weighted {
            let defaults = StepWeighting::default();
            Some(StepWeighting {
                eps: settings.take_f64_at_least("eps", defaults.eps, 0.0, false)?,
                delta: settings.take_f64_at_least("delta", defaults.delta, 0.0, true)?,
                reference: match settings.take_choice("reference", &["first", "adjacent"])? {
                    "adjacent" => WeightReference::Adjacent,
                    _ => WeightReference::First,
                },
            })
        } else {
            None
        };
        let signal = match settings.take_choice("signal", &["sampled", "full"])? {
            "full" => {
                let kind = match settings
                    .take_choice("divergence", &["reverse_kl", "forward_kl", "jsd"])?
                {
                    "forward_kl" => DivergenceKind::ForwardKl,
                    "jsd" => {
                        let beta = settings.take_f64("beta", 0.5)?;
                        if !(beta > 0.0 && beta < 1.0) {
                            return Err(PluginError::config(format!(
                                "setting 'beta' = {beta} must be in (0, 1) (beta 0 and 1 are forward_kl and reverse_kl)"
                            )));
                        }
                        DivergenceKind::Jsd { beta }
                    }
                    _ => DivergenceKind::ReverseKl,
                };
                let top_k = settings.take_u64("top_k")?.unwrap_or(0);
                let top_k = u32::try_from(top_k).map_err(|_| {
                    PluginError::config(format!("setting 'top_k' = {top_k} is too large"))
                })?;
                Signal::Full(DivergenceSpec { kind, top_k })
            }
            _ => Signal::Sampled,
        };
        let grpo = GrpoConfig::from_settings(settings)?;
        Ok(DistillConfig {
            c,
            grpo_weight,
            grpo,
            step_weighting,
            signal,
        })
    }

    /// Whether the loss reads teacher log-probs: only when the distillation term is on.
    pub fn needs_teacher(&self) -> bool {
        self.c != 0.0
    }

    /// The divergence the host must compute: the full-distribution one, when the distillation term is on.
    pub fn divergence(&self) -> Option<DivergenceSpec> {
        match self.signal {
            Signal::Full(spec) if self.needs_teacher() => Some(spec),
            _ => None,
        }
    }

    /// The requirements of an on-policy distillation loss with these settings.
    pub fn requirements(&self, min_group_size: u32) -> Requirements {
        Requirements {
            divergence: self.divergence(),
            ..crate::plugin::on_policy(self.needs_teacher(), min_group_size)
        }
    }
}

/// Steps whose mean divergence is reported one by one (`d_step1` ...); later steps are not.
pub const REPORTED_STEPS: usize = 4;

/// Batch statistics of the distillation term.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DistillStats {
    /// Mean number of steps over the sequences used.
    pub mean_steps: f64,
    /// Mean first-step divergence `d_1` over the sequences used that have a step.
    pub mean_d1: f64,
    /// Mean weight of the last step over the sequences used that have a step.
    pub mean_last_w: f64,
    /// Mean distillation signal over the generated tokens used: `log pT - log pS_old` (sampled) or the
    /// divergence `D_t` (full).
    pub mean_signal: f64,
    /// Mean `d_k` of step `k + 1` over the sequences that have it, for the first [`REPORTED_STEPS`] steps.
    pub mean_d_step: Vec<f64>,
    /// Quantiles 0.1, 0.5, 0.9 of the weights of every step after the first (1 when there is none).
    pub w_quantiles: [f64; 3],
    /// Share of the steps after the first whose weight sits at the cap `1 + delta`.
    pub w_capped_fraction: f64,
    /// Number of steps after the first.
    pub later_steps: usize,
}

impl DistillStats {
    /// Emits `mean_steps` and `mean_signal` (`mean_divergence` for the full signal); with `step_weighted`
    /// also `mean_d1`, `mean_last_w`, `d_step1` ... `d_step4` (mean `d_k` of that step), `w_p10`, `w_p50`,
    /// `w_p90` (quantiles of the weights of the steps after the first), `w_capped` (their share at the cap)
    /// and `later_steps` (their number).
    pub fn emit(
        &self,
        step_weighted: bool,
        full: bool,
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        metrics.emit("mean_steps", self.mean_steps)?;
        metrics.emit(
            if full {
                "mean_divergence"
            } else {
                "mean_signal"
            },
            self.mean_signal,
        )?;
        if step_weighted {
            metrics.emit("mean_d1", self.mean_d1)?;
            metrics.emit("mean_last_w", self.mean_last_w)?;
            for (k, d) in self.mean_d_step.iter().enumerate() {
                metrics.emit(&format!("d_step{}", k + 1), *d)?;
            }
            metrics.emit("w_p10", self.w_quantiles[0])?;
            metrics.emit("w_p50", self.w_quantiles[1])?;
            metrics.emit("w_p90", self.w_quantiles[2])?;
            metrics.emit("w_capped", self.w_capped_fraction)?;
            metrics.emit("later_steps", self.later_steps as f64)?;
        }
        Ok(())
    }
}

/// The `q`-quantile of sorted values (nearest rank); 1 for none.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 1.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Per-token advantages (and, for the full signal, divergence weights) of OPD and SOD.
///
/// Sampled signal: `advantage = grpo_weight * A_GRPO + c * w_k * (log pT - log pS_old)` on generated tokens.
/// Full signal: `advantage = grpo_weight * A_GRPO` and `divergence_weight = c * w_k` on generated tokens, `d_k`
/// taken from the batch's divergence. Both are 0 on mask-0 tokens and on dropped sequences. Without teacher
/// log-probs the distillation term is 0. `divergence_weights` may be empty for the sampled signal.
pub fn distill_advantages(
    batch: &BatchView<'_>,
    config: &DistillConfig,
    advantages: &mut [f32],
    divergence_weights: &mut [f32],
) -> (GrpoOutcome, DistillStats) {
    let grpo = grpo_advantages(batch, &config.grpo);
    let full = config.divergence().is_some() && batch.divergence.is_some();
    let mut divergences = Vec::new();
    let mut weights = Vec::new();
    let mut steps_per_seq = Vec::new();
    let mut first_divergences = Vec::new();
    let mut last_weights = Vec::new();
    let mut signal_sums = Vec::new();
    let mut signal_tokens = 0u64;
    let mut per_step: Vec<Vec<f64>> = vec![Vec::new(); REPORTED_STEPS];
    let mut later_weights = Vec::new();
    for (seq, range) in batch.sequences().enumerate() {
        if grpo.dropped[seq] {
            advantages[range.clone()].fill(0.0);
            if full {
                divergence_weights[range].fill(0.0);
            }
            continue;
        }
        let outcome = config.grpo_weight * grpo.advantages[seq];
        let mask = &batch.mask[range.clone()];
        let steps = &batch.step_index[range.clone()];
        let old = &batch.old_logprob[range.clone()];
        steps_per_seq.push(
            steps
                .iter()
                .rev()
                .find(|&&s| s != SOD_LOSS_NO_STEP)
                .map_or(0.0, |&s| f64::from(s) + 1.0),
        );
        let Some(teacher) = batch.teacher_logprob.map(|t| &t[range.clone()]) else {
            for (a, &m) in advantages[range.clone()].iter_mut().zip(mask) {
                *a = if m == 1 { outcome as f32 } else { 0.0 };
            }
            continue;
        };
        let per_token: Vec<f64> = match (full, batch.divergence) {
            (true, Some(d)) => d[range.clone()].iter().map(|&x| f64::from(x)).collect(),
            _ => old
                .iter()
                .zip(teacher)
                .map(|(&o, &t)| f64::from(t) - f64::from(o))
                .collect(),
        };
        // d_k: the step mean of the divergence (full) or of |log pS_old - log pT| (sampled).
        step_means(
            per_token.iter().map(|x| x.abs()),
            mask,
            steps,
            &mut divergences,
        );
        weights.clear();
        match &config.step_weighting {
            Some(weighting) => sod_weights(&divergences, weighting, &mut weights),
            None => weights.resize(divergences.len(), 1.0),
        }
        if let (Some(&d1), Some(&last_w)) = (divergences.first(), weights.last()) {
            first_divergences.push(d1);
            last_weights.push(last_w);
        }
        for (k, &d) in divergences.iter().enumerate().take(REPORTED_STEPS) {
            per_step[k].push(d);
        }
        later_weights.extend(weights.iter().skip(1).copied());
        let mut signal_sum = 0.0;
        for (t, (&m, &step)) in mask.iter().zip(steps).enumerate() {
            let at = range.start + t;
            if m == 0 {
                advantages[at] = 0.0;
                continue;
            }
            signal_sum += per_token[t];
            signal_tokens += 1;
            let weight = config.c * weights[step as usize];
            if full {
                advantages[at] = outcome as f32;
                divergence_weights[at] = weight as f32;
            } else {
                advantages[at] = (outcome + weight * per_token[t]) as f32;
            }
        }
        signal_sums.push(signal_sum);
    }
    let signal_total = order_independent_sum(&mut signal_sums);
    let cap = config.step_weighting.map_or(1.0, |w| 1.0 + w.delta);
    later_weights.sort_unstable_by(f64::total_cmp);
    let capped = later_weights.iter().filter(|&&w| w >= cap).count();
    let stats = DistillStats {
        mean_steps: order_independent_mean(&mut steps_per_seq),
        mean_d1: order_independent_mean(&mut first_divergences),
        mean_last_w: order_independent_mean(&mut last_weights),
        mean_signal: if signal_tokens == 0 {
            0.0
        } else {
            signal_total / signal_tokens as f64
        },
        mean_d_step: per_step
            .iter_mut()
            .map(|values| order_independent_mean(values))
            .collect(),
        w_quantiles: [
            quantile(&later_weights, 0.1),
            quantile(&later_weights, 0.5),
            quantile(&later_weights, 0.9),
        ],
        w_capped_fraction: if later_weights.is_empty() {
            0.0
        } else {
            capped as f64 / later_weights.len() as f64
        },
        later_steps: later_weights.len(),
    };
    (grpo, stats)
}

/// What the `opd` and `sod` plugins compute: [`distill_advantages`], then the GRPO and distillation metrics.
pub fn distill_compute(
    config: &DistillConfig,
    batch: &BatchView<'_>,
    advantages: &mut [f32],
    divergence_weights: &mut [f32],
    metrics: &mut MetricSink<'_>,
) -> Result<(), PluginError> {
    let (grpo, stats) = distill_advantages(batch, config, advantages, divergence_weights);
    grpo.emit(&config.grpo, metrics)?;
    stats.emit(
        config.step_weighting.is_some(),
        config.divergence().is_some(),
        metrics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;

    fn batch(mask: Vec<u8>, seq_offsets: Vec<u64>, reward: Vec<f32>, group: Vec<u32>) -> Batch {
        let tokens = mask.len();
        let sequences = reward.len();
        Batch {
            old_logprob: vec![-1.0; tokens],
            mask,
            seq_offsets,
            reward,
            group,
            flags: vec![0; sequences],
            ..Batch::default()
        }
    }

    #[test]
    fn steps_are_maximal_mask_runs_numbered_from_zero_per_sequence() {
        let mask = [
            0, 0, 1, 1, 0, 1, 0, 0, 1, /* next sequence */ 1, 0, 1, 1,
        ];
        let steps = derive_step_indices(&mask, &[0, 9, 13]);
        let n = SOD_LOSS_NO_STEP;
        assert_eq!(steps, vec![n, n, 0, 0, n, 1, n, n, 2, 0, n, 1, 1]);
    }

    #[test]
    fn sod_weights_match_a_hand_computation() {
        // d = [0.5, 0.25, 1.0, 0.4], eps = 0.
        // w1 = 1; w2 = min(0.5/0.25 = 2, 1.2) = 1.2;
        // w3 = min(0.5/0.25 * 0.25/1.0 = 0.5, 1.2) = 0.5;
        // w4 = min(0.5 * 1.0/0.4 = 1.25, 1.2) = 1.2.
        let mut weights = Vec::new();
        let weighting = StepWeighting {
            eps: 0.0,
            delta: 0.2,
            reference: WeightReference::First,
        };
        sod_weights(&[0.5, 0.25, 1.0, 0.4], &weighting, &mut weights);
        assert_eq!(weights, vec![1.0, 1.2, 0.5, 1.2]);

        // With eps: w2 = (0.3 + 0.1) / (0.7 + 0.1) = 0.5; w3 = 0.5 * (0.7 + 0.1) / (0.1 + 0.1) = 2 -> cap 1.5.
        let weighting = StepWeighting {
            eps: 0.1,
            delta: 0.5,
            reference: WeightReference::First,
        };
        sod_weights(&[0.3, 0.7, 0.1], &weighting, &mut weights);
        let expected = [1.0, 0.5, 1.5];
        for (w, e) in weights.iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{weights:?}");
        }
    }

    #[test]
    fn adjacent_weights_compare_each_step_with_the_one_before() {
        // d = [0.5, 0.25, 1.0, 0.4], eps = 0: w = [1, min(2, 1.2), 0.25, min(2.5, 1.2)].
        let mut weights = Vec::new();
        let weighting = StepWeighting {
            eps: 0.0,
            delta: 0.2,
            reference: WeightReference::Adjacent,
        };
        sod_weights(&[0.5, 0.25, 1.0, 0.4], &weighting, &mut weights);
        assert_eq!(weights, vec![1.0, 1.2, 0.25, 1.2]);
    }

    #[test]
    fn full_signal_weights_the_divergence_and_keeps_the_sampled_gap_out() {
        // One sequence, two steps: divergences [0.2, 0.6 | 1.6], so d = [0.4, 1.6] and w = [1, 0.25].
        let mut b = batch(vec![0, 1, 1, 0, 1], vec![0, 5], vec![0.0], vec![0]);
        b.teacher_logprob = Some(vec![0.0, -3.0, -3.0, 0.0, -3.0]);
        b.divergence = Some(vec![0.0, 0.2, 0.6, 0.0, 1.6]);
        let mut settings =
            Settings::new([("signal", "full"), ("c", "2"), ("eps", "1e-12")]).unwrap();
        let config = DistillConfig::from_settings(&mut settings, true).unwrap();
        settings.finish("sod").unwrap();
        assert_eq!(
            config.divergence(),
            Some(DivergenceSpec {
                kind: DivergenceKind::ReverseKl,
                top_k: 0
            })
        );
        b.with_view(|view| {
            let mut advantages = vec![9.0f32; 5];
            let mut weights = vec![9.0f32; 5];
            let (_, stats) = distill_advantages(&view, &config, &mut advantages, &mut weights);
            // A single-sample group: A_GRPO = 0, and the sampled gap (-2 per token) does not enter.
            assert_eq!(advantages, vec![0.0; 5]);
            let expected = [9.0, 2.0, 2.0, 9.0, 0.5];
            for (w, e) in weights.iter().zip(expected) {
                assert!((w - e).abs() < 1e-5, "{weights:?}");
            }
            assert!((stats.mean_signal - 0.8).abs() < 1e-6);
            assert!((stats.mean_d_step[1] - 1.6).abs() < 1e-6);
            assert_eq!(stats.later_steps, 1);
            assert!((stats.w_quantiles[1] - 0.25).abs() < 1e-6);
        })
        .unwrap();
        // Settings of the full signal are refused with the sampled one.
        let mut settings = Settings::new([("divergence", "jsd")]).unwrap();
        DistillConfig::from_settings(&mut settings, false).unwrap();
        assert!(settings.finish("opd").is_err());
        let mut settings =
            Settings::new([("signal", "full"), ("divergence", "jsd"), ("beta", "1")]).unwrap();
        assert!(DistillConfig::from_settings(&mut settings, false).is_err());
    }

    #[test]
    fn step_divergences_average_absolute_gaps_per_step() {
        let old = [-1.0, -2.0, -9.0, -0.5, -1.5];
        let teacher = [-1.5, -1.0, 0.0, -0.5, -0.5];
        let mask = [1, 1, 0, 1, 1];
        let steps = [0, 0, SOD_LOSS_NO_STEP, 1, 1];
        let mut d = Vec::new();
        let gaps = old
            .iter()
            .zip(&teacher)
            .map(|(&o, &t): (&f64, &f64)| (o - t).abs());
        step_means(gaps, &mask, &steps, &mut d);
        assert_eq!(d, vec![(0.5 + 1.0) / 2.0, (0.0 + 1.0) / 2.0]);
    }

    #[test]
    fn grpo_normalises_within_groups() {
        // Group 7: rewards 1, 0 -> mean 0.5, std 0.5 -> +1, -1 (up to eps). Group 3: one sample -> 0.
        let b = batch(
            vec![1, 1, 1, 1],
            vec![0, 1, 2, 4],
            vec![1.0, 5.0, 0.0],
            vec![7, 3, 7],
        );
        b.with_view(|view| {
            let config = GrpoConfig {
                std_eps: 0.0,
                ..GrpoConfig::default()
            };
            let outcome = grpo_advantages(&view, &config);
            assert_eq!(outcome.advantages, vec![1.0, 0.0, -1.0]);
            assert_eq!(outcome.groups, 2);
            assert_eq!(outcome.zero_variance_groups, 1);
            assert_eq!(outcome.reward_mean, 2.0);
            let centred = grpo_advantages(
                &view,
                &GrpoConfig {
                    normalize_std: false,
                    ..GrpoConfig::default()
                },
            );
            assert_eq!(centred.advantages, vec![0.5, 0.0, -0.5]);
        })
        .unwrap();
    }

    #[test]
    fn grpo_with_singleton_groups_is_zero_and_finite() {
        let b = batch(
            vec![1, 1, 1],
            vec![0, 1, 2, 3],
            vec![3.0, -1.0, 1e30],
            vec![0, 1, 2],
        );
        b.with_view(|view| {
            let outcome = grpo_advantages(&view, &GrpoConfig::default());
            assert_eq!(outcome.advantages, vec![0.0, 0.0, 0.0]);
        })
        .unwrap();
    }

    #[test]
    fn overlong_penalty_ramps_linearly_in_the_buffer() {
        let penalty = OverlongPenalty {
            max_len: 10,
            buffer_len: 4,
            factor: 2.0,
        };
        assert_eq!(penalty.penalty(6), 0.0);
        assert_eq!(penalty.penalty(8), -1.0);
        assert_eq!(penalty.penalty(10), -2.0);
        assert_eq!(penalty.penalty(11), -2.0);
    }

    #[test]
    fn dropped_sequences_are_left_out_of_group_statistics() {
        let mut b = batch(
            vec![1, 1, 1],
            vec![0, 1, 2, 3],
            vec![1.0, 0.0, 100.0],
            vec![0, 0, 0],
        );
        b.flags = vec![0, 0, SOD_LOSS_FLAG_INFRA_FAULT];
        b.with_view(|view| {
            let config = GrpoConfig {
                std_eps: 0.0,
                ..GrpoConfig::default()
            };
            let outcome = grpo_advantages(&view, &config);
            assert_eq!(outcome.advantages, vec![1.0, -1.0, 0.0]);
            assert_eq!(outcome.dropped, vec![false, false, true]);
        })
        .unwrap();
    }

    #[test]
    fn grpo_settings_validate_the_overlong_penalty() {
        let mut settings = Settings::new([("overlong_max_len", "100")]).unwrap();
        let error = GrpoConfig::from_settings(&mut settings).unwrap_err();
        assert!(error.message.contains("needs both"), "{error}");
        let mut settings =
            Settings::new([("overlong_max_len", "100"), ("overlong_buffer_len", "200")]).unwrap();
        assert!(GrpoConfig::from_settings(&mut settings).is_err());
        let mut settings =
            Settings::new([("overlong_max_len", "100"), ("overlong_buffer_len", "20")]).unwrap();
        let config = GrpoConfig::from_settings(&mut settings).unwrap();
        assert_eq!(config.overlong.map(|o| o.buffer_len), Some(20));
    }
}
