//! The distillation losses' own math and their one loss type: OPD is SOD with every step weight 1,
//! so the `opd` and `sod` plugins are both a [`DistillLoss`], each naming its [`Flavour`].
//!
//! - [`weights`]: the step divergences `d_k` and the SOD step weights `w_k`;
//! - [`config`]: the shared settings ([`DistillConfig`], [`Signal`]) and the requirements they imply;
//! - [`advantages`]: per-token advantages (and divergence weights for the full signal) and the
//!   distillation metrics ([`distill_advantages`], [`DistillStats`]).
//!
//! What every loss shares (steps, dropping rules, order-independent sums, the GRPO term) stays in
//! `sod_loss_abi::math`; the formulas, settings and metrics of each plugin are documented in its crate.

#![warn(missing_docs)]

pub mod advantages;
pub mod config;
pub mod weights;

use std::ffi::CStr;
use std::marker::PhantomData;

use sod_loss_abi::math::take_min_group_size;
use sod_loss_abi::{BatchView, LossImpl, MetricSink, PluginError, Requirements, Settings};

pub use advantages::{DistillStats, REPORTED_STEPS, distill_advantages, distill_compute};
pub use config::{DistillConfig, Signal};
pub use weights::{StepWeighting, WeightReference, sod_weights, step_means};

/// What tells one distillation plugin from the other: its name, its description, and whether its
/// distillation term is step-weighted (SOD) or not (OPD). A unit type per plugin implements it.
pub trait Flavour: Send + 'static {
    /// The plugin's name, e.g. `c"sod"`.
    const NAME: &'static CStr;
    /// The plugin's one-line description.
    const DESCRIPTION: &'static CStr;
    /// Reads `eps`, `delta` and `reference` and weights each step (SOD); without, every weight is 1 (OPD).
    const STEP_WEIGHTED: bool;
}

/// A configured distillation loss of flavour `F`; `sod_loss_abi::export_loss_plugin!` turns it into
/// the plugin. Generic rather than a macro: `export_loss_plugin!` only needs a `LossImpl` type, and
/// `plugin_table` reads `NAME` and `DESCRIPTION` as constants, which `F` supplies.
#[derive(Debug, Clone)]
pub struct DistillLoss<F> {
    config: DistillConfig,
    min_group_size: u32,
    flavour: PhantomData<F>,
}

impl<F: Flavour> LossImpl for DistillLoss<F> {
    const NAME: &'static CStr = F::NAME;
    const DESCRIPTION: &'static CStr = F::DESCRIPTION;

    fn configure(settings: &mut Settings) -> Result<Self, PluginError> {
        Ok(DistillLoss {
            config: DistillConfig::from_settings(settings, F::STEP_WEIGHTED)?,
            min_group_size: take_min_group_size(settings, 1)?,
            flavour: PhantomData,
        })
    }

    fn requirements(&self) -> Requirements {
        self.config.requirements(self.min_group_size)
    }

    fn compute(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        // The ABI calls `compute` only when the requirements ask for no divergence, and then
        // `distill_advantages` writes no divergence weights: the empty slice is never indexed.
        distill_compute(&self.config, batch, advantages, &mut [], metrics)
    }

    fn compute_weighted(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        divergence_weights: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        distill_compute(&self.config, batch, advantages, divergence_weights, metrics)
    }
}
