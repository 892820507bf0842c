//! The policy update: PPO's clipped surrogate over micro-batches with exact gradient accumulation, global
//! gradient-norm clipping, and AdamW with linear warm-up.
//!
//! The loss of a batch is the token mean, over every generated token of the batch, of
//! `-min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A)` with `r = exp(logp_new - logp_old)`. Each micro-batch
//! contributes the sum of its tokens' terms divided by the token count of the whole batch, so the accumulated
//! gradient equals the one-batch gradient up to float rounding, whatever the micro-batch size.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;
use crate::teacher::right_padded;

/// PPO clipping range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoClip {
    /// Clip below 1 (`1 - low`).
    pub low: f64,
    /// Clip above 1 (`1 + high`).
    pub high: f64,
}

/// What one batch's forward/backward passes measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurrogateStats {
    /// Value of the loss (token mean of the clipped surrogate, negated).
    pub loss: f64,
    /// Fraction of generated tokens whose term was clipped (the gradient through them is zero).
    pub clip_fraction: f64,
    /// Mean of `logp_old - logp_new` over generated tokens: how far the policy moved from the behaviour policy.
    pub approx_kl: f64,
    /// Generated tokens that entered the loss.
    pub tokens: usize,
}

/// Computes the PPO loss of `trajectories` with `model`'s current weights, `micro_batch` trajectories per pass,
/// and returns the accumulated gradient of each variable of `params` (in its order) with statistics. Trajectories
/// flagged with an infrastructure fault are left out.
pub fn ppo_gradients(
    model: &sod_model::Qwen3,
    params: &Params,
    trajectories: &[Trajectory],
    advantages: &[Vec<f32>],
    clip: PpoClip,
    micro_batch: usize,
) -> Result<(Vec<Tensor>, SurrogateStats)> {
    let used: Vec<usize> = (0..trajectories.len())
        .filter(|&i| !trajectories[i].infra_fault)
        .collect();
    let total_tokens: usize = used
        .iter()
        .map(|&i| trajectories[i].generated_tokens())
        .sum();
    let mut grads: Vec<Tensor> = params
        .vars
        .iter()
        .map(|v| v.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let mut stats = SurrogateStats {
        loss: 0.0,
        clip_fraction: 0.0,
        approx_kl: 0.0,
        tokens: total_tokens,
    };
    if total_tokens == 0 {
        return Ok((grads, stats));
    }
    let device = model.device().clone();
    let (mut clipped, mut kl_sum) = (0usize, 0f64);
    for chunk_ids in used.chunks(micro_batch.max(1)) {
        let chunk: Vec<Trajectory> = chunk_ids.iter().map(|&i| trajectories[i].clone()).collect();
        let (ids, mask, len) = right_padded(&chunk, &device)?;
        let b = chunk.len();
        // Per next-token position (len - 1 of them): old log-prob, advantage and the token's weight in the mean.
        let (mut old, mut adv, mut weight) = (
            vec![0f32; b * (len - 1)],
            vec![0f32; b * (len - 1)],
            vec![0f32; b * (len - 1)],
        );
        for (row, (&i, traj)) in chunk_ids.iter().zip(&chunk).enumerate() {
            for (j, &m) in traj.mask.iter().enumerate() {
                if m == 1 {
                    let at = row * (len - 1) + traj.prompt_len + j - 1;
                    old[at] = traj.behaviour_logprobs[j];
                    adv[at] = advantages[i][j];
                    weight[at] = 1.0 / total_tokens as f32;
                }
            }
        }
        let shape = (b, len - 1);
        let old = Tensor::from_vec(old, shape, &device)?;
        let adv = Tensor::from_vec(adv, shape, &device)?;
        let weight = Tensor::from_vec(weight, shape, &device)?;
        let new = model.next_token_logprobs(&ids, Some(&mask))?;
        let ratio = (&new - &old)?.exp()?;
        let unclipped = (&ratio * &adv)?;
        let clipped_ratio = ratio.clamp(1.0 - clip.low as f32, 1.0 + clip.high as f32)?;
        let clipped_term = (&clipped_ratio * &adv)?;
        let per_token = unclipped.minimum(&clipped_term)?.neg()?;
        let loss = (&per_token * &weight)?.sum_all()?;
        let store = loss.backward()?;
        for (acc, var) in grads.iter_mut().zip(&params.vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                *acc = (&*acc + g)?;
            }
        }
        stats.loss += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        // Host-side statistics over generated tokens.
        let (ratio, new, old, adv, weight) = (
            ratio.flatten_all()?.to_vec1::<f32>()?,
            new.flatten_all()?.to_vec1::<f32>()?,
            old.flatten_all()?.to_vec1::<f32>()?,
            adv.flatten_all()?.to_vec1::<f32>()?,
            weight.flatten_all()?.to_vec1::<f32>()?,
        );
        for k in 0..ratio.len() {
            if weight[k] == 0.0 {
                continue;
            }
            let r = f64::from(ratio[k]);
            let a = adv[k];
            if (a > 0.0 && r > 1.0 + clip.high) || (a < 0.0 && r < 1.0 - clip.low) {
                clipped += 1;
            }
            kl_sum += f64::from(old[k] - new[k]);
        }
    }
    stats.clip_fraction = clipped as f64 / total_tokens as f64;
    stats.approx_kl = kl_sum / total_tokens as f64;
    Ok((grads, stats))
}

/// The trainable variables of a model in a fixed order (sorted by name), so that optimiser state, gradient norms
/// and checkpoints never depend on hash-map order.
pub struct Params {
    /// Hugging Face names, sorted.
    pub names: Vec<String>,
    /// The variables, in the order of `names`.
    pub vars: Vec<Var>,
}

impl Params {
    /// The variables of `varmap`, sorted by name.
    pub fn from_varmap(varmap: &VarMap) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("the VarMap's lock is poisoned".into()))?;
        let mut entries: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, vars) = entries.into_iter().unzip();
        Ok(Params { names, vars })
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sum = 0f64;
    for g in grads {
        sum += f64::from(
            g.sqr()?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?,
        );
    }
    Ok(sum.sqrt())
}

/// Scales gradients so that their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = g.affine(scale, 0.0)?;
        }
    }
    Ok(norm)
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the second-moment root.
    pub eps: f64,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f64,
}

/// AdamW with decoupled weight decay and bias correction, moments in f32 (as the variables). Its whole state
/// (moments and step count) can be saved and restored for bit-identical resumption.
pub struct AdamW {
    config: AdamWConfig,
    /// First moments, one per variable of [`Params`].
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
    /// Updates applied so far.
    pub t: u64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(config: AdamWConfig, params: &Params) -> Result<Self> {
        let zeros = |v: &Var| v.zeros_like();
        Ok(AdamW {
            config,
            m: params
                .vars
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            v: params
                .vars
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            t: 0,
        })
    }

    /// Applies one update with learning rate `lr`.
    pub fn step(&mut self, params: &Params, grads: &[Tensor], lr: f64) -> Result<()> {
        let c = self.config;
        self.t += 1;
        let t = self.t as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (k, (var, g)) in params.vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[k] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[k] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&m / bias1)?;
            let v_hat = (&v / bias2)?;
            let step = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (step * lr)?)?)?;
            self.m[k] = m;
            self.v[k] = v;
        }
        Ok(())
    }

    /// Replaces the moments and step count (from a checkpoint); shapes must match the variables.
    pub fn restore(
        &mut self,
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        t: u64,
        params: &Params,
    ) -> Result<()> {
        for (k, var) in params.vars.iter().enumerate() {
            for (which, moments) in [("m", &m), ("v", &v)] {
                let found = moments.get(k).map(|x| x.dims().to_vec());
                if found.as_deref() != Some(var.dims()) {
                    return Err(TrainError::Resume(format!(
                        "optimizer moment {which} of {} has shape {found:?}, the variable {:?}",
                        params.names[k],
                        var.dims()
                    )));
                }
            }
        }
        self.m = m;
        self.v = v;
        self.t = t;
        Ok(())
    }
}

/// The learning rate of optimiser step `step` (0-based): linear warm-up over `warmup_steps` steps to `peak`, then
/// constant.
pub fn learning_rate(peak: f64, warmup_steps: u64, step: u64) -> f64 {
    if warmup_steps == 0 || step >= warmup_steps {
        peak
    } else {
        peak * (step + 1) as f64 / warmup_steps as f64
    }
}

/// `Device::Cpu` for "cpu"; "cuda" (or "cuda:N") when built with the `cuda` feature.
pub fn device_by_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => cuda_device(cuda),
        other => Err(TrainError::Device(format!(
            "unknown device {other:?}; use cpu, cuda or cuda:N"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(name: &str) -> Result<Device> {
    let ordinal = match name.strip_prefix("cuda:") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| TrainError::Device(format!("{name:?}: the GPU index must be a number")))?,
        None => 0,
    };
    Device::new_cuda(ordinal).map_err(|e| TrainError::Device(format!("cannot open {name}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(name: &str) -> Result<Device> {
    Err(TrainError::Device(format!(
        "{name} needs a build with the `cuda` feature (cargo build -p sod --features cuda)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_then_flat() {
        assert_eq!(learning_rate(1.0, 0, 0), 1.0);
        assert_eq!(learning_rate(1.0, 4, 0), 0.25);
        assert_eq!(learning_rate(1.0, 4, 3), 1.0);
        assert_eq!(learning_rate(1.0, 4, 10), 1.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![
            Tensor::new(&[3f32, 0.0], &Device::Cpu).unwrap(),
            Tensor::new(&[4f32], &Device::Cpu).unwrap(),
        ];
        let before = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((grad_norm(&g).unwrap() - 1.0).abs() < 1e-5);
        // Below the threshold nothing changes.
        let mut small = vec![Tensor::new(&[0.3f32], &Device::Cpu).unwrap()];
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].to_vec1::<f32>().unwrap(), vec![0.3]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let var = Var::new(&[1f32, -1.0], &Device::Cpu).unwrap();
        let params = Params {
            names: vec!["w".into()],
            vars: vec![var.clone()],
        };
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(config, &params).unwrap();
        let g = Tensor::new(&[2f32, -0.5], &Device::Cpu).unwrap();
        opt.step(&params, &[g], 0.01).unwrap();
        let w = var.as_tensor().to_vec1::<f32>().unwrap();
        // Bias-corrected first step: m_hat / sqrt(v_hat) = sign(g); decay multiplies by 1 - lr * wd.
        assert!((w[0] - (1.0 * 0.999 - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-(1.0 * 0.999) + 0.01)).abs() < 1e-6, "{w:?}");
        assert_eq!(opt.t, 1);
    }

    #[test]
    fn unknown_devices_are_refused() {
        assert!(device_by_name("tpu").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(
            device_by_name("cuda")
                .unwrap_err()
                .to_string()
                .contains("cuda` feature")
        );
    }
}
