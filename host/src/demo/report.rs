//! The demo's outputs: the table printed on the terminal, `report.md`, PNG plots and `outcome.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::pipeline::{Arm, DemoOutcome, Evaluation, ModelSize, RlRun};
use super::plot::{Bar, ChartLabels, Series, bar_chart_png, line_chart_png, y_range};

/// One colour per arm, in [`Arm::ALL`] order.
fn arm_color(arm: Arm) -> [u8; 3] {
    match arm {
        Arm::OpdSampled => [31, 119, 180],
        Arm::SodSampled => [214, 39, 40],
        Arm::OpdFull => [44, 160, 44],
        Arm::SodFull => [255, 127, 14],
    }
}

/// 95% Wilson score interval of a proportion `p` measured on `n` trials.
pub fn wilson_interval(p: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, z) = (n as f64, 1.96f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Mean of the paired per-problem difference `a - b` (each 1, 0 or -1) and its 95% interval (normal
/// approximation with the sample standard deviation of the differences).
pub fn paired_difference(a: &[bool], b: &[bool]) -> (f64, f64, f64) {
    let n = a.len().min(b.len());
    if n < 2 {
        return (0.0, -1.0, 1.0);
    }
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(u8::from(x)) - f64::from(u8::from(y)))
        .collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = 1.96 * (var / n as f64).sqrt();
    (mean, mean - half, mean + half)
}

/// `+0.123 [+0.080, +0.166]`, and whether the interval excludes 0.
fn difference_text(a: &[bool], b: &[bool]) -> (String, bool) {
    let (mean, lo, hi) = paired_difference(a, b);
    (
        format!("{mean:+.3} [{lo:+.3}, {hi:+.3}]"),
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

fn weights_cell(run: &RlRun) -> String {
    match (
        plugin_mean(run, "mean_last_w"),
        plugin_mean(run, "mean_steps"),
    ) {
        (Some(w), Some(steps)) if run.arm.step_weighted() => {
            format!("last-step w {w:.3} ({steps:.2} steps)")
        }
        _ if !run.arm.step_weighted() => "w = 1".to_string(),
        _ => "-".to_string(),
    }
}

/// Rows of the result table: (name, evaluation, SOD weights cell).
/// `hidden 96 x 3 layers, 4 heads (2 key/value) of width 64`.
fn describe_size(size: &ModelSize) -> String {
    format!(
        "hidden {} x {} layers, {} heads ({} key/value) of width {}",
        size.hidden, size.layers, size.heads, size.kv_heads, size.head_dim
    )
}

/// A row of the result table: its name, the evaluation, the SOD weights cell, and the arm (none for the teacher and
/// the cold start).
struct Row {
    name: String,
    evaluation: Evaluation,
    weights: String,
    arm: Option<Arm>,
}

fn rows(outcome: &DemoOutcome) -> Vec<Row> {
    let fixed = |name: &str, evaluation| Row {
        name: name.to_string(),
        evaluation,
        weights: "-".to_string(),
        arm: None,
    };
    let mut rows = vec![
        fixed("teacher", outcome.teacher),
        fixed("student (cold start)", outcome.student_before),
    ];
    for run in &outcome.runs {
        rows.push(Row {
            name: format!("student + {}", run.arm.label()),
            evaluation: run.after,
            weights: weights_cell(run),
            arm: Some(run.arm),
        });
    }
    rows
}

/// The table printed at the end of the demo (fixed-width text).
pub fn table(outcome: &DemoOutcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>9} {:>15} {:>12} {:>11} {:>11}  SOD weights",
        "model", "accuracy", "95% interval", "valid calls", "tool calls", "mean steps"
    );
    for Row {
        name,
        evaluation: e,
        weights,
        ..
    } in rows(outcome)
    {
        let (lo, hi) = wilson_interval(e.accuracy, e.problems);
        let _ = writeln!(
            out,
            "{:<32} {:>9.3} {:>15} {:>12.3} {:>11.2} {:>11.2}  {}",
            name,
            e.accuracy,
            format!("[{lo:.3}, {hi:.3}]"),
            e.valid_tool_call_fraction,
            e.mean_tool_calls,
            e.mean_steps,
            weights
        );
    }
    out
}

/// What the run separates and what it does not: each arm against the cold start, and SOD against OPD for each
/// signal, as paired per-problem differences with 95% intervals.
pub fn verdict(outcome: &DemoOutcome) -> String {
    let mut lines = Vec::new();
    let start = &outcome.student_before_correct;
    let n = start.len();
    for run in &outcome.runs {
        let (text, separated) = difference_text(&run.correct, start);
        lines.push(format!(
            "{} vs the cold start: {text}, {}",
            run.arm.label(),
            match (
                separated,
                run.after.accuracy > outcome.student_before.accuracy
            ) {
                (false, _) => "not separated",
                (true, true) => "an improvement",
                (true, false) => "worse",
            }
        ));
    }
    for (sod, opd) in [
        (Arm::SodSampled, Arm::OpdSampled),
        (Arm::SodFull, Arm::OpdFull),
    ] {
        let find = |arm: Arm| outcome.runs.iter().find(|r| r.arm == arm);
        if let (Some(s), Some(o)) = (find(sod), find(opd)) {
            let (text, separated) = difference_text(&s.correct, &o.correct);
            lines.push(format!(
                "{} - {}: {text}, {}",
                sod.label(),
                opd.label(),
                match (separated, s.after.accuracy > o.after.accuracy) {
                    (false, _) => "not separated",
                    (true, true) => "SOD better",
                    (true, false) => "SOD worse",
                }
            ));
        }
    }
    if lines.is_empty() {
        return "The run has no on-policy arm to compare.".to_string();
    }
    format!(
        "Paired differences in test accuracy on {n} problems, 95% intervals (one seed: the intervals cover the \
         problems, not training noise):\n- {}",
        lines.join("\n- ")
    )
}

fn chart(
    out_dir: &Path,
    file: &str,
    (title, y_label): (&str, &str),
    outcome: &DemoOutcome,
    metric: impl Fn(&sod_train::StepMetrics) -> Option<f64>,
    markdown: &mut String,
) -> anyhow::Result<()> {
    let series: Vec<Series> = outcome
        .runs
        .iter()
        .map(|run| Series {
            name: run.arm.label().to_string(),
            values: run
                .steps
                .iter()
                .map(|s| metric(s).unwrap_or(f64::NAN))
                .collect(),
            color: arm_color(run.arm),
        })
        .collect();
    let path = out_dir.join(file);
    let labels = ChartLabels {
        title,
        x: "on-policy training step",
        y: y_label,
    };
    std::fs::write(&path, line_chart_png(&series, &labels, 640, 400))
        .with_context(|| format!("writing {}", path.display()))?;
    let (low, high) = y_range(&series);
    let _ = writeln!(
        markdown,
        "### {title}\n\n![{title}]({file})\n\nx: training step 1..{}; y: {low:.4} (bottom) to {high:.4} (top). \
         Colours: {}.\n",
        series.iter().map(|s| s.values.len()).max().unwrap_or(0),
        series
            .iter()
            .map(|s| format!("{} rgb{:?}", s.name, s.color))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &series {
        let values: Vec<String> = s.values.iter().map(|v| format!("{v:.3}")).collect();
        let _ = writeln!(markdown, "- {}: {}", s.name, values.join(", "));
    }
    markdown.push('\n');
    Ok(())
}

/// `accuracy_bars.png`: the test accuracy of every model with its 95% interval.
fn accuracy_bars(
    outcome: &DemoOutcome,
    out_dir: &Path,
    markdown: &mut String,
) -> anyhow::Result<()> {
    let mut bars = Vec::new();
    // Greys for the teacher and the cold start, the arms' colours for the rest.
    let greys = [[120, 120, 120], [180, 180, 180]];
    for (k, row) in rows(outcome).into_iter().enumerate() {
        let e = row.evaluation;
        bars.push(Bar {
            name: row.name,
            value: e.accuracy,
            interval: wilson_interval(e.accuracy, e.problems),
            color: row.arm.map_or(greys[k.min(1)], arm_color),
        });
    }
    let labels = ChartLabels {
        title: "Test accuracy (greedy) with 95% intervals",
        x: "model",
        y: "accuracy",
    };
    let path = out_dir.join("accuracy_bars.png");
    std::fs::write(&path, bar_chart_png(&bars, &labels, 640, 400))
        .with_context(|| format!("writing {}", path.display()))?;
    let _ = writeln!(
        markdown,
        "### Test accuracy\n\n![Test accuracy](accuracy_bars.png)\n"
    );
    Ok(())
}

/// Writes `report.md`, `accuracy_bars.png`, `reward.png`, `accuracy.png`, `kl.png` and `outcome.json` into
/// `out_dir`.
pub fn write_report(outcome: &DemoOutcome, out_dir: &Path) -> anyhow::Result<()> {
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
        "- accuracy: exact final answer (`\\boxed{{}}`) on held-out problems;\n- valid calls: tool calls that \
         parsed, named the calculator and were accepted, over all tool calls;\n- tool calls, mean steps: per \
         problem (a step is an assistant turn);\n- SOD weights: the mean, over training steps, of the plugin's mean \
         weight of the last step of each trajectory, and the mean number of steps per trajectory.\n"
    );
    let _ = writeln!(md, "## Setup\n");
    let _ = writeln!(
        md,
        "- Models (Qwen3 architecture, Hugging Face directories in `{}`): teacher {} ({} parameters), student \
         {} ({} parameters), RoPE base {}; tokenizer: byte-level BPE with {} tokens, trained on the gold \
         conversations, with Qwen's pre-tokenisation (numbers digit by digit).",
        format_args!("{}`, `{}", m.teacher.key, m.student.key),
        describe_size(&s.teacher),
        m.teacher.parameters,
        describe_size(&s.student),
        m.student.parameters,
        s.rope_theta,
        s.vocab_size
    );
    let _ = writeln!(
        md,
        "- Gold data: {} train problems solved step by step with the real calculator ({:.0} prompt tokens and \
         {:.0} trained tokens per conversation on average).",
        m.teacher.conversations,
        m.teacher.gold_prompt_tokens as f64 / m.teacher.conversations.max(1) as f64,
        m.teacher.gold_trained_tokens as f64 / m.teacher.conversations.max(1) as f64
    );
    for (name, cfg, model) in [
        ("teacher", s.teacher_sft, &m.teacher),
        ("student cold start", s.student_sft, &m.student),
    ] {
        let _ = writeln!(
            md,
            "- SFT of the {name}: {} steps x {} conversations, lr {}{}{}.",
            cfg.steps,
            cfg.batch_size,
            cfg.learning_rate,
            model.sft_last.map_or(String::new(), |l| format!(
                ", last loss {:.4}, tokens predicted with p > 1/2: {:.3}",
                l.loss, l.confident_fraction
            )),
            if model.cached {
                " (taken from the cache)".to_string()
            } else {
                format!(" ({:.0} s to build)", model.build_seconds)
            }
        );
    }
    let _ = writeln!(
        md,
        "- On-policy phase, identical for every arm except the plugin and its learning rate: {} steps x {} \
         prompts x {} samples, lr {} (full KL) / {} (sampled-token), {} warm-up steps, temperature {} (log-probs \
         at the same temperature; the full KL at temperature {}), seed {}; SOD delta {}.",
        s.rl.steps,
        s.rl.prompts_per_step,
        s.rl.samples_per_prompt,
        s.rl.learning_rate,
        s.rl.sampled_learning_rate,
        s.rl.warmup_steps,
        s.rl.temperature,
        s.rl.divergence_temperature,
        s.seed,
        s.rl.delta,
    );
    for run in &outcome.runs {
        let _ = writeln!(
            md,
            "- {}: {:.1} s of training; metrics in `{}/metrics.jsonl`.",
            run.arm.label(),
            run.train_seconds,
            run.arm.dir()
        );
    }
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
    use crate::demo::pipeline::{
        BuiltModel, DemoOutcome, DemoSettings, Evaluation, ModelsRecord, RlRun,
    };

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

    fn outcome(start: usize, arms: [usize; 4]) -> DemoOutcome {
        let n = 256;
        let model = BuiltModel {
            key: "k".into(),
            conversations: 1,
            gold_trained_tokens: 1,
            gold_prompt_tokens: 1,
            parameters: 1,
            sft_last: None,
            build_seconds: 0.0,
            cached: true,
        };
        let runs = Arm::ALL
            .iter()
            .zip(arms)
            .map(|(&arm, k)| RlRun {
                arm,
                correct: answers(k, n),
                steps: Vec::new(),
                after: evaluation(&answers(k, n)),
                train_seconds: 0.0,
            })
            .collect();
        DemoOutcome {
            settings: DemoSettings::standard(0),
            models: ModelsRecord {
                teacher: model.clone(),
                student: model,
            },
            teacher: evaluation(&answers(n, n)),
            student_before: evaluation(&answers(start, n)),
            student_before_correct: answers(start, n),
            runs,
        }
    }

    #[test]
    fn verdict_names_what_is_separated_and_what_is_not() {
        let v = verdict(&outcome(28, [25, 30, 110, 100]));
        assert!(
            v.contains("OPD (sampled-token) vs the cold start: -0.012"),
            "{v}"
        );
        assert!(
            v.contains("OPD (sampled-token) vs the cold start: -0.012 [")
                && v.contains("not separated"),
            "{v}"
        );
        assert!(
            v.contains("OPD (full KL) vs the cold start: +0.320") && v.contains("an improvement"),
            "{v}"
        );
        assert!(v.contains("SOD (full KL) - OPD (full KL): -0.039"), "{v}");
        let worse = verdict(&outcome(100, [10, 100, 100, 100]));
        assert!(
            worse.contains("OPD (sampled-token) vs the cold start: -0.352")
                && worse.contains("worse"),
            "{worse}"
        );
        assert!(worse.contains("SOD better"), "{worse}");
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
