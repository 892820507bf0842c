//! The demo's outputs: the table printed on the terminal, `report.md`, PNG plots and `outcome.json`.
//!
//! Rows group the runs of one arm and teacher over seeds. A row's interval, and a paired difference's, adds two
//! variances: the problems' (the per-problem mean over seeds, across problems) and the seeds' (the per-seed mean,
//! across seeds). With one seed the first alone remains (Wilson's interval for a row), which covers the choice of
//! problems but not training noise; the report says which.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::evaluate::Evaluation;
use super::onpolicy::RlRun;
use super::pipeline::{DemoResults, finish_text};
use super::plot::{Bar, ChartLabels, Series, bar_chart_png, line_chart_png, y_range};
use super::settings::{Arm, ModelSize, TeacherKind};
use super::stats::{accuracy_interval, paired_over_seeds, wilson_interval};

/// Ten distinguishable colours (matplotlib's tab10), one per row in table order.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// `+0.123 [+0.080, +0.166]`, and whether the interval excludes 0.
fn difference_text(a: &[&[bool]], b: &[&[bool]]) -> (String, f64, bool) {
    let (mean, lo, hi) = paired_over_seeds(a, b);
    (
        format!("{mean:+.3} [{lo:+.3}, {hi:+.3}]"),
        mean,
        lo > 0.0 || hi < 0.0,
    )
}

/// Mean of a plugin metric over a run's steps, if the plugin reported it.
fn plugin_mean(run: &RlRun, name: &str) -> Option<f64> {
    let values: Vec<f64> = run
        .steps
        .iter()
        .filter_map(|s| s.plugin.get(name).copied())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `hidden 96 x 3 layers, 4 heads (2 key/value) of width 64`.
fn describe_size(size: &ModelSize) -> String {
    format!(
        "hidden {} x {} layers, {} heads ({} key/value) of width {}",
        size.hidden, size.layers, size.heads, size.kv_heads, size.head_dim
    )
}

/// A row of the result table: one arm and teacher over its seeds (or the cold start).
pub struct Row<'a> {
    /// `student + OPD (full KL), recovery teacher`.
    pub name: String,
    /// The arm and teacher (none for the cold start).
    pub key: Option<(Arm, Option<TeacherKind>)>,
    /// The runs, seed by seed.
    pub runs: Vec<&'a RlRun>,
    /// Answers per seed (the cold start's once).
    pub correct: Vec<&'a [bool]>,
    /// Evaluations per seed.
    pub evaluations: Vec<Evaluation>,
}

impl Row<'_> {
    fn mean(&self, f: impl Fn(&Evaluation) -> f64) -> f64 {
        self.evaluations.iter().map(f).sum::<f64>() / self.evaluations.len().max(1) as f64
    }

    fn weights_cell(&self) -> String {
        let Some((arm, _)) = self.key else {
            return "-".to_string();
        };
        if !arm.step_weighted() {
            return if arm.uses_teacher() { "w = 1" } else { "-" }.to_string();
        }
        let mean = |name: &str| {
            let v: Vec<f64> = self
                .runs
                .iter()
                .filter_map(|r| plugin_mean(r, name))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        match (mean("mean_last_w"), mean("mean_steps")) {
            (Some(w), Some(steps)) => format!("last-step w {w:.3} ({steps:.2} steps)"),
            _ => "-".to_string(),
        }
    }
}

/// The rows in table order: the cold start, then each arm and teacher in plan order.
pub fn rows(outcome: &DemoResults) -> Vec<Row<'_>> {
    let mut rows = vec![Row {
        name: "student (cold start)".to_string(),
        key: None,
        runs: Vec::new(),
        correct: vec![&outcome.student_before_correct],
        evaluations: vec![outcome.student_before],
    }];
    for run in &outcome.runs {
        let key = (run.spec.arm, run.spec.teacher);
        match rows.iter_mut().find(|r| r.key == Some(key)) {
            Some(row) => {
                row.runs.push(run);
                row.correct.push(&run.correct);
                row.evaluations.push(run.after);
            }
            None => rows.push(Row {
                name: run.spec.row_label(),
                key: Some(key),
                runs: vec![run],
                correct: vec![&run.correct],
                evaluations: vec![run.after],
            }),
        }
    }
    rows
}

fn seeds_of(outcome: &DemoResults) -> usize {
    rows(outcome)
        .iter()
        .map(|r| r.runs.len())
        .max()
        .unwrap_or(0)
}

/// The table printed at the end of the demo (fixed-width text).
pub fn table(outcome: &DemoResults) -> String {
    let rows = rows(outcome);
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>15} {:>6} {:>12} {:>11} {:>11}  SOD weights",
        "model", "accuracy", "95% interval", "seeds", "valid calls", "tool calls", "mean steps"
    );
    for t in &outcome.teachers {
        let e = t.evaluation;
        let (lo, hi) = wilson_interval(e.accuracy, e.problems);
        let _ = writeln!(
            out,
            "{:<width$} {:>9.3} {:>15} {:>6} {:>12.3} {:>11.2} {:>11.2}  -",
            format!("teacher ({})", t.kind.name()),
            e.accuracy,
            format!("[{lo:.3}, {hi:.3}]"),
            "-",
            e.valid_tool_call_fraction,
            e.mean_tool_calls,
            e.mean_steps,
        );
    }
    for row in &rows {
        let (mean, lo, hi) = accuracy_interval(&row.correct);
        let _ = writeln!(
            out,
            "{:<width$} {:>9.3} {:>15} {:>6} {:>12.3} {:>11.2} {:>11.2}  {}",
            row.name,
            mean,
            format!("[{lo:.3}, {hi:.3}]"),
            if row.key.is_none() {
                "-".to_string()
            } else {
                row.runs.len().to_string()
            },
            row.mean(|e| e.valid_tool_call_fraction),
            row.mean(|e| e.mean_tool_calls),
            row.mean(|e| e.mean_steps),
            row.weights_cell()
        );
    }
    out
}

/// The teachers' take-over table: success from the cold-start student's off-track and on-track prefixes, and from
/// perturbed gold prefixes.
pub fn take_over_table(outcome: &DemoResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>30} {:>30} {:>30}",
        "teacher", "student off-track", "student on-track", "perturbed gold"
    );
    for t in &outcome.teachers {
        let o = t.take_over;
        let cell = |solved: usize, all: usize| {
            let p = solved as f64 / all.max(1) as f64;
            let (lo, hi) = wilson_interval(p, all);
            format!("{solved}/{all} = {p:.3} [{lo:.3}, {hi:.3}]")
        };
        let _ = writeln!(
            out,
            "{:<20} {:>30} {:>30} {:>30}",
            t.kind.label(),
            cell(o.off_track_solved, o.off_track),
            cell(o.on_track_solved, o.on_track),
            cell(o.perturbed_solved, o.perturbed)
        );
    }
    out
}

/// One verdict line: `name: +0.123 [+0.080, +0.166], better`.
fn verdict_line(name: &str, a: &[&[bool]], b: &[&[bool]], words: [&str; 2]) -> String {
    let (text, mean, separated) = difference_text(a, b);
    let word = match (separated, mean > 0.0) {
        (false, _) => "not separated",
        (true, true) => words[0],
        (true, false) => words[1],
    };
    format!("{name}: {text}, {word}")
}

/// What the run separates and what it does not: each row against the cold start, SOD against OPD for each signal
/// and teacher, and the recovery teacher against the gold-only one, as paired per-problem differences with 95%
/// intervals.
pub fn verdict(outcome: &DemoResults) -> String {
    let rows = rows(outcome);
    let Some(start) = rows.first() else {
        return "The run has no rows.".to_string();
    };
    let n = outcome.student_before_correct.len();
    let find = |arm: Arm, teacher: Option<TeacherKind>| {
        rows.iter().find(|r| r.key == Some((arm, teacher)))
    };
    let mut lines = Vec::new();
    for row in &rows[1..] {
        lines.push(verdict_line(
            &format!(
                "{} vs the cold start",
                row.name.trim_start_matches("student + ")
            ),
            &row.correct,
            &start.correct,
            ["an improvement", "worse"],
        ));
    }
    for teacher in TeacherKind::ALL {
        for (sod, opd) in [
            (Arm::SodSampled, Arm::OpdSampled),
            (Arm::SodFull, Arm::OpdFull),
        ] {
            if let (Some(s), Some(o)) = (find(sod, Some(teacher)), find(opd, Some(teacher))) {
                lines.push(verdict_line(
                    &format!("{} - {}, {}", sod.label(), opd.label(), teacher.label()),
                    &s.correct,
                    &o.correct,
                    ["SOD better", "SOD worse"],
                ));
            }
        }
    }
    for arm in Arm::MAIN {
        if let (Some(r), Some(g)) = (
            find(arm, Some(TeacherKind::Recovery)),
            find(arm, Some(TeacherKind::Gold)),
        ) {
            lines.push(verdict_line(
                &format!("{}: recovery teacher - gold-only teacher", arm.label()),
                &r.correct,
                &g.correct,
                ["recovery better", "recovery worse"],
            ));
        }
    }
    if lines.is_empty() {
        return "The run has no on-policy arm to compare.".to_string();
    }
    let seeds = seeds_of(outcome);
    let scope = if seeds <= 1 {
        "one seed: the intervals cover the problems, not training noise".to_string()
    } else {
        format!("{seeds} seeds: the intervals cover the problems and the seeds")
    };
    format!(
        "Paired differences in test accuracy on {n} problems, 95% intervals ({scope}):\n- {}",
        lines.join("\n- ")
    )
}

fn chart(
    out_dir: &Path,
    file: &str,
    (title, y_label): (&str, &str),
    outcome: &DemoResults,
    metric: impl Fn(&sod_train::StepMetrics) -> Option<f64>,
    markdown: &mut String,
) -> anyhow::Result<()> {
    // One series per row: the metric's mean over the row's seeds, step by step.
    let series: Vec<Series> = rows(outcome)
        .iter()
        .skip(1)
        .enumerate()
        .map(|(k, row)| {
            let steps = row.runs.iter().map(|r| r.steps.len()).min().unwrap_or(0);
            Series {
                name: row.name.trim_start_matches("student + ").to_string(),
                values: (0..steps)
                    .map(|i| {
                        let v: Vec<f64> = row
                            .runs
                            .iter()
                            .filter_map(|r| metric(&r.steps[i]))
                            .collect();
                        if v.is_empty() {
                            f64::NAN
                        } else {
                            v.iter().sum::<f64>() / v.len() as f64
                        }
                    })
                    .collect(),
                color: PALETTE[(k + 1) % PALETTE.len()],
            }
        })
        .collect();
    let path = out_dir.join(file);
    let labels = ChartLabels {
        title,
        x: "on-policy training step",
        y: y_label,
    };
    let height = (330 + 14 * series.len()).max(440);
    std::fs::write(&path, line_chart_png(&series, &labels, 720, height))
        .with_context(|| format!("writing {}", path.display()))?;
    let (low, high) = y_range(&series);
    let _ = writeln!(
        markdown,
        "### {title}\n\n![{title}]({file})\n\nx: training step 1..{}; y: {low:.4} (bottom) to {high:.4} (top); the \
         mean over seeds. Colours: {}.\n",
        series.iter().map(|s| s.values.len()).max().unwrap_or(0),
        series
            .iter()
            .map(|s| format!("{} rgb{:?}", s.name, s.color))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `accuracy_bars.png`: the test accuracy of every row with its 95% interval.
fn accuracy_bars(
    outcome: &DemoResults,
    out_dir: &Path,
    markdown: &mut String,
) -> anyhow::Result<()> {
    let mut bars = Vec::new();
    for t in &outcome.teachers {
        let e = t.evaluation;
        bars.push(Bar {
            name: format!("teacher ({})", t.kind.name()),
            value: e.accuracy,
            interval: wilson_interval(e.accuracy, e.problems),
            color: [90, 90, 90],
        });
    }
    for (k, row) in rows(outcome).iter().enumerate() {
        let (mean, lo, hi) = accuracy_interval(&row.correct);
        bars.push(Bar {
            name: row.name.trim_start_matches("student + ").to_string(),
            value: mean,
            interval: (lo, hi),
            color: if k == 0 {
                [180, 180, 180]
            } else {
                PALETTE[k % PALETTE.len()]
            },
        });
    }
    let labels = ChartLabels {
        title: "Test accuracy (greedy) with 95% intervals",
        x: "model",
        y: "accuracy",
    };
    let path = out_dir.join("accuracy_bars.png");
    let width = (120 + 70 * bars.len()).max(640);
    let height = (300 + 14 * bars.len()).max(440);
    std::fs::write(&path, bar_chart_png(&bars, &labels, width, height))
        .with_context(|| format!("writing {}", path.display()))?;
    let _ = writeln!(
        markdown,
        "### Test accuracy\n\n![Test accuracy](accuracy_bars.png)\n"
    );
    Ok(())
}

/// Writes `report.md`, `accuracy_bars.png`, `reward.png`, `accuracy.png`, `kl.png` and `outcome.json` into
/// `out_dir`.
pub fn write_report(outcome: &DemoResults, out_dir: &Path) -> anyhow::Result<()> {
    let s = &outcome.settings;
    let m = &outcome.models;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# sod demo: SOD vs OPD on multi-step calculator problems\n"
    );
    let _ = writeln!(md, "{}\n", verdict(outcome));
    let _ = writeln!(
        md,
        "Held-out test problems: {} (greedy decoding, with the real calculator in the sandbox). Numbers are what \
         this run measured; nothing is tuned toward an outcome.\n",
        s.test_tasks
    );
    let _ = writeln!(md, "```\n{}```\n", table(outcome));
    let _ = writeln!(
        md,
        "- accuracy: exact final answer (`\\boxed{{}}`) on held-out problems, the mean over seeds;\n- valid calls: \
         tool calls that parsed, named the calculator and were accepted, over all tool calls;\n- tool calls, mean \
         steps: per problem (a step is an assistant turn);\n- SOD weights: the mean, over training steps and seeds, \
         of the plugin's mean weight of the last step of each trajectory, and the mean number of steps per \
         trajectory.\n"
    );
    let _ = writeln!(md, "## The teachers where distillation asks them\n");
    let _ = writeln!(
        md,
        "Success (solved/all, 95% interval) when a teacher continues greedily, with the calculator, from: the \
         cold-start student's samples at the training temperature (one per test problem) cut after their first \
         wrong step (student off-track) or, when the first step was right, after it (student on-track), token for \
         token as the student wrote them; and the gold solution of each test problem up to a call with one \
         miscopied digit and the calculator's answer to it (perturbed gold, as in the recovery teacher's \
         training data). Every take-over is in `eval/takeover-<teacher>.jsonl`.\n\n```\n{}```\n",
        take_over_table(outcome)
    );
    let st = &outcome.student_sampled;
    let _ = writeln!(
        md,
        "The same {} samples of the cold start at temperature {}: accuracy {:.3}; how they ended: {}.\n",
        st.samples,
        s.rl.temperature,
        st.accuracy,
        finish_text(&st.finish)
    );
    let _ = writeln!(md, "## Setup\n");
    let keys: Vec<String> = m
        .teachers
        .iter()
        .map(|(_, b)| b.key.clone())
        .chain(std::iter::once(m.student.key.clone()))
        .collect();
    let teacher_params = m.teachers.first().map_or(0, |(_, b)| b.parameters);
    let _ = writeln!(
        md,
        "- Models (Qwen3 architecture, Hugging Face directories in `{}`): teacher {} ({} parameters), student \
         {} ({} parameters), RoPE base {}; tokenizer: byte-level BPE with {} tokens, trained on the gold \
         conversations, with Qwen's pre-tokenisation (numbers digit by digit).",
        keys.join("`, `"),
        describe_size(&s.teacher),
        teacher_params,
        describe_size(&s.student),
        m.student.parameters,
        s.rope_theta,
        s.vocab_size
    );
    let gold = m.student.conversations.max(1) as f64;
    let _ = writeln!(
        md,
        "- Gold data: {} train problems solved step by step with the real calculator ({:.0} prompt tokens and \
         {:.0} trained tokens per conversation on average). Recovery data (the recovery teacher only): for a \
         fraction {} of the train problems, a conversation in which one calculator call has a miscopied digit \
         (not trained), the real calculator answers it, and the step is redone right (trained).",
        m.student.conversations,
        m.student.gold_prompt_tokens as f64 / gold,
        m.student.gold_trained_tokens as f64 / gold,
        s.recovery_fraction
    );
    let mut models: Vec<(String, crate::build::BuiltModel, sod_train::sft::SftConfig)> = m
        .teachers
        .iter()
        .map(|(k, b)| (k.label().to_string(), b.clone(), s.teacher_sft))
        .collect();
    models.push((
        "student cold start".to_string(),
        m.student.clone(),
        s.student_sft,
    ));
    for (name, model, cfg) in &models {
        let _ = writeln!(
            md,
            "- SFT of the {name}: {} conversations ({} recovery), {} steps x {} conversations, lr {}{}{}{}.",
            model.conversations,
            model.recovery_conversations,
            model.sft_last.map_or(cfg.steps, |l| l.step),
            cfg.batch_size,
            cfg.learning_rate,
            model.sft_last.map_or(String::new(), |l| format!(
                ", last loss {:.4}, tokens predicted with p > 1/2: {:.3}",
                l.loss, l.confident_fraction
            )),
            match model.checks.last() {
                Some((step, accuracy)) => format!(
                    ", last check at step {step}: greedy accuracy {accuracy:.3} on train problems"
                ),
                None => String::new(),
            },
            if model.cached {
                " (taken from the cache)".to_string()
            } else {
                format!(" ({:.0} s to build)", model.build_seconds)
            }
        );
    }
    let _ = writeln!(
        md,
        "- On-policy phase, identical for every run except the plugin, its learning rate and the seed: {} steps x \
         {} prompts x {} samples, lr {} (full KL) / {} (sampled-token and GRPO), {} warm-up steps, temperature {} \
         (log-probs at the same temperature; the full KL at temperature {}); seeds {}..{}; SOD delta {}. The \
         null-signal control is OPD (full KL) with the teacher's distributions shuffled across tokens.",
        s.rl.steps,
        s.rl.prompts_per_step,
        s.rl.samples_per_prompt,
        s.rl.learning_rate,
        s.rl.sampled_learning_rate,
        s.rl.warmup_steps,
        s.rl.temperature,
        s.rl.divergence_temperature,
        s.seed,
        s.seed + s.seeds - 1,
        s.rl.delta,
    );
    let total: f64 = outcome.runs.iter().map(|r| r.train_seconds).sum();
    let _ = writeln!(
        md,
        "- {} on-policy runs, {:.0} s of training in all (metrics in `<run>/metrics.jsonl`, e.g. `{}`).",
        outcome.runs.len(),
        total,
        outcome.runs.first().map_or(String::new(), |r| r.spec.dir())
    );
    let _ = writeln!(md, "\n## Training curves\n");
    accuracy_bars(outcome, out_dir, &mut md)?;
    chart(
        out_dir,
        "reward.png",
        ("Mean reward of the rollouts", "reward"),
        outcome,
        |s| Some(s.reward_mean),
        &mut md,
    )?;
    chart(
        out_dir,
        "accuracy.png",
        ("Accuracy of the rollouts (sampled)", "accuracy"),
        outcome,
        |s| Some(s.accuracy),
        &mut md,
    )?;
    chart(
        out_dir,
        "kl.png",
        (
            "KL to the teacher (mean log pS - log pT, sampled tokens)",
            "nats per token",
        ),
        outcome,
        |s| s.kl_teacher,
        &mut md,
    )?;
    let report = out_dir.join("report.md");
    std::fs::write(&report, md).with_context(|| format!("writing {}", report.display()))?;
    let json = out_dir.join("outcome.json");
    std::fs::write(&json, serde_json::to_string_pretty(outcome)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use crate::build::{BuiltModel, ModelsRecord};
    use crate::pipeline::{DemoResults, TeacherRecord};
    use crate::settings::{DemoSettings, RunSpec};
    use crate::stats::paired_difference;
    use crate::takeover::{SampledStart, TakeOver};

    /// `k` of `n` problems right, the first `k`.
    fn answers(k: usize, n: usize) -> Vec<bool> {
        (0..n).map(|i| i < k).collect()
    }

    fn evaluation(correct: &[bool]) -> Evaluation {
        Evaluation {
            problems: correct.len(),
            accuracy: correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64,
            valid_tool_call_fraction: 1.0,
            mean_tool_calls: 2.0,
            mean_steps: 3.0,
            truncated_fraction: 0.0,
        }
    }

    /// The default plan (recovery teacher, the four main arms, one seed) with `arms[k]` problems right.
    fn outcome(start: usize, arms: [usize; 4]) -> DemoResults {
        let n = 256;
        let runs = Arm::MAIN
            .iter()
            .zip(arms)
            .map(|(&arm, k)| run(arm, Some(TeacherKind::Recovery), 0, answers(k, n)))
            .collect();
        with_runs(start, n, runs)
    }

    fn run(arm: Arm, teacher: Option<TeacherKind>, seed: u64, correct: Vec<bool>) -> RlRun {
        RlRun {
            spec: RunSpec { arm, teacher, seed },
            after: evaluation(&correct),
            correct,
            steps: Vec::new(),
            train_seconds: 0.0,
        }
    }

    fn with_runs(start: usize, n: usize, runs: Vec<RlRun>) -> DemoResults {
        let model = BuiltModel {
            key: "k".into(),
            conversations: 1,
            recovery_conversations: 0,
            gold_trained_tokens: 1,
            gold_prompt_tokens: 1,
            parameters: 1,
            sft_last: None,
            checks: Vec::new(),
            build_seconds: 0.0,
            cached: true,
        };
        DemoResults {
            settings: DemoSettings::standard(0),
            models: ModelsRecord {
                teachers: vec![(TeacherKind::Recovery, model.clone())],
                student: model,
            },
            teachers: vec![TeacherRecord {
                kind: TeacherKind::Recovery,
                evaluation: evaluation(&answers(n, n)),
                take_over: TakeOver {
                    off_track: 10,
                    off_track_solved: 7,
                    on_track: 20,
                    on_track_solved: 19,
                    perturbed: 30,
                    perturbed_solved: 3,
                },
            }],
            student_before: evaluation(&answers(start, n)),
            student_before_correct: answers(start, n),
            student_sampled: SampledStart {
                samples: n,
                finish: [("answered".to_string(), 1.0)].into_iter().collect(),
                accuracy: 0.0,
            },
            runs,
        }
    }

    #[test]
    fn verdict_names_what_is_separated_and_what_is_not() {
        let v = verdict(&outcome(28, [25, 30, 110, 100]));
        assert!(
            v.contains("OPD (sampled-token), recovery teacher vs the cold start: -0.012 [")
                && v.contains("not separated"),
            "{v}"
        );
        assert!(
            v.contains("OPD (full KL), recovery teacher vs the cold start: +0.320")
                && v.contains("an improvement"),
            "{v}"
        );
        assert!(
            v.contains("SOD (full KL) - OPD (full KL), recovery teacher: -0.039"),
            "{v}"
        );
        assert!(v.contains("one seed"), "{v}");
        let worse = verdict(&outcome(100, [10, 100, 100, 100]));
        assert!(
            worse.contains("OPD (sampled-token), recovery teacher vs the cold start: -0.352")
                && worse.contains("worse"),
            "{worse}"
        );
        assert!(worse.contains("SOD better"), "{worse}");
    }

    #[test]
    fn rows_pool_seeds_and_intervals_add_the_seed_variance() {
        // Two seeds of one arm: 100 and 120 of 256 right. The row's mean is 110/256; its interval is wider than
        // Wilson's for one seed at that accuracy, as the seeds disagree.
        let n = 256;
        let runs = vec![
            run(
                Arm::OpdFull,
                Some(TeacherKind::Recovery),
                0,
                answers(100, n),
            ),
            run(
                Arm::OpdFull,
                Some(TeacherKind::Recovery),
                1,
                answers(120, n),
            ),
            run(Arm::Grpo, None, 0, answers(30, n)),
            run(Arm::Grpo, None, 1, answers(30, n)),
        ];
        let o = with_runs(30, n, runs);
        let rows = rows(&o);
        assert_eq!(rows.len(), 3, "cold start, OPD, GRPO");
        assert_eq!(rows[1].runs.len(), 2);
        let (mean, lo, hi) = accuracy_interval(&rows[1].correct);
        assert!((mean - 110.0 / 256.0).abs() < 1e-12);
        // By hand: per-problem means are 1 (100), 0.5 (20), 0 (136): variance over problems; seed means 100/256
        // and 120/256.
        let p: Vec<f64> = (0..n)
            .map(|i| {
                if i < 100 {
                    1.0
                } else if i < 120 {
                    0.5
                } else {
                    0.0
                }
            })
            .collect();
        let m = p.iter().sum::<f64>() / n as f64;
        let vp = p.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64 / n as f64;
        let s = [100.0 / 256.0, 120.0 / 256.0];
        let vs = ((s[0] - m).powi(2) + (s[1] - m).powi(2)) / 1.0 / 2.0;
        let half = 1.96 * (vp + vs).sqrt();
        assert!((lo - (mean - half)).abs() < 1e-12 && (hi - (mean + half)).abs() < 1e-12);
        let (wlo, whi) = wilson_interval(mean, n);
        assert!(hi - lo > whi - wlo);
        // GRPO equal to the cold start on every seed: a difference of exactly 0 with a zero-width interval.
        let (d, dlo, dhi) = paired_over_seeds(&rows[2].correct, &rows[0].correct);
        assert_eq!((d, dlo, dhi), (0.0, 0.0, 0.0));
        let v = verdict(&o);
        assert!(v.contains("2 seeds"), "{v}");
        assert!(
            v.contains("GRPO alone vs the cold start: +0.000 [+0.000, +0.000], not separated"),
            "{v}"
        );
        let t = table(&o);
        assert!(t.contains("student + GRPO alone"), "{t}");
        assert!(take_over_table(&o).contains("7/10 = 0.700"));
    }

    #[test]
    fn intervals_match_hand_computations() {
        // Wilson, p = 0.5, n = 100: 0.5 -/+ 0.0962.
        let (lo, hi) = wilson_interval(0.5, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        // Paired: 10 problems, a right on 3 more: mean 0.3, sd sqrt(0.9 * 0.3 * 0.7 / 0.9 ...).
        let a = answers(6, 10);
        let b = answers(3, 10);
        let (mean, lo, hi) = paired_difference(&a, &b);
        let sd = (3.0f64 * 0.7f64.powi(2) + 7.0 * 0.3f64.powi(2)) / 9.0;
        let half = 1.96 * (sd / 10.0).sqrt();
        assert!(
            (mean - 0.3).abs() < 1e-12
                && (lo - (0.3 - half)).abs() < 1e-12
                && (hi - (0.3 + half)).abs() < 1e-12
        );
    }
}
