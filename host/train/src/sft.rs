//! Offline supervised fine-tuning: conversations (with tool calls and tool responses) tokenised exactly as a
//! rollout would produce them, and a token-mean negative log-likelihood loop over the assistant's tokens.
//!
//! [`tokenize_conversation`] reproduces the rollout's token layout: the prompt is the chat template's rendering
//! of the messages before the first assistant turn (with the generation prompt); each assistant turn is the
//! template's text for that turn up to and including `<|im_end|>` (mask 1: what the model should generate); the
//! tool responses that follow are [`ChatTokenizer::render_continuation`] of the conversation so far (mask 0),
//! ending with the next assistant header. A model fine-tuned on these sequences sees at training time exactly the
//! tokens it will see when it rolls out with tools.
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

use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;
use crate::teacher::right_padded;
use crate::update::{AdamW, AdamWConfig, Params, clip_grad_norm, learning_rate};

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
        Trajectory {
            prompt_id: self.id.clone(),
            sample_index: 0,
            group: 0,
            tokens: self.tokens.clone(),
            prompt_len: self.prompt_len,
            mask: self.mask.clone(),
            behaviour_logprobs: vec![0.0; self.mask.len()],
            final_text: String::new(),
            turns: 0,
            tool_calls: 0,
            valid_tool_calls: 0,
            finish: crate::rollout::Finish::Answered,
            infra_fault: false,
            reward: 0.0,
        }
    }
}

/// Tokenises a conversation the way a rollout lays it out (see the module docs). `messages` must contain at least
/// one assistant message; everything before the first one is the prompt; after it, only assistant and tool
/// messages may follow, and the conversation must end with an assistant message.
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
    if messages.last().map(|m| m.role) != Some(Role::Assistant) {
        return bad("does not end with an assistant message");
    }
    let im_end = tokenizer
        .token_id("<|im_end|>")
        .ok_or_else(|| TrainError::Config("the tokenizer has no <|im_end|> token".into()))?;
    let mut tokens = tokenizer.encode_chat(&messages[..first], tools, true)?;
    let prompt_len = tokens.len();
    let mut mask = Vec::new();
    let mut k = first;
    while k < messages.len() {
        let message = &messages[k];
        match message.role {
            Role::Assistant => {
                // The turn as generated: the template's text for it after the assistant header, through <|im_end|>.
                let with_header =
                    tokenizer.render_continuation(&messages[..k], &[], tools, true)?;
                let rendered = tokenizer.render_continuation(
                    &messages[..k],
                    &messages[k..=k],
                    tools,
                    false,
                )?;
                let Some(turn) = rendered.strip_prefix(with_header.as_str()) else {
                    return bad(
                        "the chat template's assistant turn does not start with its header",
                    );
                };
                let Some(end) = turn.find("<|im_end|>") else {
                    return bad("the chat template's assistant turn has no <|im_end|>");
                };
                let trained = match message.trained() {
                    Ok(trained) => u8::from(trained),
                    Err(problem) => return bad(&problem),
                };
                let ids = tokenizer.encode(&turn[..end])?;
                tokens.extend_from_slice(&ids);
                tokens.push(im_end);
                mask.extend(std::iter::repeat_n(trained, ids.len() + 1));
                k += 1;
            }
            Role::Tool => {
                let start = k;
                while k < messages.len() && messages[k].role == Role::Tool {
                    k += 1;
                }
                let continuation = tokenizer.render_continuation(
                    &messages[..start],
                    &messages[start..k],
                    tools,
                    true,
                )?;
                let ids = tokenizer.encode(&continuation)?;
                mask.extend(std::iter::repeat_n(0u8, ids.len()));
                tokens.extend_from_slice(&ids);
            }
            Role::System | Role::User => {
                return bad("a system or user message follows the first assistant message");
            }
        }
    }
    Ok(SftExample {
        id: id.to_string(),
        tokens,
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
        let lr = learning_rate(
            self.config.learning_rate,
            self.config.warmup_steps,
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
            let hidden = self.model.model.forward_hidden(&ids, Some(&padding))?;
            let hidden = hidden
                .reshape((chunk.len() * len, ()))?
                .index_select(&Tensor::from_vec(rows, n, &device)?, 0)?;
            let targets = Tensor::from_vec(targets, (1, n), &device)?;
            let logprobs = self
                .model
                .model
                .logprobs_from_hidden(&hidden.unsqueeze(0)?, &targets)?;
            let loss = (logprobs.sum_all()?.neg()? / total.max(1) as f64)?;
            let store = loss.backward()?;
            for (acc, var) in grads.iter_mut().zip(&self.params.vars) {
                if let Some(g) = store.get(var.as_tensor()) {
                    *acc = (&*acc + g)?;
                }
            }
            loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            // Tokens predicted with probability above 1/2 (hence the arg-max), from the same forward pass.
            correct += logprobs
                .ge(f64::from(0.5f32.ln()))?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()? as usize;
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
