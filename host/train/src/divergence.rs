//! Full-distribution divergences between the student's and the teacher's next-token distributions, on rows of
//! log-probabilities (`[n, V]`, one row per generated position), differentiable in the student's.
//!
//! The kinds are those of the loss ABI ([`DivergenceKind`]): reverse KL `KL(pS || pT)`, forward KL `KL(pT || pS)`
//! and the generalised JSD `beta KL(pT || M) + (1 - beta) KL(pS || M)` with `M = beta pT + (1 - beta) pS`. With
//! `top_k > 0` both distributions are first folded onto the teacher's `k` most likely tokens plus one bucket that
//! holds the rest of each one's mass, so the divergence stays exact as a divergence between two distributions over
//! `k + 1` outcomes (no renormalisation that would drop the tail).
//!
//! Callers feed chunks of rows so that `n * V` stays bounded (see [`rows_per_chunk`]).

use candle_core::{D, DType, Tensor};
use sod_loss_abi::{DivergenceKind, DivergenceSpec};

use crate::error::Result;

/// Most logits (per model) materialised at once by the chunked losses: 4M floats, 16 MiB, per intermediate.
pub const CHUNK_ELEMENTS: usize = 1 << 22;

/// Rows of a `vocab`-wide chunk that fit in `elements` values (at least 1).
pub fn rows_per_chunk(elements: usize, vocab: usize) -> usize {
    (elements / vocab.max(1)).max(1)
}

/// `log_softmax(logits / temperature)` over the last dimension, with a detached max (exact for any shift, and the
/// gradient stays that of the log-softmax).
pub fn tempered_log_softmax(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    let scaled = if temperature == 1.0 {
        logits.clone()
    } else {
        (logits / temperature)?
    };
    let max = scaled.max_keepdim(D::Minus1)?.detach();
    let shifted = scaled.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Per-row divergence `[n]` between student log-probs `student: [n, V]` (may carry a gradient) and teacher
/// log-probs `teacher: [n, V]` (treated as constants).
pub fn divergence(student: &Tensor, teacher: &Tensor, spec: &DivergenceSpec) -> Result<Tensor> {
    let teacher = teacher.detach();
    let (student, teacher) = if spec.top_k > 0 {
        fold_top_k(student, &teacher, spec.top_k as usize)?
    } else {
        (student.clone(), teacher)
    };
    bucket_divergence(&student, &teacher, spec.kind)
}

/// The divergence between two rows of log-probabilities over the same outcomes, differentiable in `ls`.
///
/// The value is computed without a graph; the gradient comes from `sum_v c_v * ls_v` with the exact coefficient
/// `c_v` of each kind held constant: reverse KL `pS (log pS - log pT)`, forward KL `pS - pT`, JSD
/// `(1 - beta) pS (log pS - log M)` (each follows from `sum_v pS_v d log pS_v = 0`). Written this way the
/// gradient is exactly 0 where the two distributions are equal, instead of float noise that Adam would scale up
/// to learning-rate-sized steps.
fn bucket_divergence(ls: &Tensor, lt: &Tensor, kind: DivergenceKind) -> Result<Tensor> {
    let lt = lt.detach();
    let ls_c = ls.detach();
    let ps = ls_c.exp()?;
    let (value, coefficient) = match kind {
        DivergenceKind::ReverseKl => {
            let c = (&ps * (&ls_c - &lt)?)?;
            (c.sum(D::Minus1)?, c)
        }
        DivergenceKind::ForwardKl => {
            let pt = lt.exp()?;
            let value = (&pt * (&lt - &ls_c)?)?.sum(D::Minus1)?;
            (value, (&ps - &pt)?)
        }
        DivergenceKind::Jsd { beta } => {
            // log pS - log M = -log(beta exp(lt - ls) + 1 - beta): exactly 0 where lt == ls. Past a gap of 30
            // the exponential would overflow soon; there it is -(gap + ln beta) to within e^-30.
            let gap = (&lt - &ls_c)?;
            let near =
                (((gap.clamp(-80f32, 30f32)?.exp()? * beta)? + (1.0 - beta))?.log()?).neg()?;
            let far = (&gap + beta.ln())?.neg()?;
            let s_minus_m = gap.gt(30f64)?.where_cond(&far, &near)?;
            let t_minus_m = (&gap + &s_minus_m)?;
            let pt = lt.exp()?;
            let value = (((&pt * &t_minus_m)?.sum(D::Minus1)? * beta)?
                + ((&ps * &s_minus_m)?.sum(D::Minus1)? * (1.0 - beta))?)?;
            (value, ((&ps * &s_minus_m)? * (1.0 - beta))?)
        }
    };
    let surrogate = (coefficient * ls)?.sum(D::Minus1)?;
    Ok((value + (&surrogate - surrogate.detach())?)?)
}

/// Folds both distributions onto the teacher's top `k` tokens of each row plus a tail bucket: `[n, k + 1]`
/// log-probabilities each.
fn fold_top_k(student: &Tensor, teacher: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let (n, vocab) = teacher.dims2()?;
    let k = k.min(vocab);
    // The teacher is a constant: choose its top-k ids on the host (ties to the lower id, so it is deterministic).
    let rows = teacher.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut ids = Vec::with_capacity(n * k);
    let mut order: Vec<u32> = Vec::with_capacity(vocab);
    for row in &rows {
        order.clear();
        order.extend(0..vocab as u32);
        let by_prob =
            |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        if k < vocab {
            order.select_nth_unstable_by(k - 1, by_prob);
        }
        order[..k].sort_unstable_by(by_prob);
        ids.extend_from_slice(&order[..k]);
    }
    let ids = Tensor::from_vec(ids, (n, k), teacher.device())?;
    let fold = |lp: &Tensor| -> Result<Tensor> {
        let top = lp.gather(&ids, D::Minus1)?;
        // The tail's mass, 1 - sum of the top-k probabilities, kept away from 0 so its log stays finite.
        let tail = (top.exp()?.sum_keepdim(D::Minus1)?.neg()? + 1.0)?
            .clamp(1e-30f32, 1.0f32)?
            .log()?;
        Ok(Tensor::cat(&[top, tail], D::Minus1)?)
    };
    Ok((fold(student)?, fold(teacher)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn log_probs(rows: &[&[f64]]) -> Tensor {
        let v = rows[0].len();
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&x| x as f32))
            .collect();
        let logits = Tensor::from_vec(flat, (rows.len(), v), &Device::Cpu).unwrap();
        tempered_log_softmax(&logits, 1.0).unwrap()
    }

    fn probs(logits: &[f64], t: f64) -> Vec<f64> {
        let m = logits.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = logits.iter().map(|x| ((x - m) / t).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }

    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(a, b)| a * (a / b).ln()).sum()
    }

    const S: [f64; 4] = [1.0, 0.5, -1.0, 2.0];
    const T: [f64; 4] = [0.0, 2.0, -0.5, 1.0];

    fn spec(kind: DivergenceKind, top_k: u32) -> DivergenceSpec {
        DivergenceSpec { kind, top_k }
    }

    #[test]
    fn divergences_match_a_direct_computation() {
        let (ps, pt) = (probs(&S, 1.0), probs(&T, 1.0));
        let (ls, lt) = (log_probs(&[&S]), log_probs(&[&T]));
        let value = |kind| {
            divergence(&ls, &lt, &spec(kind, 0))
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0] as f64
        };
        assert!((value(DivergenceKind::ReverseKl) - kl(&ps, &pt)).abs() < 1e-5);
        assert!((value(DivergenceKind::ForwardKl) - kl(&pt, &ps)).abs() < 1e-5);
        let beta = 0.3;
        let m: Vec<f64> = ps
            .iter()
            .zip(&pt)
            .map(|(s, t)| beta * t + (1.0 - beta) * s)
            .collect();
        let jsd = beta * kl(&pt, &m) + (1.0 - beta) * kl(&ps, &m);
        assert!((value(DivergenceKind::Jsd { beta }) - jsd).abs() < 1e-5);
        // Identical distributions: zero, with an exactly zero gradient, for every kind.
        for kind in [
            DivergenceKind::ReverseKl,
            DivergenceKind::ForwardKl,
            DivergenceKind::Jsd { beta },
        ] {
            for top_k in [0, 2] {
                let logits = Var::new(&[S.map(|x| x as f32)], &Device::Cpu).unwrap();
                let lp = tempered_log_softmax(logits.as_tensor(), 0.9).unwrap();
                let d = divergence(&lp, &lp.detach(), &spec(kind, top_k)).unwrap();
                assert!(d.to_vec1::<f32>().unwrap()[0].abs() < 1e-6, "{kind:?}");
                let grads = d.sum_all().unwrap().backward().unwrap();
                let g = grads
                    .get(logits.as_tensor())
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                assert!(
                    g[0].iter().all(|&x| x == 0.0),
                    "{kind:?}, top {top_k}: {g:?}"
                );
            }
        }
    }

    #[test]
    fn top_k_folds_the_rest_into_one_bucket() {
        let (ps, pt) = (probs(&S, 1.0), probs(&T, 1.0));
        // The teacher's top 2 are ids 1 and 3; the tail holds ids 0 and 2.
        let fold = |p: &[f64]| vec![p[1], p[3], p[0] + p[2]];
        let expected = kl(&fold(&ps), &fold(&pt));
        let d = divergence(
            &log_probs(&[&S]),
            &log_probs(&[&T]),
            &spec(DivergenceKind::ReverseKl, 2),
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
        assert!((d - expected).abs() < 1e-5, "{d} vs {expected}");
        // k >= V is the full divergence.
        let full = divergence(
            &log_probs(&[&S]),
            &log_probs(&[&T]),
            &spec(DivergenceKind::ReverseKl, 9),
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
        assert!((full - kl(&ps, &pt)).abs() < 1e-5);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let spec_of = [
            spec(DivergenceKind::ReverseKl, 0),
            spec(DivergenceKind::ForwardKl, 0),
            spec(DivergenceKind::Jsd { beta: 0.3 }, 0),
            spec(DivergenceKind::ReverseKl, 2),
            spec(DivergenceKind::Jsd { beta: 0.6 }, 3),
        ];
        let lt = log_probs(&[&T]);
        for spec in spec_of {
            let at = |z: &[f64]| -> f64 {
                let lp = log_probs(&[z]);
                divergence(&lp, &lt, &spec)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()[0] as f64
            };
            let logits = Var::new(&[S.map(|x| x as f32)], &Device::Cpu).unwrap();
            let lp = tempered_log_softmax(logits.as_tensor(), 1.0).unwrap();
            let grads = divergence(&lp, &lt, &spec)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g = grads
                .get(logits.as_tensor())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for v in 0..4 {
                let h = 1e-2;
                let (mut up, mut down) = (S, S);
                up[v] += h;
                down[v] -= h;
                let numeric = (at(&up) - at(&down)) / (2.0 * h);
                assert!(
                    (g[0][v] as f64 - numeric).abs() < 2e-3,
                    "{spec:?} {v}: {} vs {numeric}",
                    g[0][v]
                );
            }
        }
    }

    #[test]
    fn reverse_kl_gradient_matches_the_closed_form() {
        // d KL(pS || pT) / d z_s = pS * (log pS - log pT - KL) for student logits z_s (temperature 1).
        let logits = Var::new(&[S.map(|x| x as f32)], &Device::Cpu).unwrap();
        let ls = tempered_log_softmax(logits.as_tensor(), 1.0).unwrap();
        let d = divergence(&ls, &log_probs(&[&T]), &spec(DivergenceKind::ReverseKl, 0)).unwrap();
        let grads = d.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(logits.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let (ps, pt) = (probs(&S, 1.0), probs(&T, 1.0));
        let k = kl(&ps, &pt);
        for v in 0..4 {
            let expected = ps[v] * ((ps[v] / pt[v]).ln() - k);
            assert!(
                (g[0][v] as f64 - expected).abs() < 1e-5,
                "{v}: {} vs {expected}",
                g[0][v]
            );
        }
    }

    #[test]
    fn temperature_divides_the_logits() {
        let logits = Tensor::new(&[S.map(|x| x as f32)], &Device::Cpu).unwrap();
        let lp = tempered_log_softmax(&logits, 0.7)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (v, p) in probs(&S, 0.7).iter().enumerate() {
            assert!((lp[0][v] as f64 - p.ln()).abs() < 1e-5);
        }
    }
}
