//! The main job, step by step: gold trajectories with the real calculator, a tokenizer and two models trained by
//! the project (a teacher, and a smaller student with a short cold start), cached by a hash of their settings;
//! then the student is evaluated, trained with OPD and with SOD from the same start and seed, and evaluated again.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sod_model::{
    ChatMessage, ChatTemplate, ChatTokenizer, Qwen3, Qwen3Config, SaveDtype, load_model_dir,
    save_checkpoint, write_tiny_model_dir,
};
use sod_sandbox::{Sandbox, SandboxConfig};
use sod_train::rollout::{RolloutConfig, RolloutSettings, ToolBox};
use sod_train::sft::{SftConfig, SftStepMetrics, SftTrainer, tokenize_conversation};
use sod_train::{RunConfig, StepMetrics, Trainer, TrainerOptions};

use super::gold::{self, Calculator, SYSTEM_PROMPT, gold_conversation, recovery_conversation};
use super::jobs::{self, Job};
use super::takeover::{self, SampledStart, TakeOver};
use super::tasks::{self, Task};

/// Width and depth of a model (the MLP is 3x the hidden size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSize {
    /// Hidden size.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention); divides `heads`.
    pub kv_heads: usize,
    /// Width of each head. Qwen3 normalises queries and keys per head (RMSNorm), so an attention logit starts out
    /// bounded by about `sqrt(head_dim)`: narrow heads cannot attend sharply to one token among hundreds until
    /// their norm weights grow, which is slow. Copying digits needs sharp attention, hence wide heads.
    pub head_dim: usize,
}

impl ModelSize {
    fn config(&self, vocab_size: usize, rope_theta: f64) -> Qwen3Config {
        let mut config = Qwen3Config::tiny(vocab_size, self.hidden, self.layers);
        config.num_attention_heads = self.heads;
        config.num_key_value_heads = self.kv_heads;
        config.head_dim = Some(self.head_dim);
        config.rope_theta = rope_theta;
        config
    }
}

/// The on-policy phase (identical for every arm except the loss and its learning rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlSettings {
    /// Optimiser steps.
    pub steps: u64,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Trajectories per prompt.
    pub samples_per_prompt: usize,
    /// Peak learning rate of the full-distribution arms.
    pub learning_rate: f64,
    /// Peak learning rate of the sampled-token arms (the paper's signal is far noisier: at the full arms' rate
    /// it collapses this student into run-on turns, docs/training.md).
    pub sampled_learning_rate: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Rollout temperature (log-probs are taken at it too).
    pub temperature: f64,
    /// Temperature of both distributions in the full-distribution arms' divergence (chosen on a validation
    /// split: 1 taught this student faster than the rollout temperature 0.6, docs/training.md).
    pub divergence_temperature: f64,
    /// SOD's cap on step weights (`w_k <= 1 + delta`).
    pub delta: f64,
}

/// One on-policy arm of the demo: a loss plugin and the signal it distils.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// OPD with the paper's sampled-token signal.
    OpdSampled,
    /// SOD with the paper's sampled-token signal.
    SodSampled,
    /// OPD with the full-vocabulary reverse KL.
    OpdFull,
    /// SOD's step weights on the full-vocabulary reverse KL.
    SodFull,
    /// GRPO alone: the outcome reward, no teacher.
    Grpo,
    /// The null-signal control: [`Arm::OpdFull`] with the teacher's distributions shuffled across tokens, so that
    /// the update has the same size and schedule but carries no information about the teacher.
    NullControl,
}

impl Arm {
    /// The arms of the default demo, in table order.
    pub const MAIN: [Arm; 4] = [Arm::OpdSampled, Arm::SodSampled, Arm::OpdFull, Arm::SodFull];

    /// The loss plugin.
    pub fn loss(self) -> &'static str {
        match self {
            Arm::OpdSampled | Arm::OpdFull | Arm::NullControl => "opd",
            Arm::SodSampled | Arm::SodFull => "sod",
            Arm::Grpo => "grpo",
        }
    }

    /// Whether the signal is the full-distribution one.
    pub fn full(self) -> bool {
        matches!(self, Arm::OpdFull | Arm::SodFull | Arm::NullControl)
    }

    /// Whether SOD's step weights apply.
    pub fn step_weighted(self) -> bool {
        self.loss() == "sod"
    }

    /// Whether the arm distils from a teacher.
    pub fn uses_teacher(self) -> bool {
        self != Arm::Grpo
    }

    /// Its name in tables: `OPD (sampled-token)`, `SOD (full KL)`, ...
    pub fn label(self) -> &'static str {
        match self {
            Arm::OpdSampled => "OPD (sampled-token)",
            Arm::SodSampled => "SOD (sampled-token)",
            Arm::OpdFull => "OPD (full KL)",
            Arm::SodFull => "SOD (full KL)",
            Arm::Grpo => "GRPO alone",
            Arm::NullControl => "OPD (full KL, null signal)",
        }
    }

    /// Its directory in the run directory (and the name of its evaluation file).
    pub fn dir(self) -> &'static str {
        match self {
            Arm::OpdSampled => "opd-sampled",
            Arm::SodSampled => "sod-sampled",
            Arm::OpdFull => "opd-full",
            Arm::SodFull => "sod-full",
            Arm::Grpo => "grpo",
            Arm::NullControl => "null-control",
        }
    }
}

/// What the teacher was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherKind {
    /// Gold trajectories only.
    Gold,
    /// Gold trajectories and recovery ones (a miscopied calculator call, its real answer, the step redone).
    Recovery,
}

impl TeacherKind {
    /// Table order.
    pub const ALL: [TeacherKind; 2] = [TeacherKind::Recovery, TeacherKind::Gold];

    /// `recovery teacher`, `gold-only teacher`.
    pub fn label(self) -> &'static str {
        match self {
            TeacherKind::Gold => "gold-only teacher",
            TeacherKind::Recovery => "recovery teacher",
        }
    }

    /// `gold`, `recovery`.
    pub fn name(self) -> &'static str {
        match self {
            TeacherKind::Gold => "gold",
            TeacherKind::Recovery => "recovery",
        }
    }
}

/// One on-policy run of the plan: an arm, its teacher (none for GRPO), and the seed of its sampling and data order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunSpec {
    /// The arm.
    pub arm: Arm,
    /// The teacher it distils from.
    pub teacher: Option<TeacherKind>,
    /// The seed of the run's sampling and prompt order (the models are the same for every seed).
    pub seed: u64,
}

impl RunSpec {
    /// The run's directory in the run directory, e.g. `recovery-opd-full-seed0`.
    pub fn dir(&self) -> String {
        match self.teacher {
            Some(t) => format!("{}-{}-seed{}", t.name(), self.arm.dir(), self.seed),
            None => format!("{}-seed{}", self.arm.dir(), self.seed),
        }
    }

    /// The row it belongs to (the same for every seed): `student + OPD (full KL), recovery teacher`.
    pub fn row_label(&self) -> String {
        match self.teacher {
            Some(t) => format!("student + {}, {}", self.arm.label(), t.label()),
            None => format!("student + {}", self.arm.label()),
        }
    }
}

/// Everything that determines a demo run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// Seed of the tasks, the model initialisations, the data orders and the sampling.
    pub seed: u64,
    /// Train problems (gold trajectories for SFT, prompts for on-policy training).
    pub train_tasks: usize,
    /// Held-out test problems the models are evaluated on.
    pub test_tasks: usize,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// RoPE base of both models. Qwen3's 1e6 is made for long contexts; over a few hundred positions most of its
    /// frequencies barely turn, and copying a number digit by digit needs sharp relative positions.
    pub rope_theta: f64,
    /// The teacher's size.
    pub teacher: ModelSize,
    /// The student's size.
    pub student: ModelSize,
    /// The teacher's supervised training.
    pub teacher_sft: SftConfig,
    /// The student's supervised cold start (`steps` is its most).
    pub student_sft: SftConfig,
    /// Where the cold start stops, if earlier than `student_sft.steps`.
    pub cold_start_stop: Option<ColdStartStop>,
    /// The on-policy phase.
    pub rl: RlSettings,
    /// Most tokens per assistant turn (rollouts and evaluation).
    pub max_new_tokens_per_turn: usize,
    /// The recovery teacher's training: the gold-only teacher fine-tuned on the gold conversations and recovery ones.
    pub recovery_sft: SftConfig,
    /// Recovery conversations in that data, per train problem (each problem's recovery conversation is added with
    /// this probability, chosen by its id).
    pub recovery_fraction: f64,
    /// Seeds of the on-policy runs (`seed`, `seed + 1`, ...); the models are built once.
    pub seeds: u64,
    /// The whole grid (both teachers, every arm, GRPO alone and the null-signal control) rather than the main rows
    /// (the gold-only teacher and [`Arm::MAIN`]).
    pub grid: bool,
}

fn sft(steps: u64, batch_size: usize, learning_rate: f64, seed: u64) -> SftConfig {
    SftConfig {
        steps,
        batch_size,
        micro_batch: batch_size.min(8),
        learning_rate,
        warmup_steps: (steps / 10).max(1),
        max_grad_norm: 1.0,
        weight_decay: 0.0,
        seed,
        schedule: Default::default(),
        min_lr_ratio: 0.0,
        gradient_checkpointing: false,
    }
}

/// When the student's supervised cold start stops: at the first check (every `every` steps from step `from`)
/// where its greedy accuracy on the last `problems` train problems reaches `accuracy`. The student crosses a
/// copy transition, from solving nothing to solving everything within a couple of hundred steps, and where it
/// crosses it moves with any change that rounds differently (measured: 480 steps gave 0.117 on the test split,
/// and 0.000 after a change of the attention's summation order); a criterion on train problems finds the same
/// kind of start wherever the transition falls. The checks use train problems only, never the test split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColdStartStop {
    /// Greedy accuracy to reach.
    pub accuracy: f64,
    /// First step checked.
    pub from: u64,
    /// Steps between checks.
    pub every: u64,
    /// Train problems checked (the last ones of the train split).
    pub problems: usize,
}

impl ColdStartStop {
    /// Whether `step` is a check.
    pub fn checks_at(&self, step: u64) -> bool {
        step >= self.from && (step - self.from) % self.every.max(1) == 0
    }
}

impl DemoSettings {
    /// The default demo: the main rows (the gold-only teacher, [`Arm::MAIN`], one seed). Times are in docs/demo.md.
    ///
    /// Sizes were chosen by measurement (docs/demo.md): with 16 conversations per step and a learning rate of
    /// 1e-3 the teacher learns to copy numbers after about 300 steps and solves every test problem after 600;
    /// with 8 per step, or 3e-3, it did not within 750 steps. The smaller student crosses the same transition
    /// later: after 420 steps it solved none, after 480 about one in ten, after 700 all (2026-11-22). Its cold
    /// start stops where its greedy accuracy on 128 train problems first reaches 0.2 ([`ColdStartStop`]), so
    /// that it starts partly able and its samples at the training temperature end within the
    /// budget. The recovery teacher's fine-tuning: at 300 steps its loss stalled near 0.1 and it recovered from
    /// none of the perturbed prefixes; at 1,200 (the default) its loss was 0.06 and it recovered from 2 of 251.
    /// The on-policy settings were chosen on a validation split of the train problems (docs/training.md).
    pub fn standard(seed: u64) -> Self {
        DemoSettings {
            seed,
            train_tasks: 2048,
            test_tasks: 256,
            vocab_size: 1024,
            rope_theta: 10_000.0,
            teacher: ModelSize {
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                head_dim: 32,
            },
            student: ModelSize {
                hidden: 48,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                head_dim: 24,
            },
            teacher_sft: sft(600, 16, 1e-3, seed),
            student_sft: sft(800, 16, 1e-3, seed),
            cold_start_stop: Some(ColdStartStop {
                accuracy: 0.2,
                from: 300,
                every: 20,
                problems: 128,
            }),
            rl: RlSettings {
                steps: 64,
                prompts_per_step: 8,
                samples_per_prompt: 4,
                learning_rate: 1e-3,
                sampled_learning_rate: 1e-4,
                warmup_steps: 10,
                temperature: 0.6,
                divergence_temperature: 1.0,
                delta: 0.2,
            },
            max_new_tokens_per_turn: 48,
            recovery_sft: sft(1200, 16, 1e-3, seed),
            recovery_fraction: 1.0,
            seeds: 1,
            grid: false,
        }
    }

    /// The whole grid, for three seeds (`sod demo --full`).
    pub fn full(seed: u64) -> Self {
        DemoSettings {
            seeds: 3,
            grid: true,
            ..Self::standard(seed)
        }
    }

    /// The teachers the plan builds, measures and distils from, in table order: the gold-only one for the main rows,
    /// both for the grid. (The main rows distil from the gold-only teacher: the recovery teacher costs a fresh run
    /// ten more minutes and, measured, did not recover from the student's mistakes; docs/demo.md.)
    pub fn teachers(&self) -> Vec<TeacherKind> {
        if self.grid {
            TeacherKind::ALL.to_vec()
        } else {
            vec![TeacherKind::Gold]
        }
    }

    /// Every on-policy run, seed by seed (so that an interrupted grid has whole seeds done).
    pub fn plan(&self) -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for seed in self.seed..self.seed + self.seeds {
            for teacher in self.teachers() {
                for arm in Arm::MAIN {
                    runs.push(RunSpec {
                        arm,
                        teacher: Some(teacher),
                        seed,
                    });
                }
            }
            if self.grid {
                runs.push(RunSpec {
                    arm: Arm::Grpo,
                    teacher: None,
                    seed,
                });
                runs.push(RunSpec {
                    arm: Arm::NullControl,
                    teacher: Some(TeacherKind::Gold),
                    seed,
                });
            }
        }
        runs
    }

    /// A shorter demo with the same (cached) models: fewer on-policy steps.
    pub fn quick(seed: u64) -> Self {
        let mut s = Self::standard(seed);
        s.rl.steps = 4;
        s.rl.prompts_per_step = 2;
        s
    }

    /// Checks what the pipeline needs of the settings; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, size) in [("teacher", self.teacher), ("student", self.student)] {
            size.config(self.vocab_size, self.rope_theta)
                .validate()
                .with_context(|| format!("{name} size"))?;
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            bail!(
                "rope_theta must be a number above 1, not {}",
                self.rope_theta
            );
        }
        if self.train_tasks == 0 || self.test_tasks == 0 {
            bail!("train_tasks and test_tasks must be at least 1");
        }
        for (name, sft) in [
            ("teacher_sft", &self.teacher_sft),
            ("student_sft", &self.student_sft),
            ("recovery_sft", &self.recovery_sft),
        ] {
            sft.validate().with_context(|| name.to_string())?;
        }
        if let Some(stop) = &self.cold_start_stop
            && (!(0.0..=1.0).contains(&stop.accuracy)
                || stop.every == 0
                || stop.problems == 0
                || stop.problems > self.train_tasks)
        {
            bail!(
                "cold_start_stop: accuracy must be within [0, 1], every and problems at least 1, problems at most \
                 train_tasks ({stop:?})"
            );
        }
        let rl = &self.rl;
        if rl.prompts_per_step == 0 || rl.samples_per_prompt == 0 {
            bail!("rl: prompts_per_step and samples_per_prompt must be at least 1");
        }
        for (name, lr) in [
            ("learning_rate", rl.learning_rate),
            ("sampled_learning_rate", rl.sampled_learning_rate),
        ] {
            if !(lr.is_finite() && lr > 0.0) {
                bail!("rl.{name} must be a positive number");
            }
        }
        if !(rl.temperature.is_finite() && rl.temperature > 0.0) {
            bail!("rl.temperature must be positive (on-policy training samples)");
        }
        if !(rl.divergence_temperature.is_finite() && rl.divergence_temperature > 0.0) {
            bail!("rl.divergence_temperature must be positive");
        }
        if !(rl.delta.is_finite() && rl.delta >= 0.0) {
            bail!("rl.delta must be >= 0");
        }
        if self.max_new_tokens_per_turn == 0 {
            bail!("max_new_tokens_per_turn must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.recovery_fraction) {
            bail!("recovery_fraction must be between 0 and 1");
        }
        if self.seeds == 0 {
            bail!("seeds must be at least 1");
        }
        Ok(())
    }

    /// The size and the supervised training of the `role` model.
    pub fn model(&self, role: Role) -> (ModelSize, SftConfig) {
        match role {
            Role::Teacher(TeacherKind::Gold) => (self.teacher, self.teacher_sft),
            Role::Teacher(TeacherKind::Recovery) => (self.teacher, self.recovery_sft),
            Role::Student => (self.student, self.student_sft),
        }
    }

    /// The part of the settings the cached `role` model depends on (the data, the tokenizer, its size and its
    /// supervised training), hashed: its cache directory's name. Each model is cached apart, so that changing the
    /// student's settings does not rebuild a teacher.
    pub fn model_cache_key(&self, role: Role) -> String {
        let (size, sft) = self.model(role);
        // The version changes whenever the code computes a model differently (v4: grouped-query attention
        // without copied key/value heads, whose gradients round differently; v5: conversations laid out as the
        // chat template renders them, with the newline after each `<|im_end|>`; v6: the SFT's output head in
        // chunks, differentiated one at a time, whose gradients round differently), so that no cache made by
        // older code is taken for this code's result.
        let mut key = serde_json::json!({
            "version": "sod-demo-model-v6",
            "role": role.name(),
            "seed": self.seed,
            "train_tasks": self.train_tasks,
            "test_tasks": self.test_tasks,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "size": size,
            "sft": sft,
        });
        if role == Role::Student {
            key["cold_start_stop"] =
                serde_json::to_value(self.cold_start_stop).unwrap_or(serde_json::Value::Null);
        }
        if role == Role::Teacher(TeacherKind::Recovery) {
            // It starts from the gold-only teacher.
            key["base"] = self
                .model_cache_key(Role::Teacher(TeacherKind::Gold))
                .into();
            key["recovery_fraction"] = self.recovery_fraction.into();
        }
        let digest = Sha256::digest(sorted_keys(&key).to_string());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", role.name())
    }
}

/// `value` with every object's keys in sorted order, so that a hash of its text does not depend on the order the
/// keys were inserted in (serde_json keeps insertion order in this build: chat templates need it).
fn sorted_keys(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted_keys).collect())
        }
        other => other.clone(),
    }
}

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A larger model trained first, whose log-probs guide the student.
    Teacher(TeacherKind),
    /// The smaller model with a short cold start, trained on-policy.
    Student,
}

impl Role {
    /// `teacher` (the gold-only teacher, as before recovery teachers existed, so that its cache stays valid),
    /// `teacher-recovery` or `student`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Teacher(TeacherKind::Gold) => "teacher",
            Role::Teacher(TeacherKind::Recovery) => "teacher-recovery",
            Role::Student => "student",
        }
    }
}

/// Where the demo reads and writes.
#[derive(Debug, Clone)]
pub struct DemoPaths {
    /// The run directory (report, metrics, checkpoints).
    pub out_dir: PathBuf,
    /// Root of the model cache (`<cache_root>/<key>/teacher`, `.../student`).
    pub cache_root: PathBuf,
    /// Tool components (`calculator.wasm`).
    pub tools_dir: PathBuf,
    /// Loss plugins (`sod`, `opd`).
    pub plugin_dir: PathBuf,
}

/// Measured behaviour of a model on the test split (greedy decoding, with the calculator).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Problems evaluated.
    pub problems: usize,
    /// Fraction answered exactly right.
    pub accuracy: f64,
    /// Tool calls that parsed, named the calculator and were accepted, over all tool calls (0 without calls).
    pub valid_tool_call_fraction: f64,
    /// Mean tool calls per problem.
    pub mean_tool_calls: f64,
    /// Mean assistant turns (steps) per problem.
    pub mean_steps: f64,
    /// Fraction of trajectories ended by a budget.
    pub truncated_fraction: f64,
}

/// What building one cached model measured (written next to it once, read on later runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltModel {
    /// The cache directory's name (`DemoSettings::model_cache_key`).
    pub key: String,
    /// Conversations it was trained on (gold, and recovery ones for the recovery teacher).
    pub conversations: usize,
    /// Of them, recovery conversations.
    #[serde(default)]
    pub recovery_conversations: usize,
    /// Trained (assistant) tokens over all gold conversations.
    pub gold_trained_tokens: usize,
    /// Prompt tokens over all gold conversations.
    pub gold_prompt_tokens: usize,
    /// Parameters.
    pub parameters: usize,
    /// The last supervised step.
    pub sft_last: Option<SftStepMetrics>,
    /// The cold start's checks (see [`ColdStartStop`]): step and greedy accuracy on the checked train problems.
    #[serde(default)]
    pub checks: Vec<(u64, f64)>,
    /// Seconds spent building it (gold data, tokenizer, training).
    pub build_seconds: f64,
    /// Whether this run found it in the cache rather than building it.
    pub cached: bool,
}

/// The models of a demo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsRecord {
    /// The teachers, in [`DemoSettings::teachers`] order.
    pub teachers: Vec<(TeacherKind, BuiltModel)>,
    /// The student after its cold start.
    pub student: BuiltModel,
}

/// One on-policy run (a [`RunSpec`]) and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlRun {
    /// The arm, its teacher and its seed.
    pub spec: RunSpec,
    /// Whether each test problem was answered right after training, in test order (for paired comparisons).
    pub correct: Vec<bool>,
    /// Per-step metrics, as in the run's `metrics.jsonl`.
    pub steps: Vec<StepMetrics>,
    /// The trained student on the test split.
    pub after: Evaluation,
    /// Seconds of training.
    pub train_seconds: f64,
}

/// A teacher as measured on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRecord {
    /// Which teacher.
    pub kind: TeacherKind,
    /// Greedy, from the prompt.
    pub evaluation: Evaluation,
    /// Greedy, from the cold-start student's prefixes.
    pub take_over: TakeOver,
}

/// Everything the demo measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoOutcome {
    /// The settings.
    pub settings: DemoSettings,
    /// How the models were built, and whether this run built them.
    pub models: ModelsRecord,
    /// The teachers on the test split, in [`DemoSettings::teachers`] order.
    pub teachers: Vec<TeacherRecord>,
    /// The student after its cold start, before on-policy training.
    pub student_before: Evaluation,
    /// Whether the cold-start student answered each test problem right, in test order.
    pub student_before_correct: Vec<bool>,
    /// The cold-start student sampled at the training temperature (how its samples end).
    pub student_sampled: SampledStart,
    /// On-policy runs, in [`DemoSettings::plan`] order.
    pub runs: Vec<RlRun>,
}

/// In a model's cache directory: its record, written last (its presence marks a complete entry).
const RECORD_FILE: &str = "record.json";
/// In a model's cache directory: the Hugging Face-format model.
const MODEL_DIR: &str = "model";

/// Whether the calculator's schema is rendered into the demo's prompts, in the gold conversations, the on-policy
/// runs and the evaluations alike. No: the models learn the call format from the gold trajectories, and with the
/// schema nine in ten tokens of every sequence would be the same tool description (see
/// `ToolBox::with_schemas_in_prompt`).
const TOOL_SCHEMAS_IN_PROMPT: bool = false;

/// The models' directories.
#[derive(Debug, Clone)]
pub struct ModelDirs {
    /// Each teacher's, in [`DemoSettings::teachers`] order.
    pub teachers: Vec<(TeacherKind, PathBuf)>,
    /// The cold-start student's.
    pub student: PathBuf,
}

impl ModelDirs {
    /// The directory of the `kind` teacher.
    pub fn teacher(&self, kind: TeacherKind) -> anyhow::Result<&Path> {
        self.teachers
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, dir)| dir.as_path())
            .with_context(|| format!("the plan has no {}", kind.label()))
    }
}

/// Builds (or finds in the cache) the teachers and the student, `jobs` at a time; returns their model directories
/// and records.
pub fn prepare_models(
    settings: &DemoSettings,
    paths: &DemoPaths,
    calculator: &Calculator<'_>,
    jobs: usize,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(ModelDirs, ModelsRecord)> {
    let teacher_kinds = settings.teachers();
    // The gold-only teacher and the student side by side (the teacher first: it takes longest), then the recovery
    // teacher, which starts from the gold-only one.
    let roles = [Role::Teacher(TeacherKind::Gold), Role::Student];
    let builds: Vec<Job<'_, (PathBuf, BuiltModel)>> = roles
        .iter()
        .map(|&role| {
            Box::new(move || prepare_model(settings, role, paths, calculator, None, log))
                as Job<'_, (PathBuf, BuiltModel)>
        })
        .collect();
    let mut built = jobs::run(jobs, builds)?;
    let student = built.pop().context("the student's build")?;
    if teacher_kinds.contains(&TeacherKind::Recovery) {
        let gold = &built[0].0;
        built.push(prepare_model(
            settings,
            Role::Teacher(TeacherKind::Recovery),
            paths,
            calculator,
            Some(gold),
            log,
        )?);
    }
    let built: Vec<(PathBuf, BuiltModel)> = teacher_kinds
        .iter()
        .map(|kind| match kind {
            TeacherKind::Gold => built[0].clone(),
            TeacherKind::Recovery => built[1].clone(),
        })
        .collect();
    let mut dirs = ModelDirs {
        teachers: Vec::new(),
        student: student.0,
    };
    let mut teachers = Vec::new();
    // Every tokenizer is trained on the same corpus with the same settings; a teacher scores the student's tokens,
    // so they must be the same file.
    let tokenizer = |dir: &Path| {
        let path = dir.join("tokenizer.json");
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let student_tokenizer = tokenizer(&dirs.student)?;
    for (kind, (dir, record)) in teacher_kinds.into_iter().zip(built) {
        if tokenizer(&dir)? != student_tokenizer {
            bail!(
                "the cached teacher ({}) and student ({}) have different tokenizers; remove the cache directory \
                 and run again",
                dir.display(),
                dirs.student.display()
            );
        }
        dirs.teachers.push((kind, dir));
        teachers.push((kind, record));
    }
    Ok((
        dirs,
        ModelsRecord {
            teachers,
            student: student.1,
        },
    ))
}

/// Whether the recovery teacher's data holds a recovery conversation of `task` (a function of its id).
fn has_recovery(task: &Task, fraction: f64) -> bool {
    let digest = Sha256::digest(format!("sod-demo-recovery-pick-v1/{}", task.id));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    ((u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// The toolbox of every rollout of the demo: the calculator of [`rollout_config`].
fn calculator_toolbox(settings: &DemoSettings, sandbox: &Sandbox) -> anyhow::Result<ToolBox> {
    Ok(rollout_config(settings).toolbox(sandbox)?)
}

/// Builds (or finds in the cache) one model; returns its model directory and record.
fn prepare_model(
    settings: &DemoSettings,
    role: Role,
    paths: &DemoPaths,
    calculator: &Calculator<'_>,
    base: Option<&Path>,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(PathBuf, BuiltModel)> {
    let name = role.name();
    let key = settings.model_cache_key(role);
    let dir = paths.cache_root.join(&key);
    let model_dir = dir.join(MODEL_DIR);
    let record_path = dir.join(RECORD_FILE);
    if record_path.is_file() && model_dir.is_dir() {
        let text = std::fs::read_to_string(&record_path)
            .with_context(|| format!("reading {}", record_path.display()))?;
        let mut record: BuiltModel = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", record_path.display()))?;
        record.cached = true;
        log(&format!("{name}: cached in {}", dir.display()));
        return Ok((model_dir, record));
    }
    let started = Instant::now();
    // A directory without a record is an interrupted build: start it over.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let train = tasks::train_tasks(settings.seed, settings.train_tasks, settings.test_tasks);
    let schemas: Vec<serde_json::Value> = if TOOL_SCHEMAS_IN_PROMPT {
        vec![calculator.schema()]
    } else {
        Vec::new()
    };
    let gold: Vec<Vec<ChatMessage>> = train
        .iter()
        .map(|task| gold_conversation(calculator, task))
        .collect::<anyhow::Result<_>>()?;
    let mut conversations: Vec<(&Task, Vec<ChatMessage>)> =
        train.iter().zip(gold.iter().cloned()).collect();
    let mut recovery_conversations = 0;
    if role == Role::Teacher(TeacherKind::Recovery) {
        for task in train
            .iter()
            .filter(|t| has_recovery(t, settings.recovery_fraction))
        {
            conversations.push((task, recovery_conversation(calculator, task)?));
            recovery_conversations += 1;
        }
    }
    log(&format!(
        "{name}: {} gold and {recovery_conversations} recovery conversations, every step checked against the real \
         calculator",
        gold.len()
    ));
    // The tokenizer's corpus is the gold conversations for every model (see `prepare_models`).
    let template = ChatTemplate::builtin();
    let rendered: Vec<String> = gold
        .iter()
        .map(|c| template.render(c, &schemas, false, &serde_json::Map::new()))
        .collect::<Result<_, _>>()?;
    let corpus_refs: Vec<&str> = rendered.iter().map(String::as_str).collect();

    let (size, sft_config) = settings.model(role);
    // A fresh model with a tokenizer trained on the corpus, or the base model (weights and tokenizer) to go on from.
    let fresh = dir.join("init");
    let init = match base {
        Some(base) => base.to_path_buf(),
        None => {
            let config = size.config(settings.vocab_size, settings.rope_theta);
            write_tiny_model_dir(&fresh, &config, &corpus_refs, settings.seed)
                .with_context(|| format!("writing {}", fresh.display()))?;
            fresh.clone()
        }
    };
    let tokenizer = ChatTokenizer::from_dir(&init)?;
    let examples = conversations
        .iter()
        .map(|(task, c)| tokenize_conversation(&tokenizer, &task.id, c, &schemas))
        .collect::<Result<Vec<_>, _>>()?;
    let model = load_model_dir(&init, &Device::Cpu)?;
    let parameters = model.config.num_parameters();
    let count = examples.len().max(1);
    // The gold conversations come first.
    let gold_trained_tokens: usize = examples[..gold.len()]
        .iter()
        .map(|e| e.trained_tokens())
        .sum();
    let gold_prompt_tokens: usize = examples[..gold.len()].iter().map(|e| e.prompt_len).sum();
    log(&format!(
        "{name}: {parameters} parameters{}, supervised training for {} steps of {} conversations \
         ({} tokens per conversation on average, {} of them trained)",
        base.map_or(String::new(), |b| format!(" from {}", b.display())),
        sft_config.steps,
        sft_config.batch_size,
        examples.iter().map(|e| e.tokens.len()).sum::<usize>() / count,
        examples.iter().map(|e| e.trained_tokens()).sum::<usize>() / count,
    ));
    let conversations = examples.len();
    let sft_started = Instant::now();
    let mut trainer = SftTrainer::new(&model, examples, sft_config)?;
    let log_every = (sft_config.steps / 8).max(1);
    // The cold start's checks: the criterion, the train problems it is checked on and their toolbox.
    let stop = match (role, settings.cold_start_stop) {
        (Role::Student, Some(stop)) => Some((
            stop,
            &train[train.len() - stop.problems.min(train.len())..],
            calculator_toolbox(settings, calculator.sandbox())?,
        )),
        _ => None,
    };
    let mut checks = Vec::new();
    let history = trainer.run(|m| -> anyhow::Result<ControlFlow<()>> {
        if m.step % log_every == 0 || m.step == sft_config.steps {
            log(&format!(
                "  {name} sft step {:>4}/{}: loss {:.4}, tokens predicted with p > 1/2: {:.3} ({:.2} s/step)",
                m.step,
                sft_config.steps,
                m.loss,
                m.confident_fraction,
                sft_started.elapsed().as_secs_f64() / m.step as f64
            ));
        }
        let Some((stop, checked, toolbox)) = &stop else {
            return Ok(ControlFlow::Continue(()));
        };
        if !stop.checks_at(m.step) {
            return Ok(ControlFlow::Continue(()));
        }
        let (evaluation, _) = evaluate(&model.model, &tokenizer, toolbox, settings, checked)?;
        checks.push((m.step, evaluation.accuracy));
        log(&format!(
            "  {name} at step {}: greedy accuracy {:.3} on {} train problems (stops at {:.3})",
            m.step,
            evaluation.accuracy,
            checked.len(),
            stop.accuracy
        ));
        Ok(if evaluation.accuracy >= stop.accuracy {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    let jsonl: String = history
        .iter()
        .map(|m| serde_json::to_string(m).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let sft_log = dir.join("sft.jsonl");
    std::fs::write(&sft_log, jsonl).with_context(|| format!("writing {}", sft_log.display()))?;
    save_checkpoint(
        &model_dir,
        &model.config,
        &model.varmap,
        SaveDtype::F32,
        Some(&init),
    )?;
    let _ = std::fs::remove_dir_all(&fresh);
    let record = BuiltModel {
        key,
        conversations,
        recovery_conversations,
        gold_trained_tokens,
        gold_prompt_tokens,
        parameters,
        sft_last: history.last().copied(),
        checks,
        build_seconds: started.elapsed().as_secs_f64(),
        cached: false,
    };
    // Written last: its presence marks a complete cache entry.
    let text = serde_json::to_string_pretty(&record)?;
    std::fs::write(&record_path, &text)
        .with_context(|| format!("writing {}", record_path.display()))?;
    // Returned as a later run will read it: JSON does not round-trip every float to the last bit, and a run
    // that built the models must report the same numbers as one that found them cached.
    let record = serde_json::from_str(&text)?;
    Ok((model_dir, record))
}

/// How every rollout of the demo runs, one definition for the on-policy runs (at their temperature) and the
/// greedy evaluations: the calculator (schemas left out of the prompt, as [`TOOL_SCHEMAS_IN_PROMPT`] says), the
/// demo's system prompt, its per-turn budget and 1 024 tokens in all; every other setting at its default.
fn rollout_config(settings: &DemoSettings) -> RolloutConfig {
    RolloutConfig {
        tools: vec!["calculator".to_string()],
        tool_schemas_in_prompt: TOOL_SCHEMAS_IN_PROMPT,
        system_prompt: Some(SYSTEM_PROMPT.to_string()),
        max_new_tokens_per_turn: settings.max_new_tokens_per_turn,
        max_total_tokens: 1024,
        ..RolloutConfig::default()
    }
}

/// The demo's rollout budget and sampling at `temperature` (0: the greedy evaluations).
fn rollout_settings(settings: &DemoSettings, temperature: f64) -> RolloutSettings {
    rollout_config(settings).settings(settings.seed, temperature)
}

/// One test problem as a model answered it (a line of `eval/<model>.jsonl` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedProblem {
    /// Task id.
    pub id: String,
    /// The expected answer.
    pub answer: String,
    /// The answer the model gave (`\boxed{}`, else its last number), if any.
    pub given: Option<String>,
    /// Whether `given` is right (and the trajectory ended normally).
    pub correct: bool,
    /// Assistant turns.
    pub turns: usize,
    /// Tool calls, and those that were valid.
    pub tool_calls: usize,
    /// Valid tool calls.
    pub valid_tool_calls: usize,
    /// Ended by a budget.
    pub truncated: bool,
    /// The whole conversation after the prompt, as the model saw it (its turns and the calculator's responses).
    pub transcript: String,
}

/// Greedy evaluation of `model` on `tasks`, calling the calculator through `toolbox`: the summary and each problem.
pub fn evaluate(
    model: &Qwen3,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &DemoSettings,
    tasks: &[Task],
) -> anyhow::Result<(Evaluation, Vec<EvaluatedProblem>)> {
    let requests = gold::requests(tasks, "");
    let trajectories = crate::eval::rollout_chunked(
        model,
        tokenizer,
        toolbox,
        &rollout_settings(settings, 0.0),
        &requests,
        32,
    )?;
    let problems: Vec<EvaluatedProblem> = tasks
        .iter()
        .zip(&trajectories)
        .map(|(task, t)| {
            let (correct, given) = gold::solved(task, t);
            Ok(EvaluatedProblem {
                id: task.id.clone(),
                answer: task.answer.clone(),
                given,
                correct,
                turns: t.turns,
                tool_calls: t.tool_calls,
                valid_tool_calls: t.valid_tool_calls,
                truncated: t.truncated(),
                transcript: tokenizer.decode(t.response_tokens(), false)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = tasks.len().max(1) as f64;
    let calls: usize = problems.iter().map(|p| p.tool_calls).sum();
    let valid: usize = problems.iter().map(|p| p.valid_tool_calls).sum();
    let evaluation = Evaluation {
        problems: tasks.len(),
        accuracy: problems.iter().filter(|p| p.correct).count() as f64 / n,
        valid_tool_call_fraction: if calls == 0 {
            0.0
        } else {
            valid as f64 / calls as f64
        },
        mean_tool_calls: calls as f64 / n,
        mean_steps: problems.iter().map(|p| p.turns as f64).sum::<f64>() / n,
        truncated_fraction: problems.iter().filter(|p| p.truncated).count() as f64 / n,
    };
    Ok((evaluation, problems))
}

/// Evaluates `model` and writes each problem to `<out_dir>/eval/<name>.jsonl`.
fn evaluate_and_record(
    name: &str,
    model: &Qwen3,
    tokenizer: &ChatTokenizer,
    toolbox: &ToolBox,
    settings: &DemoSettings,
    tasks: &[Task],
    out_dir: &Path,
) -> anyhow::Result<(Evaluation, Vec<bool>)> {
    let (evaluation, problems) = evaluate(model, tokenizer, toolbox, settings, tasks)?;
    let dir = out_dir.join("eval");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lines: String = problems
        .iter()
        .map(|p| serde_json::to_string(p).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let file = dir.join(format!("{name}.jsonl"));
    std::fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
    Ok((evaluation, problems.iter().map(|p| p.correct).collect()))
}

/// `path` made absolute: the trainer writes the config into the run directory (`run.toml`), and `sod train
/// --config` resolves relative paths against the config's own directory, so a relative path would not survive
/// that copy.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))
}

/// The run config of the on-policy run `spec` (`teacher`: its teacher's directory, if it has one).
fn rl_config(
    settings: &DemoSettings,
    spec: &RunSpec,
    teacher: Option<&Path>,
    student: &Path,
    dataset: &Path,
    out_dir: &Path,
) -> anyhow::Result<RunConfig> {
    let rl = settings.rl;
    let arm = spec.arm;
    let mut config = RunConfig::new(
        absolute(student)?,
        absolute(dataset)?,
        absolute(out_dir)?,
        rl.steps,
    );
    config.teacher = match (arm.uses_teacher(), teacher) {
        (true, Some(dir)) => Some(absolute(dir)?),
        (true, None) => bail!("{} needs a teacher", arm.label()),
        (false, _) => None,
    };
    config.rollout = RolloutConfig {
        temperature: Some(rl.temperature),
        ..rollout_config(settings)
    };
    config.prompts_per_step = rl.prompts_per_step;
    config.samples_per_prompt = rl.samples_per_prompt;
    config.micro_batch = 8;
    // GRPO's advantages are, like the sampled-token signal, one noisy number per token of O(1): it gets their rate.
    config.learning_rate = if arm.full() {
        rl.learning_rate
    } else {
        rl.sampled_learning_rate
    };
    config.warmup_steps = Some(rl.warmup_steps);
    config.divergence_temperature = Some(rl.divergence_temperature);
    config.seed = spec.seed;
    config.checkpoint_every = 0;
    config.null_signal = arm == Arm::NullControl;
    config.loss.name = arm.loss().to_string();
    if arm.step_weighted() {
        config
            .loss
            .settings
            .insert("delta".into(), toml::Value::Float(rl.delta));
    }
    if arm.full() {
        config
            .loss
            .settings
            .insert("signal".into(), toml::Value::String("full".into()));
    }
    config.validate()?;
    Ok(config)
}

fn read_metrics(path: &Path) -> anyhow::Result<Vec<StepMetrics>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", path.display())))
        .collect()
}

/// In a run directory: the settings it was started with (a later start with other settings is refused).
const SETTINGS_FILE: &str = "settings.json";
/// In an on-policy run's directory: its result, written last (its presence marks a finished run).
const RUN_FILE: &str = "run.json";

/// How the demo runs (nothing here changes what it measures).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Progress bars (else a line every few steps).
    pub progress: bool,
    /// Jobs (model builds, evaluations, on-policy runs) at once, each on one core ([`jobs`]).
    pub jobs: usize,
    /// `sod serve` endpoints to run the tool calls on (empty: in this process); the results are the same.
    pub tool_endpoints: Vec<String>,
    /// Worker processes to run the tool calls in (0: in this process); the results are the same.
    pub tool_processes: usize,
    /// Device of the on-policy runs (model builds and evaluations stay on the CPU). On an accelerator the numbers
    /// agree with the CPU's within float rounding, not bit for bit.
    pub device: Device,
}

/// What the cold-start student measured: greedy on the test split, and sampled at the training temperature.
struct ColdStart {
    evaluation: Evaluation,
    correct: Vec<bool>,
    sampled: SampledStart,
    prefixes: Vec<takeover::Prefix>,
}

/// Runs the whole demo (see the module docs) and returns what it measured. `out_dir` must not hold a finished
/// demo; on-policy runs it holds from an interrupted start with the same settings are kept, not redone.
pub fn run_demo(
    settings: &DemoSettings,
    paths: &DemoPaths,
    options: DemoOptions,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<DemoOutcome> {
    settings.validate()?;
    if paths.out_dir.join("report.md").exists() {
        bail!(
            "{} already holds a demo run; choose another --out",
            paths.out_dir.display()
        );
    }
    if !paths.tools_dir.join("calculator.wasm").is_file() {
        bail!(
            "{} has no calculator.wasm; build the tools with `cargo xtask build-tools` (or run `cargo xtask demo`)",
            paths.tools_dir.display()
        );
    }
    std::fs::create_dir_all(&paths.out_dir)
        .with_context(|| format!("creating {}", paths.out_dir.display()))?;
    let settings_file = paths.out_dir.join(SETTINGS_FILE);
    let settings_text = serde_json::to_string_pretty(settings)?;
    match std::fs::read_to_string(&settings_file) {
        Ok(previous) if previous != settings_text => bail!(
            "{} holds an unfinished demo with other settings; choose another --out",
            paths.out_dir.display()
        ),
        Ok(_) => log(&format!(
            "continuing the unfinished demo in {}",
            paths.out_dir.display()
        )),
        Err(_) => std::fs::write(&settings_file, &settings_text)
            .with_context(|| format!("writing {}", settings_file.display()))?,
    }
    let jobs = options.jobs.max(1);
    let sandbox = Sandbox::new(SandboxConfig {
        tools_dir: Some(paths.tools_dir.clone()),
        seed: settings.seed,
        ..SandboxConfig::default()
    })?
    .with_backend_from(&options.tool_endpoints, options.tool_processes)?;
    let calculator = Calculator::new(&sandbox)?;
    // The calculator is the demo's one tool: a backend must serve the same artifact.
    sandbox.check_backend()?;
    let (dirs, record) = prepare_models(settings, paths, &calculator, jobs, log)?;

    let test = tasks::test_tasks(settings.seed, settings.test_tasks);
    let train = tasks::train_tasks(settings.seed, settings.train_tasks, settings.test_tasks);
    let dataset = paths.out_dir.join("train.jsonl");
    let rows: String = train
        .iter()
        .map(|t| tasks::dataset_row(t).to_string() + "\n")
        .collect();
    std::fs::write(&dataset, rows).with_context(|| format!("writing {}", dataset.display()))?;

    let toolbox = calculator_toolbox(settings, &sandbox)?;
    let tokenizer = ChatTokenizer::from_dir(&dirs.student)?;
    let (toolbox, tokenizer, test) = (&toolbox, &tokenizer, &test);

    // The cold start (greedy on the test split, and sampled at the training temperature: how its samples end, and
    // the prefixes the teachers take over from) and each teacher's greedy evaluation, side by side.
    let cold_start = || -> anyhow::Result<ColdStart> {
        let student = load_model_dir(&dirs.student, &Device::Cpu)?;
        let (evaluation, correct) = evaluate_and_record(
            "student-cold-start",
            &student.model,
            tokenizer,
            toolbox,
            settings,
            test,
            &paths.out_dir,
        )?;
        log(&format!(
            "student (cold start): accuracy {:.3}",
            evaluation.accuracy
        ));
        let sampled_settings = rollout_settings(settings, settings.rl.temperature);
        let (samples, sampled) =
            takeover::sample_student(&student.model, tokenizer, toolbox, &sampled_settings, test)?;
        log(&format!(
            "student (cold start) sampled at temperature {}: accuracy {:.3}, finish causes {}",
            settings.rl.temperature,
            sampled.accuracy,
            finish_text(&sampled.finish)
        ));
        let mut prefixes = Vec::new();
        for (i, (task, t)) in test.iter().zip(&samples).enumerate() {
            prefixes.extend(takeover::prefixes(tokenizer, toolbox, i, task, t)?);
        }
        prefixes.extend(takeover::perturbed_prefixes(&calculator, tokenizer, test)?);
        Ok(ColdStart {
            evaluation,
            correct,
            sampled,
            prefixes,
        })
    };
    enum Measured {
        Student(Box<ColdStart>),
        Teacher(Evaluation),
    }
    let mut measure: Vec<Job<'_, Measured>> = vec![Box::new(move || {
        cold_start().map(|c| Measured::Student(Box::new(c)))
    })];
    for (kind, dir) in &dirs.teachers {
        measure.push(Box::new(move || {
            let model = load_model_dir(dir, &Device::Cpu)?;
            let (evaluation, _) = evaluate_and_record(
                &format!("teacher-{}", kind.name()),
                &model.model,
                tokenizer,
                toolbox,
                settings,
                test,
                &paths.out_dir,
            )?;
            log(&format!(
                "{}: accuracy {:.3}",
                kind.label(),
                evaluation.accuracy
            ));
            Ok(Measured::Teacher(evaluation))
        }));
    }
    let mut measured = jobs::run(jobs, measure)?.into_iter();
    let Some(Measured::Student(cold)) = measured.next() else {
        bail!("the cold start's measurement is missing");
    };
    let teacher_evaluations: Vec<Evaluation> = measured
        .map(|m| match m {
            Measured::Teacher(e) => Ok(e),
            Measured::Student(_) => Err(anyhow::anyhow!("a second cold-start measurement")),
        })
        .collect::<anyhow::Result<_>>()?;
    let prefixes = &cold.prefixes;
    let take_overs: Vec<Job<'_, TakeOver>> = dirs
        .teachers
        .iter()
        .map(|(kind, dir)| {
            Box::new(move || {
                let model = load_model_dir(dir, &Device::Cpu)?;
                let (t, each) = takeover::take_over(
                    &model.model,
                    tokenizer,
                    toolbox,
                    &rollout_settings(settings, 0.0),
                    test,
                    prefixes,
                )?;
                let file = paths.out_dir.join("eval").join(format!("takeover-{}.jsonl", kind.name()));
                let lines: String = each
                    .iter()
                    .map(|e| serde_json::to_string(e).map(|s| s + "\n"))
                    .collect::<Result<_, _>>()?;
                std::fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
                log(&format!(
                    "{}: takes over {}/{} off-track and {}/{} on-track student prefixes, {}/{} perturbed ones",
                    kind.label(),
                    t.off_track_solved,
                    t.off_track,
                    t.on_track_solved,
                    t.on_track,
                    t.perturbed_solved,
                    t.perturbed
                ));
                Ok(t)
            }) as Job<'_, TakeOver>
        })
        .collect();
    let teachers: Vec<TeacherRecord> = dirs
        .teachers
        .iter()
        .zip(teacher_evaluations)
        .zip(jobs::run(jobs, take_overs)?)
        .map(|(((kind, _), evaluation), take_over)| TeacherRecord {
            kind: *kind,
            evaluation,
            take_over,
        })
        .collect();

    let plan = settings.plan();
    let grid_started = Instant::now();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let (plan_ref, finished_ref, dirs_ref, dataset_ref) = (&plan, &finished, &dirs, &dataset);
    let options = &options;
    let runs: Vec<Job<'_, RlRun>> = plan
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            Box::new(move || {
                let run = on_policy_run(
                    settings,
                    paths,
                    options,
                    spec,
                    (index, plan_ref.len()),
                    dirs_ref,
                    dataset_ref,
                    (tokenizer, toolbox, test),
                    log,
                )?;
                let done = finished_ref.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let left = plan_ref.len() - done;
                log(&format!(
                    "{done}/{} on-policy runs done{}",
                    plan_ref.len(),
                    if left == 0 {
                        String::new()
                    } else {
                        format!(
                            ", ETA {:.0} s",
                            grid_started.elapsed().as_secs_f64() / done as f64 * left as f64
                        )
                    }
                ));
                Ok(run)
            }) as Job<'_, RlRun>
        })
        .collect();
    let runs = jobs::run(jobs, runs)?;
    let cold = *cold;
    Ok(DemoOutcome {
        settings: *settings,
        models: record,
        teachers,
        student_before: cold.evaluation,
        student_before_correct: cold.correct,
        student_sampled: cold.sampled,
        runs,
    })
}

/// One on-policy run of the plan, or its record if an earlier start finished it.
#[allow(clippy::too_many_arguments)]
fn on_policy_run(
    settings: &DemoSettings,
    paths: &DemoPaths,
    options: &DemoOptions,
    spec: &RunSpec,
    (index, total): (usize, usize),
    dirs: &ModelDirs,
    dataset: &Path,
    (tokenizer, toolbox, test): (&ChatTokenizer, &ToolBox, &[Task]),
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<RlRun> {
    let name = format!(
        "[{}/{total}] {} (seed {})",
        index + 1,
        spec.row_label(),
        spec.seed
    );
    let out = paths.out_dir.join(spec.dir());
    let record_file = out.join(RUN_FILE);
    if record_file.is_file() {
        let text = std::fs::read_to_string(&record_file)
            .with_context(|| format!("reading {}", record_file.display()))?;
        let run: RlRun = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", record_file.display()))?;
        log(&format!(
            "{name}: done before, accuracy {:.3}",
            run.after.accuracy
        ));
        return Ok(run);
    }
    // A directory without a record is an interrupted run: start it over.
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let teacher = spec.teacher.map(|k| dirs.teacher(k)).transpose()?;
    let mut config = rl_config(settings, spec, teacher, &dirs.student, dataset, &out)?;
    // The rollouts' tool calls run where the demo's do (neither setting is recorded with the config).
    config
        .rollout
        .tool_endpoints
        .clone_from(&options.tool_endpoints);
    config.rollout.tool_processes = options.tool_processes;
    let started = Instant::now();
    log(&format!(
        "{name}: {} on-policy steps of {} prompts x {} samples, lr {}",
        settings.rl.steps,
        settings.rl.prompts_per_step,
        settings.rl.samples_per_prompt,
        config.learning_rate
    ));
    let mut trainer = Trainer::new(
        config,
        TrainerOptions {
            device: options.device.clone(),
            plugin_dir: paths.plugin_dir.clone(),
            tools_dir: paths.tools_dir.clone(),
            sandbox_cache_dir: None,
            resume: false,
            // One bar per terminal: with several runs at once, lines naming the run instead.
            progress: options.progress && options.jobs <= 1,
            log_every: (settings.rl.steps / 8).max(1),
            log_label: format!(
                "{} seed {}: ",
                spec.row_label().trim_start_matches("student + "),
                spec.seed
            ),
        },
    )?;
    trainer.run()?;
    let train_seconds = started.elapsed().as_secs_f64();
    let (after, correct) = evaluate_and_record(
        &format!("student-{}", spec.dir()),
        &trainer.student().model,
        tokenizer,
        toolbox,
        settings,
        test,
        &paths.out_dir,
    )?;
    log(&format!(
        "{name}: accuracy after training {:.3}",
        after.accuracy
    ));
    let run = RlRun {
        spec: *spec,
        correct,
        steps: read_metrics(&out.join(sod_train::METRICS_FILE))?,
        after,
        train_seconds,
    };
    let text = serde_json::to_string(&run)?;
    std::fs::write(&record_file, &text)
        .with_context(|| format!("writing {}", record_file.display()))?;
    // As a later start would read it back (JSON does not round-trip every float to the last bit).
    Ok(serde_json::from_str(&text)?)
}

/// `answered 0.906, turn_tokens 0.094`.
pub fn finish_text(finish: &std::collections::BTreeMap<String, f64>) -> String {
    finish
        .iter()
        .filter(|(_, f)| **f > 0.0)
        .map(|(name, f)| format!("{name} {f:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_configs_have_absolute_paths_and_the_arms_settings() {
        let settings = DemoSettings::standard(3);
        let rel = |p: &str| Path::new(p).to_path_buf();
        for spec in DemoSettings::full(3).plan() {
            let arm = spec.arm;
            let teacher = rel("t");
            let c = rl_config(
                &settings,
                &spec,
                spec.teacher.map(|_| teacher.as_path()),
                &rel("runs/demo-cache/student-x/model"),
                &rel("d.jsonl"),
                &rel("out"),
            )
            .expect("config");
            assert!(c.student.is_absolute() && c.out_dir.is_absolute());
            assert!(c.student.ends_with("runs/demo-cache/student-x/model"));
            assert_eq!(c.loss.name, arm.loss());
            assert_eq!(c.loss.settings.contains_key("signal"), arm.full());
            assert_eq!(c.loss.settings.contains_key("delta"), arm.step_weighted());
            assert_eq!(c.teacher.is_some(), arm.uses_teacher());
            assert_eq!(c.null_signal, arm == Arm::NullControl);
            assert_eq!(c.seed, spec.seed);
            // The on-policy runs roll out as the evaluations do, at their own temperature.
            let mut rollout = rollout_config(&settings);
            assert_eq!(rollout.temperature, None);
            rollout.temperature = Some(settings.rl.temperature);
            assert_eq!(c.rollout, rollout);
            assert_eq!(c.temperature(), settings.rl.temperature);
            // Its TOML record reads back as the same config, rollout settings and all.
            let back = RunConfig::from_toml_str(&c.to_toml_string(), &[], Path::new("/"))
                .expect("reads back");
            assert_eq!(back, c);
        }
    }
}
