//! The demo's on-policy runs: each arm's `RunConfig` (from the demo's rollout configuration and the arm's loss),
//! the run itself in its own directory (resumed when its settings match), and its metrics read back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sod_train::rollout::RolloutConfig;
use sod_train::{RunConfig, StepMetrics, Trainer, TrainerOptions};

use super::build::ModelDirs;
use super::evaluate::{Evaluation, TestSet, rollout_config};
use super::pipeline::DemoOptions;
use super::pipeline::{DemoPaths, RUN_FILE};
use super::settings::*;

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

/// `path` made absolute: the trainer writes the config into the run directory (`run.toml`), and `sod train
/// --config` resolves relative paths against the config's own directory, so a relative path would not survive
/// that copy.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))
}

/// The run config of the on-policy run `spec` (`teacher`: its teacher's directory, if it has one).
pub(super) fn rl_config(
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

/// One on-policy run of the plan, or its record if an earlier start finished it.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_policy_run(
    settings: &DemoSettings,
    paths: &DemoPaths,
    options: &DemoOptions,
    spec: &RunSpec,
    (index, total): (usize, usize),
    dirs: &ModelDirs,
    dataset: &Path,
    test: &TestSet<'_>,
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
    let (after, correct) =
        test.evaluate_and_record(&format!("student-{}", spec.dir()), &trainer.student().model)?;
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
