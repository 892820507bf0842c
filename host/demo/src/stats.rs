//! The demo's statistics: Wilson intervals of an accuracy, paired per-problem differences with normal
//! intervals, and their means over seeds with the seeds' variance added.

/// 95% Wilson score interval of a proportion `p` measured on `n` trials.
pub fn wilson_interval(p: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, z) = (n as f64, 1.96f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Mean of the paired per-problem difference `a - b` (each 1, 0 or -1) and its 95% interval (normal
/// approximation with the sample standard deviation of the differences).
#[cfg(test)]
pub fn paired_difference(a: &[bool], b: &[bool]) -> (f64, f64, f64) {
    paired_over_seeds(&[a], &[b])
}

fn sample_variance(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
}

/// `x[s][i]` for seeds `s` and problems `i`: the mean and its 95% half-width, from the problems' variance (of the
/// per-problem means over seeds) plus the seeds' (of the per-seed means).
fn mean_and_half_width(x: &[Vec<f64>]) -> (f64, f64) {
    let seeds = x.len();
    let n = x.iter().map(Vec::len).min().unwrap_or(0);
    if seeds == 0 || n == 0 {
        return (0.0, 1.0);
    }
    let per_problem: Vec<f64> = (0..n)
        .map(|i| x.iter().map(|s| s[i]).sum::<f64>() / seeds as f64)
        .collect();
    let per_seed: Vec<f64> = x
        .iter()
        .map(|s| s[..n].iter().sum::<f64>() / n as f64)
        .collect();
    let mean = per_seed.iter().sum::<f64>() / seeds as f64;
    let variance =
        sample_variance(&per_problem) / n as f64 + sample_variance(&per_seed) / seeds as f64;
    (mean, 1.96 * variance.sqrt())
}

fn as_f64(correct: &[bool]) -> Vec<f64> {
    correct.iter().map(|&c| f64::from(u8::from(c))).collect()
}

/// The accuracy of a row measured on `per_seed` (one answer vector per seed): mean and 95% interval (Wilson's
/// for one seed).
pub fn accuracy_interval(per_seed: &[&[bool]]) -> (f64, f64, f64) {
    let x: Vec<Vec<f64>> = per_seed.iter().map(|c| as_f64(c)).collect();
    let (mean, half) = mean_and_half_width(&x);
    if per_seed.len() == 1 {
        let (lo, hi) = wilson_interval(mean, per_seed[0].len());
        return (mean, lo, hi);
    }
    (mean, (mean - half).max(0.0), (mean + half).min(1.0))
}

/// The paired difference `a - b`, seed by seed (`a[s]` against `b[s]`; a `b` of one vector is paired with every
/// seed of `a`): mean and 95% interval.
pub fn paired_over_seeds(a: &[&[bool]], b: &[&[bool]]) -> (f64, f64, f64) {
    let x: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(s, a)| {
            let b = if b.len() == 1 {
                b[0]
            } else {
                b[s.min(b.len() - 1)]
            };
            a.iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(u8::from(x)) - f64::from(u8::from(y)))
                .collect()
        })
        .collect();
    if x.iter().map(Vec::len).min().unwrap_or(0) < 2 {
        return (0.0, -1.0, 1.0);
    }
    let (mean, half) = mean_and_half_width(&x);
    (mean, mean - half, mean + half)
}
