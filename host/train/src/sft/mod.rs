//! Offline supervised fine-tuning: conversations (with tool calls and tool responses) tokenised as Hugging
//! Face's `apply_chat_template` renders them, and a token-mean negative log-likelihood loop over the assistant's
//! tokens.
//!
//! [`tokenize_conversation`] renders the whole conversation with the model's chat template
//! ([`ChatTokenizer::render_trained`]) and trains the assistant turns as the template writes them, from after each
//! `<|im_start|>assistant\n` header through its `<|im_end|>` (messages with `weight: 0` stay context). The prompt is
//! the rendering of the messages before the first assistant turn with the generation prompt, which is where a
//! rollout starts. Rollouts append each tool response after the generated `<|im_end|>` as the template writes it
//! ([`ChatTokenizer::render_after_generated`]), so with a prefix-stable template (sod's built-in one, or Qwen3's
//! in thinking mode, where every turn keeps its think block) a conversation fine-tuned on here has exactly the
//! tokens of a rollout that generated it.
//!
//! [`SftTrainer`] runs the loop: batches drawn in a seeded order (a fresh permutation per pass over the data),
//! gradients accumulated over micro-batches (each micro-batch's loss is divided by the token count of the whole
//! batch, so the result does not depend on the micro-batch size), global gradient-norm clipping and AdamW with
//! linear warm-up from [`crate::update`].

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sod_model::{ChatMessage, ChatTokenizer, Role, TrainableModel};

use crate::checkpoint::{self, TrainerState};
use crate::divergence::{CHUNK_ELEMENTS, rows_per_chunk, tempered_log_softmax};
use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;
use crate::teacher::pick;
use crate::teacher::right_padded;
use crate::update::{
    AdamW, AdamWConfig, LrSchedule, Params, clip_grad_norm, head_backward_in_chunks,
    scheduled_learning_rate, trunk_forward,
};

pub mod data;
pub mod run;

/// One tokenised training conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    /// Name of the example (for error messages).
    pub id: String,
    /// Every token: the prompt, then the response.
    pub tokens: Vec<u32>,
    /// Number of prompt tokens at the start of `tokens`.
    pub prompt_len: usize,
    /// One per response token: 1 where the model should have generated it, 0 for tool responses and template glue.
    pub mask: Vec<u8>,
}

impl SftExample {
    /// Tokens that enter the loss.
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }

    fn as_trajectory(&self) -> Trajectory {
        Trajectory::offline(
            self.id.clone(),
            self.tokens.clone(),
            self.prompt_len,
            self.mask.clone(),
        )
    }
}

/// Tokenises a conversation as Hugging Face's `apply_chat_template` renders it, training the assistant turns
/// (see the module docs). `messages` must contain at least one trained assistant message; everything before the
/// first assistant message is the prompt. `tools` are the OpenAI-format schemas the template shows.
pub fn tokenize_conversation(
    tokenizer: &ChatTokenizer,
    id: &str,
    messages: &[ChatMessage],
    tools: &[serde_json::Value],
) -> Result<SftExample> {
    let bad = |problem: &str| {
        Err(TrainError::Config(format!(
            "conversation {id:?}: {problem}"
        )))
    };
    let Some(first) = messages.iter().position(|m| m.role == Role::Assistant) else {
        return bad("has no assistant message");
    };
    let none = serde_json::Map::new();
    let rendered = match tokenizer.render_trained(messages, tools, false, &none) {
        Ok(r) => r,
        Err(e) => return bad(&e.to_string()),
    };
    // The prompt as a rollout starts from it: the messages before the first assistant turn with the generation
    // prompt. A template that renders it differently inside the whole conversation would train the model on a
    // context that rollouts never show it.
    let prompt = tokenizer.encode_chat(&messages[..first], tools, true)?;
    if !rendered.ids.starts_with(&prompt) {
        return bad(
            "the chat template renders the prompt (the messages before the first assistant turn, with the \
             generation prompt) differently inside the whole conversation",
        );
    }
    let prompt_len = prompt.len();
    if rendered.assistant_mask[..prompt_len].contains(&1) {
        return bad("a trained token lies inside the prompt");
    }
    let mask = rendered.assistant_mask[prompt_len..].to_vec();
    if !mask.contains(&1) {
        return bad("has no trained assistant token (every assistant message has weight 0)");
    }
    Ok(SftExample {
        id: id.to_string(),
        tokens: rendered.ids,
        prompt_len,
        mask,
    })
}

/// Settings of a supervised fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// Optimiser steps.
    pub steps: u64,
    /// Conversations per step.
    pub batch_size: usize,
    /// Conversations per forward/backward pass.
    pub micro_batch: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Decoupled AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the data order.
    pub seed: u64,
    /// How the learning rate moves after the warm-up (default constant).
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule: LrSchedule,
    /// The fraction of the peak learning rate a decaying schedule ends at (default 0).
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_lr_ratio: f64,
    /// Recompute the trunk's layers one at a time in the backward pass (activation checkpointing, see
    /// [`crate::update::UpdateBatch::gradient_checkpointing`]); default off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub gradient_checkpointing: bool,
}

// Defaults are left out when the settings are written, so that adding a setting leaves the records (and cache
// keys) of runs that do not use it unchanged.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl SftConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, problem: &str| Err(TrainError::Config(format!("sft {field}: {problem}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.micro_batch == 0 {
            return bad("micro_batch", "must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be a positive number");
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return bad("max_grad_norm", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be >= 0");
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must be between 0 and 1");
        }
        Ok(())
    }
}

/// What one supervised step measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SftStepMetrics {
    /// 1-based step number.
    pub step: u64,
    /// Learning rate used.
    pub lr: f64,
    /// Token-mean negative log-likelihood of the batch's trained tokens (before the update).
    pub loss: f64,
    /// Fraction of trained tokens predicted with probability above 1/2 (so the arg-max was the target), before
    /// the update.
    pub confident_fraction: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trained tokens in the batch.
    pub tokens: usize,
}

/// A supervised fine-tuning run over a fixed set of examples.
pub struct SftTrainer<'a> {
    model: &'a TrainableModel,
    examples: Vec<SftExample>,
    config: SftConfig,
    params: Params,
    optimizer: AdamW,
    step: u64,
    order: Vec<usize>,
}

impl<'a> SftTrainer<'a> {
    /// Prepares a run that updates `model`'s variables in place.
    pub fn new(
        model: &'a TrainableModel,
        examples: Vec<SftExample>,
        config: SftConfig,
    ) -> Result<Self> {
        config.validate()?;
        if examples.is_empty() {
            return Err(TrainError::Config("sft: no training examples".into()));
        }
        let max_pos = model.config.max_position_embeddings;
        for example in &examples {
            if example.prompt_len == 0
                || example.tokens.len() != example.prompt_len + example.mask.len()
            {
                return Err(TrainError::Config(format!(
                    "sft example {:?}: the mask does not cover the response",
                    example.id
                )));
            }
            if example.tokens.len() > max_pos {
                return Err(TrainError::Config(format!(
                    "sft example {:?} has {} tokens, more than max_position_embeddings = {max_pos}",
                    example.id,
                    example.tokens.len()
                )));
            }
        }
        let params = Params::from_varmap(&model.varmap)?;
        let optimizer = AdamW::new(
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: config.weight_decay,
            },
            &params,
        )?;
        Ok(SftTrainer {
            model,
            examples,
            config,
            params,
            optimizer,
            step: 0,
            order: Vec::new(),
        })
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Writes `out_dir/checkpoints/step-N/` for the current step (see [`crate::checkpoint`]): the model in
    /// `dtype` with the tokenizer files of `tokenizer_from`, the optimiser moments (and f32 master weights when
    /// `dtype` is narrower), and `record` (the run's settings) in the state file.
    pub fn save_checkpoint(
        &self,
        out_dir: &std::path::Path,
        tokenizer_from: &std::path::Path,
        dtype: sod_model::SaveDtype,
        record: String,
    ) -> Result<std::path::PathBuf> {
        checkpoint::save(
            out_dir,
            &self.model.config,
            &self.model.varmap,
            tokenizer_from,
            &self.params,
            &self.optimizer,
            &TrainerState {
                step: self.step,
                optimizer_steps: self.optimizer.t,
                data_cursor: self.step * self.config.batch_size as u64,
                config: record,
            },
            dtype,
        )
    }

    /// Continues from the checkpoint at `dir`, whose weights the model was loaded from: the optimiser moments,
    /// the master weights and the step come back, and the data order follows from the step. Returns the state.
    pub fn resume_from(&mut self, dir: &std::path::Path) -> Result<TrainerState> {
        let device = self.model.model.device().clone();
        let state = checkpoint::load_state(dir, &self.params, &mut self.optimizer, &device)?;
        if state.step > self.config.steps {
            return Err(TrainError::Resume(format!(
                "{} is at step {}, past the run's {} steps",
                dir.display(),
                state.step,
                self.config.steps
            )));
        }
        self.step = state.step;
        self.order.clear();
        Ok(state)
    }

    /// Indices of the examples of step `step` (0-based): consecutive slices of a seeded permutation per pass.
    fn batch_indices(&mut self, step: u64) -> Vec<usize> {
        let n = self.examples.len();
        let mut out = Vec::with_capacity(self.config.batch_size);
        for k in 0..self.config.batch_size as u64 {
            let position = step * self.config.batch_size as u64 + k;
            let (pass, offset) = (position / n as u64, (position % n as u64) as usize);
            if offset == 0 || self.order.len() != n {
                self.order = permutation(n, self.config.seed, pass);
            }
            out.push(self.order[offset]);
        }
        out
    }

    /// One optimiser step.
    pub fn train_step(&mut self) -> Result<SftStepMetrics> {
        let lr = scheduled_learning_rate(
            self.config.learning_rate,
            self.config.warmup_steps,
            self.config.steps,
            self.config.schedule,
            self.config.min_lr_ratio,
            self.step,
        );
        let batch: Vec<Trajectory> = self
            .batch_indices(self.step)
            .into_iter()
            .map(|i| self.examples[i].as_trajectory())
            .collect();
        let total: usize = batch.iter().map(Trajectory::generated_tokens).sum();
        let mut grads: Vec<Tensor> = self
            .params
            .vars
            .iter()
            .map(|v| v.zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        let device = self.model.model.device().clone();
        for chunk in batch.chunks(self.config.micro_batch) {
            let (ids, padding, len) = right_padded(chunk, &device)?;
            // Only trained positions go through the output head: in a tool conversation most tokens are prompt
            // and tool output, and the head (with its softmax over the vocabulary) is a large part of the cost.
            let mut rows = Vec::new();
            let mut targets = Vec::new();
            for (row, traj) in chunk.iter().enumerate() {
                for (j, &m) in traj.mask.iter().enumerate() {
                    if m == 1 {
                        let position = traj.prompt_len + j;
                        rows.push((row * len + position - 1) as u32);
                        targets.push(traj.tokens[position]);
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            let n = rows.len();
            let (hidden, checkpoint) = trunk_forward(
                &self.model.model,
                &ids,
                &padding,
                self.config.gradient_checkpointing,
            )?;
            let hidden = hidden
                .reshape((chunk.len() * len, ()))?
                .index_select(&Tensor::from_vec(rows, n, &device)?, 0)?;
            let model = &self.model.model;
            let chunk_rows = rows_per_chunk(CHUNK_ELEMENTS, model.config().vocab_size);
            head_backward_in_chunks(
                model,
                &self.params,
                &mut grads,
                &hidden,
                checkpoint,
                chunk_rows,
                |range, logits| {
                    let logprobs = pick(&tempered_log_softmax(logits, 1.0)?, &targets[range])?;
                    let loss = (logprobs.sum_all()?.neg()? / total.max(1) as f64)?;
                    loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                    // Tokens predicted with probability above 1/2 (hence the arg-max), from the same pass.
                    correct += logprobs
                        .ge(f64::from(0.5f32.ln()))?
                        .to_dtype(DType::F32)?
                        .sum_all()?
                        .to_scalar::<f32>()? as usize;
                    Ok(loss)
                },
            )?;
        }
        let norm = clip_grad_norm(&mut grads, self.config.max_grad_norm)?;
        if !norm.is_finite() || !loss_sum.is_finite() {
            return Err(TrainError::Diverged {
                step: self.step + 1,
                what: format!("sft gradient norm {norm}, loss {loss_sum}"),
            });
        }
        self.optimizer.step(&self.params, &grads, lr)?;
        self.step += 1;
        Ok(SftStepMetrics {
            step: self.step,
            lr,
            loss: loss_sum,
            confident_fraction: correct as f64 / total.max(1) as f64,
            grad_norm: norm,
            tokens: total,
        })
    }

    /// Runs the remaining steps, calling `on_step` after each; it may stop the run early (an evaluation that
    /// reached its target, say) by returning `ControlFlow::Break`. Returns the metrics of the steps run.
    pub fn run<E: From<TrainError>>(
        &mut self,
        mut on_step: impl FnMut(&SftStepMetrics) -> std::result::Result<ControlFlow<()>, E>,
    ) -> std::result::Result<Vec<SftStepMetrics>, E> {
        let mut all = Vec::new();
        while self.step < self.config.steps {
            let metrics = self.train_step()?;
            all.push(metrics);
            if on_step(&metrics)?.is_break() {
                break;
            }
        }
        Ok(all)
    }
}

/// A permutation of `0..n` that depends only on `(seed, pass)` (Fisher-Yates driven by SHA-256 in counter mode).
fn permutation(n: usize, seed: u64, pass: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let digest = Sha256::digest(format!("sod-sft-order/{seed}/{pass}/{i}"));
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let j = (u64::from_le_bytes(bytes) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(50, 3, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, permutation(50, 3, 0));
        assert_ne!(a, permutation(50, 3, 1));
        assert_ne!(a, permutation(50, 4, 0));
    }
}
