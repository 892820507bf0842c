//! The whole demo pipeline at a very small scale, against the real calculator and the real loss plugins: it checks
//! the structure of what the demo writes and that a second run reuses the cached models and measures the same
//! numbers. It asserts nothing about which loss wins.

use std::path::{Path, PathBuf};

use super::pipeline::{DemoOptions, DemoPaths, DemoResults, run_demo};
use super::report::{table, write_report};
use super::settings::{
    Arm, ColdStartStop, DemoModel, DemoSettings, ModelSize, RlSettings, TeacherKind,
};
use sod_train::sft::SftConfig;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The loss plugins: next to the test binary or one level up (where `cargo build --workspace` puts them).
fn plugin_dir() -> PathBuf {
    let exe_dir = sod_loss::default_plugin_dir().expect("test executable directory");
    let wanted = sod_loss::plugin_file_name("sod");
    [
        exe_dir.clone(),
        exe_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    ]
    .into_iter()
    .find(|dir| {
        dir.join(&wanted).is_file() && dir.join(sod_loss::plugin_file_name("opd")).is_file()
    })
    .unwrap_or_else(|| {
        panic!("{wanted} is not built: run `cargo build --workspace` (or `cargo xtask test`)")
    })
}

fn tiny_settings() -> DemoSettings {
    let sft = SftConfig {
        steps: 2,
        batch_size: 2,
        micro_batch: 2,
        learning_rate: 1e-3,
        warmup_steps: 1,
        max_grad_norm: 1.0,
        weight_decay: 0.0,
        seed: 5,
        schedule: Default::default(),
        min_lr_ratio: 0.0,
        gradient_checkpointing: false,
    };
    DemoSettings {
        seed: 5,
        train_tasks: 6,
        test_tasks: 3,
        vocab_size: 400,
        rope_theta: 10_000.0,
        teacher: ModelSize {
            hidden: 32,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 16,
        },
        student: ModelSize {
            hidden: 16,
            layers: 1,
            heads: 2,
            kv_heads: 2,
            head_dim: 8,
        },
        teacher_sft: sft,
        student_sft: SftConfig { steps: 1, ..sft },
        cold_start_stop: None,
        rl: RlSettings {
            steps: 1,
            prompts_per_step: 1,
            samples_per_prompt: 2,
            learning_rate: 1e-3,
            sampled_learning_rate: 1e-4,
            warmup_steps: 0,
            temperature: 0.6,
            divergence_temperature: 1.0,
            delta: 0.2,
        },
        max_new_tokens_per_turn: 12,
        recovery_sft: SftConfig { steps: 1, ..sft },
        recovery_fraction: 0.5,
        seeds: 1,
        grid: true,
    }
}

/// The outcome without wall-clock measurements.
fn reproducible(outcome: &DemoResults) -> serde_json::Value {
    let mut value = serde_json::to_value(outcome).expect("outcome as JSON");
    let clear = |model: &mut serde_json::Value| {
        model["build_seconds"] = serde_json::Value::Null;
        model["cached"] = serde_json::Value::Null;
    };
    for pair in value["models"]["teachers"]
        .as_array_mut()
        .expect("teachers")
    {
        clear(&mut pair[1]);
    }
    clear(&mut value["models"]["student"]);
    for run in value["runs"].as_array_mut().expect("runs") {
        run["train_seconds"] = serde_json::Value::Null;
        for step in run["steps"].as_array_mut().expect("steps") {
            step["timing"] = serde_json::Value::Null;
        }
    }
    value
}

#[test]
fn tiny_demo_writes_its_report_and_reuses_cached_models() {
    let tools_dir = target_dir().join("tools");
    assert!(
        tools_dir.join("calculator.wasm").is_file(),
        "build the tools first: cargo xtask build-tools"
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let settings = tiny_settings();
    let paths = |name: &str| DemoPaths {
        out_dir: scratch.path().join(name),
        cache_root: scratch.path().join("cache"),
        tools_dir: tools_dir.clone(),
        plugin_dir: plugin_dir(),
    };
    // One job at a time here, two at a time below with the tool calls on a `sod serve` endpoint: the numbers must
    // depend on neither.
    let serial = DemoOptions {
        progress: false,
        jobs: 1,
        tool_endpoints: Vec::new(),
        tool_processes: 0,
        device: candle_core::Device::Cpu,
    };
    let server_sandbox = sod_sandbox::Sandbox::new(sod_sandbox::SandboxConfig {
        tools_dir: Some(tools_dir.clone()),
        seed: settings.seed,
        ..sod_sandbox::SandboxConfig::default()
    })
    .expect("server sandbox");
    server_sandbox
        .load_tools_dir(&tools_dir)
        .expect("load tools");
    let server = sod_serve::Server::start(
        server_sandbox,
        sod_serve::ServeConfig::default(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .expect("server starts");
    let parallel = DemoOptions {
        progress: false,
        jobs: 2,
        tool_endpoints: vec![format!("http://{}", server.addr())],
        tool_processes: 0,
        device: candle_core::Device::Cpu,
    };
    let first = run_demo(&settings, &paths("first"), serial, &|_| {}).expect("first demo run");
    write_report(&first, &paths("first").out_dir).expect("report");
    assert!(first.models.teachers.iter().all(|(_, m)| !m.cached) && !first.models.student.cached);
    for role in [
        DemoModel::Teacher(TeacherKind::Gold),
        DemoModel::Teacher(TeacherKind::Recovery),
        DemoModel::Student,
    ] {
        let model = scratch
            .path()
            .join("cache")
            .join(settings.model_cache_key(role))
            .join("model");
        assert!(
            model.join("config.json").is_file(),
            "{role:?} model in the cache"
        );
        assert!(
            model.join("tokenizer.json").is_file(),
            "{role:?} tokenizer in the cache"
        );
    }
    let (_, recovery) = &first.models.teachers[0];
    assert!(recovery.recovery_conversations > 0, "{recovery:?}");
    assert_eq!(
        recovery.conversations,
        settings.train_tasks + recovery.recovery_conversations
    );
    let out = &paths("first").out_dir;
    for file in [
        "report.md",
        "outcome.json",
        "reward.png",
        "accuracy.png",
        "accuracy_bars.png",
        "kl.png",
        "recovery-opd-sampled-seed5/metrics.jsonl",
        "recovery-sod-full-seed5/metrics.jsonl",
        "gold-opd-full-seed5/metrics.jsonl",
        "grpo-seed5/metrics.jsonl",
        "gold-null-control-seed5/run.json",
        "eval/student-recovery-sod-full-seed5.jsonl",
        "eval/teacher-gold.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file} is written");
    }
    // The run configs written into the run directory work from anywhere: `sod train --config` resolves
    // relative paths against the config's directory.
    let run_toml =
        std::fs::read_to_string(out.join("recovery-opd-full-seed5/run.toml")).expect("run.toml");
    let run: toml::Value = toml::from_str(&run_toml).expect("run.toml parses");
    for key in ["student", "teacher", "dataset", "out_dir"] {
        let path = run[key].as_str().expect(key);
        assert!(Path::new(path).is_absolute(), "{key} = {path}");
    }
    let png = std::fs::read(out.join("kl.png")).expect("kl.png");
    assert_eq!(&png[..4], b"\x89PNG");

    let text = table(&first);
    for row in [
        "teacher (recovery)",
        "teacher (gold)",
        "student (cold start)",
        "student + OPD (sampled-token), recovery teacher",
        "student + SOD (sampled-token), gold-only teacher",
        "student + OPD (full KL), recovery teacher",
        "student + SOD (full KL), recovery teacher",
        "student + GRPO alone",
        "student + OPD (full KL, null signal), gold-only teacher",
    ] {
        assert!(text.contains(row), "table row {row}:\n{text}");
    }
    let arms: Vec<Arm> = first.runs.iter().map(|r| r.spec.arm).collect();
    assert_eq!(arms.len(), 10);
    assert_eq!(arms[8..], [Arm::Grpo, Arm::NullControl]);
    let mut evaluations: Vec<_> = first.teachers.iter().map(|t| t.evaluation).collect();
    evaluations.push(first.student_before);
    evaluations.extend(first.runs.iter().map(|r| r.after));
    for e in evaluations {
        assert_eq!(e.problems, settings.test_tasks);
        for fraction in [e.accuracy, e.valid_tool_call_fraction, e.truncated_fraction] {
            assert!((0.0..=1.0).contains(&fraction), "{e:?}");
        }
        assert!(e.mean_steps >= 1.0 && e.mean_steps <= 5.0, "{e:?}");
    }
    assert_eq!(first.student_before_correct.len(), settings.test_tasks);
    assert_eq!(first.student_sampled.samples, settings.test_tasks);
    let finished: f64 = first.student_sampled.finish.values().sum();
    assert!((finished - 1.0).abs() < 1e-9, "{:?}", first.student_sampled);
    for t in &first.teachers {
        let o = t.take_over;
        assert!(
            o.off_track_solved <= o.off_track && o.on_track_solved <= o.on_track,
            "{o:?}"
        );
    }
    for run in &first.runs {
        let arm = run.spec.arm;
        assert_eq!(run.correct.len(), settings.test_tasks);
        assert_eq!(run.steps.len() as u64, settings.rl.steps);
        // The full-distribution arms report their divergence; the sampled-token ones do not compute it.
        assert_eq!(
            run.steps.iter().all(|s| s.divergence.is_some()),
            arm.full(),
            "{arm:?}"
        );
        assert_eq!(
            run.steps.iter().all(|s| s.kl_teacher.is_some()),
            arm.uses_teacher(),
            "{arm:?}"
        );
    }
    for run in first.runs.iter().filter(|r| r.spec.arm.step_weighted()) {
        let plugin = &run.steps[0].plugin;
        assert!(
            plugin.contains_key("mean_last_w") && plugin.contains_key("w_p50"),
            "SOD reports its step weights: {plugin:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(report.contains("SOD") && report.contains("OPD") && report.contains("![Mean reward"));
    assert!(report.contains("off-track"), "{report}");

    // Same settings again: the models come from the cache and every measured number is the same.
    let second =
        run_demo(&settings, &paths("second"), parallel.clone(), &|_| {}).expect("second demo run");
    assert!(second.models.teachers.iter().all(|(_, m)| m.cached) && second.models.student.cached);
    assert_eq!(reproducible(&first), reproducible(&second));
    // A finished run directory is never overwritten.
    assert!(run_demo(&settings, &paths("first"), parallel.clone(), &|_| {}).is_err());
    // An interrupted one continues: without its report and one run's record, only that run is redone, and the
    // outcome is the same.
    let second_dir = paths("second").out_dir;
    std::fs::remove_file(second_dir.join("report.md")).ok();
    std::fs::remove_file(second_dir.join("recovery-sod-full-seed5/run.json")).expect("run.json");
    let resumed =
        run_demo(&settings, &paths("second"), parallel.clone(), &|_| {}).expect("resumed run");
    assert_eq!(reproducible(&resumed), reproducible(&first));
    // ... but not with other settings.
    let mut other = settings;
    other.rl.delta = 0.3;
    assert!(run_demo(&other, &paths("second"), parallel.clone(), &|_| {}).is_err());

    // A different student cold start rebuilds the student only. This one may train 3 steps but stops at its first
    // check (step 2), whose criterion any model meets.
    let mut longer = settings;
    longer.student_sft.steps = 3;
    longer.cold_start_stop = Some(ColdStartStop {
        accuracy: 0.0,
        from: 2,
        every: 5,
        problems: 2,
    });
    longer.grid = false;
    let third =
        run_demo(&longer, &paths("third"), parallel.clone(), &|_| {}).expect("third demo run");
    assert!(third.models.teachers.iter().all(|(_, m)| m.cached) && !third.models.student.cached);
    // The main rows: the gold-only teacher, measured as in the grid.
    assert_eq!(third.teachers.len(), 1);
    assert_eq!(third.teachers[0].kind, TeacherKind::Gold);
    assert_eq!(
        Some(&third.teachers[0]),
        first.teachers.iter().find(|t| t.kind == TeacherKind::Gold)
    );
    assert_eq!(third.runs.len(), 4);
    assert_eq!(third.models.student.sft_last.map(|m| m.step), Some(2));
    assert_eq!(third.models.student.checks.len(), 1);
    assert_eq!(third.models.student.checks[0].0, 2);
}
