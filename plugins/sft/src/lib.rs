//! The `sft` loss plugin: supervised fine-tuning on an offline dataset.
//!
//! Advantage 1 on every target token (mask 1), 0 elsewhere. With the behaviour policy equal to
//! the current one, the PPO surrogate's gradient is then the gradient of the target tokens'
//! log-likelihood, token-mean: plain SFT. Sequences flagged as infrastructure faults get 0.
//!
//! Settings: none. Metrics: `target_tokens`, `sequences`, `dropped_sequences`.

#![warn(missing_docs)]

use sod_loss_abi::math::{broadcast_over_generated, generated_lengths, is_dropped};
use sod_loss_abi::{
    BatchView, DataSource, LossImpl, MetricSink, PluginError, Requirements, Settings,
};

/// The SFT loss.
#[derive(Debug, Clone, Default)]
pub struct SftLoss;

impl LossImpl for SftLoss {
    const NAME: &'static std::ffi::CStr = c"sft";
    const DESCRIPTION: &'static std::ffi::CStr =
        c"Supervised fine-tuning: unit advantages on the target tokens of offline data";

    fn configure(_settings: &mut Settings) -> Result<Self, PluginError> {
        Ok(SftLoss)
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            needs_teacher: false,
            data: DataSource::Offline,
            min_group_size: 1,
            divergence: None,
        }
    }

    fn compute(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        let lengths = generated_lengths(batch);
        let mut target_tokens = 0u64;
        let mut dropped = 0u64;
        broadcast_over_generated(batch, advantages, |seq| {
            let keep = !is_dropped(batch.flags[seq], false);
            dropped += u64::from(!keep);
            // A dropped sequence gets 0 everywhere: no target tokens.
            target_tokens += if keep { lengths[seq] } else { 0 };
            if keep { 1.0 } else { 0.0 }
        });
        metrics.emit("target_tokens", target_tokens as f64)?;
        metrics.emit("sequences", batch.num_sequences() as f64)?;
        metrics.emit("dropped_sequences", dropped as f64)
    }
}

sod_loss_abi::export_loss_plugin!(SftLoss);

#[cfg(test)]
mod tests {
    use super::*;
    use sod_loss_abi::testing::{SplitMix64, random_batch};
    use sod_loss_abi::{SOD_LOSS_FLAG_INFRA_FAULT, run_loss};

    #[test]
    fn unit_advantages_exactly_on_target_tokens() {
        let mut rng = SplitMix64::new(8);
        for _ in 0..100 {
            let batch = random_batch(&mut rng, false);
            let (advantages, metrics) = batch
                .with_view(|view| run_loss(&mut SftLoss, &view))
                .unwrap()
                .unwrap();
            let mut targets = 0.0;
            for seq in 0..batch.num_sequences() {
                let faulty = batch.flags[seq] & SOD_LOSS_FLAG_INFRA_FAULT != 0;
                let range = batch.seq_offsets[seq] as usize..batch.seq_offsets[seq + 1] as usize;
                for (&advantage, &mask) in advantages[range.clone()].iter().zip(&batch.mask[range])
                {
                    let expected = if mask == 1 && !faulty { 1.0 } else { 0.0 };
                    targets += expected;
                    assert_eq!(advantage, expected as f32);
                }
            }
            assert_eq!(metrics[0], ("target_tokens".to_string(), targets));
        }
    }

    #[test]
    fn rejects_every_setting_and_wants_offline_data() {
        let mut settings = Settings::new([("c", "1")]).unwrap();
        SftLoss::configure(&mut settings).unwrap();
        let error = settings.finish("sft").unwrap_err();
        assert!(error.message.contains("known settings: none"), "{error}");
        assert_eq!(SftLoss.requirements().data, DataSource::Offline);
    }
}
