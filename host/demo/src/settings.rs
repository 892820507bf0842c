//! What a demo run is made of: the models' sizes and cold starts, the on-policy arms and their settings, the
//! run grid, and the hash of each model's settings that names its cache entry. Plain data, read from and written
//! to JSON (`--settings`, `--print-settings`).

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sod_model::Qwen3Config;
use sod_train::sft::SftConfig;

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
    pub(super) fn config(&self, vocab_size: usize, rope_theta: f64) -> Qwen3Config {
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
    pub fn model(&self, role: DemoModel) -> (ModelSize, SftConfig) {
        match role {
            DemoModel::Teacher(TeacherKind::Gold) => (self.teacher, self.teacher_sft),
            DemoModel::Teacher(TeacherKind::Recovery) => (self.teacher, self.recovery_sft),
            DemoModel::Student => (self.student, self.student_sft),
        }
    }

    /// The part of the settings the cached `role` model depends on (the data, the tokenizer, its size and its
    /// supervised training), hashed: its cache directory's name. Each model is cached apart, so that changing the
    /// student's settings does not rebuild a teacher.
    pub fn model_cache_key(&self, role: DemoModel) -> String {
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
        if role == DemoModel::Student {
            key["cold_start_stop"] =
                serde_json::to_value(self.cold_start_stop).unwrap_or(serde_json::Value::Null);
        }
        if role == DemoModel::Teacher(TeacherKind::Recovery) {
            // It starts from the gold-only teacher.
            key["base"] = self
                .model_cache_key(DemoModel::Teacher(TeacherKind::Gold))
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

/// Which of the demo's models (not a chat role: those are `sod_model::Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoModel {
    /// A larger model trained first, whose log-probs guide the student.
    Teacher(TeacherKind),
    /// The smaller model with a short cold start, trained on-policy.
    Student,
}

impl DemoModel {
    /// `teacher` (the gold-only teacher, as before recovery teachers existed, so that its cache stays valid),
    /// `teacher-recovery` or `student`.
    pub fn name(self) -> &'static str {
        match self {
            DemoModel::Teacher(TeacherKind::Gold) => "teacher",
            DemoModel::Teacher(TeacherKind::Recovery) => "teacher-recovery",
            DemoModel::Student => "student",
        }
    }
}
