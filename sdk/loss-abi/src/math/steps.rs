//! Steps and generated tokens: deriving step indices from the loss mask, which sequences are dropped,
//! and writing a per-sequence value over a sequence's generated tokens (what GRPO, SFT and the
//! distillation losses without a teacher do).

use crate::batch::BatchView;
use crate::ffi::{SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_FLAG_TRUNCATED, SOD_LOSS_NO_STEP};

/// Derives step indices from a loss mask: within each sequence, every maximal run of mask-1
/// tokens is one step, numbered from 0; mask-0 tokens (prompt, tool output, padding) get
/// [`SOD_LOSS_NO_STEP`]. Leading prompt tokens therefore open no step.
///
/// # Panics
/// If the offsets do not index into `mask` (validate the batch first).
pub fn derive_step_indices(mask: &[u8], seq_offsets: &[u64]) -> Vec<u32> {
    let mut steps = vec![SOD_LOSS_NO_STEP; mask.len()];
    for bounds in seq_offsets.windows(2) {
        let range = bounds[0] as usize..bounds[1] as usize;
        let mut next_step = 0u32;
        let mut in_step = false;
        for (step, &m) in steps[range.clone()].iter_mut().zip(&mask[range]) {
            if m == 1 {
                *step = next_step;
                in_step = true;
            } else if in_step {
                in_step = false;
                next_step += 1;
            }
        }
    }
    steps
}

/// Whether a sequence takes no part in the loss: infrastructure faults always, truncated
/// sequences when `drop_truncated` is set. Such sequences get advantage 0 everywhere and are left
/// out of group statistics.
pub fn is_dropped(flags: u32, drop_truncated: bool) -> bool {
    flags & SOD_LOSS_FLAG_INFRA_FAULT != 0
        || (drop_truncated && flags & SOD_LOSS_FLAG_TRUNCATED != 0)
}

/// Number of generated (mask 1) tokens of each sequence.
pub fn generated_lengths(batch: &BatchView<'_>) -> Vec<u64> {
    batch
        .sequences()
        .map(|range| batch.mask[range].iter().map(|&m| u64::from(m)).sum())
        .collect()
}

/// Writes `value` on the generated (mask 1) tokens of one sequence and 0 on the others (prompt, tool
/// output, padding). `advantages` and `mask` are that sequence's slices.
pub fn fill_generated(advantages: &mut [f32], mask: &[u8], value: f32) {
    for (a, &m) in advantages.iter_mut().zip(mask) {
        *a = if m == 1 { value } else { 0.0 };
    }
}

/// Broadcasts one value per sequence, `value(seq)`, over that sequence's generated tokens (see
/// [`fill_generated`]).
pub fn broadcast_over_generated(
    batch: &BatchView<'_>,
    advantages: &mut [f32],
    mut value: impl FnMut(usize) -> f32,
) {
    for (seq, range) in batch.sequences().enumerate() {
        fill_generated(
            &mut advantages[range.clone()],
            &batch.mask[range],
            value(seq),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_maximal_mask_runs_numbered_from_zero_per_sequence() {
        let mask = [
            0, 0, 1, 1, 0, 1, 0, 0, 1, /* next sequence */ 1, 0, 1, 1,
        ];
        let steps = derive_step_indices(&mask, &[0, 9, 13]);
        let n = SOD_LOSS_NO_STEP;
        assert_eq!(steps, vec![n, n, 0, 0, n, 1, n, n, 2, 0, n, 1, 1]);
    }
}
