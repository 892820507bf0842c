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
pub use kv_cache::KvCache;
pub use qwen3::{Qwen3, parameter_shapes};
pub use sampling::{FinishReason, Generation, SampledToken, Sampler, SamplingParams};
pub use tiny::{TINY_ADDED_TOKENS, train_tiny_tokenizer, write_tiny_model_dir};
pub use tokenizer::ChatTokenizer;
pub use tool_calls::{ToolCall, ToolCallError, parse_tool_calls, strip_tool_calls};
