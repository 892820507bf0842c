//! The math every built-in loss shares: step derivation and the dropping rules ([`steps`]), the
//! order-independent sums below, and the GRPO outcome term with DAPO's overlong penalty ([`grpo`]).
//! The distillation math of OPD and SOD (step divergences, step weights, token advantages) is not here:
//! it lives next to those plugins, in the `sod-loss-distill` crate (plugins/distill).
//!
//! Everything here is deterministic and independent of the order of sequences in a batch:
//! sums over several sequences are taken in sorted order, so a permuted batch gives bit-identical
//! advantages and metrics (permuted the same way).

pub mod grpo;
pub mod steps;

// Flat paths (`math::grpo_advantages`, `math::derive_step_indices`): plugins name the function, not the file.
pub use grpo::*;
pub use steps::*;

/// The sum of `values`, taken in sorted order so that the result does not depend on the order
/// the values came in.
pub fn order_independent_sum(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.iter().sum()
}

/// The mean of `values`, summed in sorted order (see [`order_independent_sum`]); 0 for no values.
pub fn order_independent_mean(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    order_independent_sum(values) / values.len() as f64
}
