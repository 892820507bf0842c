//! `sod sft --config sft.toml`: supervised fine-tuning of a Hugging Face model on the user's conversations (the
//! paper's cold start, before on-policy distillation), written out as a Hugging Face directory that `sod train`
//! takes as its student and `sod eval` evaluates.
//!
//! ```toml
//! model = "models/qwen3-0.6b"      # Hugging Face directory to start from
//! data = "data/conversations.jsonl" # JSONL or Parquet: `messages` (+ optional `tools`) per row, see sft::data
//! out_dir = "runs/sft"
//! epochs = 2                       # or `steps = N`
//! batch_size = 16                  # conversations per optimiser step
//! micro_batch = 4                  # per forward/backward pass (gradient accumulation over the rest)
//! learning_rate = 1e-5
//! schedule = "cosine"              # constant | cosine | linear, after the warm-up
//! warmup_ratio = 0.05              # or `warmup_steps = N`
//! ```
//!
//! Relative paths are relative to the config file. Every other field has a default ([`SftRunConfig`]); unknown
//! fields are errors. The run writes into `out_dir`:
//! - `sft.toml`: the settings, every default filled in;
//! - `metrics.jsonl`: one line per step (step, epoch, learning rate, loss, tokens predicted with p > 1/2, gradient
//!   norm, trained tokens), a deterministic function of the inputs;
//! - `checkpoints/step-N/`: a Hugging Face directory plus the optimiser state, every `checkpoint_every` steps and
//!   at the end; `--resume` continues from the latest one bit for bit (see [`crate::checkpoint`]);
//! - `model/`: the final model, in the input's dtype unless `checkpoint_dtype` says otherwise, with the
//!   tokenizer, template and generation files of the input.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sod_model::{ChatTokenizer, SaveDtype, load_model_dir};

use super::data::{Columns, load_conversations};
use super::{SftConfig, SftExample, SftStepMetrics, SftTrainer, tokenize_conversation};
use crate::checkpoint;
use crate::config::apply_override;
use crate::error::{Result, TrainError};
use crate::metrics::{MetricsWriter, progress_bar};
use crate::update::LrSchedule;

/// What to do with a conversation longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Refuse the file, naming the row (the default: a silently shortened corpus trains something else).
    #[default]
    Error,
    /// Leave the conversation out, and say how many were.
    Skip,
}

/// The settings of `sod sft`, as read from `sft.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftRunConfig {
    /// Hugging Face directory of the model to fine-tune.
    pub model: PathBuf,
    /// The conversations: JSONL or Parquet (see [`super::data`]).
    pub data: PathBuf,
    /// Where `sft.toml`, `metrics.jsonl`, `checkpoints/` and `model/` go.
    pub out_dir: PathBuf,
    /// The column holding each row's messages.
    #[serde(default = "defaults::messages_key")]
    pub messages_key: String,
    /// The column holding each row's tool schemas (optional per row).
    #[serde(default = "defaults::tools_key")]
    pub tools_key: String,
    /// Passes over the data (may be fractional); used when `steps` is absent. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Optimiser steps; overrides `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Conversations per optimiser step.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Conversations per forward/backward pass; gradients are accumulated over the batch's micro-batches (the
    /// result does not depend on it).
    #[serde(default = "defaults::micro_batch")]
    pub micro_batch: usize,
    /// Peak learning rate of AdamW (betas 0.9, 0.999, eps 1e-8).
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// The schedule after the warm-up.
    #[serde(default = "defaults::schedule")]
    pub schedule: LrSchedule,
    /// The fraction of the peak learning rate the schedule decays to.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Warm-up steps; absent: `warmup_ratio` of the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Warm-up as a fraction of the steps (rounded up), when `warmup_steps` is absent.
    #[serde(default = "defaults::warmup_ratio")]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip.
    #[serde(default = "defaults::max_grad_norm")]
    pub max_grad_norm: f64,
    /// Decoupled AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Seed of the data order (a fresh permutation per pass).
    #[serde(default)]
    pub seed: u64,
    /// Longest conversation in tokens; absent: the model's `max_position_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// What a longer conversation does.
    #[serde(default)]
    pub truncation: Truncation,
    /// Save a checkpoint every this many steps (0: only at the end). The last step is always saved.
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Recompute each decoder layer in the backward pass instead of keeping every layer's activations (default
    /// true, as TRL's SFT does): a backward pass then holds one layer's activations, for one more forward pass.
    #[serde(default = "defaults::yes")]
    pub gradient_checkpointing: bool,
    /// Variables for the chat template (transformers' `apply_chat_template` keyword arguments), e.g.
    /// `{ enable_thinking = false }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub chat_template_kwargs: std::collections::BTreeMap<String, toml::Value>,
    /// The dtype of the written weights (`"float32"`, `"bfloat16"`, `"float16"`); absent: the input model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dtype: Option<SaveDtype>,
    /// The dtype the decoder layers compute in: `"float32"` (absent: the default) or `"bfloat16"` (mixed precision
    /// over f32 master weights; docs/gpu.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_dtype: Option<sod_model::ComputeDtype>,
}

mod defaults {
    use crate::update::LrSchedule;

    pub fn messages_key() -> String {
        "messages".into()
    }
    pub fn tools_key() -> String {
        "tools".into()
    }
    pub fn batch_size() -> usize {
        16
    }
    pub fn micro_batch() -> usize {
        4
    }
    pub fn learning_rate() -> f64 {
        1e-5
    }
    pub fn schedule() -> LrSchedule {
        LrSchedule::Cosine
    }
    pub fn warmup_ratio() -> f64 {
        0.05
    }
    pub fn max_grad_norm() -> f64 {
        1.0
    }
    pub fn yes() -> bool {
        true
    }
}

impl SftRunConfig {
    /// Reads `path`, applies `overrides` (`key=value`, as `sod train --set`), resolves relative paths against the
    /// file's directory and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io("reading", path))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("{}: {e}", path.display())))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let mut config: SftRunConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut config.model, &mut config.data, &mut config.out_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the values' ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, problem: String| Err(TrainError::Config(format!("{field}: {problem}")));
        if let Some(epochs) = self.epochs
            && !(epochs.is_finite() && epochs > 0.0)
        {
            return bad("epochs", format!("{epochs} must be a positive number"));
        }
        if self.epochs.is_some() && self.steps.is_some() {
            return bad("epochs", "give epochs or steps, not both".into());
        }
        if self.steps == Some(0) {
            return bad("steps", "must be at least 1".into());
        }
        if self.micro_batch > self.batch_size {
            return bad(
                "micro_batch",
                format!(
                    "{} is larger than batch_size = {}",
                    self.micro_batch, self.batch_size
                ),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} must be in [0, 1)", self.warmup_ratio),
            );
        }
        if self.max_length == Some(0) {
            return bad("max_length", "must be at least 1".into());
        }
        // The rest (batch sizes, learning rate, clip, decay, min_lr_ratio) is checked by SftConfig.
        self.trainer_config(1).validate()
    }

    /// Optimiser steps for `conversations` training conversations.
    pub fn total_steps(&self, conversations: usize) -> u64 {
        self.steps.unwrap_or_else(|| {
            let epochs = self.epochs.unwrap_or(1.0);
            ((epochs * conversations as f64) / self.batch_size as f64)
                .ceil()
                .max(1.0) as u64
        })
    }

    /// The trainer's settings for a run of `steps` steps.
    pub fn trainer_config(&self, steps: u64) -> SftConfig {
        SftConfig {
            steps,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            learning_rate: self.learning_rate,
            warmup_steps: self
                .warmup_steps
                .unwrap_or_else(|| (self.warmup_ratio * steps as f64).ceil() as u64),
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            seed: self.seed,
            schedule: self.schedule,
            min_lr_ratio: self.min_lr_ratio,
            gradient_checkpointing: self.gradient_checkpointing,
        }
    }

    /// The settings as TOML, every default filled in.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// How `sod sft` runs (not part of the recorded settings).
#[derive(Debug, Clone)]
pub struct SftRunOptions {
    /// Device of the model.
    pub device: Device,
    /// Continue from the latest checkpoint in `out_dir`.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Without the bar: a line on stderr every this many steps (0: none).
    pub log_every: u64,
}

impl Default for SftRunOptions {
    fn default() -> Self {
        SftRunOptions {
            device: Device::Cpu,
            resume: false,
            progress: std::io::stderr().is_terminal(),
            log_every: 10,
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SftMetricsLine {
    /// The step's measurements.
    #[serde(flatten)]
    pub metrics: SftStepMetrics,
    /// Passes over the data completed after this step.
    pub epoch: f64,
}

/// The result of [`run_sft`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftRunSummary {
    /// Steps completed (including those before a resume).
    pub step: u64,
    /// Steps of the run.
    pub steps: u64,
    /// Conversations trained on.
    pub conversations: usize,
    /// Conversations left out for their length (`truncation = "skip"`).
    pub skipped: usize,
    /// Trained tokens over the data.
    pub trained_tokens: usize,
    /// The loss of the first step this process ran.
    pub first_loss: Option<f64>,
    /// The last step run by this process.
    pub last: Option<SftStepMetrics>,
    /// The final model (Hugging Face directory).
    pub model: PathBuf,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// The file of per-step metrics in `out_dir`.
pub const SFT_METRICS_FILE: &str = "metrics.jsonl";
/// The final model's directory in `out_dir`.
pub const SFT_MODEL_DIR: &str = "model";

/// Runs `sod sft` (see the module docs).
pub fn run_sft(config: &SftRunConfig, options: &SftRunOptions) -> Result<SftRunSummary> {
    config.validate()?;
    let metrics_path = config.out_dir.join(SFT_METRICS_FILE);
    let resume_from = checkpoint::resume_point(&config.out_dir, &metrics_path, options.resume)?;

    let tokenizer = ChatTokenizer::from_dir(&config.model)?
        .with_template_kwargs(crate::config::template_kwargs(&config.chat_template_kwargs));
    let columns = Columns {
        messages: config.messages_key.clone(),
        tools: config.tools_key.clone(),
    };
    let conversations = load_conversations(&config.data, &columns)?;
    let model_dir = resume_from
        .as_ref()
        .map_or(config.model.clone(), |(_, dir)| dir.clone());
    let mut model = load_model_dir(&model_dir, &options.device)?;
    model.model = model
        .model
        .with_compute_dtype(config.compute_dtype.unwrap_or_default());
    let max_length = config
        .max_length
        .unwrap_or(model.config.max_position_embeddings)
        .min(model.config.max_position_embeddings);
    let mut examples: Vec<SftExample> = Vec::with_capacity(conversations.len());
    let mut skipped = 0;
    for c in &conversations {
        let example = tokenize_conversation(&tokenizer, &c.id, &c.messages, &c.tools)
            .map_err(|e| c.at.error(&config.data, e.to_string()))?;
        if example.tokens.len() > max_length {
            if config.truncation == Truncation::Skip {
                skipped += 1;
                continue;
            }
            return Err(c.at.error(
                &config.data,
                format!(
                    "conversation {:?} has {} tokens, more than max_length = {max_length} (set truncation = \
                     \"skip\" to leave such conversations out)",
                    c.id,
                    example.tokens.len()
                ),
            ));
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(TrainError::DatasetFile {
            path: config.data.clone(),
            message: format!("every conversation is longer than max_length = {max_length}"),
        });
    }
    let count = examples.len();
    let trained_tokens = examples.iter().map(SftExample::trained_tokens).sum();
    let steps = config.total_steps(count);
    let trainer_config = config.trainer_config(steps);
    let mut trainer = SftTrainer::new(&model, examples, trainer_config)?;
    if let Some((_, dir)) = &resume_from {
        trainer.resume_from(dir)?;
    }
    std::fs::create_dir_all(&config.out_dir)
        .map_err(TrainError::io("creating", &config.out_dir))?;
    let record = config.to_toml_string();
    if resume_from.is_none() {
        let path = config.out_dir.join("sft.toml");
        std::fs::write(&path, &record).map_err(TrainError::io("writing", &path))?;
    }
    let mut metrics = MetricsWriter::open(&metrics_path, resume_from.as_ref().map(|(s, _)| *s))?;
    let dtype = config.checkpoint_dtype.unwrap_or(model.source_dtype);

    let bar = progress_bar(options.progress, steps, trainer.step());
    let started = std::time::Instant::now();
    let first_step = trainer.step();
    let mut first_loss = None;
    let mut last = None;
    let mut last_checkpoint = None;
    while trainer.step() < steps {
        let m = trainer.train_step()?;
        first_loss.get_or_insert(m.loss);
        last = Some(m);
        metrics.write(&SftMetricsLine {
            metrics: m,
            epoch: (m.step * config.batch_size as u64) as f64 / count as f64,
        })?;
        let message = format!(
            "loss {:.4}  p>1/2 {:.3}  lr {:.2e}",
            m.loss, m.confident_fraction, m.lr
        );
        bar.set_position(m.step);
        bar.set_message(message.clone());
        if !options.progress && options.log_every > 0 && m.step.is_multiple_of(options.log_every) {
            let done = (m.step - first_step) as f64;
            let per_step = started.elapsed().as_secs_f64() / done.max(1.0);
            eprintln!(
                "sft step {}/{steps}: {message} ({per_step:.2} s/step, ETA {:.0} s)",
                m.step,
                per_step * (steps - m.step) as f64
            );
        }
        let every = config.checkpoint_every;
        if (every > 0 && m.step.is_multiple_of(every)) || m.step == steps {
            last_checkpoint = Some(trainer.save_checkpoint(
                &config.out_dir,
                &config.model,
                dtype,
                record.clone(),
            )?);
        }
    }
    bar.finish_and_clear();
    let model_out = config.out_dir.join(SFT_MODEL_DIR);
    model.save_checkpoint(&model_out, dtype, Some(&config.model))?;
    Ok(SftRunSummary {
        step: trainer.step(),
        steps,
        conversations: count,
        skipped,
        trained_tokens,
        first_loss,
        last,
        model: model_out,
        checkpoint: last_checkpoint.or_else(|| resume_from.map(|(_, dir)| dir)),
    })
}
