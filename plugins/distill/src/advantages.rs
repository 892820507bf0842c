//! The token advantages of OPD and SOD: the GRPO outcome term plus the (step-weighted) distillation
//! term, the divergence weights of the full signal, and the distillation metrics.

use sod_loss_abi::math::{
    GrpoAdvantages, fill_generated, grpo_advantages, order_independent_mean, order_independent_sum,
};
use sod_loss_abi::{BatchView, MetricSink, PluginError, SOD_LOSS_NO_STEP};

use crate::config::DistillConfig;
use crate::weights::{sod_weights, step_means};

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
) -> (GrpoAdvantages, DistillStats) {
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
            fill_generated(&mut advantages[range.clone()], mask, outcome as f32);
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
    use sod_loss_abi::{Batch, DivergenceKind, DivergenceSpec, Settings};

    #[test]
    fn full_signal_weights_the_divergence_and_keeps_the_sampled_gap_out() {
        // One sequence, two steps: divergences [0.2, 0.6 | 1.6], so d = [0.4, 1.6] and w = [1, 0.25].
        let b = Batch {
            old_logprob: vec![-1.0; 5],
            teacher_logprob: Some(vec![0.0, -3.0, -3.0, 0.0, -3.0]),
            divergence: Some(vec![0.0, 0.2, 0.6, 0.0, 1.6]),
            mask: vec![0, 1, 1, 0, 1],
            seq_offsets: vec![0, 5],
            reward: vec![0.0],
            group: vec![0],
            flags: vec![0],
            ..Batch::default()
        };
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
}
