//! The `sod` loss plugin: step-wise on-policy distillation.
//!
//! A step is a maximal run of generated tokens between tool outputs (steps are numbered from 0
//! in the batch; the formulas below count from 1). The step weights are `w_1 = 1` and
//! `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)` (the authors' code; it
//! telescopes to `min((d_1 + eps) / (d_k + eps), 1 + delta)`), or with `reference = adjacent`
//! `w_k = min((d_{k-1} + eps) / (d_k + eps), 1 + delta)` (a departure from the paper).
//!
//! Two signals:
//! - `signal = sampled` (default, the paper's): `d_k` is the mean of `|log pS_old - log pT|` over
//!   the step's generated tokens, and `advantage = grpo_weight * A_GRPO + c * w_k * (log pT - log
//!   pS_old)` on generated tokens;
//! - `signal = full` (ABI v2): the host computes a divergence `D_t` between the student's and the
//!   teacher's whole next-token distributions at every generated position (`divergence` =
//!   `reverse_kl` | `forward_kl` | `jsd` with `beta`, over the teacher's `top_k` when > 0); `d_k`
//!   is the step mean of `D_t`, the divergence weight of each token is `c * w_k`, and the advantage
//!   is `grpo_weight * A_GRPO`.
//!
//! Both are 0 on prompt, tool output and padding, and on sequences flagged as infrastructure
//! faults (or truncated, with `drop_truncated`).
//!
//! Settings: `c` (default 1; 0 turns the teacher off), `eps` (default 1e-6), `delta` (default
//! 0.2), `reference` (`first` | `adjacent`), `signal`, `divergence`, `beta`, `top_k`,
//! `grpo_weight` (default 1), the GRPO settings `normalize_std`, `std_eps`, `overlong_max_len`,
//! `overlong_buffer_len`, `overlong_factor`, `drop_truncated`, and `min_group_size` (default 1).
//! Metrics: `reward_mean`, `groups`, `zero_variance_groups`, `dropped_sequences`, `mean_steps`,
//! `mean_signal` (sampled) or `mean_divergence` (full), `mean_d1` (mean first-step divergence),
//! `mean_last_w` (mean weight of the last step), `d_step1`..`d_step4` (mean `d_k` per step),
//! `w_p10`, `w_p50`, `w_p90` (quantiles of the weights of the steps after the first), `w_capped`
//! (their share at the cap) and `later_steps` (their number).

#![warn(missing_docs)]

use sod_loss_distill::{DistillLoss, Flavour};

/// The `sod` flavour of the distillation loss (SOD: step-weighted).
#[derive(Debug, Clone)]
pub struct Sod;

impl Flavour for Sod {
    const NAME: &'static std::ffi::CStr = c"sod";
    const DESCRIPTION: &'static std::ffi::CStr =
        c"Step-wise on-policy distillation: GRPO outcome term plus step-weighted teacher signal";
    const STEP_WEIGHTED: bool = true;
}

/// The configured SOD loss.
pub type SodLoss = DistillLoss<Sod>;

sod_loss_abi::export_loss_plugin!(SodLoss);

#[cfg(test)]
mod tests {
    use super::*;
    use sod_loss_abi::math::{GrpoConfig, grpo_advantages};
    use sod_loss_abi::testing::{SplitMix64, random_batch};
    use sod_loss_abi::{Batch, SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_NO_STEP, run_loss};
    use sod_loss_abi::{LossImpl, Settings};

    type Metrics = Vec<(String, f64)>;

    fn configure(pairs: &[(&str, String)]) -> SodLoss {
        let mut settings = Settings::new(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        let loss = SodLoss::configure(&mut settings).unwrap();
        settings.finish("sod").unwrap();
        loss
    }

    fn run(loss: &mut SodLoss, batch: &Batch) -> (Vec<f32>, Metrics) {
        batch
            .with_view(|view| run_loss(loss, &view))
            .unwrap()
            .unwrap()
    }

    fn metric(metrics: &Metrics, name: &str) -> f64 {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap()
    }

    fn close(actual: f32, expected: f64) -> bool {
        (f64::from(actual) - expected).abs() <= 1e-5 * (1.0 + expected.abs())
    }

    /// Two sequences of one group. Sequence 0 has three steps:
    /// step 1: old [-1, -2], teacher [-1.5, -1]: d_1 = (0.5 + 1) / 2 = 0.75
    /// step 2: old [-0.5, -1, -2], teacher [-0.5, -1.5, -0.5]: d_2 = (0 + 0.5 + 1.5) / 3 = 2/3
    /// step 3: old [-3], teacher [-1]: d_3 = 2
    /// Sequence 1 has one step: old [-1], teacher [-2].
    fn hand_batch() -> Batch {
        let nan = f32::NAN;
        Batch {
            old_logprob: vec![
                nan, nan, -1.0, -2.0, nan, -0.5, -1.0, -2.0, nan, -3.0, nan, -1.0,
            ],
            teacher_logprob: Some(vec![
                nan, nan, -1.5, -1.0, nan, -0.5, -1.5, -0.5, nan, -1.0, nan, -2.0,
            ]),
            mask: vec![0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1],
            seq_offsets: vec![0, 10, 12],
            reward: vec![1.0, 0.0],
            group: vec![4, 4],
            flags: vec![0, 0],
            ..Batch::default()
        }
    }

    #[test]
    fn advantages_equal_a_hand_computation() {
        let eps = 1e-6;
        let (c, delta) = (0.7, 0.2);
        let w1 = 1.0;
        let w2 = f64::min((0.75 + eps) / (2.0 / 3.0 + eps), 1.0 + delta); // 1.125, under the cap
        let w3 = f64::min(
            (0.75 + eps) / (2.0 / 3.0 + eps) * (2.0 / 3.0 + eps) / (2.0 + eps),
            1.0 + delta,
        );
        assert!((w2 - 1.125).abs() < 1e-5 && (w3 - 0.375).abs() < 1e-5);
        // Rewards 1 and 0: mean 0.5, population std 0.5.
        let a_pos = 0.5 / (0.5 + 1e-6);
        let expected = [
            0.0,
            0.0,
            a_pos + c * w1 * (-1.5 + 1.0),
            a_pos + c * w1 * (-1.0 + 2.0),
            0.0,
            a_pos + c * w2 * (-0.5 + 0.5),
            a_pos + c * w2 * (-1.5 + 1.0),
            a_pos + c * w2 * (-0.5 + 2.0),
            0.0,
            a_pos + c * w3 * (-1.0 + 3.0),
            0.0,
            -a_pos + c * w1 * (-2.0 + 1.0),
        ];
        let mut loss = configure(&[("c", c.to_string()), ("delta", delta.to_string())]);
        let (advantages, metrics) = run(&mut loss, &hand_batch());
        for (t, (&a, &e)) in advantages.iter().zip(&expected).enumerate() {
            assert!(close(a, e), "token {t}: {a} != {e}");
        }
        assert_eq!(metric(&metrics, "mean_steps"), 2.0);
        assert!((metric(&metrics, "mean_d1") - (0.75 + 1.0) / 2.0).abs() < 1e-12);
        assert!((metric(&metrics, "mean_last_w") - (w3 + 1.0) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_cap_binds_when_divergence_drops() {
        // d = [1, 0.25]: the ratio 4 is capped at 1 + delta = 1.5.
        let batch = Batch {
            old_logprob: vec![-2.0, f32::NAN, -1.0],
            teacher_logprob: Some(vec![-1.0, f32::NAN, -1.25]),
            mask: vec![1, 0, 1],
            seq_offsets: vec![0, 3],
            reward: vec![0.0],
            group: vec![0],
            flags: vec![0],
            ..Batch::default()
        };
        let mut loss = configure(&[("delta", "0.5".into())]);
        let (advantages, metrics) = run(&mut loss, &batch);
        assert!(close(advantages[2], 1.5 * -0.25), "{advantages:?}");
        assert_eq!(metric(&metrics, "mean_last_w"), 1.5);
    }

    /// For every generated token of a kept sequence, the weight implied by its advantage when
    /// the GRPO term is off.
    fn implied_weights(batch: &Batch, advantages: &[f32], c: f64) -> Vec<(u32, f64)> {
        let teacher = batch.teacher_logprob.as_ref().unwrap();
        let steps = sod_loss_abi::math::derive_step_indices(&batch.mask, &batch.seq_offsets);
        let mut implied = Vec::new();
        for t in 0..batch.num_tokens() {
            let signal = f64::from(teacher[t]) - f64::from(batch.old_logprob[t]);
            if batch.mask[t] == 1 && signal.abs() > 1e-2 {
                implied.push((steps[t], f64::from(advantages[t]) / (c * signal)));
            }
        }
        implied
    }

    #[test]
    fn first_weight_is_one_and_every_weight_is_capped() {
        let mut rng = SplitMix64::new(2024);
        for _ in 0..300 {
            let mut batch = random_batch(&mut rng, true);
            batch.flags.fill(0);
            let c = rng.uniform(0.1, 2.0);
            let delta = rng.uniform(0.0, 0.5);
            let mut loss = configure(&[
                ("c", c.to_string()),
                ("delta", delta.to_string()),
                ("grpo_weight", "0".into()),
            ]);
            let (advantages, _) = run(&mut loss, &batch);
            for (step, w) in implied_weights(&batch, &advantages, c) {
                assert!(w > 0.0, "weights are positive, got {w}");
                if step == 0 {
                    assert!((w - 1.0).abs() < 1e-3, "w_1 = {w}");
                } else {
                    assert!(
                        w <= 1.0 + delta + 1e-3,
                        "w_{} = {w} > 1 + {delta}",
                        step + 1
                    );
                }
            }
        }
    }

    #[test]
    fn masked_tokens_and_faulty_sequences_get_zero() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..300 {
            let batch = random_batch(&mut rng, true);
            let mut loss = configure(&[]);
            let (advantages, _) = run(&mut loss, &batch);
            for seq in 0..batch.num_sequences() {
                let faulty = batch.flags[seq] & SOD_LOSS_FLAG_INFRA_FAULT != 0;
                let range = batch.seq_offsets[seq] as usize..batch.seq_offsets[seq + 1] as usize;
                for (&advantage, &mask) in advantages[range.clone()].iter().zip(&batch.mask[range])
                {
                    assert!(advantage.is_finite());
                    if mask == 0 || faulty {
                        assert_eq!(advantage, 0.0, "sequence {seq}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_step_sequences_reduce_to_opd() {
        let mut rng = SplitMix64::new(99);
        for _ in 0..200 {
            let mut batch = random_batch(&mut rng, true);
            // Put every generated token of a sequence in one step.
            batch.step_index = Some(
                batch
                    .mask
                    .iter()
                    .map(|&m| if m == 1 { 0 } else { SOD_LOSS_NO_STEP })
                    .collect(),
            );
            // Keep one sequence, so that the mean weight is over at least one sequence.
            batch.flags[0] = 0;
            let c = rng.uniform(-1.0, 2.0);
            let mut loss = configure(&[("c", c.to_string())]);
            let (advantages, metrics) = run(&mut loss, &batch);
            assert_eq!(metric(&metrics, "mean_last_w"), 1.0);
            let grpo = batch
                .with_view(|view| grpo_advantages(&view, &GrpoConfig::default()))
                .unwrap();
            let teacher = batch.teacher_logprob.as_ref().unwrap();
            for seq in 0..batch.num_sequences() {
                for t in batch.seq_offsets[seq] as usize..batch.seq_offsets[seq + 1] as usize {
                    let opd = if batch.mask[t] == 0 || grpo.dropped[seq] {
                        0.0
                    } else {
                        grpo.advantages[seq]
                            + c * (f64::from(teacher[t]) - f64::from(batch.old_logprob[t]))
                    };
                    assert_eq!(advantages[t], opd as f32, "token {t}");
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_batch_order() {
        let mut rng = SplitMix64::new(31337);
        for _ in 0..200 {
            let batch = random_batch(&mut rng, true);
            let order = rng.permutation(batch.num_sequences());
            let permuted = batch.permuted(&order);
            let mut loss = configure(&[
                ("overlong_max_len", "12".into()),
                ("overlong_buffer_len", "6".into()),
            ]);
            let (advantages, mut metrics) = run(&mut loss, &batch);
            let (permuted_advantages, mut permuted_metrics) = run(&mut loss, &permuted);
            for (new, &old) in order.iter().enumerate() {
                let original = &advantages
                    [batch.seq_offsets[old] as usize..batch.seq_offsets[old + 1] as usize];
                let moved = &permuted_advantages
                    [permuted.seq_offsets[new] as usize..permuted.seq_offsets[new + 1] as usize];
                assert_eq!(original, moved, "sequence {old} moved to {new}");
            }
            metrics.sort_by(|a, b| a.0.cmp(&b.0));
            permuted_metrics.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(metrics, permuted_metrics);
        }
    }

    #[test]
    fn singleton_groups_give_zero_outcome_advantage_and_no_nan() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..100 {
            let mut batch = random_batch(&mut rng, true);
            batch.group = (0..batch.num_sequences() as u32).collect();
            let mut loss = configure(&[("c", "0".into())]);
            let (advantages, _) = run(&mut loss, &batch);
            assert!(advantages.iter().all(|&a| a == 0.0), "{advantages:?}");
        }
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        for (key, value, needle) in [
            ("eps", "0", "'eps' = 0 must be > 0"),
            ("delta", "-0.1", "'delta' = -0.1 must be >= 0"),
            ("c", "x", "'c' = 'x' is not a number"),
            ("min_group_size", "0", "'min_group_size' = 0"),
            ("detla", "0.1", "unknown setting 'detla'"),
        ] {
            let mut settings = Settings::new([(key, value)]).unwrap();
            let error = SodLoss::configure(&mut settings)
                .and_then(|_| settings.finish("sod"))
                .unwrap_err();
            assert!(error.message.contains(needle), "{key}={value}: {error}");
        }
    }
}
