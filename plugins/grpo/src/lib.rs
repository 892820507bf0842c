//! The `grpo` loss plugin: group-relative outcome advantages.
//!
//! Each sequence's shaped reward (reward plus, optionally, DAPO's overlong penalty) minus the mean
//! of its group, divided by the group's population standard deviation plus `std_eps` (unless
//! `normalize_std` is off), broadcast over the sequence's generated tokens; 0 on prompt, tool
//! output and padding. Sequences flagged as infrastructure faults (and truncated ones with
//! `drop_truncated`) get 0 and are left out of their group's statistics.
//!
//! Settings: `normalize_std` (default true), `std_eps` (default 1e-6), `overlong_max_len` and
//! `overlong_buffer_len` (together enable the overlong penalty), `overlong_factor` (default 1),
//! `drop_truncated` (default false), `min_group_size` (default 2).
//! Metrics: `reward_mean`, `groups`, `zero_variance_groups`, `dropped_sequences`,
//! `overlong_penalty_mean` (with the penalty).

#![warn(missing_docs)]

use sod_loss_abi::math::{
    GrpoConfig, broadcast_over_generated, grpo_advantages, take_min_group_size,
};
use sod_loss_abi::plugin::on_policy;
use sod_loss_abi::{BatchView, LossImpl, MetricSink, PluginError, Requirements, Settings};

/// The configured GRPO loss.
#[derive(Debug, Clone)]
pub struct GrpoLoss {
    config: GrpoConfig,
    min_group_size: u32,
}

impl LossImpl for GrpoLoss {
    const NAME: &'static std::ffi::CStr = c"grpo";
    const DESCRIPTION: &'static std::ffi::CStr =
        c"GRPO: group-normalised outcome reward broadcast over each sequence's generated tokens";

    fn configure(settings: &mut Settings) -> Result<Self, PluginError> {
        Ok(GrpoLoss {
            config: GrpoConfig::from_settings(settings)?,
            min_group_size: take_min_group_size(settings, 2)?,
        })
    }

    fn requirements(&self) -> Requirements {
        on_policy(false, self.min_group_size)
    }

    fn compute(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        let outcome = grpo_advantages(batch, &self.config);
        broadcast_over_generated(batch, advantages, |seq| outcome.advantages[seq] as f32);
        outcome.emit(&self.config, metrics)
    }
}

sod_loss_abi::export_loss_plugin!(GrpoLoss);

#[cfg(test)]
mod tests {
    use super::*;
    use sod_loss_abi::testing::{SplitMix64, random_batch};
    use sod_loss_abi::{Batch, run_loss};

    fn run(pairs: &[(&str, &str)], batch: &Batch) -> (Vec<f32>, Vec<(String, f64)>) {
        let mut settings = Settings::new(pairs.iter().copied()).unwrap();
        let mut loss = GrpoLoss::configure(&mut settings).unwrap();
        settings.finish("grpo").unwrap();
        batch
            .with_view(|view| run_loss(&mut loss, &view))
            .unwrap()
            .unwrap()
    }

    fn two_groups() -> Batch {
        // Sequences: [prompt, gen, gen], [gen, tool, gen], [gen], [gen, gen]; groups 0, 0, 1, 0.
        Batch {
            old_logprob: vec![f32::NAN, -1.0, -1.0, -1.0, f32::NAN, -1.0, -1.0, -1.0, -1.0],
            mask: vec![0, 1, 1, 1, 0, 1, 1, 1, 1],
            seq_offsets: vec![0, 3, 6, 7, 9],
            reward: vec![1.0, 0.0, 5.0, 2.0],
            group: vec![0, 0, 1, 0],
            flags: vec![0; 4],
            ..Batch::default()
        }
    }

    #[test]
    fn advantages_are_group_normalised_and_broadcast_over_generated_tokens() {
        let (advantages, metrics) = run(&[("normalize_std", "false")], &two_groups());
        // Group 0 rewards 1, 0, 2: mean 1. Group 1 has one sample: 0.
        assert_eq!(
            advantages,
            vec![0.0, 0.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0, 1.0]
        );
        assert!(metrics.contains(&("groups".to_string(), 2.0)));
        assert!(metrics.contains(&("zero_variance_groups".to_string(), 1.0)));

        let (normalised, _) = run(&[], &two_groups());
        let std = (2.0f64 / 3.0).sqrt();
        assert_eq!(normalised[3], (-1.0 / (std + 1e-6)) as f32);
        assert_eq!(normalised[7], (1.0 / (std + 1e-6)) as f32);
    }

    #[test]
    fn overlong_penalty_shapes_the_reward() {
        // max 2, buffer 1: sequence lengths 2, 2, 1, 2 generated tokens -> no penalty except
        // beyond max; with max 1 and buffer 1 every 2-token sequence gets -factor.
        let (advantages, metrics) = run(
            &[
                ("normalize_std", "false"),
                ("overlong_max_len", "1"),
                ("overlong_buffer_len", "1"),
                ("overlong_factor", "0.5"),
            ],
            &two_groups(),
        );
        // Group 0 shaped rewards 0.5, -0.5, 1.5: mean 0.5.
        assert_eq!(advantages[1], 0.0);
        assert_eq!(advantages[3], -1.0);
        assert_eq!(advantages[7], 1.0);
        assert!(metrics.contains(&("overlong_penalty_mean".to_string(), -0.5)));
    }

    #[test]
    fn groups_of_one_give_zero_and_no_nan() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..200 {
            let mut batch = random_batch(&mut rng, false);
            batch.group = (0..batch.num_sequences() as u32).map(|g| g * 7).collect();
            for normalize in ["true", "false"] {
                let (advantages, metrics) = run(&[("normalize_std", normalize)], &batch);
                assert!(advantages.iter().all(|&a| a == 0.0), "{advantages:?}");
                assert!(metrics.iter().all(|(_, v)| v.is_finite()));
            }
        }
    }

    #[test]
    fn declares_on_policy_without_teacher() {
        let mut settings = Settings::new([("min_group_size", "8")]).unwrap();
        let loss = GrpoLoss::configure(&mut settings).unwrap();
        let requirements = loss.requirements();
        assert!(!requirements.needs_teacher);
        assert_eq!(requirements.min_group_size, 8);
        assert_eq!(requirements.data, sod_loss_abi::DataSource::OnPolicy);
    }
}
