//! The settings the `opd` and `sod` plugins share: the distillation coefficient, the signal (sampled
//! token or full distribution), SOD's step weighting, and the GRPO term they add; and the requirements
//! those settings imply.

use sod_loss_abi::math::GrpoConfig;
use sod_loss_abi::plugin::on_policy;
use sod_loss_abi::{DivergenceKind, DivergenceSpec, PluginError, Requirements, Settings};

use crate::weights::{StepWeighting, WeightReference};

/// What the distillation term is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// The paper's: the sampled token's `log pT - log pS_old`, added to the advantage (policy gradient through
    /// the PPO surrogate); `d_k` is the step mean of `|log pS_old - log pT|`.
    Sampled,
    /// A divergence over the whole distribution (or the teacher's top-k) at every generated position,
    /// differentiated directly by the host; the plugin weights it per token (`c * w_k`), and `d_k` is the step
    /// mean of the same divergence.
    Full(DivergenceSpec),
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
    /// Sampled-token or full-distribution distillation.
    pub signal: Signal,
}

impl DistillConfig {
    /// Reads `c` (default 1), `grpo_weight` (default 1), `signal` (`sampled`, the default, or `full`; with
    /// `full` also `divergence` = `reverse_kl` (default) | `forward_kl` | `jsd`, `beta` (JSD, default 0.5, in
    /// (0, 1)) and `top_k` (default 0: the whole vocabulary)) and the GRPO settings; with `step_weighted`
    /// (SOD) also `eps` (default 1e-6, > 0), `delta` (default 0.2, >= 0) and `reference` (`first`, the
    /// default, or `adjacent`).
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
                reference: match settings.take_choice("reference", &["first", "adjacent"])? {
                    "adjacent" => WeightReference::Adjacent,
                    _ => WeightReference::First,
                },
            })
        } else {
            None
        };
        let signal = match settings.take_choice("signal", &["sampled", "full"])? {
            "full" => {
                let kind = match settings
                    .take_choice("divergence", &["reverse_kl", "forward_kl", "jsd"])?
                {
                    "forward_kl" => DivergenceKind::ForwardKl,
                    "jsd" => {
                        let beta = settings.take_f64("beta", 0.5)?;
                        if !(beta > 0.0 && beta < 1.0) {
                            return Err(PluginError::config(format!(
                                "setting 'beta' = {beta} must be in (0, 1) (beta 0 and 1 are forward_kl and reverse_kl)"
                            )));
                        }
                        DivergenceKind::Jsd { beta }
                    }
                    _ => DivergenceKind::ReverseKl,
                };
                let top_k = settings.take_u64("top_k")?.unwrap_or(0);
                let top_k = u32::try_from(top_k).map_err(|_| {
                    PluginError::config(format!("setting 'top_k' = {top_k} is too large"))
                })?;
                Signal::Full(DivergenceSpec { kind, top_k })
            }
            _ => Signal::Sampled,
        };
        let grpo = GrpoConfig::from_settings(settings)?;
        Ok(DistillConfig {
            c,
            grpo_weight,
            grpo,
            step_weighting,
            signal,
        })
    }

    /// Whether the loss reads teacher log-probs: only when the distillation term is on.
    pub fn needs_teacher(&self) -> bool {
        self.c != 0.0
    }

    /// The divergence the host must compute: the full-distribution one, when the distillation term is on.
    pub fn divergence(&self) -> Option<DivergenceSpec> {
        match self.signal {
            Signal::Full(spec) if self.needs_teacher() => Some(spec),
            _ => None,
        }
    }

    /// The requirements of an on-policy distillation loss with these settings.
    pub fn requirements(&self, min_group_size: u32) -> Requirements {
        Requirements {
            divergence: self.divergence(),
            ..on_policy(self.needs_teacher(), min_group_size)
        }
    }
}
