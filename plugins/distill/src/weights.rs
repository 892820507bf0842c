//! The step part of SOD: each step's mean divergence `d_k` ([`step_means`]) and the step weights `w_k`
//! computed from them ([`sod_weights`], with the [`StepWeighting`] parameters).

/// Which step each step's divergence is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightReference {
    /// The paper's and the authors' code: `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)`, which
    /// telescopes to `min((d_1 + eps) / (d_k + eps), 1 + delta)`: every step is compared with the first.
    First,
    /// A departure from the authors' code: `w_k = min((d_{k-1} + eps) / (d_k + eps), 1 + delta)`, each step
    /// compared with the one before it.
    Adjacent,
}

/// The SOD step-weight parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepWeighting {
    /// Added to each step divergence before taking ratios.
    pub eps: f64,
    /// Weights are capped at `1 + delta`.
    pub delta: f64,
    /// Which step a step is compared with (default [`WeightReference::First`]).
    pub reference: WeightReference,
}

impl Default for StepWeighting {
    fn default() -> Self {
        StepWeighting {
            eps: 1e-6,
            delta: 0.2,
            reference: WeightReference::First,
        }
    }
}

/// Mean of `values` over the generated tokens of each step of one sequence: `means[k]` for step index `k`.
pub fn step_means(
    values: impl Iterator<Item = f64>,
    mask: &[u8],
    steps: &[u32],
    means: &mut Vec<f64>,
) {
    means.clear();
    let mut counts: Vec<u32> = Vec::new();
    for ((value, &m), &step) in values.zip(mask).zip(steps) {
        if m == 0 {
            continue;
        }
        let step = step as usize;
        if step == means.len() {
            means.push(0.0);
            counts.push(0);
        }
        means[step] += value;
        counts[step] += 1;
    }
    for (d, &count) in means.iter_mut().zip(&counts) {
        *d /= f64::from(count);
    }
}

/// SOD step weights from step divergences: `w_1 = 1` and, with [`WeightReference::First`],
/// `w_k = min(prod_{u<k} (d_u + eps) / (d_{u+1} + eps), 1 + delta)`, the product running over the
/// uncapped ratios; with [`WeightReference::Adjacent`], `w_k = min((d_{k-1} + eps) / (d_k + eps), 1 + delta)`.
pub fn sod_weights(divergences: &[f64], weighting: &StepWeighting, weights: &mut Vec<f64>) {
    weights.clear();
    let cap = 1.0 + weighting.delta;
    let mut product = 1.0f64;
    for (k, &d) in divergences.iter().enumerate() {
        if k == 0 {
            weights.push(1.0);
            continue;
        }
        let ratio = (divergences[k - 1] + weighting.eps) / (d + weighting.eps);
        match weighting.reference {
            WeightReference::First => {
                product *= ratio;
                weights.push(product.min(cap));
            }
            WeightReference::Adjacent => weights.push(ratio.min(cap)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sod_loss_abi::SOD_LOSS_NO_STEP;

    #[test]
    fn sod_weights_match_a_hand_computation() {
        // d = [0.5, 0.25, 1.0, 0.4], eps = 0.
        // w1 = 1; w2 = min(0.5/0.25 = 2, 1.2) = 1.2;
        // w3 = min(0.5/0.25 * 0.25/1.0 = 0.5, 1.2) = 0.5;
        // w4 = min(0.5 * 1.0/0.4 = 1.25, 1.2) = 1.2.
        let mut weights = Vec::new();
        let weighting = StepWeighting {
            eps: 0.0,
            delta: 0.2,
            reference: WeightReference::First,
        };
        sod_weights(&[0.5, 0.25, 1.0, 0.4], &weighting, &mut weights);
        assert_eq!(weights, vec![1.0, 1.2, 0.5, 1.2]);

        // With eps: w2 = (0.3 + 0.1) / (0.7 + 0.1) = 0.5; w3 = 0.5 * (0.7 + 0.1) / (0.1 + 0.1) = 2 -> cap 1.5.
        let weighting = StepWeighting {
            eps: 0.1,
            delta: 0.5,
            reference: WeightReference::First,
        };
        sod_weights(&[0.3, 0.7, 0.1], &weighting, &mut weights);
        let expected = [1.0, 0.5, 1.5];
        for (w, e) in weights.iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{weights:?}");
        }
    }

    #[test]
    fn adjacent_weights_compare_each_step_with_the_one_before() {
        // d = [0.5, 0.25, 1.0, 0.4], eps = 0: w = [1, min(2, 1.2), 0.25, min(2.5, 1.2)].
        let mut weights = Vec::new();
        let weighting = StepWeighting {
            eps: 0.0,
            delta: 0.2,
            reference: WeightReference::Adjacent,
        };
        sod_weights(&[0.5, 0.25, 1.0, 0.4], &weighting, &mut weights);
        assert_eq!(weights, vec![1.0, 1.2, 0.25, 1.2]);
    }

    #[test]
    fn step_divergences_average_absolute_gaps_per_step() {
        let old = [-1.0, -2.0, -9.0, -0.5, -1.5];
        let teacher = [-1.5, -1.0, 0.0, -0.5, -0.5];
        let mask = [1, 1, 0, 1, 1];
        let steps = [0, 0, SOD_LOSS_NO_STEP, 1, 1];
        let mut d = Vec::new();
        let gaps = old
            .iter()
            .zip(&teacher)
            .map(|(&o, &t): (&f64, &f64)| (o - t).abs());
        step_means(gaps, &mask, &steps, &mut d);
        assert_eq!(d, vec![(0.5 + 1.0) / 2.0, (0.0 + 1.0) / 2.0]);
    }
}
