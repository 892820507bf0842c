//! Peak memory of one full-distribution distillation step at Qwen3's vocabulary (151,936 tokens):
//! `cargo bench -p sod-train --bench distill_memory --profile dev [-- LAYERS GENERATED]`.
//!
//! A student and a teacher with Qwen3-0.6B's shapes (hidden 1024, 16 query / 8 key-value heads of 128, MLP 3072,
//! tied 151,936 x 1024 embeddings) but `LAYERS` decoder layers (default 2: the head, where the vocabulary costs
//! memory, is the same as the real model's; the trunk's activations grow with the layers either way), and a batch
//! of two trajectories of 64 prompt + `GENERATED` (default 512) generated tokens. Each measurement runs in its own
//! process (this binary re-executes itself) and reports its peak resident set (`VmHWM`) before and after one
//! `score` + `policy_gradients` with the full reverse KL: once with the trainer's chunking
//! (`divergence::CHUNK_ELEMENTS` logits at a time), once with every generated row in one chunk, as an
//! implementation without chunking would hold them.

use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use sod_loss_abi::{DivergenceKind, DivergenceSpec};
use sod_model::{Qwen3Config, TrainableModel};
use sod_train::divergence::CHUNK_ELEMENTS;
use sod_train::metrics::peak_rss_mib;
use sod_train::rollout::Trajectory;
use sod_train::teacher::score;
use sod_train::update::{DivergenceTerm, Params, PpoClip, UpdateBatch, policy_gradients};

const VOCAB: usize = 151_936;

fn qwen3_shaped(layers: usize) -> Qwen3Config {
    let mut config = Qwen3Config::tiny(VOCAB, 1024, layers);
    config.intermediate_size = 3072;
    config.num_attention_heads = 16;
    config.num_key_value_heads = 8;
    config.head_dim = Some(128);
    config.tie_word_embeddings = true;
    config
}

fn trajectory(index: u64, generated: usize) -> Trajectory {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut token = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % VOCAB as u64) as u32
    };
    let prompt = 64;
    let tokens: Vec<u32> = (0..prompt + generated).map(|_| token()).collect();
    Trajectory {
        behaviour_logprobs: vec![-12.0; generated],
        ..Trajectory::offline(format!("p{index}"), tokens, prompt, vec![1; generated])
    }
}

fn measure(chunked: bool, layers: usize, generated: usize) {
    let device = Device::Cpu;
    let config = qwen3_shaped(layers);
    let student = TrainableModel::init_random(&config, 1, &device).expect("student");
    let teacher = TrainableModel::init_random(&config, 2, &device).expect("teacher");
    let teacher = sod_train::teacher::Teacher::from_model(teacher.model.detached());
    let params = Params::from_varmap(&student.varmap).expect("params");
    let trajs: Vec<Trajectory> = (0..2).map(|i| trajectory(i, generated)).collect();
    let spec = DivergenceSpec {
        kind: DivergenceKind::ReverseKl,
        top_k: 0,
    };
    let before = peak_rss_mib();
    let started = Instant::now();
    let scores = score(
        &student.model,
        Some(&teacher),
        &trajs,
        2,
        1.0,
        Some((&spec, 1.0)),
        None,
    )
    .expect("score");
    let weights: Vec<Vec<f32>> = trajs.iter().map(|t| vec![1.0; t.mask.len()]).collect();
    let advantages: Vec<Vec<f32>> = trajs.iter().map(|t| vec![0.0; t.mask.len()]).collect();
    let rows = 2 * generated;
    let episodes = sod_train::episode::Episode::with_behaviour_logprobs(&trajs);
    let batch = UpdateBatch {
        divergence: Some(DivergenceTerm {
            spec,
            weights: &weights,
            teacher: teacher.model(),
            teacher_rows: scores.teacher_rows.as_ref().expect("teacher rows"),
            temperature: 1.0,
        }),
        chunk_elements: if chunked {
            CHUNK_ELEMENTS
        } else {
            rows * VOCAB
        },
        ..UpdateBatch::ppo(
            &episodes,
            &advantages,
            PpoClip {
                low: 0.2,
                high: 0.28,
            },
            2,
        )
    };
    let (_, stats) = policy_gradients(&student.model, &params, &batch).expect("gradients");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "chunked": chunked,
            "layers": layers,
            "generated_rows": rows,
            "chunk_rows": if chunked { CHUNK_ELEMENTS / VOCAB } else { rows },
            "peak_rss_mib_before_step": before,
            "peak_rss_mib_after_step": peak_rss_mib(),
            "seconds": seconds,
            "divergence_term": stats.divergence_term,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(mode) = args.first().filter(|a| a.starts_with("--measure=")) {
        let layers = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
        let generated = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(512);
        measure(mode == "--measure=chunked", layers, generated);
        return;
    }
    let layers: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let generated: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let exe = std::env::current_exe().expect("this executable");
    println!(
        "full reverse KL, vocab {VOCAB}, Qwen3-0.6B shapes with {layers} layers, 2 x {generated} generated tokens"
    );
    println!(
        "{:<10} {:>12} {:>16} {:>16} {:>9}",
        "logits", "chunk rows", "RSS before MiB", "peak MiB", "seconds"
    );
    for mode in ["chunked", "unchunked"] {
        let out = Command::new(&exe)
            .args([
                format!("--measure={mode}"),
                layers.to_string(),
                generated.to_string(),
            ])
            .output()
            .expect("child run");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().last() else {
            println!(
                "{mode}: no result ({})",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        println!(
            "{:<10} {:>12} {:>16.0} {:>16.0} {:>9.1}",
            mode,
            v["chunk_rows"],
            v["peak_rss_mib_before_step"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mib_after_step"].as_f64().unwrap_or(f64::NAN),
            v["seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
