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

/// The SOD step-weight parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepWeighting {
    /// Added to each step divergence before taking ratios.
    pub eps: f64,
    /// Weights are capped at `1 + delta`.
    pub delta: f64,
}

impl Default for StepWeighting {
    fn default() -> Self {
        StepWeighting {
            eps: 1e-6,
            delta: 0.2,
        }
    }
}

/// Mean `|old - teacher|` over the generated tokens of each step of one sequence:
/// `divergences[k]` for step index `k`. Slices cover one sequence.
pub fn step_divergences(
    old: &[f32],
    teacher: &[f32],
    mask: &[u8],
    steps: &[u32],
    divergences: &mut Vec<f64>,
) {
    divergences.clear();
    let mut counts: Vec<u32> = Vec::new();
    for (((&o, &t), &m), &step) in old.iter().zip(teacher).zip(mask).zip(steps) {
        if m == 0 {
            continue;
        }
        let step = step as usize;
        if step == divergences.len() {
            divergences.push(0.0);
            counts.push(0);
        }
        divergences[step] += (f64::from(o) - f64::from(t)).abs();
        counts[step] += 1;
    }
    for (d, &count) in divergences.iter_mut().zip(&counts) {
        *d /= f64::from(count);
    }
}

/// SOD step weights from step divergences: `w_1 = 1` and
/// `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)`, the product running over the
/// uncapped ratios.
pub fn sod_weights(divergences: &[f64], weighting: &StepWeighting, weights: &mut Vec<f64>) {
    weights.clear();
    let cap = 1.0 + weighting.delta;
    let mut product = 1.0f64;
    for (k, &d) in divergences.iter().enumerate() {
        if k == 0 {
            weights.push(1.0);
        } else {
            product *= (divergences[k - 1] + weighting.eps) / (d + weighting.eps);
            weights.push(product.min(cap));
        }
    }
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
}

impl DistillConfig {
    /// Reads `c` (default 1), `grpo_weight` (default 1) and the GRPO settings; with
    /// `step_weighted` (SOD) also `eps` (default 1e-6, > 0) and `delta` (default 0.2, >= 0).
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
            })
        } else {
            None
        };
        let grpo = GrpoConfig::from_settings(settings)?;
        Ok(DistillConfig {
            c,
            grpo_weight,
            grpo,
            step_weighting,
        })
    }

    /// Whether the loss reads teacher log-probs: only when the distillation term is on.
    pub fn needs_teacher(&self) -> bool {
        self.c != 0.0
    }
}

/// Batch statistics of the distillation term.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DistillStats {
    /// Mean number of steps over the sequences used.
    pub mean_steps: f64,
    /// Mean first-step divergence `d_1` over the sequences used that have a step.
    pub mean_d1: f64,
    /// Mean weight of the last step over the sequences used that have a step.
    pub mean_last_w: f64,
    /// Mean distillation signal `log pT - log pS_old` over the generated tokens used.
    pub mean_signal: f64,
}

impl DistillStats {
    /// Emits `mean_steps` and `mean_signal`; with `step_weighted` also `mean_d1` and
    /// `mean_last_w`.
    pub fn emit(
        &self,
        step_weighted: bool,
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        metrics.emit("mean_steps", self.mean_steps)?;
        metrics.emit("mean_signal", self.mean_signal)?;
        if step_weighted {
            metrics.emit("mean_d1", self.mean_d1)?;
            metrics.emit("mean_last_w", self.mean_last_w)?;
        }
        Ok(())
    }
}

/// Per-token advantages of OPD and SOD:
/// `grpo_weight * A_GRPO + c * w_k * (log pT - log pS_old)` on generated tokens, 0 on mask-0
/// tokens and on dropped sequences. Without teacher log-probs the distillation term is 0.
pub fn distill_advantages(
    batch: &BatchView<'_>,
    config: &DistillConfig,
    advantages: &mut [f32],
) -> (GrpoOutcome, DistillStats) {
    let grpo = grpo_advantages(batch, &config.grpo);
    let mut divergences = Vec::new();
    let mut weights = Vec::new();
    let mut steps_per_seq = Vec::new();
    let mut first_divergences = Vec::new();
    let mut last_weights = Vec::new();
    let mut signal_sums = Vec::new();
    let mut signal_tokens = 0u64;
    for (seq, range) in batch.sequences().enumerate() {
        if grpo.dropped[seq] {
            advantages[range].fill(0.0);
            continue;
        }
        let outcome = config.grpo_weight * grpo.advantages[seq];
        let mask = &batch.mask[range.clone()];
        let steps = &batch.step_index[range.clone()];
        let old = &batch.old_logprob[range.clone()];
        let out = &mut advantages[range.clone()];
        steps_per_seq.push(
            steps
                .iter()
                .rev()
                .find(|&&s| s != SOD_LOSS_NO_STEP)
                .map_or(0.0, |&s| f64::from(s) + 1.0),
        );
        let Some(teacher) = batch.teacher_logprob.map(|t| &t[range.clone()]) else {
            for (a, &m) in out.iter_mut().zip(mask) {
                *a = if m == 1 { outcome as f32 } else { 0.0 };
            }
            continue;
        };
        step_divergences(old, teacher, mask, steps, &mut divergences);
        weights.clear();
        match &config.step_weighting {
            Some(weighting) => sod_weights(&divergences, weighting, &mut weights),
            None => weights.resize(divergences.len(), 1.0),
        }
        if let (Some(&d1), Some(&last_w)) = (divergences.first(), weights.last()) {
            first_divergences.push(d1);
            last_weights.push(last_w);
        }
        let mut signal_sum = 0.0;
        for ((((a, &m), &step), &o), &t) in
            out.iter_mut().zip(mask).zip(steps).zip(old).zip(teacher)
        {
            if m == 0 {
                *a = 0.0;
                continue;
            }
            let signal = f64::from(t) - f64::from(o);
            signal_sum += signal;
            signal_tokens += 1;
            *a = (outcome + config.c * weights[step as usize] * signal) as f32;
        }
        signal_sums.push(signal_sum);
    }
    let signal_total = order_independent_sum(&mut signal_sums);
    let stats = DistillStats {
        mean_steps: order_independent_mean(&mut steps_per_seq),
        mean_d1: order_independent_mean(&mut first_divergences),
        mean_last_w: order_independent_mean(&mut last_weights),
        mean_signal: if signal_tokens == 0 {
            0.0
        } else {
            signal_total / signal_tokens as f64
        },
    };
    (grpo, stats)
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
        };
        sod_weights(&[0.5, 0.25, 1.0, 0.4], &weighting, &mut weights);
        assert_eq!(weights, vec![1.0, 1.2, 0.5, 1.2]);

        // With eps: w2 = (0.3 + 0.1) / (0.7 + 0.1) = 0.5; w3 = 0.5 * (0.7 + 0.1) / (0.1 + 0.1) = 2 -> cap 1.5.
        let weighting = StepWeighting {
            eps: 0.1,
            delta: 0.5,
        };
        sod_weights(&[0.3, 0.7, 0.1], &weighting, &mut weights);
        let expected = [1.0, 0.5, 1.5];
        for (w, e) in weights.iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{weights:?}");
        }
    }

    #[test]
    fn step_divergences_average_absolute_gaps_per_step() {
        let old = [-1.0, -2.0, -9.0, -0.5, -1.5];
        let teacher = [-1.5, -1.0, 0.0, -0.5, -0.5];
        let mask = [1, 1, 0, 1, 1];
        let steps = [0, 0, SOD_LOSS_NO_STEP, 1, 1];
        let mut d = Vec::new();
        step_divergences(&old, &teacher, &mask, &steps, &mut d);
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
