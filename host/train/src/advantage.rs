//! Advantages: the trajectories as the loss plugin's flat batch, and the plugin's per-token answer.

use sod_loss::{Batch, ConfiguredLoss};
use sod_loss_abi::{SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_FLAG_TRUNCATED};

use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;

/// Builds the plugin batch over the response tokens of `trajectories`: behaviour log-probs as `old_logprob`,
/// `current` (detached current-policy log-probs), `teacher` log-probs and the loss's `divergence` aligned with them, the generation mask,
/// per-sequence offsets, rewards, groups and flags. Step indices are left to the plugin (derived from the mask:
/// a step is a run of generated tokens between tool outputs).
pub fn build_batch(
    trajectories: &[Trajectory],
    current: &[Vec<f32>],
    teacher: Option<&[Vec<f32>]>,
    divergence: Option<&[Vec<f32>]>,
) -> Result<Batch> {
    let tokens: usize = trajectories.iter().map(|t| t.mask.len()).sum();
    let mut batch = Batch {
        old_logprob: Vec::with_capacity(tokens),
        cur_logprob: Some(Vec::with_capacity(tokens)),
        teacher_logprob: teacher.map(|_| Vec::with_capacity(tokens)),
        mask: Vec::with_capacity(tokens),
        step_index: None,
        seq_offsets: vec![0],
        reward: Vec::with_capacity(trajectories.len()),
        group: Vec::with_capacity(trajectories.len()),
        flags: Vec::with_capacity(trajectories.len()),
        divergence: divergence.map(|_| Vec::with_capacity(tokens)),
    };
    for (i, traj) in trajectories.iter().enumerate() {
        let n = traj.mask.len();
        let aligned = |values: &[f32], what: &str| -> Result<()> {
            if values.len() != n {
                return Err(TrainError::Config(format!(
                    "{what} log-probs of trajectory {i} have {} values for {n} response tokens",
                    values.len()
                )));
            }
            Ok(())
        };
        aligned(&traj.behaviour_logprobs, "behaviour")?;
        aligned(&current[i], "current")?;
        // Positions the student did not generate carry 0: the plugin ignores them and 0 keeps dumps readable.
        let masked = |values: &[f32]| -> Vec<f32> {
            values
                .iter()
                .zip(&traj.mask)
                .map(|(&v, &m)| if m == 1 { v } else { 0.0 })
                .collect()
        };
        batch.old_logprob.extend(masked(&traj.behaviour_logprobs));
        if let Some(cur) = &mut batch.cur_logprob {
            cur.extend(masked(&current[i]));
        }
        for (given, out, what) in [
            (teacher, &mut batch.teacher_logprob, "teacher"),
            (divergence, &mut batch.divergence, "divergence"),
        ] {
            if let (Some(all), Some(out)) = (given, out) {
                aligned(&all[i], what)?;
                out.extend(masked(&all[i]));
            }
        }
        batch.mask.extend_from_slice(&traj.mask);
        let last = *batch.seq_offsets.last().unwrap_or(&0);
        batch.seq_offsets.push(last + n as u64);
        batch.reward.push(traj.reward);
        batch.group.push(traj.group);
        let mut flags = 0;
        if traj.truncated() {
            flags |= SOD_LOSS_FLAG_TRUNCATED;
        }
        if traj.infra_fault {
            flags |= SOD_LOSS_FLAG_INFRA_FAULT;
        }
        batch.flags.push(flags);
    }
    Ok(batch)
}

/// Per-token advantages (one per response token, in trajectory order) and the plugin's metrics.
#[derive(Debug, Clone)]
pub struct Advantages {
    /// Advantage per response token, split per trajectory.
    pub per_trajectory: Vec<Vec<f32>>,
    /// Weight of the divergence term per response token, split per trajectory (all 0 for a loss without one).
    pub divergence_weights: Vec<Vec<f32>>,
    /// The plugin's named metrics, in the order it emitted them.
    pub metrics: Vec<(String, f64)>,
}

/// Runs the loss plugin on the batch and splits its advantages back per trajectory.
pub fn compute_advantages(loss: &mut ConfiguredLoss, batch: &Batch) -> Result<Advantages> {
    let output = loss.compute(batch)?;
    let split = |values: &[f32]| -> Vec<Vec<f32>> {
        batch
            .seq_offsets
            .windows(2)
            .map(|w| values[w[0] as usize..w[1] as usize].to_vec())
            .collect()
    };
    Ok(Advantages {
        per_trajectory: split(&output.advantages),
        divergence_weights: split(&output.divergence_weights),
        metrics: output.metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traj(mask: Vec<u8>, reward: f32, truncated: bool) -> Trajectory {
        let n = mask.len();
        Trajectory {
            prompt_id: "p".into(),
            sample_index: 0,
            group: 3,
            tokens: vec![1; n + 2],
            prompt_len: 2,
            mask,
            behaviour_logprobs: vec![-1.0; n],
            final_text: String::new(),
            turns: 1,
            tool_calls: 0,
            valid_tool_calls: 0,
            finish: if truncated {
                crate::rollout::Finish::TurnTokens
            } else {
                crate::rollout::Finish::Answered
            },
            infra_fault: false,
            reward,
        }
    }

    #[test]
    fn flat_arrays_follow_the_trajectories() {
        let ts = [traj(vec![1, 1, 0, 1], 1.0, false), traj(vec![1], 0.0, true)];
        let current = vec![vec![-0.5; 4], vec![-0.25]];
        let teacher = vec![vec![-2.0; 4], vec![-3.0]];
        let b = build_batch(&ts, &current, Some(&teacher), None).unwrap();
        assert_eq!(b.seq_offsets, vec![0, 4, 5]);
        assert_eq!(b.mask, vec![1, 1, 0, 1, 1]);
        assert_eq!(b.old_logprob, vec![-1.0, -1.0, 0.0, -1.0, -1.0]);
        assert_eq!(
            b.teacher_logprob.as_deref(),
            Some(&[-2.0, -2.0, 0.0, -2.0, -3.0][..])
        );
        assert_eq!(b.flags, vec![0, SOD_LOSS_FLAG_TRUNCATED]);
        assert_eq!(
            (b.reward.clone(), b.group.clone()),
            (vec![1.0, 0.0], vec![3, 3])
        );
        b.with_view(|_| ()).unwrap();
        assert!(build_batch(&ts, &[vec![0.0; 3], vec![0.0]], None, None).is_err());
    }
}
