//! Forward+backward throughput of the tiny config on CPU, and batched sampling throughput.
//!
//! `cargo bench -p sod-model --bench forward_backward` (optionally `-- <batch> <seq_len> <steps>`).

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use sod_model::{Qwen3Config, Sampler, SamplingParams, init_random};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(8);
    let seq = args.get(1).copied().unwrap_or(128);
    let steps = args.get(2).copied().unwrap_or(10);
    let config = Qwen3Config::tiny(400, 64, 2);
    let device = Device::Cpu;
    let m = init_random(&config, 0, &device)?;
    println!(
        "config: hidden {}, layers {}, heads {}/{}, vocab {}, {} parameters; batch {batch} x seq {seq}",
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.vocab_size,
        config.num_parameters()
    );
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| ((i * 7919) % config.vocab_size) as u32)
        .collect();
    let input = Tensor::from_vec(ids, (batch, seq), &device)?;
    let step = || -> Result<(f64, f64), Box<dyn std::error::Error>> {
        let start = Instant::now();
        let lp = m.model.next_token_logprobs(&input, None)?;
        let loss = lp.mean_all()?.neg()?;
        loss.to_scalar::<f32>()?;
        let forward = start.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        // Touch one gradient so that nothing is optimised away.
        let embed = m.varmap.all_vars()[0].clone();
        let _ = grads.get(embed.as_tensor()).map(|g| g.sum_all());
        Ok((forward, start.elapsed().as_secs_f64() - forward))
    };
    step()?;
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for _ in 0..steps {
        let (f, b) = step()?;
        fwd += f;
        bwd += b;
    }
    let secs = fwd + bwd;
    println!(
        "forward+backward: {:.1} ms/step (forward {:.1}, backward {:.1}), {:.0} tokens/s",
        1e3 * secs / steps as f64,
        1e3 * fwd / steps as f64,
        1e3 * bwd / steps as f64,
        (batch * seq * steps) as f64 / secs
    );

    let forward_only = m.model.detached();
    let start = Instant::now();
    for _ in 0..steps {
        let logits = forward_only.forward(&input, None)?;
        let _ = logits.max(D::Minus1)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "forward only (no graph): {:.0} tokens/s",
        (batch * seq * steps) as f64 / secs
    );

    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..16).map(|i| ((b * 31 + i * 17) % 400) as u32).collect())
        .collect();
    let mut samplers: Vec<Sampler> = (0..batch)
        .map(|b| Sampler::new(SamplingParams::default(), 0, "bench", b as u64))
        .collect::<Result<_, _>>()?;
    let new_tokens = 64;
    let start = Instant::now();
    let out = m
        .model
        .generate_batch(&prompts, new_tokens, &[], &mut samplers)?;
    let secs = start.elapsed().as_secs_f64();
    let generated: usize = out.iter().map(|g| g.tokens.len()).sum();
    println!(
        "generate_batch: {:.0} new tokens/s ({batch} sequences x {new_tokens})",
        generated as f64 / secs
    );
    Ok(())
}
