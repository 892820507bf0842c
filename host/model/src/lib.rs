//! `sod-model`: the model layer of sod's trainer.
//!
//! - [`Qwen3Config`] and [`Qwen3`]: a Qwen3 decoder written with differentiable candle ops only, so that every
//!   weight receives gradients; batched forward with left or right padding, a [`KvCache`] decode path and
//!   memory-aware [`Qwen3::token_logprobs`].
//! - [`load_model_dir`], [`save_checkpoint`], [`init_random`]: Hugging Face model directories to and from
//!   trainable f32 variables in a `candle_nn::VarMap`.
//! - [`ChatTokenizer`]: `tokenizer.json` plus the model's chat template (rendered with minijinja), and
//!   [`parse_tool_calls`] for Hermes-style `<tool_call>` blocks.
//! - [`Sampler`] and [`Qwen3::generate_batch`]: seeded temperature/top-p sampling with the KV cache.
//! - [`write_tiny_model_dir`]: a complete tiny model directory with a byte-level BPE tokenizer trained in Rust, for
//!   tests and demos (nothing is downloaded).
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use sod_model::{ChatMessage, ChatTokenizer, Qwen3Config, Sampler, SamplingParams, load_model_dir, write_tiny_model_dir};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("student");
//! write_tiny_model_dir(&path, &Qwen3Config::tiny(300, 64, 2), &["What is 2 + 2? It is 4."], 0)?;
//!
//! let student = load_model_dir(&path, &Device::Cpu)?; // trainable f32 Vars in student.varmap
//! let tok = ChatTokenizer::from_dir(&path)?;
//! let prompt = tok.encode_chat(&[ChatMessage::user("What is 2 + 2?")], &[], true)?;
//!
//! // Sample a continuation; behaviour log-probs come back with the tokens.
//! let mut samplers = vec![Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.95 }, 42, "prompt-0", 0)?];
//! let out = student.model.generate_batch(&[prompt.clone()], 8, &tok.stop_token_ids(), &mut samplers)?;
//! assert_eq!(out[0].tokens.len(), out[0].logprobs.len());
//!
//! // Differentiable log-probs of the whole trajectory, for a loss.
//! let ids: Vec<u32> = prompt.iter().chain(&out[0].tokens).copied().collect();
//! let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
//! let logprobs = student.model.next_token_logprobs(&input, None)?; // [1, len - 1]
//! let grads = logprobs.sum_all()?.backward()?;
//! assert!(grads.get(student.varmap.all_vars()[0].as_tensor()).is_some());
//! # Ok(())
//! # }
//! ```

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod kv_cache;
pub mod qwen3;
pub mod sampling;
pub mod tiny;
pub mod tokenizer;
pub mod tool_calls;

pub use chat::{BUILTIN_CHAT_TEMPLATE, ChatMessage, ChatTemplate, Role};
pub use checkpoint::{SaveDtype, TrainableModel, init_random, load_model_dir, save_checkpoint};
pub use config::{ConfigError, Qwen3Config};
pub use error::{ModelError, Result};
pub use kv_cache::{KvCache, SequenceKv};
pub use qwen3::{Checkpoint, ComputeDtype, Qwen3, parameter_shapes};
pub use sampling::{FinishReason, Generation, SampledToken, Sampler, SamplingParams};
pub use tiny::{TINY_ADDED_TOKENS, train_tiny_tokenizer, write_tiny_model_dir};
pub use tokenizer::{ChatTokenizer, RenderedChat};
pub use tool_calls::{ToolCall, ToolCallError, parse_tool_calls, strip_tool_calls};
