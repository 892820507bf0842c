//! The hand-offs of one training step, each its own type, so that no stage edits what an earlier one produced:
//!
//! ```text
//! rollout ──> Trajectory  tokens, mask, behaviour log-probs, turns, tool calls, how it ended (crate::rollout)
//! reward  ──> Scored      + the outcome reward, and whether the scorer itself failed      (crate::reward)
//! teacher ──> Episode     + per-token old, teacher log-probs and divergence, one Vec each (crate::teacher)
//!         ──> the loss plugin's flat batch (crate::advantage) and the update (crate::update)
//! ```
//!
//! A trajectory flagged with an infrastructure fault (a tool call's, or the scorer's) stays in the batch, with its
//! flag, so that metrics count it; the loss plugin gives it no advantage and the update leaves it out.

use candle_core::Tensor;

use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;
use crate::teacher::Scores;

/// A trajectory with its outcome reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// What the rollout produced.
    pub trajectory: Trajectory,
    /// The outcome reward (0 for a trajectory that was not scored: truncated, or faulted).
    pub reward: f32,
    /// The scorer failed in the sandbox (the code judge did not finish): not the model's doing.
    pub scorer_fault: bool,
}

impl AsRef<Trajectory> for Scored {
    fn as_ref(&self) -> &Trajectory {
        &self.trajectory
    }
}

impl Scored {
    /// A trajectory that was not scored (reward 0): offline data, benchmarks.
    pub fn unscored(trajectory: Trajectory) -> Self {
        Scored {
            trajectory,
            reward: 0.0,
            scorer_fault: false,
        }
    }

    /// A tool call or the scorer hit a sandbox failure: the loss drops the trajectory.
    pub fn infra_fault(&self) -> bool {
        self.trajectory.infra_fault || self.scorer_fault
    }
}

/// A scored trajectory with the per-token numbers the loss plugin and the update read, each one value per
/// response token (0 where the student did not generate the token).
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The trajectory, as rolled out.
    pub trajectory: Trajectory,
    /// Its outcome reward.
    pub reward: f32,
    /// A tool call or the scorer hit a sandbox failure ([`Scored::infra_fault`]).
    pub infra_fault: bool,
    /// The trained model's log-probs before the update: PPO's "old" log-probs and the plugin's current ones.
    /// They are recomputed with a full forward pass, as verl does, not the sampler's: the sampler took the same
    /// distribution through the KV cache, which differs from a full forward by float noise, and a noise-sized
    /// gap would reach the update as a signal (Adam scales any gradient to lr-sized steps).
    pub old_logprobs: Vec<f32>,
    /// The teacher's log-probs of the same tokens; `None` without a teacher.
    pub teacher_logprobs: Option<Vec<f32>>,
    /// The loss's full-distribution divergence at each token; `None` for a sampled-token loss.
    pub divergence: Option<Vec<f32>>,
}

impl AsRef<Trajectory> for Episode {
    fn as_ref(&self) -> &Trajectory {
        &self.trajectory
    }
}

impl Episode {
    /// An episode of `scored` with `old_logprobs` and no teacher: benchmarks and tests of the update.
    pub fn new(scored: Scored, old_logprobs: Vec<f32>) -> Self {
        Episode {
            infra_fault: scored.infra_fault(),
            reward: scored.reward,
            trajectory: scored.trajectory,
            old_logprobs,
            teacher_logprobs: None,
            divergence: None,
        }
    }

    /// Unscored episodes of `trajectories` whose old log-probs are the sampler's (behaviour) ones: benchmarks and
    /// tests of the update that need no recomputation.
    pub fn with_behaviour_logprobs(trajectories: &[Trajectory]) -> Vec<Episode> {
        trajectories
            .iter()
            .map(|t| Episode::new(Scored::unscored(t.clone()), t.behaviour_logprobs.clone()))
            .collect()
    }

    /// Number of tokens the student generated.
    pub fn generated_tokens(&self) -> usize {
        self.trajectory.generated_tokens()
    }

    /// The mean over generated tokens of `value(episode, j)`, over `episodes` (0 without any).
    pub fn generated_mean(episodes: &[Episode], value: impl Fn(&Episode, usize) -> f32) -> f64 {
        let (mut sum, mut count) = (0f64, 0usize);
        for e in episodes {
            for (j, &m) in e.trajectory.mask.iter().enumerate() {
                if m == 1 {
                    sum += f64::from(value(e, j));
                    count += 1;
                }
            }
        }
        if count == 0 { 0.0 } else { sum / count as f64 }
    }
}

impl Scores {
    /// The episodes of `scored` (in order) with these scores, and the teacher's hidden rows kept for the
    /// update's divergence term. Every per-token vector must have one value per response token.
    pub fn into_episodes(self, scored: Vec<Scored>) -> Result<(Vec<Episode>, Option<Tensor>)> {
        let n = scored.len();
        let count = |what: &str, len: usize| -> Result<()> {
            if len != n {
                return Err(TrainError::Config(format!(
                    "{what} log-probs of {len} trajectories for {n} trajectories"
                )));
            }
            Ok(())
        };
        count("current", self.current.len())?;
        let mut teacher = self.teacher.map(|t| t.into_iter());
        let mut divergence = self.divergence.map(|d| d.into_iter());
        let mut episodes = Vec::with_capacity(n);
        for (i, (scored, old)) in scored.into_iter().zip(self.current).enumerate() {
            let tokens = scored.trajectory.mask.len();
            let aligned = |values: Vec<f32>, what: &str| -> Result<Vec<f32>> {
                if values.len() != tokens {
                    return Err(TrainError::Config(format!(
                        "{what} log-probs of trajectory {i} have {} values for {tokens} response tokens",
                        values.len()
                    )));
                }
                Ok(values)
            };
            if scored.trajectory.behaviour_logprobs.len() != tokens {
                return Err(TrainError::Config(format!(
                    "trajectory {i} has {} behaviour log-probs for {tokens} response tokens",
                    scored.trajectory.behaviour_logprobs.len()
                )));
            }
            let mut episode = Episode::new(scored, aligned(old, "current")?);
            if let Some(all) = &mut teacher {
                let values = all.next().ok_or_else(|| missing("teacher", i))?;
                episode.teacher_logprobs = Some(aligned(values, "teacher")?);
            }
            if let Some(all) = &mut divergence {
                let values = all.next().ok_or_else(|| missing("divergence", i))?;
                episode.divergence = Some(aligned(values, "divergence")?);
            }
            episodes.push(episode);
        }
        Ok((episodes, self.teacher_rows))
    }
}

fn missing(what: &str, i: usize) -> TrainError {
    TrainError::Config(format!("no {what} log-probs for trajectory {i}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Finish;

    pub(crate) fn trajectory(mask: Vec<u8>, truncated: bool) -> Trajectory {
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
                Finish::TurnTokens
            } else {
                Finish::Answered
            },
            infra_fault: false,
        }
    }

    fn scores(current: Vec<Vec<f32>>, teacher: Option<Vec<Vec<f32>>>) -> Scores {
        Scores {
            current,
            teacher,
            divergence: None,
            teacher_rows: None,
        }
    }

    #[test]
    fn episodes_take_each_trajectorys_scores_and_refuse_misaligned_ones() {
        let scored = vec![
            Scored {
                reward: 1.0,
                ..Scored::unscored(trajectory(vec![1, 1, 0, 1], false))
            },
            Scored {
                scorer_fault: true,
                ..Scored::unscored(trajectory(vec![1], true))
            },
        ];
        let (episodes, rows) = scores(
            vec![vec![-0.5; 4], vec![-0.25]],
            Some(vec![vec![-2.0; 4], vec![-3.0]]),
        )
        .into_episodes(scored.clone())
        .unwrap();
        assert!(rows.is_none());
        assert_eq!(episodes[0].old_logprobs, vec![-0.5; 4]);
        assert_eq!(episodes[1].teacher_logprobs, Some(vec![-3.0]));
        assert_eq!((episodes[0].reward, episodes[1].reward), (1.0, 0.0));
        assert_eq!(
            (episodes[0].infra_fault, episodes[1].infra_fault),
            (false, true)
        );
        let gap = Episode::generated_mean(&episodes, |e, j| {
            e.old_logprobs[j] - e.teacher_logprobs.as_ref().unwrap()[j]
        });
        assert!((gap - (3.0 * 1.5 + 2.75) / 4.0).abs() < 1e-9, "{gap}");
        // One value short, one trajectory short: errors naming what is off.
        let short = scores(vec![vec![0.0; 3], vec![0.0]], None).into_episodes(scored.clone());
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("current log-probs of trajectory 0")
        );
        let fewer = scores(vec![vec![0.0; 4]], None).into_episodes(scored.clone());
        assert!(fewer.is_err());
        let teacher_short = scores(vec![vec![0.0; 4], vec![0.0]], Some(vec![vec![0.0; 4]]));
        assert!(teacher_short.into_episodes(scored).is_err());
    }
}
