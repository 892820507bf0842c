//! The `opd` loss plugin: on-policy distillation.
//!
//! `signal = sampled` (default, the paper's baseline): on generated tokens, `advantage =
//! grpo_weight * A_GRPO + c * (log pT - log pS_old)`. `signal = full` (ABI v2): the host computes a
//! divergence between the student's and the teacher's whole next-token distributions at every
//! generated position (`divergence` = `reverse_kl` | `forward_kl` | `jsd` with `beta`, over the
//! teacher's `top_k` when > 0) and differentiates `c * D_t` (token mean); the advantage is
//! `grpo_weight * A_GRPO`. Both are 0 on prompt, tool output and padding, and on sequences flagged
//! as infrastructure faults.
//!
//! Settings: `c` (default 1; 0 turns the teacher off), `signal`, `divergence`, `beta`, `top_k`,
//! `grpo_weight` (default 1), the GRPO settings `normalize_std`, `std_eps`, `overlong_max_len`,
//! `overlong_buffer_len`, `overlong_factor`, `drop_truncated`, and `min_group_size` (default 1).
//! Metrics: `reward_mean`, `groups`, `zero_variance_groups`, `dropped_sequences`,
//! `mean_steps`, `mean_signal` (mean `log pT - log pS_old` over generated tokens) or
//! `mean_divergence` (full).

#![warn(missing_docs)]

use sod_loss_distill::{DistillLoss, Flavour};

/// The `opd` flavour of the distillation loss (OPD: every step weight 1).
#[derive(Debug, Clone)]
pub struct Opd;

impl Flavour for Opd {
    const NAME: &'static std::ffi::CStr = c"opd";
    const DESCRIPTION: &'static std::ffi::CStr =
        c"On-policy distillation: c * (log pT - log pS_old) per generated token plus the GRPO outcome term";
    const STEP_WEIGHTED: bool = false;
}

/// The configured OPD loss.
pub type OpdLoss = DistillLoss<Opd>;

sod_loss_abi::export_loss_plugin!(OpdLoss);

#[cfg(test)]
mod tests {
    use super::*;
    use sod_loss_abi::run_loss;
    use sod_loss_abi::testing::{SplitMix64, random_batch};
    use sod_loss_abi::{LossImpl, PluginError, Settings};

    fn configure(pairs: &[(&str, &str)]) -> Result<OpdLoss, PluginError> {
        let mut settings = Settings::new(pairs.iter().copied())?;
        let loss = OpdLoss::configure(&mut settings)?;
        settings.finish("opd")?;
        Ok(loss)
    }

    #[test]
    fn advantage_is_scaled_teacher_gap_plus_outcome_term() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..200 {
            let batch = random_batch(&mut rng, true);
            let mut loss = configure(&[("c", "0.5"), ("grpo_weight", "0")]).unwrap();
            let (advantages, _) = batch
                .with_view(|view| run_loss(&mut loss, &view))
                .unwrap()
                .unwrap();
            let teacher = batch.teacher_logprob.as_ref().unwrap();
            for seq in 0..batch.num_sequences() {
                let faulty = batch.flags[seq] & sod_loss_abi::SOD_LOSS_FLAG_INFRA_FAULT != 0;
                for t in batch.seq_offsets[seq] as usize..batch.seq_offsets[seq + 1] as usize {
                    let expected = if batch.mask[t] == 0 || faulty {
                        0.0
                    } else {
                        (0.5 * (f64::from(teacher[t]) - f64::from(batch.old_logprob[t]))) as f32
                    };
                    assert_eq!(advantages[t], expected, "token {t}");
                }
            }
        }
    }

    #[test]
    fn c_zero_needs_no_teacher_and_is_grpo() {
        let loss = configure(&[("c", "0")]).unwrap();
        assert!(!loss.requirements().needs_teacher);
        assert!(configure(&[]).unwrap().requirements().needs_teacher);
        let mut rng = SplitMix64::new(5);
        let batch = random_batch(&mut rng, false);
        let mut loss = loss;
        let (advantages, _) = batch
            .with_view(|view| run_loss(&mut loss, &view))
            .unwrap()
            .unwrap();
        assert!(advantages.iter().all(|a| a.is_finite()));
    }

    #[test]
    fn missing_teacher_is_a_batch_error() {
        let mut rng = SplitMix64::new(6);
        let batch = random_batch(&mut rng, false);
        let mut loss = configure(&[]).unwrap();
        let error = batch
            .with_view(|view| run_loss(&mut loss, &view))
            .unwrap()
            .unwrap_err();
        assert!(error.message.contains("needs teacher log-probs"), "{error}");
    }

    #[test]
    fn unknown_setting_is_rejected() {
        let error = configure(&[("delta", "0.2")]).unwrap_err();
        assert!(error.message.contains("unknown setting 'delta'"), "{error}");
    }
}
