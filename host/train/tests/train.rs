//! End-to-end runs of the trainer on a tiny model with the real calculator tool and loss plugins.

mod support;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sod_train::checkpoint::{STATE_JSON, checkpoint_dir};
use sod_train::{METRICS_FILE, Trainer};
use support::{Fixture, metrics_without_timing, options};

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights")
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn sod_run_with_teacher_trains_logs_and_checkpoints() {
    let fx = Fixture::new();
    let config = fx.config("run", &[]);
    let mut trainer = Trainer::new(config.clone(), options(false)).expect("trainer");
    let summary = trainer.run().expect("run");
    assert_eq!(summary.step, 3);

    let lines = std::fs::read_to_string(config.out_dir.join(METRICS_FILE)).unwrap();
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["step"], i as u64 + 1);
        assert_eq!(row["trajectories"], 4);
        assert!(
            row["kl_teacher"]
                .as_f64()
                .expect("kl with a teacher")
                .is_finite()
        );
        assert!(row["grad_norm"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["generated_tokens"].as_u64().unwrap() > 0);
        assert!(
            !row["plugin"].as_object().unwrap().is_empty(),
            "the sod plugin reports metrics: {row}"
        );
        assert!(row["timing"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    // Warm-up of one step: the first step runs at the peak already (lr * 1/1).
    assert_eq!(rows[0]["lr"], 1e-3);

    // Checkpoints at step 2 (every 2) and 3 (the end), complete and loadable; the weights moved.
    for step in [2, 3] {
        let dir = checkpoint_dir(&config.out_dir, step);
        assert!(dir.join(STATE_JSON).is_file(), "{}", dir.display());
        assert!(dir.join("tokenizer.json").is_file());
        sod_model::load_model_dir(&dir, &Device::Cpu).expect("checkpoint loads");
    }
    let before = weights(&fx.path().join("student"));
    let after = weights(&checkpoint_dir(&config.out_dir, 3));
    let moved = before.iter().any(|(name, t)| flat(t) != flat(&after[name]));
    assert!(moved, "training changed no weight");

    // A second fresh run into the same directory is refused rather than mixed with the first.
    let err = Trainer::new(config, options(false))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let fx = Fixture::new();
    // The sampled-token SOD of the fixture, and the full-distribution one at temperature 0.7 with the null-signal
    // control (its permutation is a function of the step, so a resumed run replays it).
    let variants: [(&str, &[&str]); 2] = [
        ("sampled", &[]),
        (
            "full",
            &[
                "loss.settings.signal=full",
                "null_signal=true",
                "temperature=0.7",
            ],
        ),
    ];
    for (name, extra) in variants {
        let with = |out: &str, steps: &str| {
            let mut overrides = vec![steps];
            overrides.extend_from_slice(extra);
            fx.config(&format!("{name}-{out}"), &overrides)
        };
        // Uninterrupted: 4 steps.
        let whole = with("whole", "steps=4");
        Trainer::new(whole.clone(), options(false))
            .unwrap()
            .run()
            .unwrap();
        // Interrupted after 2 steps, then resumed to 4.
        let first = with("split", "steps=2");
        Trainer::new(first.clone(), options(false))
            .unwrap()
            .run()
            .unwrap();
        let resumed_config = with("split", "steps=4");
        let mut resumed = Trainer::new(resumed_config.clone(), options(true)).unwrap();
        assert_eq!(resumed.step(), 2);
        resumed.run().unwrap();

        let a = metrics_without_timing(&whole.out_dir.join(METRICS_FILE));
        let b = metrics_without_timing(&resumed_config.out_dir.join(METRICS_FILE));
        assert_eq!(a.len(), 4);
        assert_eq!(a, b, "{name}");
        let (wa, wb) = (
            weights(&checkpoint_dir(&whole.out_dir, 4)),
            weights(&checkpoint_dir(&resumed_config.out_dir, 4)),
        );
        assert_eq!(wa.len(), wb.len());
        for (key, t) in &wa {
            assert_eq!(
                flat(t),
                flat(&wb[key]),
                "{name}: {key} differs after resume"
            );
        }
        // Optimizer moments too.
        let state = |dir: &Path| {
            candle_core::safetensors::load(dir.join("trainer_state.safetensors"), &Device::Cpu)
                .unwrap()
        };
        let (sa, sb) = (
            state(&checkpoint_dir(&whole.out_dir, 4)),
            state(&checkpoint_dir(&resumed_config.out_dir, 4)),
        );
        for (key, t) in &sa {
            assert_eq!(
                flat(t),
                flat(&sb[key]),
                "{name}: {key} differs after resume"
            );
        }
    }
}

#[test]
fn mismatched_runs_are_refused_with_the_plugins_reason() {
    let fx = Fixture::new();
    let no_teacher = fx.config("a", &[]);
    let no_teacher = sod_train::RunConfig {
        teacher: None,
        ..no_teacher
    };
    let err = Trainer::new(no_teacher, options(false))
        .err()
        .expect("sod without teacher")
        .to_string();
    assert!(err.contains("teacher"), "{err}");

    let single = fx.config(
        "b",
        &["loss.name=grpo", "loss.settings={}", "samples_per_prompt=1"],
    );
    let err = Trainer::new(single, options(false))
        .err()
        .expect("grpo with groups of 1")
        .to_string();
    assert!(err.contains("at least 2 samples per prompt"), "{err}");

    let err = Trainer::new(fx.config("c", &[]), options(true))
        .err()
        .expect("nothing to resume")
        .to_string();
    assert!(err.contains("no complete checkpoint"), "{err}");

    // A teacher with another tokenizer cannot be paired with the student.
    let other = fx.path().join("other");
    sod_model::write_tiny_model_dir(
        &other,
        &support::tiny_config(),
        &["entirely different text 123"],
        3,
    )
    .unwrap();
    let mismatched = sod_train::RunConfig {
        teacher: Some(other),
        ..fx.config("d", &[])
    };
    let err = Trainer::new(mismatched, options(false))
        .err()
        .expect("other tokenizer")
        .to_string();
    assert!(err.contains("teacher and student do not match"), "{err}");
}
