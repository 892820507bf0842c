//! The demo's outputs: the table printed on the terminal, `report.md`, PNG plots and `outcome.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::pipeline::{DemoOutcome, Evaluation, ModelSize, RlRun};
use super::plot::{Series, line_chart_png, y_range};

const OPD_COLOR: [u8; 3] = [31, 119, 180];
const SOD_COLOR: [u8; 3] = [214, 39, 40];

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
        (Some(w), Some(steps)) if run.loss == "sod" => {
            format!("last-step w {w:.3} ({steps:.2} steps)")
        }
        _ if run.loss == "opd" => "w = 1".to_string(),
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

fn rows(outcome: &DemoOutcome) -> Vec<(String, Evaluation, String)> {
    let mut rows = vec![
        ("teacher".to_string(), outcome.teacher, "-".to_string()),
        (
            "student (cold start)".to_string(),
            outcome.student_before,
            "-".to_string(),
        ),
    ];
    for run in &outcome.runs {
        rows.push((
            format!("student + {}", run.loss.to_uppercase()),
            run.after,
            weights_cell(run),
        ));
    }
    rows
}

/// The table printed at the end of the demo (fixed-width text).
pub fn table(outcome: &DemoOutcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>12} {:>11} {:>11}  SOD weights",
        "model", "accuracy", "valid calls", "tool calls", "mean steps"
    );
    for (name, e, weights) in rows(outcome) {
        let _ = writeln!(
            out,
            "{:<22} {:>9.3} {:>12.3} {:>11.2} {:>11.2}  {}",
            name, e.accuracy, e.valid_tool_call_fraction, e.mean_tool_calls, e.mean_steps, weights
        );
    }
    out
}

/// One sentence comparing SOD with OPD, with the numbers, whichever way it went.
pub fn verdict(outcome: &DemoOutcome) -> String {
    let find = |loss: &str| outcome.runs.iter().find(|r| r.loss == loss);
    let (Some(opd), Some(sod)) = (find("opd"), find("sod")) else {
        return "The run has no OPD/SOD pair to compare.".to_string();
    };
    let n = sod.after.problems.max(1) as f64;
    let (a, b) = (sod.after.accuracy, opd.after.accuracy);
    // Standard error of the difference of two independent proportions on n problems each.
    let se = ((a * (1.0 - a) + b * (1.0 - b)) / n).sqrt();
    let diff = a - b;
    let separated = se > 0.0 && diff.abs() >= 2.0 * se;
    let start = outcome.student_before.accuracy;
    let comparison = if diff == 0.0 {
        format!("SOD and OPD tied on this run: test accuracy {a:.3} each")
    } else {
        let head = if !separated {
            "SOD and OPD are not separated on this run"
        } else if diff > 0.0 {
            "SOD beat OPD on this run"
        } else {
            "SOD did worse than OPD on this run"
        };
        format!(
            "{head}: test accuracy {a:.3} vs {b:.3}, a difference of {diff:+.3}, {} two standard errors ({:.3}) \
             on {} test problems",
            if separated { "beyond" } else { "within" },
            2.0 * se,
            sod.after.problems
        )
    };
    let improved = match (a > start, b > start) {
        (true, true) => "both",
        (true, false) => "only SOD",
        (false, true) => "only OPD",
        (false, false) => "neither",
    };
    format!("{comparison}; {improved} improved on the cold start ({start:.3}).")
}

fn chart(
    out_dir: &Path,
    file: &str,
    title: &str,
    outcome: &DemoOutcome,
    metric: impl Fn(&sod_train::StepMetrics) -> Option<f64>,
    markdown: &mut String,
) -> anyhow::Result<()> {
    let series: Vec<Series> = outcome
        .runs
        .iter()
        .map(|run| Series {
            name: run.loss.to_uppercase(),
            values: run
                .steps
                .iter()
                .map(|s| metric(s).unwrap_or(f64::NAN))
                .collect(),
            color: if run.loss == "sod" {
                SOD_COLOR
            } else {
                OPD_COLOR
            },
        })
        .collect();
    let path = out_dir.join(file);
    std::fs::write(&path, line_chart_png(&series, 480, 240))
        .with_context(|| format!("writing {}", path.display()))?;
    let (low, high) = y_range(&series);
    let _ = writeln!(
        markdown,
        "### {title}\n\n![{title}]({file})\n\nx: training step 1..{}; y: {low:.4} (bottom) to {high:.4} (top). \
         Red: SOD, blue: OPD.\n",
        series.iter().map(|s| s.values.len()).max().unwrap_or(0)
    );
    for s in &series {
        let values: Vec<String> = s.values.iter().map(|v| format!("{v:.3}")).collect();
        let _ = writeln!(markdown, "- {}: {}", s.name, values.join(", "));
    }
    markdown.push('\n');
    Ok(())
}

/// Writes `report.md`, `reward.png`, `accuracy.png`, `kl.png` and `outcome.json` into `out_dir`.
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
        "- On-policy phase, identical for both losses except the plugin: {} steps x {} prompts x {} samples, \
         lr {}, temperature {}, seed {}; SOD delta {}.",
        s.rl.steps,
        s.rl.prompts_per_step,
        s.rl.samples_per_prompt,
        s.rl.learning_rate,
        s.rl.temperature,
        s.seed,
        s.rl.delta,
    );
    for run in &outcome.runs {
        let _ = writeln!(
            md,
            "- {}: {:.1} s of training; metrics in `{}/metrics.jsonl`.",
            run.loss.to_uppercase(),
            run.train_seconds,
            run.loss
        );
    }
    let _ = writeln!(md, "\n## Training curves\n");
    chart(
        out_dir,
        "reward.png",
        "Mean reward of the rollouts",
        outcome,
        |s| Some(s.reward_mean),
        &mut md,
    )?;
    chart(
        out_dir,
        "accuracy.png",
        "Accuracy of the rollouts (sampled)",
        outcome,
        |s| Some(s.accuracy),
        &mut md,
    )?;
    chart(
        out_dir,
        "kl.png",
        "KL estimate to the teacher (mean log pS - log pT on generated tokens)",
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

    fn evaluation(accuracy: f64) -> Evaluation {
        Evaluation {
            problems: 64,
            accuracy,
            valid_tool_call_fraction: 1.0,
            mean_tool_calls: 2.0,
            mean_steps: 3.0,
            truncated_fraction: 0.0,
        }
    }

    fn outcome(start: f64, opd: f64, sod: f64) -> DemoOutcome {
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
        let run = |loss: &str, accuracy| RlRun {
            loss: loss.into(),
            steps: Vec::new(),
            after: evaluation(accuracy),
            train_seconds: 0.0,
        };
        DemoOutcome {
            settings: DemoSettings::standard(0),
            models: ModelsRecord {
                teacher: model.clone(),
                student: model,
            },
            teacher: evaluation(1.0),
            student_before: evaluation(start),
            runs: vec![run("opd", opd), run("sod", sod)],
        }
    }

    #[test]
    fn verdict_names_noise_as_noise_and_compares_with_the_start() {
        let close = verdict(&outcome(0.109, 0.062, 0.078));
        assert!(
            close.starts_with("SOD and OPD are not separated on this run")
                && close.contains("within two standard errors")
                && close.ends_with("neither improved on the cold start (0.109)."),
            "{close}"
        );
        let clear = verdict(&outcome(0.1, 0.2, 0.8));
        assert!(
            clear.starts_with("SOD beat OPD") && clear.contains("both improved"),
            "{clear}"
        );
        let worse = verdict(&outcome(0.5, 0.9, 0.1));
        assert!(
            worse.starts_with("SOD did worse than OPD") && worse.contains("only OPD improved"),
            "{worse}"
        );
        assert!(verdict(&outcome(0.0, 0.0, 0.0)).starts_with("SOD and OPD tied"));
    }
}
