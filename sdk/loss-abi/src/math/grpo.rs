//! The GRPO outcome term: group-normalised shaped rewards (with DAPO's soft overlong penalty), its
//! settings (including `min_group_size`) and metrics. GRPO uses it alone; OPD and SOD add it to their
//! distillation term.

use super::order_independent_mean;
use super::steps::{generated_lengths, is_dropped};
use crate::batch::BatchView;
use crate::plugin::{MetricSink, PluginError};
use crate::settings::Settings;

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
pub struct GrpoAdvantages {
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

impl GrpoAdvantages {
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

/// GRPO outcome advantages: each sequence's shaped reward (reward plus overlong penalty) minus
/// its group's mean, divided by the group's population standard deviation plus `std_eps` when
/// `normalize_std` is on. A group of one sample gets exactly 0.
pub fn grpo_advantages(batch: &BatchView<'_>, config: &GrpoConfig) -> GrpoAdvantages {
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
    GrpoAdvantages {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use crate::ffi::SOD_LOSS_FLAG_INFRA_FAULT;

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
