//! Advantages: the trajectories as the loss plugin's flat batch, and the plugin's per-token answer.

use sod_loss::{Batch, ConfiguredLoss};
use sod_loss_abi::{SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_FLAG_TRUNCATED};

use crate::episode::Episode;
use crate::error::Result;

/// The plugin batch over the response tokens of `episodes`: their old log-probs as both `old_logprob` and
/// `cur_logprob` (the weights have not moved since they were computed), teacher log-probs and the loss's
/// `divergence` aligned with them, the generation mask, per-sequence offsets, rewards, groups and flags. Step
/// indices are left to the plugin (derived from the mask: a step is a run of generated tokens between tool outputs).
pub fn build_batch(episodes: &[Episode]) -> Batch {
    let tokens: usize = episodes.iter().map(|e| e.trajectory.mask.len()).sum();
    let with_teacher = episodes
        .first()
        .is_some_and(|e| e.teacher_logprobs.is_some());
    let with_divergence = episodes.first().is_some_and(|e| e.divergence.is_some());
    let mut batch = Batch {
        old_logprob: Vec::with_capacity(tokens),
        cur_logprob: Some(Vec::with_capacity(tokens)),
        teacher_logprob: with_teacher.then(|| Vec::with_capacity(tokens)),
        mask: Vec::with_capacity(tokens),
        step_index: None,
        seq_offsets: vec![0],
        reward: Vec::with_capacity(episodes.len()),
        group: Vec::with_capacity(episodes.len()),
        flags: Vec::with_capacity(episodes.len()),
        divergence: with_divergence.then(|| Vec::with_capacity(tokens)),
    };
    for episode in episodes {
        let traj = &episode.trajectory;
        // Positions the student did not generate carry 0: the plugin ignores them and 0 keeps dumps readable.
        let masked = |values: &[f32]| -> Vec<f32> {
            values
                .iter()
                .zip(&traj.mask)
                .map(|(&v, &m)| if m == 1 { v } else { 0.0 })
                .collect()
        };
        let old = masked(&episode.old_logprobs);
        if let Some(cur) = &mut batch.cur_logprob {
            cur.extend_from_slice(&old);
        }
        batch.old_logprob.extend(old);
        for (given, out) in [
            (&episode.teacher_logprobs, &mut batch.teacher_logprob),
            (&episode.divergence, &mut batch.divergence),
        ] {
            if let (Some(values), Some(out)) = (given, out) {
                out.extend(masked(values));
            }
        }
        batch.mask.extend_from_slice(&traj.mask);
        let last = *batch.seq_offsets.last().unwrap_or(&0);
        batch.seq_offsets.push(last + traj.mask.len() as u64);
        batch.reward.push(episode.reward);
        batch.group.push(traj.group);
        let mut flags = 0;
        if traj.truncated() {
            flags |= SOD_LOSS_FLAG_TRUNCATED;
        }
        if episode.infra_fault {
            flags |= SOD_LOSS_FLAG_INFRA_FAULT;
        }
        batch.flags.push(flags);
    }
    batch
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
    use crate::episode::Scored;
    use crate::rollout::{Finish, Trajectory};

    fn episode(mask: Vec<u8>, reward: f32, truncated: bool, old: f32, teacher: f32) -> Episode {
        let n = mask.len();
        let trajectory = Trajectory {
            finish: if truncated {
                Finish::TurnTokens
            } else {
                Finish::Answered
            },
            group: 3,
            ..Trajectory::offline("p".into(), vec![1; n + 2], 2, mask)
        };
        Episode {
            teacher_logprobs: Some(vec![teacher; n]),
            ..Episode::new(
                Scored {
                    reward,
                    ..Scored::unscored(trajectory)
                },
                vec![old; n],
            )
        }
    }

    #[test]
    fn flat_arrays_follow_the_episodes() {
        let es = [
            episode(vec![1, 1, 0, 1], 1.0, false, -0.5, -2.0),
            episode(vec![1], 0.0, true, -0.25, -3.0),
        ];
        let b = build_batch(&es);
        assert_eq!(b.seq_offsets, vec![0, 4, 5]);
        assert_eq!(b.mask, vec![1, 1, 0, 1, 1]);
        assert_eq!(b.old_logprob, vec![-0.5, -0.5, 0.0, -0.5, -0.25]);
        assert_eq!(b.cur_logprob.as_deref(), Some(&b.old_logprob[..]));
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
    }
}
