//! The built plugins through the loader: cross-plugin properties, batch order, the batch-file
//! debugging aid, and the C example against the Rust opd plugin.

mod common;

use std::path::Path;

use common::{compile_c, plugin_dir, settings, small_batch};
use sod_loss::{Batch, LossPlugin, run_batch_file};
use sod_loss_abi::testing::{SplitMix64, random_batch};

fn load(name: &str) -> LossPlugin {
    LossPlugin::load(name, &plugin_dir()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn one_step_sequences_make_sod_equal_opd() {
    let sod = load("sod");
    let opd = load("opd");
    let mut rng = SplitMix64::new(404);
    for _ in 0..200 {
        let mut one_step = random_batch(&mut rng, true);
        one_step.mask = normalise_to_one_step(&one_step);
        let c = format!("{}", rng.uniform(0.1, 2.0));
        let config = settings(&[("c", &c), ("delta", "0.5")]);
        let sod_out = sod.configure(&config).unwrap().compute(&one_step).unwrap();
        let opd_out = opd
            .configure(&settings(&[("c", &c)]))
            .unwrap()
            .compute(&one_step)
            .unwrap();
        assert_eq!(sod_out.advantages, opd_out.advantages);
    }
}

/// The mask with every generated token after a sequence's first step set to 0: one step each.
fn normalise_to_one_step(batch: &Batch) -> Vec<u8> {
    let mut mask = batch.mask.clone();
    for seq in 0..batch.num_sequences() {
        let range = batch.seq_offsets[seq] as usize..batch.seq_offsets[seq + 1] as usize;
        let mut seen_step = false;
        let mut closed = false;
        for m in &mut mask[range] {
            if *m == 1 && closed {
                *m = 0;
            } else if *m == 1 {
                seen_step = true;
            } else if seen_step {
                closed = true;
            }
        }
    }
    mask
}

#[test]
fn results_do_not_depend_on_batch_order_through_the_loader() {
    let mut rng = SplitMix64::new(77);
    for name in ["sod", "opd", "grpo", "sft"] {
        let plugin = load(name);
        for _ in 0..50 {
            let batch = random_batch(&mut rng, true);
            let order = rng.permutation(batch.num_sequences());
            let permuted = batch.permuted(&order);
            let mut loss = plugin.configure(&[]).unwrap();
            let original = loss.compute(&batch).unwrap();
            let moved = loss.compute(&permuted).unwrap();
            for (new, &old) in order.iter().enumerate() {
                let a = &original.advantages
                    [batch.seq_offsets[old] as usize..batch.seq_offsets[old + 1] as usize];
                let b = &moved.advantages
                    [permuted.seq_offsets[new] as usize..permuted.seq_offsets[new + 1] as usize];
                assert_eq!(a, b, "{name}: sequence {old} moved to {new}");
            }
            assert_eq!(original.metrics, moved.metrics, "{name}");
        }
    }
}

#[test]
fn grpo_with_groups_of_one_gives_zero_and_no_nan() {
    let grpo = load("grpo");
    let mut rng = SplitMix64::new(12);
    for _ in 0..50 {
        let mut batch = random_batch(&mut rng, false);
        batch.group = (0..batch.num_sequences() as u32).collect();
        let output = grpo.configure(&[]).unwrap().compute(&batch).unwrap();
        assert!(output.advantages.iter().all(|&a| a == 0.0));
        assert!(output.metrics.iter().all(|(_, v)| v.is_finite()));
    }
}

#[test]
fn the_sod_metrics_are_reported() {
    let output = load("sod")
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .unwrap();
    let names: Vec<&str> = output.metrics.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["mean_steps", "mean_d1", "mean_last_w", "reward_mean"] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    // Sequence 0 has two steps (mask 0 1 1 0 1), sequence 1 one: mean 1.5.
    assert!(output.metrics.contains(&("mean_steps".to_string(), 1.5)));
}

#[test]
fn batch_files_print_advantages_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.json");
    std::fs::write(
        &path,
        r#"{
            "old_logprob":     [null, -1.0, -2.0, null, -0.5, -1.0, -3.0],
            "teacher_logprob": [null, -0.5, -1.0, null, -1.5, -1.0, -2.0],
            "mask":            [0, 1, 1, 0, 1, 1, 1],
            "seq_offsets":     [0, 5, 7],
            "reward":          [1.0, 0.0],
            "group":           [0, 0]
        }"#,
    )
    .unwrap();
    let value = run_batch_file(
        "opd",
        &plugin_dir(),
        &path,
        &settings(&[("grpo_weight", "0"), ("c", "0.5")]),
    )
    .unwrap();
    let advantages: Vec<f64> = value["advantages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(advantages, vec![0.0, 0.25, 0.5, 0.0, -0.5, 0.0, 0.5]);
    assert_eq!(value["metrics"]["groups"], 1.0);
    assert_eq!(value.as_object().unwrap().len(), 2);

    // Shortest decimals: 0.1 prints as 0.1, not as the f32's exact binary value.
    std::fs::write(
        &path,
        r#"{"old_logprob": [-1.0], "teacher_logprob": [-0.9], "mask": [1], "seq_offsets": [0, 1], "reward": [0], "group": [0]}"#,
    )
    .unwrap();
    let value = run_batch_file("opd", &plugin_dir(), &path, &[]).unwrap();
    assert_eq!(
        serde_json::to_string(&value["advantages"]).unwrap(),
        "[0.100000024]"
    );

    std::fs::write(
        &path,
        r#"{"old_logprob": [null], "mask": [1], "seq_offsets": [0, 1], "reward": [0], "group": [0]}"#,
    )
    .unwrap();
    let error = run_batch_file("grpo", &plugin_dir(), &path, &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("old_logprob[0] is NaN at a generated token"),
        "{error}"
    );

    std::fs::write(&path, r#"{"old_logprob": [], "mask": [], "seq_offsets": [0], "reward": [], "group": [], "steps": []}"#)
        .unwrap();
    let error = run_batch_file("grpo", &plugin_dir(), &path, &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("batch.json: invalid batch JSON: unknown field `steps`"),
        "{error}"
    );

    let error =
        run_batch_file("grpo", &plugin_dir(), &dir.path().join("missing.json"), &[]).unwrap_err();
    assert!(
        error.to_string().contains("missing.json: cannot read"),
        "{error}"
    );

    assert_eq!(
        sod_loss::parse_setting("c=0.5").unwrap(),
        ("c".to_string(), "0.5".to_string())
    );
    assert_eq!(
        sod_loss::parse_setting("k==").unwrap(),
        ("k".to_string(), "=".to_string())
    );
    assert!(sod_loss::parse_setting("c").is_err());
    assert!(sod_loss::parse_setting("=1").is_err());
}

#[test]
fn the_c_example_matches_the_rust_opd_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/c-loss-plugin/opd.c");
    let c_path = compile_c(&source, dir.path(), "libsod_loss_c_opd.so", &[]);
    let c_plugin = LossPlugin::load(c_path.to_str().unwrap(), &plugin_dir()).unwrap();
    assert_eq!(c_plugin.name(), "c-opd");
    let rust_plugin = load("opd");

    let mut rng = SplitMix64::new(0x0bd);
    let mut compared = 0usize;
    for case in 0..300 {
        let teacher = case % 5 != 0;
        let mut batch = random_batch(&mut rng, teacher);
        batch
            .flags
            .iter_mut()
            .for_each(|f| *f &= sod_loss_abi::SOD_LOSS_FLAG_INFRA_FAULT);
        let c = if teacher {
            format!("{}", rng.uniform(-1.0, 2.0))
        } else {
            "0".to_string()
        };
        let grpo_weight = format!("{}", rng.uniform(0.0, 2.0));
        let normalize = if rng.range(0, 1) == 0 {
            "true"
        } else {
            "false"
        };
        // A third of the cases with a teacher use ABI v2's full-distribution signal.
        let full = teacher && case % 3 == 0;
        if full {
            batch.divergence = Some(
                (0..batch.num_tokens())
                    .map(|_| rng.uniform(0.0, 3.0) as f32)
                    .collect(),
            );
        }
        let signal = if full { "full" } else { "sampled" };
        let config = settings(&[
            ("c", &c),
            ("grpo_weight", &grpo_weight),
            ("normalize_std", normalize),
            ("signal", signal),
        ]);
        let from_c = c_plugin
            .configure(&config)
            .unwrap()
            .compute(&batch)
            .unwrap();
        let from_rust = rust_plugin
            .configure(&config)
            .unwrap()
            .compute(&batch)
            .unwrap();
        assert_eq!(
            from_c.advantages, from_rust.advantages,
            "case {case} with {config:?}"
        );
        assert_eq!(
            from_c.divergence_weights, from_rust.divergence_weights,
            "case {case} with {config:?}"
        );
        if full && c != "0" {
            assert!(from_c.divergence_weights.iter().any(|&w| w != 0.0));
        }
        assert_eq!(from_c.metrics.len(), from_rust.metrics.len());
        for ((name_c, value_c), (name_rust, value_rust)) in
            from_c.metrics.iter().zip(&from_rust.metrics)
        {
            assert_eq!(name_c, name_rust);
            assert!(
                (value_c - value_rust).abs() <= 1e-12 * (1.0 + value_rust.abs()),
                "{name_c}: {value_c} vs {value_rust}"
            );
        }
        compared += from_c.advantages.len();
    }
    assert!(compared > 1000, "compared only {compared} tokens");

    let error = c_plugin
        .configure(&settings(&[("delta", "0.2")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown setting 'delta' for loss 'c-opd'"),
        "{error}"
    );
    let error = c_plugin
        .configure(&settings(&[("c", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'c' = 'abc' is not a finite number"),
        "{error}"
    );
}

#[test]
fn a_version_1_plugin_keeps_loading_and_running() {
    // A plugin built against the version-1 header (its own copy of the v1 structs): the host hands it
    // version-2 structs, it reads and writes their version-1 prefix, and its divergence weights stay 0.
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1_plugin.c");
    let path = compile_c(&source, dir.path(), "libsod_loss_v1.so", &[]);
    let plugin = LossPlugin::load(path.to_str().unwrap(), &plugin_dir()).unwrap();
    assert_eq!(plugin.abi_version(), 1);
    let mut loss = plugin.configure(&[]).unwrap();
    let requirements = loss.requirements();
    assert!(requirements.needs_teacher);
    assert_eq!(requirements.divergence, None);
    let mut rng = SplitMix64::new(7);
    for _ in 0..20 {
        let mut batch = random_batch(&mut rng, true);
        batch.flags.iter_mut().for_each(|f| *f = 0);
        let out = loss.compute(&batch).unwrap();
        let teacher = batch.teacher_logprob.as_ref().unwrap();
        for (t, &advantage) in out.advantages.iter().enumerate() {
            let expected = if batch.mask[t] == 1 {
                teacher[t] - batch.old_logprob[t]
            } else {
                0.0
            };
            assert_eq!(advantage, expected);
        }
        assert!(out.divergence_weights.iter().all(|&w| w == 0.0));
        assert_eq!(
            out.metrics,
            vec![(
                "tokens".to_string(),
                batch.mask.iter().map(|&m| f64::from(m)).sum()
            )]
        );
    }
}
