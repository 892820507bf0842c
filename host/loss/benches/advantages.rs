//! Times SOD advantages for a batch of 64 sequences of 20k tokens with 16 steps each, and prints
//! a markdown table. Run with `cargo bench -p sod-loss --bench advantages`.
//!
//! The plugin is loaded as a shared library through the loader when cargo built one next to the
//! benchmark (it does: the plugins are dev-dependencies); otherwise the statically linked table
//! of the `sod` crate is used through the same loader API.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sod_loss::{Batch, LossPlugin};
use sod_loss_abi::testing::synthetic_batch;
use sod_loss_distill::{DistillConfig, Signal, StepWeighting, distill_advantages};

const SEQUENCES: usize = 64;
const TOKENS_PER_SEQUENCE: usize = 20_000;
const STEPS: usize = 16;
const WARMUP: usize = 2;
const RUNS: usize = 20;

fn load_sod() -> (LossPlugin, &'static str) {
    let dir = sod_loss::default_plugin_dir().expect("benchmark executable directory");
    for candidate in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
        if let Ok(plugin) = LossPlugin::load("sod", candidate) {
            return (plugin, "shared library via the loader");
        }
    }
    let plugin = LossPlugin::from_static(&sod_loss_sod::SOD_LOSS_PLUGIN_TABLE, "static:sod")
        .expect("the statically linked sod table is valid");
    (plugin, "statically linked table via the loader")
}

/// Runs `f` WARMUP + RUNS times and returns the timings of the last RUNS, sorted.
fn time(mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        f();
    }
    let mut timings: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    timings.sort();
    timings
}

fn row(what: &str, timings: &[Duration], tokens: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = timings[timings.len() / 2];
    let mean = timings.iter().sum::<Duration>() / timings.len() as u32;
    println!(
        "| {what} | {:.2} | {:.2} | {:.2} | {:.0} |",
        ms(timings[0]),
        ms(median),
        ms(mean),
        tokens as f64 / median.as_secs_f64() / 1e6
    );
}

fn main() {
    let batch: Batch = synthetic_batch(SEQUENCES, TOKENS_PER_SEQUENCE, STEPS, 42);
    let tokens = batch.num_tokens();
    let (plugin, how) = load_sod();
    let mut loss = plugin.configure(&[]).expect("default sod settings");

    // Sanity: every sequence has the requested number of steps.
    let output = loss
        .compute(&batch)
        .expect("sod computes the benchmark batch");
    let mean_steps = output
        .metrics
        .iter()
        .find(|(n, _)| n == "mean_steps")
        .map(|(_, v)| *v);
    assert_eq!(mean_steps, Some(STEPS as f64), "benchmark batch layout");

    println!(
        "SOD advantages: {SEQUENCES} sequences x {TOKENS_PER_SEQUENCE} tokens x {STEPS} steps = {tokens} tokens; plugin: {how} ({}); {RUNS} runs after {WARMUP} warm-up\n",
        plugin.origin()
    );
    println!("| what | min ms | median ms | mean ms | M tokens/s (median) |");
    println!("|---|---:|---:|---:|---:|");
    row(
        "end to end: validate batch, derive steps, plugin call, check output",
        &time(|| {
            black_box(loss.compute(black_box(&batch)).expect("compute"));
        }),
        tokens,
    );
    row(
        "host side only: validate batch and derive steps",
        &time(|| {
            batch
                .with_view(|view| black_box(view.num_tokens()))
                .expect("valid batch");
        }),
        tokens,
    );
    let config = DistillConfig {
        c: 1.0,
        grpo_weight: 1.0,
        grpo: Default::default(),
        step_weighting: Some(StepWeighting::default()),
        signal: Signal::Sampled,
    };
    let steps = sod_loss_abi::math::derive_step_indices(&batch.mask, &batch.seq_offsets);
    let mut with_steps = batch.clone();
    with_steps.step_index = Some(steps);
    let mut advantages = vec![0.0f32; tokens];
    with_steps
        .with_view(|view| {
            row(
                "SOD math only (steps given, no validation)",
                &time(|| {
                    black_box(distill_advantages(&view, &config, &mut advantages, &mut []));
                }),
                tokens,
            );
        })
        .expect("valid batch");
}
