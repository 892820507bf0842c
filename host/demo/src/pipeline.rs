//! The main job, step by step: gold trajectories with the real calculator, a tokenizer and two models trained by
//! the project (a teacher, and a smaller student with a short cold start), cached by a hash of their settings;
//! then the student is evaluated, trained with OPD and with SOD from the same start and seed, and evaluated again.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sod_model::{ChatTokenizer, load_model_dir};
use sod_sandbox::{Sandbox, SandboxConfig};

use super::gold::Calculator;
use super::jobs::{self, Job};
use super::takeover::{self, SampledStart, TakeOver};
use super::tasks::{self};

use super::build::*;
use super::evaluate::*;
use super::onpolicy::*;
use super::settings::*;

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
pub struct DemoResults {
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

/// In a run directory: the settings it was started with (a later start with other settings is refused).
const SETTINGS_FILE: &str = "settings.json";
/// In an on-policy run's directory: its result, written last (its presence marks a finished run).
pub(super) const RUN_FILE: &str = "run.json";

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
) -> anyhow::Result<DemoResults> {
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
    let test_set = TestSet {
        tokenizer,
        toolbox,
        settings,
        tasks: test,
        out_dir: &paths.out_dir,
    };

    // The cold start (greedy on the test split, and sampled at the training temperature: how its samples end, and
    // the prefixes the teachers take over from) and each teacher's greedy evaluation, side by side.
    let cold_start = || -> anyhow::Result<ColdStart> {
        let student = load_model_dir(&dirs.student, &Device::Cpu)?;
        let (evaluation, correct) =
            test_set.evaluate_and_record("student-cold-start", &student.model)?;
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
            let (evaluation, _) =
                test_set.evaluate_and_record(&format!("teacher-{}", kind.name()), &model.model)?;
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
                    &test_set,
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
    Ok(DemoResults {
        settings: *settings,
        models: record,
        teachers,
        student_before: cold.evaluation,
        student_before_correct: cold.correct,
        student_sampled: cold.sampled,
        runs,
    })
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
    use std::path::Path;

    use super::*;
    use crate::evaluate::rollout_config;
    use crate::onpolicy::rl_config;
    use sod_train::RunConfig;

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
