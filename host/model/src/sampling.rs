//! Seeded temperature/top-p sampling and batched generation with the KV cache.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::derive_seed;
use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, SequenceKv};
use crate::qwen3::Qwen3;

/// How to turn logits into a token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (arg-max, lowest id on ties).
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities add up to at least `top_p`
    /// (`1` = the whole vocabulary).
    pub top_p: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
        }
    }
}

impl SamplingParams {
    /// Checks `temperature >= 0` (finite) and `0 < top_p <= 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::Input(format!(
                "temperature {} must be finite and non-negative",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Input(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// One sampled token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    /// The token id.
    pub token: u32,
    /// Its log-probability under the tempered model distribution `log_softmax(logits / T)` at the sampling
    /// temperature `T` (temperature 1 for greedy), without top-p: the behaviour log-prob for importance ratios
    /// against the trained policy, which the trainer recomputes the same way (as verl does). At `T != 1` this is
    /// the distribution the token was drawn from (up to top-p truncation).
    pub logprob: f32,
    /// Its log-probability under the distribution actually sampled from (temperature and top-p applied;
    /// 0 for greedy).
    pub sampling_logprob: f32,
}

/// A token sampler with its own random stream.
///
/// The stream is ChaCha8 seeded from SHA-256 of `(seed, prompt_id, sample_index)`, so the tokens of a trajectory
/// depend only on those three values and the logits — not on which other trajectories share the batch, nor on
/// their order. Keep the same `Sampler` across the turns of a multi-turn rollout.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for sample `sample_index` of prompt `prompt_id` in a run seeded with `seed`.
    pub fn new(
        params: SamplingParams,
        seed: u64,
        prompt_id: &str,
        sample_index: u64,
    ) -> Result<Self> {
        params.validate()?;
        let key = derive_seed(
            "sod-model/sampler",
            &[
                &seed.to_le_bytes(),
                prompt_id.as_bytes(),
                &sample_index.to_le_bytes(),
            ],
        );
        Ok(Sampler {
            params,
            rng: ChaCha8Rng::from_seed(key),
        })
    }

    /// The sampling parameters.
    pub fn params(&self) -> SamplingParams {
        self.params
    }

    /// Samples a token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<SampledToken> {
        if logits.is_empty() {
            return Err(ModelError::Input(
                "cannot sample from empty logits".to_string(),
            ));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(ModelError::Input(format!("logit {i} is NaN")));
        }
        let max = logits
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        if self.params.temperature == 0.0 {
            let token = first_argmax(logits);
            let log_z = max
                + logits
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            return Ok(SampledToken {
                token: token as u32,
                logprob: (logits[token] as f64 - log_z) as f32,
                sampling_logprob: 0.0,
            });
        }
        let t = self.params.temperature;
        let mut probs: Vec<f64> = logits
            .iter()
            .map(|&x| ((x as f64 - max) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        // The tempered log-prob of a token, log_softmax(logits / t), from the same normaliser.
        let log_total = total.ln();
        let model_logprob = |token: usize| ((logits[token] as f64 - max) / t - log_total) as f32;
        for p in &mut probs {
            *p /= total;
        }
        // Candidates in a fixed order: by probability (then id) when truncating, else by id.
        let candidates: Vec<usize> = if self.params.top_p < 1.0 {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            let mut mass = 0.0;
            let mut keep = 0;
            for &i in &order {
                mass += probs[i];
                keep += 1;
                if mass >= self.params.top_p {
                    break;
                }
            }
            order.truncate(keep);
            order
        } else {
            (0..probs.len()).collect()
        };
        let mass: f64 = candidates.iter().map(|&i| probs[i]).sum();
        let u = self.rng.random::<f64>() * mass;
        let mut acc = 0.0;
        let mut chosen = *candidates.last().unwrap_or(&0);
        for &i in &candidates {
            acc += probs[i];
            if u < acc {
                chosen = i;
                break;
            }
        }
        Ok(SampledToken {
            token: chosen as u32,
            logprob: model_logprob(chosen),
            sampling_logprob: (probs[chosen] / mass).ln() as f32,
        })
    }
}

fn first_argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Why generation of a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// A stop token was generated (it is the last of [`Generation::tokens`]).
    Stop,
    /// `max_new_tokens` were generated without a stop token.
    Length,
}

/// The continuation generated for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids, the stop token included when there is one.
    pub tokens: Vec<u32>,
    /// Model log-probability of each generated token (see [`SampledToken::logprob`]).
    pub logprobs: Vec<f32>,
    /// Log-probability under the sampling distribution (see [`SampledToken::sampling_logprob`]).
    pub sampling_logprobs: Vec<f32>,
    /// Why it stopped.
    pub finish: FinishReason,
}

impl Qwen3 {
    /// Generates up to `max_new_tokens` tokens after each prompt, sampling with `samplers[i]` for prompt `i`, and
    /// stopping a sequence at the first token of `stop_tokens`. Runs on a [`Qwen3::detached`] copy (no graph).
    ///
    /// Prompts are left-padded to a common length and prefilled in one batched call; then one token per active
    /// sequence is decoded per step with the KV cache, and finished sequences are dropped from the batch. Because
    /// padding is masked and positions count real tokens only, each sequence's logits equal those of generating
    /// it alone up to float rounding (~1e-6; batched matrix products may sum in a different order), so tokens are
    /// the same in practice and identical for the same batch.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        stop_tokens: &[u32],
        samplers: &mut [Sampler],
    ) -> Result<Vec<Generation>> {
        let mut states: Vec<SequenceKv> = prompts.iter().map(|_| SequenceKv::default()).collect();
        self.generate_batch_with(prompts, &mut states, max_new_tokens, stop_tokens, samplers)
    }

    /// [`Self::generate_batch`] continuing from what earlier calls computed: `states[i]` holds the keys and values
    /// of a prefix of `prompts[i]` (reused when `prompts[i]` continues it, else ignored) and is replaced by those
    /// of `prompts[i]` plus the generated tokens but the last (which the model has not been fed). A multi-turn
    /// rollout passes each trajectory's state from turn to turn, so that a turn feeds only the tokens after it.
    /// The logits equal a fresh prefill's up to float rounding (the keys and values come from other batches).
    pub fn generate_batch_with(
        &self,
        prompts: &[Vec<u32>],
        states: &mut [SequenceKv],
        max_new_tokens: usize,
        stop_tokens: &[u32],
        samplers: &mut [Sampler],
    ) -> Result<Vec<Generation>> {
        if states.len() != prompts.len() {
            return Err(ModelError::Input(format!(
                "{} prompts but {} sequence states",
                prompts.len(),
                states.len()
            )));
        }
        if samplers.len() != prompts.len() {
            return Err(ModelError::Input(format!(
                "{} prompts but {} samplers",
                prompts.len(),
                samplers.len()
            )));
        }
        let mut out: Vec<Generation> = prompts
            .iter()
            .map(|_| Generation {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                sampling_logprobs: Vec::new(),
                finish: FinishReason::Length,
            })
            .collect();
        if prompts.is_empty() || max_new_tokens == 0 {
            return Ok(out);
        }
        let max_pos = self.config().max_position_embeddings;
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(ModelError::Input(format!("prompt {i} is empty")));
            }
            if p.len() + max_new_tokens > max_pos {
                return Err(ModelError::Input(format!(
                    "prompt {i} has {} tokens; with max_new_tokens = {max_new_tokens} it exceeds max_position_embeddings = {max_pos}",
                    p.len()
                )));
            }
        }
        let model = self.detached();
        let device = model.device().clone();
        let b = prompts.len();
        let layers = model.config().num_hidden_layers;
        let reuse: Vec<usize> = prompts
            .iter()
            .zip(states.iter())
            .map(|(p, s)| s.reusable_for(p, layers))
            .collect();
        // What each row still has to feed, left-padded so that every row's last position is real.
        let len = prompts
            .iter()
            .zip(&reuse)
            .map(|(p, &n)| p.len() - n)
            .max()
            .unwrap_or(0);
        let mut ids = Vec::with_capacity(b * len);
        let mut mask = Vec::with_capacity(b * len);
        for (p, &n) in prompts.iter().zip(&reuse) {
            let new = &p[n..];
            let pad = len - new.len();
            ids.extend(std::iter::repeat_n(0u32, pad).chain(new.iter().copied()));
            mask.extend(std::iter::repeat_n(0u32, pad).chain(std::iter::repeat_n(1u32, new.len())));
        }
        let ids = Tensor::from_vec(ids, (b, len), &device)?;
        let mask = Tensor::from_vec(mask, (b, len), &device)?;
        let mut cache = KvCache::from_sequences(layers, states, &reuse)?;
        let hidden = model.run(&ids, Some(&mask), Some(&mut cache))?;
        let mut logits = last_row_logits(&model, &hidden)?;
        // `active[k]` is the prompt index of cache row `k`.
        let mut active: Vec<usize> = (0..b).collect();
        // The state of sequence `seq` at cache row `row`: its prompt and every generated token but the last.
        let take =
            |cache: &KvCache, row: usize, seq: usize, out: &[Generation]| -> Result<SequenceKv> {
                let g = &out[seq].tokens;
                let fed = prompts[seq]
                    .iter()
                    .chain(&g[..g.len() - 1])
                    .copied()
                    .collect();
                Ok(cache.sequence(row, fed)?)
            };
        for step in 0..max_new_tokens {
            let mut next = Vec::with_capacity(active.len());
            let mut keep = Vec::with_capacity(active.len());
            let mut stopped = Vec::new();
            let sampled = sample_rows(&logits, &active, samplers)?;
            for (row, (&seq, s)) in active.iter().zip(sampled).enumerate() {
                let g = &mut out[seq];
                g.tokens.push(s.token);
                g.logprobs.push(s.logprob);
                g.sampling_logprobs.push(s.sampling_logprob);
                if stop_tokens.contains(&s.token) {
                    g.finish = FinishReason::Stop;
                    stopped.push(row);
                } else {
                    keep.push(row);
                    next.push(s.token);
                }
            }
            // Sequences leaving the batch take their keys and values with them (all of them at the end).
            let last = keep.is_empty() || step + 1 == max_new_tokens;
            let leaving = if last {
                (0..active.len()).collect()
            } else {
                stopped
            };
            for row in leaving {
                states[active[row]] = take(&cache, row, active[row], &out)?;
            }
            if last {
                break;
            }
            if keep.len() < active.len() {
                cache.retain_rows(&keep)?;
                active = keep.iter().map(|&r| active[r]).collect();
            }
            let n = next.len();
            let input = Tensor::from_vec(next, (n, 1), &device)?;
            let hidden = model.run(&input, None, Some(&mut cache))?;
            logits = last_row_logits(&model, &hidden)?;
        }
        Ok(out)
    }
}

/// Logits `[rows, vocab]` (f32) of the last position of each row, where the model runs.
fn last_row_logits(model: &Qwen3, hidden: &Tensor) -> Result<Tensor> {
    let t = hidden.dim(1)?;
    let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
    Ok(model.lm_head(&last)?.to_dtype(DType::F32)?)
}

/// Vocabulary entries per block of [`sample_on_device`].
const SAMPLE_BLOCK: usize = 1024;

/// One token per row of `logits` (`[rows, vocab]`), row `k` sampled by `samplers[active[k]]`.
///
/// On the CPU, and for top-p below 1 or rows with different settings, every row is copied to the host and sampled by
/// [`Sampler::sample`]. On an accelerator, rows sharing one setting with top-p 1 are sampled by
/// [`sample_on_device`], which copies about 1/100 of the vocabulary per row instead of all of it (for Qwen3's 151,936
/// ids: 149 block sums and one block of 1,024).
pub(crate) fn sample_rows(
    logits: &Tensor,
    active: &[usize],
    samplers: &mut [Sampler],
) -> Result<Vec<SampledToken>> {
    let params = active.first().map(|&seq| samplers[seq].params);
    let shared =
        params.filter(|p| p.top_p >= 1.0 && active.iter().all(|&seq| samplers[seq].params == *p));
    match shared {
        Some(params) if !logits.device().is_cpu() => {
            sample_on_device(logits, active, samplers, params)
        }
        _ => {
            let rows = logits.to_vec2::<f32>()?;
            active
                .iter()
                .zip(&rows)
                .map(|(&seq, row)| samplers[seq].sample(row))
                .collect()
        }
    }
}

/// [`Sampler::sample`] without the whole row on the host, for top-p 1: the same draw from each sampler's stream, the
/// same inverse-CDF walk in id order, done in two stages. The device computes the tempered, unnormalised
/// probabilities `exp((x - max) / T)` and their sums over blocks of [`SAMPLE_BLOCK`] ids; the host walks the block
/// sums to the block holding the draw, fetches that block alone, and walks it to the token. Greedy rows take the
/// device's arg-max. The token is the host sampler's but where the draw falls within f32 rounding of a boundary
/// (the device sums in f32, the host in f64); greedy ties may go to any of the tied ids.
///
/// Works on any device (the tests run it on the CPU against [`Sampler::sample`]).
pub(crate) fn sample_on_device(
    logits: &Tensor,
    active: &[usize],
    samplers: &mut [Sampler],
    params: SamplingParams,
) -> Result<Vec<SampledToken>> {
    let (n, vocab) = logits.dims2()?;
    if n != active.len() {
        return Err(ModelError::Input(format!(
            "{n} rows of logits for {} sequences",
            active.len()
        )));
    }
    let max = logits.max_keepdim(1)?;
    let shifted = logits.broadcast_sub(&max)?;
    if params.temperature == 0.0 {
        let ids = logits.argmax_keepdim(1)?;
        let log_z = shifted.exp()?.sum_keepdim(1)?.log()?;
        let logprob = shifted.gather(&ids, 1)?.sub(&log_z)?;
        let ids = ids.squeeze(1)?.to_vec1::<u32>()?;
        let logprob = logprob.squeeze(1)?.to_vec1::<f32>()?;
        return ids
            .iter()
            .zip(&logprob)
            .enumerate()
            .map(|(row, (&token, &logprob))| {
                if logprob.is_nan() {
                    return Err(ModelError::Input(format!(
                        "row {row} of the logits holds NaN"
                    )));
                }
                Ok(SampledToken {
                    token,
                    logprob,
                    sampling_logprob: 0.0,
                })
            })
            .collect();
    }
    let probs = (shifted / params.temperature)?.exp()?;
    let blocks = vocab.div_ceil(SAMPLE_BLOCK);
    let probs = probs
        .pad_with_zeros(1, 0, blocks * SAMPLE_BLOCK - vocab)?
        .reshape((n * blocks, SAMPLE_BLOCK))?;
    let sums = probs.sum(1)?.reshape((n, blocks))?.to_vec2::<f32>()?;
    // Per row: the block holding the draw, and how far into it the draw falls.
    let mut picks = Vec::with_capacity(n);
    for (row, (&seq, sums)) in active.iter().zip(&sums).enumerate() {
        let total: f64 = sums.iter().map(|&x| x as f64).sum();
        if !total.is_finite() || total <= 0.0 {
            return Err(ModelError::Input(format!(
                "row {row} of the logits holds NaN or infinity"
            )));
        }
        let u = samplers[seq].rng.random::<f64>() * total;
        let (block, rest) = walk(sums, u);
        picks.push((row * blocks + block, block, rest, total));
    }
    let index: Vec<u32> = picks.iter().map(|p| p.0 as u32).collect();
    let index = Tensor::from_vec(index, n, logits.device())?;
    let chosen = probs.index_select(&index, 0)?.to_vec2::<f32>()?;
    Ok(picks
        .iter()
        .zip(&chosen)
        .map(|(&(_, block, rest, total), values)| {
            let (j, _) = walk(values, rest);
            let token = (block * SAMPLE_BLOCK + j).min(vocab - 1);
            // log softmax(x / T) of the token, from the same normaliser; top-p 1, so the sampling distribution is the
            // tempered one.
            let logprob = ((values[j] as f64).ln() - total.ln()) as f32;
            SampledToken {
                token: token as u32,
                logprob,
                sampling_logprob: logprob,
            }
        })
        .collect())
}

/// The first index whose running sum of `weights` exceeds `u`, and `u` less the sum before it; the last positive
/// weight when rounding leaves `u` past the end.
fn walk(weights: &[f32], u: f64) -> (usize, f64) {
    let mut acc = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        let next = acc + w as f64;
        if u < next {
            return (i, u - acc);
        }
        acc = next;
    }
    let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
    (last, weights[last] as f64 * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Logits with the spread of a real model's: a few large values over a long flat tail.
    fn logits(rows: usize, vocab: usize, step: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(step);
        (0..rows)
            .map(|_| {
                (0..vocab)
                    .map(|_| {
                        let x: f32 = rng.random::<f32>();
                        if x > 0.999 { 8.0 + 4.0 * x } else { 6.0 * x }
                    })
                    .collect()
            })
            .collect()
    }

    /// The blocked sampler gives the host sampler's tokens and log-probs from the same streams, across block
    /// boundaries (a vocabulary of 2.5 blocks, draws landing in every block).
    #[test]
    fn sampling_on_the_device_matches_the_host_sampler() {
        let vocab = SAMPLE_BLOCK * 5 / 2;
        let rows = 4;
        for temperature in [1.0, 0.6, 0.0] {
            let params = SamplingParams {
                temperature,
                top_p: 1.0,
            };
            let make = || -> Vec<Sampler> {
                (0..rows)
                    .map(|i| Sampler::new(params, 7, "p", i as u64).unwrap())
                    .collect()
            };
            let (mut host, mut device) = (make(), make());
            let active: Vec<usize> = (0..rows).collect();
            let mut blocks_hit = std::collections::BTreeSet::new();
            for step in 0..200 {
                let rows_now = logits(rows, vocab, step);
                let tensor = Tensor::new(rows_now.clone(), &Device::Cpu).unwrap();
                let got = sample_on_device(&tensor, &active, &mut device, params).unwrap();
                for (i, (row, got)) in rows_now.iter().zip(&got).enumerate() {
                    let want = host[i].sample(row).unwrap();
                    assert_eq!(got.token, want.token, "T = {temperature}, step {step}");
                    assert!(
                        (got.logprob - want.logprob).abs() < 1e-4,
                        "{got:?} vs {want:?}"
                    );
                    assert!(
                        (got.sampling_logprob - want.sampling_logprob).abs() < 1e-4,
                        "{got:?} vs {want:?}"
                    );
                    blocks_hit.insert(got.token as usize / SAMPLE_BLOCK);
                }
            }
            if temperature > 0.0 {
                assert_eq!(blocks_hit.len(), 3, "T = {temperature}: {blocks_hit:?}");
            }
        }
    }

    /// A NaN row is an error on both paths, never a token.
    #[test]
    fn nan_logits_are_refused_on_the_device_path() {
        let mut row = vec![0.0f32; 10];
        row[3] = f32::NAN;
        let tensor = Tensor::new(vec![row], &Device::Cpu).unwrap();
        for temperature in [1.0, 0.0] {
            let params = SamplingParams {
                temperature,
                top_p: 1.0,
            };
            let mut samplers = vec![Sampler::new(params, 1, "p", 0).unwrap()];
            assert!(sample_on_device(&tensor, &[0], &mut samplers, params).is_err());
        }
    }
}
