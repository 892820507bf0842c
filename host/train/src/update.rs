//! The policy update: PPO's clipped surrogate, plus a loss's full-distribution divergence term, over micro-batches
//! with exact gradient accumulation; global gradient-norm clipping; AdamW with linear warm-up.
//!
//! The loss of a batch is the token mean, over every generated token of the batch, of
//! `-min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A) + w * D` with `r = exp(logp_new - logp_old)`, `A` the
//! plugin's advantage, `w` its divergence weight and `D` the divergence between the student's and the teacher's
//! next-token distributions (0 for a loss that asks for none). Log-probs are those of `softmax(logits / T)` at the
//! rollout temperature `T`, the distribution the tokens were drawn from. Each micro-batch contributes the sum of
//! its tokens' terms divided by the token count of the whole batch, so the accumulated gradient equals the
//! one-batch gradient up to float rounding, whatever the micro-batch size.
//!
//! Memory stays bounded at any vocabulary: the trunk runs once per micro-batch, its hidden states at the generated
//! positions are cut from the graph, and the output head, the log-softmax and the divergence run on chunks of
//! [`CHUNK_ELEMENTS`] logits, each differentiated at once; the chunks' gradients with respect to the hidden
//! states are then pushed through the trunk in one backward pass.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use sod_loss_abi::DivergenceSpec;
use sod_model::Checkpoint;

use crate::divergence::{CHUNK_ELEMENTS, divergence, rows_per_chunk, tempered_log_softmax};
use crate::episode::Episode;
use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;
use crate::teacher::{GeneratedRows, generated_hidden, pick, right_padded};

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
    /// Value of the loss (token mean of the clipped surrogate, negated, plus the weighted divergence).
    pub loss: f64,
    /// Fraction of generated tokens whose term was clipped (the gradient through them is zero).
    pub clip_fraction: f64,
    /// Mean of `logp_old - logp_new` over generated tokens: how far the policy moved from the behaviour policy.
    pub approx_kl: f64,
    /// Generated tokens that entered the loss.
    pub tokens: usize,
    /// Token mean of the weighted divergence term (0 without one).
    pub divergence_term: f64,
}

/// A loss's full-distribution term: what the update needs to differentiate `w * D`.
#[derive(Clone, Copy)]
pub struct DivergenceTerm<'a> {
    /// Which divergence.
    pub spec: DivergenceSpec,
    /// The plugin's weight of each response token, per trajectory.
    pub weights: &'a [Vec<f32>],
    /// The teacher (for its output head).
    pub teacher: &'a sod_model::Qwen3,
    /// The teacher's final hidden states at the generated positions of the batch ([`GeneratedRows`] order), from
    /// [`crate::teacher::score`].
    pub teacher_rows: &'a Tensor,
    /// Temperature of both distributions of the divergence.
    pub temperature: f64,
}

/// Everything one update differentiates.
#[derive(Clone, Copy)]
pub struct UpdateBatch<'a> {
    /// The batch's episodes (those flagged with an infrastructure fault are left out).
    pub episodes: &'a [Episode],
    /// The plugin's advantage of each response token, per trajectory.
    pub advantages: &'a [Vec<f32>],
    /// The divergence term, if the loss asked for one.
    pub divergence: Option<DivergenceTerm<'a>>,
    /// The rollout temperature.
    pub temperature: f64,
    /// PPO's clip range.
    pub clip: PpoClip,
    /// Trajectories per forward/backward pass.
    pub micro_batch: usize,
    /// Logits materialised at once by the head's chunks (per model): [`CHUNK_ELEMENTS`] unless a benchmark says.
    pub chunk_elements: usize,
    /// Activation checkpointing: the trunk's layers are recomputed one at a time in the backward pass
    /// ([`sod_model::Qwen3::forward_checkpointed`]), so that it holds one layer's activations instead of all of
    /// them, for one more forward pass.
    pub gradient_checkpointing: bool,
}

impl<'a> UpdateBatch<'a> {
    /// A batch with only the PPO term, at temperature 1 and the default chunking.
    pub fn ppo(
        episodes: &'a [Episode],
        advantages: &'a [Vec<f32>],
        clip: PpoClip,
        micro_batch: usize,
    ) -> Self {
        UpdateBatch {
            episodes,
            advantages,
            divergence: None,
            temperature: 1.0,
            clip,
            micro_batch,
            chunk_elements: CHUNK_ELEMENTS,
            gradient_checkpointing: false,
        }
    }
}

/// Computes the batch's loss (see the module docs) with `model`'s current weights and returns the accumulated
/// gradient of each variable of `params` (in its order) with statistics.
pub fn policy_gradients(
    model: &sod_model::Qwen3,
    params: &Params,
    batch: &UpdateBatch<'_>,
) -> Result<(Vec<Tensor>, SurrogateStats)> {
    let episodes = batch.episodes;
    let rows = GeneratedRows::of(episodes);
    let used: Vec<usize> = (0..episodes.len())
        .filter(|&i| !episodes[i].infra_fault)
        .collect();
    let total_tokens: usize = used.iter().map(|&i| episodes[i].generated_tokens()).sum();
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
        divergence_term: 0.0,
    };
    if total_tokens == 0 {
        return Ok((grads, stats));
    }
    let device = model.device().clone();
    let per_token = 1.0 / total_tokens as f32;
    let step = rows_per_chunk(batch.chunk_elements, model.config().vocab_size);
    let (clip_low, clip_high) = (batch.clip.low, batch.clip.high);
    let (mut clipped, mut kl_sum, mut divergence_sum) = (0usize, 0f64, 0f64);
    for chunk_ids in used.chunks(batch.micro_batch.max(1)) {
        let chunk: Vec<&Trajectory> = chunk_ids.iter().map(|&i| &episodes[i].trajectory).collect();
        let (ids, mask, _) = right_padded(&chunk, &device)?;
        let (hidden, checkpoint) = trunk_forward(model, &ids, &mask, batch.gradient_checkpointing)?;
        let (rows_h, targets) = generated_hidden(&hidden, &chunk)?;
        // Per generated row of the micro-batch: old log-prob, advantage, divergence weight, teacher row.
        let (mut old, mut adv, mut weight, mut teacher_row) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &i in chunk_ids {
            let episode = &episodes[i];
            let mut r = rows.start[i];
            for (j, &m) in episode.trajectory.mask.iter().enumerate() {
                if m == 1 {
                    old.push(episode.old_logprobs[j]);
                    adv.push(batch.advantages[i][j]);
                    weight.push(batch.divergence.map_or(0.0, |d| d.weights[i][j]));
                    teacher_row.push(r as u32);
                    r += 1;
                }
            }
        }
        head_backward_in_chunks(
            model,
            params,
            &mut grads,
            &rows_h,
            checkpoint,
            step,
            |range, logits| {
                let ls = tempered_log_softmax(logits, batch.temperature)?;
                let new = pick(&ls, &targets[range.clone()])?;
                let old_t = Tensor::new(&old[range.clone()], &device)?;
                let adv_t = Tensor::new(&adv[range.clone()], &device)?;
                let ratio = (&new - &old_t)?.exp()?;
                let unclipped = (&ratio * &adv_t)?;
                let clipped_term =
                    (ratio.clamp(1.0 - clip_low as f32, 1.0 + clip_high as f32)? * &adv_t)?;
                let mut loss =
                    (unclipped.minimum(&clipped_term)?.neg()?.sum_all()? * f64::from(per_token))?;
                if let Some(term) = &batch.divergence {
                    let idx = Tensor::new(&teacher_row[range.clone()], &device)?;
                    let t_rows = term.teacher_rows.index_select(&idx, 0)?;
                    let lt =
                        tempered_log_softmax(&term.teacher.lm_head(&t_rows)?, term.temperature)?;
                    let ls_d = if term.temperature == batch.temperature {
                        ls.clone()
                    } else {
                        tempered_log_softmax(logits, term.temperature)?
                    };
                    let d = divergence(&ls_d, &lt, &term.spec)?;
                    let w_t = Tensor::new(&weight[range.clone()], &device)?;
                    let weighted = ((d * w_t)?.sum_all()? * f64::from(per_token))?;
                    divergence_sum += f64::from(weighted.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                    loss = (loss + weighted)?;
                }
                stats.loss += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                // Host-side statistics.
                let (ratio, new) = (ratio.to_vec1::<f32>()?, new.to_vec1::<f32>()?);
                for (k, at) in range.enumerate() {
                    let (r, a) = (f64::from(ratio[k]), adv[at]);
                    if (a > 0.0 && r > 1.0 + clip_high) || (a < 0.0 && r < 1.0 - clip_low) {
                        clipped += 1;
                    }
                    kl_sum += f64::from(old[at] - new[k]);
                }
                Ok(loss)
            },
        )?;
    }
    stats.clip_fraction = clipped as f64 / total_tokens as f64;
    stats.approx_kl = kl_sum / total_tokens as f64;
    stats.divergence_term = divergence_sum;
    Ok((grads, stats))
}

/// The backward pass of a loss read off the output head at some rows, with bounded memory at any vocabulary:
/// `rows_h` (`[n, hidden]`, the final hidden states at those rows, still attached to the trunk's graph) is cut into
/// chunks of `chunk_rows` rows; for each, `chunk_loss(range, logits)` gets the chunk's logits (computed from a
/// detached copy of its rows) and returns its loss, which is differentiated at once: the head's gradient is added
/// to `grads` and the gradient with respect to the rows is kept. The kept row gradients then go through the trunk
/// in one backward pass (`d loss / d params = sum over rows of (d loss / d h) (d h / d params)`). No more than one
/// chunk of `[chunk_rows, vocab]` logits and its intermediates exist at a time.
pub fn head_backward_in_chunks(
    model: &sod_model::Qwen3,
    params: &Params,
    grads: &mut [Tensor],
    rows_h: &Tensor,
    checkpoint: Option<(Var, Checkpoint)>,
    chunk_rows: usize,
    mut chunk_loss: impl FnMut(std::ops::Range<usize>, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    let accumulate =
        |store: &candle_core::backprop::GradStore, grads: &mut [Tensor]| -> Result<()> {
            for (acc, var) in grads.iter_mut().zip(&params.vars) {
                if let Some(g) = store.get(var.as_tensor()) {
                    // Detached: a gradient may carry the graph it was computed through.
                    *acc = (&*acc + g.detach())?;
                }
            }
            Ok(())
        };
    let n = rows_h.dim(0)?;
    if n == 0 {
        return Ok(());
    }
    let chunk_rows = chunk_rows.max(1);
    let mut hidden_grads = Vec::with_capacity(n.div_ceil(chunk_rows));
    let mut start = 0;
    while start < n {
        let len = chunk_rows.min(n - start);
        let leaf = Var::from_tensor(&rows_h.narrow(0, start, len)?.detach())?;
        let logits = model.lm_head(leaf.as_tensor())?;
        let loss = chunk_loss(start..start + len, &logits)?;
        let store = loss.backward()?;
        accumulate(&store, grads)?;
        hidden_grads.push(match store.get(leaf.as_tensor()) {
            Some(g) => g.detach(),
            None => leaf.zeros_like()?,
        });
        start += len;
    }
    let hidden_grad = Tensor::cat(&hidden_grads, 0)?;
    let trunk = (rows_h * hidden_grad)?.sum_all()?;
    let store = trunk.backward()?;
    accumulate(&store, grads)?;
    // With checkpointing the rows were cut from a graph-free forward pass at its output: the gradient stops at
    // that variable, and the layers are differentiated one at a time from there.
    if let Some((hidden, checkpoint)) = checkpoint {
        let grad = match store.get(hidden.as_tensor()) {
            Some(g) => g.detach(),
            None => hidden.zeros_like()?,
        };
        model.backward_checkpointed(checkpoint, &grad, |store| {
            accumulate(store, grads).map_err(|e| sod_model::ModelError::Input(e.to_string()))
        })?;
    }
    Ok(())
}

/// The final hidden states of a micro-batch for a backward pass: a plain forward pass with its graph, or, with
/// `checkpointed`, [`sod_model::Qwen3::forward_checkpointed`]'s variable and checkpoint (hand both to
/// [`head_backward_in_chunks`]).
pub fn trunk_forward(
    model: &sod_model::Qwen3,
    ids: &Tensor,
    padding_mask: &Tensor,
    checkpointed: bool,
) -> Result<(Tensor, Option<(Var, Checkpoint)>)> {
    if checkpointed {
        let (hidden, checkpoint) = model.forward_checkpointed(ids, Some(padding_mask))?;
        Ok((hidden.as_tensor().clone(), Some((hidden, checkpoint))))
    } else {
        Ok((model.forward_hidden(ids, Some(padding_mask))?, None))
    }
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

/// How the learning rate moves after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Stays at the peak.
    #[default]
    Constant,
    /// Half a cosine from the peak down to `min_lr_ratio` times the peak at the last step (transformers'
    /// `cosine_with_min_lr`; `cosine` with a ratio of 0).
    Cosine,
    /// A straight line from the peak down to `min_lr_ratio` times the peak at the last step.
    Linear,
}

/// The learning rate of optimiser step `step` (0-based) of `total_steps`: [`learning_rate`]'s warm-up, then
/// `schedule` decaying towards `min_lr_ratio * peak`, reached after the last step.
pub fn scheduled_learning_rate(
    peak: f64,
    warmup_steps: u64,
    total_steps: u64,
    schedule: LrSchedule,
    min_lr_ratio: f64,
    step: u64,
) -> f64 {
    if step < warmup_steps || schedule == LrSchedule::Constant {
        return learning_rate(peak, warmup_steps, step);
    }
    let decay_steps = total_steps.saturating_sub(warmup_steps).max(1);
    let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
    let floor = peak * min_lr_ratio;
    let fraction = match schedule {
        LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        LrSchedule::Linear => 1.0 - progress,
        LrSchedule::Constant => 1.0,
    };
    floor + (peak - floor) * fraction
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
    fn schedules_warm_up_then_decay_to_the_floor() {
        let lr = |schedule, step| scheduled_learning_rate(1.0, 10, 110, schedule, 0.1, step);
        for schedule in [LrSchedule::Constant, LrSchedule::Cosine, LrSchedule::Linear] {
            assert_eq!(lr(schedule, 0), 0.1);
            assert_eq!(lr(schedule, 9), 1.0);
            assert_eq!(lr(schedule, 10), 1.0);
        }
        assert_eq!(lr(LrSchedule::Constant, 109), 1.0);
        // Half-way through the decay: the mid-point between peak and floor for both shapes.
        assert!((lr(LrSchedule::Cosine, 60) - 0.55).abs() < 1e-12);
        assert!((lr(LrSchedule::Linear, 60) - 0.55).abs() < 1e-12);
        // A quarter through: the cosine is still above the line.
        assert!(lr(LrSchedule::Cosine, 35) > lr(LrSchedule::Linear, 35));
        // The last step is just above the floor; past the end it stays there.
        assert!(lr(LrSchedule::Cosine, 109) > 0.1 && lr(LrSchedule::Cosine, 109) < 0.101);
        assert!((lr(LrSchedule::Linear, 500) - 0.1).abs() < 1e-12);
    }

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
