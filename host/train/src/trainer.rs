//! The training loop: dataset -> rollout -> reward -> teacher -> advantage -> update -> checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use sod_loss::{ConfiguredLoss, DataSource, LossPlugin, RunShape};
use sod_model::{ChatTokenizer, TrainableModel, load_model_dir};

use crate::advantage::{build_batch, compute_advantages};
use crate::checkpoint::{self, TrainerState};
use crate::config::{RunConfig, TRAINING_TEMPERATURE};
use crate::dataset::Dataset;
use crate::episode::{Episode, Scored};
use crate::error::{Result, TrainError};
use crate::metrics::{MetricsWriter, StepMetrics, Timing, progress_bar};
use crate::reward::{Reward, reward_for, score_trajectories};
use crate::rollout::{Finish, RolloutRequest, ToolBox, Trajectory, rollout};
use crate::teacher::{GeneratedRows, Teacher, score};
use sod_loss_abi::testing::SplitMix64;

use crate::update::{
    AdamW, AdamWConfig, DivergenceTerm, Params, PpoClip, UpdateBatch, clip_grad_norm,
    learning_rate, policy_gradients,
};

/// Where the trainer finds what the config does not name, and how it runs.
#[derive(Debug, Clone)]
pub struct TrainerOptions {
    /// Device for the student and the teacher.
    pub device: Device,
    /// Directory of the loss plugins (for plugin names; a plugin path in the config is used as is).
    pub plugin_dir: PathBuf,
    /// Directory of the tool components (`<name>.wasm`).
    pub tools_dir: PathBuf,
    /// Compile cache of the sandbox; `None` uses the default cache directory.
    pub sandbox_cache_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint in `out_dir` instead of starting fresh.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Without the bar: write a line to stderr every this many steps (step, reward, teacher KL, divergence,
    /// truncation, seconds per step, ETA); 0 writes none.
    pub log_every: u64,
    /// Written before each of those lines (the run's name, when several runs share one terminal).
    pub log_label: String,
}

/// The result of [`Trainer::run`].
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps completed by the run, including those before a resume.
    pub step: u64,
    /// Metrics of the last step run by this process, if it ran any.
    pub last: Option<StepMetrics>,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// A training run in progress.
pub struct Trainer {
    config: RunConfig,
    options: TrainerOptions,
    student: TrainableModel,
    tokenizer: ChatTokenizer,
    teacher: Option<Teacher>,
    loss: ConfiguredLoss,
    toolbox: ToolBox,
    dataset: Dataset,
    reward: Box<dyn Reward>,
    params: Params,
    optimizer: AdamW,
    metrics: MetricsWriter,
    step: u64,
    data_cursor: u64,
}

/// Name of the metrics file in `out_dir`.
pub const METRICS_FILE: &str = "metrics.jsonl";

impl Trainer {
    /// Sets up a run: checks the loss against the run's shape first (so a mismatched run fails before any model is
    /// loaded), then loads the dataset, the tools, the student (from the latest checkpoint when resuming), the
    /// teacher and the optimiser state.
    pub fn new(config: RunConfig, options: TrainerOptions) -> Result<Self> {
        config.validate()?;
        let plugin = LossPlugin::load(&config.loss.name, &options.plugin_dir)?;
        let loss = plugin.configure(&config.loss.settings_pairs())?;
        loss.check_run(&RunShape {
            has_teacher: config.teacher.is_some(),
            data: DataSource::OnPolicy,
            group_size: u32::try_from(config.samples_per_prompt).unwrap_or(u32::MAX),
        })?;

        let resume_from = checkpoint::resume_point(
            &config.out_dir,
            &config.out_dir.join(METRICS_FILE),
            options.resume,
        )?;

        let dataset = Dataset::load(&config.dataset)?;
        let rollout = &config.rollout;
        let sandbox = rollout.open_sandbox(
            &options.tools_dir,
            options.sandbox_cache_dir.as_deref(),
            config.seed,
        )?;
        let toolbox = rollout.toolbox(&sandbox)?;
        let reward = reward_for(config.reward, rollout.code_reward, &sandbox)?;
        reward.check_dataset(&dataset)?;
        toolbox.sandbox().check_backend()?;

        let tokenizer = rollout.tokenizer(&config.student)?;
        let model_dir = resume_from
            .as_ref()
            .map_or(config.student.clone(), |(_, dir)| dir.clone());
        let compute = config.compute_dtype.unwrap_or_default();
        let mut student = load_model_dir(&model_dir, &options.device)?;
        student.model = student.model.with_compute_dtype(compute);
        let teacher = match &config.teacher {
            Some(dir) => Some(
                Teacher::load(dir, &options.device, &student.model, &tokenizer)?
                    .with_compute_dtype(compute),
            ),
            None => None,
        };
        let params = Params::from_varmap(&student.varmap)?;
        let mut optimizer = AdamW::new(
            AdamWConfig {
                beta1: config.adam_beta1,
                beta2: config.adam_beta2,
                eps: config.adam_eps,
                weight_decay: config.weight_decay,
            },
            &params,
        )?;
        let (step, data_cursor) = match &resume_from {
            Some((_, dir)) => {
                let state = checkpoint::load_state(dir, &params, &mut optimizer, &options.device)?;
                (state.step, state.data_cursor)
            }
            None => (0, 0),
        };
        std::fs::create_dir_all(&config.out_dir)
            .map_err(TrainError::io("creating", &config.out_dir))?;
        if resume_from.is_none() {
            let record = config.out_dir.join("run.toml");
            std::fs::write(&record, config.to_toml_string())
                .map_err(TrainError::io("writing", &record))?;
        }
        let metrics = MetricsWriter::open(
            &config.out_dir.join(METRICS_FILE),
            resume_from.as_ref().map(|(s, _)| *s),
        )?;
        Ok(Trainer {
            reward,
            config,
            options,
            student,
            tokenizer,
            teacher,
            loss,
            toolbox,
            dataset,
            params,
            optimizer,
            metrics,
            step,
            data_cursor,
        })
    }

    /// Steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The student being trained.
    pub fn student(&self) -> &TrainableModel {
        &self.student
    }

    /// Trains until `config.steps`, checkpointing every `checkpoint_every` steps and at the end.
    pub fn run(&mut self) -> Result<RunSummary> {
        let bar = progress_bar(self.options.progress, self.config.steps, self.step);
        let mut summary = RunSummary {
            step: self.step,
            last: None,
            checkpoint: None,
        };
        let started = Instant::now();
        let first_step = self.step;
        while self.step < self.config.steps {
            let metrics = self.train_step()?;
            bar.set_position(self.step);
            let every = self.options.log_every;
            if !self.options.progress
                && every > 0
                && (self.step.is_multiple_of(every) || self.step == self.config.steps)
            {
                let per_step = started.elapsed().as_secs_f64() / (self.step - first_step) as f64;
                eprintln!(
                    "  {}step {:>4}/{}: reward {:.3}  teacher KL {}  divergence {}  truncated {:.2}  {:.1} s/step  ETA {:.0} s",
                    self.options.log_label,
                    self.step,
                    self.config.steps,
                    metrics.reward_mean,
                    metrics.kl_teacher.map_or("-".into(), |k| format!("{k:.3}")),
                    metrics.divergence.map_or("-".into(), |d| format!("{d:.3}")),
                    metrics.truncated_fraction,
                    per_step,
                    per_step * (self.config.steps - self.step) as f64
                );
            }
            bar.set_message(format!(
                "reward {:.3}  acc {:.3}  {:.0} tok/s",
                metrics.reward_mean, metrics.accuracy, metrics.timing.tokens_per_s
            ));
            let every = self.config.checkpoint_every;
            if (every > 0 && self.step.is_multiple_of(every)) || self.step == self.config.steps {
                summary.checkpoint = Some(self.save_checkpoint()?);
            }
            summary.last = Some(metrics);
        }
        bar.finish_and_clear();
        summary.step = self.step;
        Ok(summary)
    }

    /// Writes `out_dir/checkpoints/step-N/` for the current step.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(
            &self.config.out_dir,
            &self.student.config,
            &self.student.varmap,
            &self.config.student,
            &self.params,
            &self.optimizer,
            &TrainerState {
                step: self.step,
                optimizer_steps: self.optimizer.t,
                data_cursor: self.data_cursor,
                config: self.config.to_toml_string(),
            },
            self.config
                .checkpoint_dtype
                .unwrap_or(self.student.source_dtype),
        )
    }

    /// Writes `out_dir/rollouts/step-N.jsonl` for the step being run (see `RunConfig::rollouts_every`).
    fn write_rollouts(
        &self,
        scored: &[Scored],
        requests: &[(RolloutRequest, usize)],
    ) -> Result<()> {
        let dir = self.config.out_dir.join("rollouts");
        std::fs::create_dir_all(&dir).map_err(TrainError::io("creating", &dir))?;
        let mut text = String::new();
        for (s, (_, example_index)) in scored.iter().zip(requests) {
            let (t, example) = (&s.trajectory, &self.dataset.examples()[*example_index]);
            let record = serde_json::json!({
                "step": self.step + 1,
                "prompt_id": t.prompt_id,
                "sample_index": t.sample_index,
                "group": t.group,
                "reward": s.reward,
                "finish": t.finish.name(),
                "infra_fault": s.infra_fault(),
                "turns": t.turns,
                "tool_calls": t.tool_calls,
                "valid_tool_calls": t.valid_tool_calls,
                "prompt_tokens": t.prompt_len,
                "generated_tokens": t.generated_tokens(),
                "response": self.tokenizer.decode(t.response_tokens(), false)?,
                "extra": example.extra,
            });
            text.push_str(&record.to_string());
            text.push('\n');
        }
        let path = dir.join(format!("step-{}.jsonl", self.step + 1));
        std::fs::write(&path, text).map_err(TrainError::io("writing", &path))
    }

    /// The rollout requests of the next step: `prompts_per_step` prompts in the data order, each
    /// `samples_per_prompt` times.
    fn next_requests(&self) -> Vec<(RolloutRequest, usize)> {
        let group_size = self.config.samples_per_prompt;
        let scheduled = self.dataset.take(
            self.config.seed,
            self.data_cursor,
            self.config.prompts_per_step,
        );
        let mut requests = Vec::with_capacity(scheduled.len() * group_size);
        for (group, s) in scheduled.iter().enumerate() {
            let messages = self.config.rollout.prompt(&s.example.messages);
            let example_index = self
                .dataset
                .examples()
                .iter()
                .position(|e| e.id == s.example.id)
                .unwrap_or(0);
            for sample in 0..group_size {
                requests.push((
                    RolloutRequest {
                        prompt_id: s.example.id.clone(),
                        sample_index: s.epoch * group_size as u64 + sample as u64,
                        group: group as u32,
                        messages: messages.clone(),
                        prompt_tokens: None,
                    },
                    example_index,
                ));
            }
        }
        requests
    }

    /// One optimiser step: roll out, score, compute log-probs and advantages, update, and log the metrics line.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        let started = Instant::now();
        let lr = learning_rate(self.config.learning_rate, self.config.warmup(), self.step);
        let requests = self.next_requests();
        let settings = self
            .config
            .rollout
            .settings(self.config.seed, TRAINING_TEMPERATURE);
        let just_requests: Vec<RolloutRequest> = requests.iter().map(|(r, _)| r.clone()).collect();
        let trajectories = rollout(
            &self.student.model,
            &self.tokenizer,
            &self.toolbox,
            &settings,
            &just_requests,
        )?;
        let rollout_seconds = started.elapsed().as_secs_f64();

        // Reward: scoring may run tools (the code judge): in parallel.
        let examples: Vec<&crate::dataset::Example> = requests
            .iter()
            .map(|(_, example_index)| &self.dataset.examples()[*example_index])
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let scored = score_trajectories(self.reward.as_ref(), trajectories, &examples, threads);

        if self.config.rollouts_every > 0
            && (self.step + 1).is_multiple_of(self.config.rollouts_every)
        {
            self.write_rollouts(&scored, &requests)?;
        }

        let update_started = Instant::now();
        let micro = self.config.micro_batch;
        let spec = self.loss.requirements().divergence;
        let temperature = self.config.temperature();
        let divergence_temperature = self.config.divergence_temperature.unwrap_or(temperature);
        // The null-signal control shuffles the teacher's guidance across the batch's generated positions.
        let order = self.config.null_signal.then(|| {
            null_signal_order(
                self.config.seed,
                self.step,
                GeneratedRows::of(&scored).len(),
            )
        });
        let scores = score(
            &self.student.model,
            self.teacher.as_ref(),
            &scored,
            micro,
            temperature,
            spec.as_ref().map(|s| (s, divergence_temperature)),
            order.as_deref().filter(|_| spec.is_some()),
        )?;
        let (with_teacher, with_divergence) =
            (scores.teacher.is_some(), scores.divergence.is_some());
        let (mut episodes, teacher_rows) = scores.into_episodes(scored)?;
        // Metrics see the real teacher, before the null-signal control permutes what the loss sees.
        let kl_teacher = with_teacher.then(|| {
            Episode::generated_mean(&episodes, |e, j| {
                e.old_logprobs[j] - e.teacher_logprobs.as_ref().map_or(0.0, |t| t[j])
            })
        });
        let divergence_mean = with_divergence.then(|| {
            Episode::generated_mean(&episodes, |e, j| {
                e.divergence.as_ref().map_or(0.0, |d| d[j])
            })
        });
        // The sampled-token null signal: the loss sees the teacher's log-probs with the gaps shuffled.
        if let (Some(order), None) = (&order, &spec) {
            permute_sampled_signal(&mut episodes, order);
        }
        let batch = build_batch(&episodes);
        let advantages = compute_advantages(&mut self.loss, &batch)?;
        let divergence = match (spec, &self.teacher, &teacher_rows) {
            (Some(spec), Some(teacher), Some(rows)) => Some(DivergenceTerm {
                spec,
                weights: &advantages.divergence_weights,
                teacher: teacher.model(),
                teacher_rows: rows,
                temperature: divergence_temperature,
            }),
            _ => None,
        };
        let update = UpdateBatch {
            divergence,
            temperature,
            gradient_checkpointing: self.config.gradient_checkpointing,
            ..UpdateBatch::ppo(
                &episodes,
                &advantages.per_trajectory,
                PpoClip {
                    low: self.config.clip_low,
                    high: self.config.clip_high,
                },
                micro,
            )
        };
        let (mut grads, surrogate) = policy_gradients(&self.student.model, &self.params, &update)?;
        let norm = clip_grad_norm(&mut grads, self.config.max_grad_norm)?;
        if !norm.is_finite() || !surrogate.loss.is_finite() {
            return Err(TrainError::Diverged {
                step: self.step + 1,
                what: format!("gradient norm {norm}, loss {}", surrogate.loss),
            });
        }
        self.optimizer.step(&self.params, &grads, lr)?;
        self.step += 1;
        self.data_cursor += self.config.prompts_per_step as u64;

        let metrics = self.step_metrics(
            &episodes,
            (kl_teacher, divergence_mean),
            lr,
            norm,
            surrogate,
            advantages.metrics,
            Timing {
                step_seconds: started.elapsed().as_secs_f64(),
                rollout_seconds,
                update_seconds: update_started.elapsed().as_secs_f64(),
                tokens_per_s: 0.0,
            },
        );
        self.metrics.write(&metrics)?;
        Ok(metrics)
    }

    #[allow(clippy::too_many_arguments)]
    fn step_metrics(
        &self,
        episodes: &[Episode],
        (kl_teacher, divergence): (Option<f64>, Option<f64>),
        lr: f64,
        grad_norm: f64,
        surrogate: crate::update::SurrogateStats,
        plugin: Vec<(String, f64)>,
        mut timing: Timing,
    ) -> StepMetrics {
        let n = episodes.len().max(1) as f64;
        let trajectories = || episodes.iter().map(|e| &e.trajectory);
        let tokens: usize = trajectories().map(|t| t.tokens.len()).sum();
        timing.tokens_per_s = if timing.step_seconds > 0.0 {
            tokens as f64 / timing.step_seconds
        } else {
            0.0
        };
        StepMetrics {
            step: self.step,
            lr,
            reward_mean: episodes.iter().map(|e| f64::from(e.reward)).sum::<f64>() / n,
            accuracy: episodes
                .iter()
                .filter(|e| self.reward.is_correct(e.reward))
                .count() as f64
                / n,
            kl_teacher,
            loss: surrogate.loss,
            ppo_clip_fraction: surrogate.clip_fraction,
            ppo_approx_kl: surrogate.approx_kl,
            grad_norm,
            trajectories: episodes.len(),
            tokens,
            generated_tokens: trajectories().map(Trajectory::generated_tokens).sum(),
            turns_mean: trajectories().map(|t| t.turns as f64).sum::<f64>() / n,
            tool_calls: trajectories().map(|t| t.tool_calls).sum(),
            valid_tool_calls: trajectories().map(|t| t.valid_tool_calls).sum(),
            truncated_fraction: trajectories().filter(|t| t.truncated()).count() as f64 / n,
            finish: Finish::ALL
                .iter()
                .map(|f| {
                    let count = trajectories().filter(|t| t.finish == *f).count();
                    (f.name().to_string(), count as f64 / n)
                })
                .collect(),
            divergence,
            divergence_term: surrogate.divergence_term,
            infra_faults: episodes.iter().filter(|e| e.infra_fault).count(),
            plugin: plugin.into_iter().collect(),
            timing,
        }
    }
}

/// The null-signal control's permutation of a step's `rows` generated positions: a seeded Fisher-Yates shuffle,
/// a function of the run seed and the step alone (so resuming replays it).
pub fn null_signal_order(seed: u64, step: u64, rows: usize) -> Vec<u32> {
    let state = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6E75_6C6C_5F73_6967;
    SplitMix64::new(state)
        .permutation(rows)
        .into_iter()
        .map(|r| r as u32)
        .collect()
}

/// The sampled-token null signal: each episode's teacher log-probs with generated row `r`'s replaced by
/// `old[r] + (teacher[order[r]] - old[order[r]])`, so each token's gap `log pT - log pS_old` is another token's.
fn permute_sampled_signal(episodes: &mut [Episode], order: &[u32]) {
    let mut gaps = Vec::with_capacity(order.len());
    let mut places = Vec::with_capacity(order.len());
    for (i, e) in episodes.iter().enumerate() {
        let Some(teacher) = &e.teacher_logprobs else {
            return;
        };
        for (j, &m) in e.trajectory.mask.iter().enumerate() {
            if m == 1 {
                gaps.push(teacher[j] - e.old_logprobs[j]);
                places.push((i, j));
            }
        }
    }
    for (r, &(i, j)) in places.iter().enumerate() {
        let e = &mut episodes[i];
        let shuffled = e.old_logprobs[j] + gaps[order[r] as usize];
        if let Some(teacher) = &mut e.teacher_logprobs {
            teacher[j] = shuffled;
        }
    }
}
