//! Sampler and batched generation tests.

use candle_core::{D, Device, Tensor};
use sod_model::{
    FinishReason, ModelError, Qwen3Config, Sampler, SamplingParams, SequenceKv, TrainableModel,
    init_random,
};

fn model(seed: u64) -> TrainableModel {
    let m = init_random(&Qwen3Config::tiny(300, 64, 2), seed, &Device::Cpu).unwrap();
    // Sharper distributions than the 0.02-std initialisation gives, so that sampling is not near-uniform.
    for var in m.varmap.all_vars() {
        if var.dims().len() == 2 {
            var.set(&(var.as_tensor() * 6.0).unwrap()).unwrap();
        }
    }
    m
}

fn params(temperature: f64, top_p: f64) -> SamplingParams {
    SamplingParams { temperature, top_p }
}

#[test]
fn sampler_is_seeded_per_trajectory() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let draw = |seed, prompt: &str, index| {
        let mut s = Sampler::new(params(1.0, 1.0), seed, prompt, index).unwrap();
        (0..40)
            .map(|_| s.sample(&logits).unwrap().token)
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(1, "p", 0), draw(1, "p", 0));
    assert_ne!(draw(1, "p", 0), draw(1, "p", 1));
    assert_ne!(draw(1, "p", 0), draw(1, "q", 0));
    assert_ne!(draw(1, "p", 0), draw(2, "p", 0));
}

#[test]
fn sampler_logprobs_and_truncation() {
    let logits = [2.0f32, 1.0, 0.5, -1.0, -3.0];
    let log_z = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    // Greedy.
    let mut greedy = Sampler::new(params(0.0, 1.0), 0, "g", 0).unwrap();
    let s = greedy.sample(&logits).unwrap();
    assert_eq!(s.token, 0);
    assert!((s.logprob as f64 - (2.0 - log_z)).abs() < 1e-6);
    assert_eq!(s.sampling_logprob, 0.0);
    // top_p small enough keeps only the best token.
    let mut top = Sampler::new(params(1.0, 0.3), 0, "t", 0).unwrap();
    for _ in 0..20 {
        let s = top.sample(&logits).unwrap();
        assert_eq!(s.token, 0);
        assert!(s.sampling_logprob.abs() < 1e-6);
    }
    // top_p = 0.8 keeps tokens 0 and 1 (p0 ≈ 0.61, p0 + p1 ≈ 0.83), renormalised.
    let mut nucleus = Sampler::new(params(1.0, 0.8), 0, "n", 0).unwrap();
    let mut seen = [0usize; 5];
    for _ in 0..400 {
        let s = nucleus.sample(&logits).unwrap();
        seen[s.token as usize] += 1;
        let p = (logits[s.token as usize] as f64).exp() / (2f64.exp() + 1f64.exp());
        assert!((s.sampling_logprob as f64 - p.ln()).abs() < 1e-5);
        assert!((s.logprob as f64 - (logits[s.token as usize] as f64 - log_z)).abs() < 1e-5);
    }
    assert!(
        seen[0] > 0 && seen[1] > 0 && seen[2..].iter().all(|&n| n == 0),
        "{seen:?}"
    );
    // Temperature sharpens: at 0.05 the best token dominates.
    let mut cold = Sampler::new(params(0.05, 1.0), 0, "c", 0).unwrap();
    assert!((0..50).all(|_| cold.sample(&logits).unwrap().token == 0));
    // Bad parameters and logits are errors.
    assert!(matches!(
        Sampler::new(params(-1.0, 1.0), 0, "", 0),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        Sampler::new(params(1.0, 0.0), 0, "", 0),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(
        greedy.sample(&[0.0, f32::NAN]),
        Err(ModelError::Input(_))
    ));
    assert!(matches!(greedy.sample(&[]), Err(ModelError::Input(_))));
}

#[test]
fn behaviour_logprobs_are_taken_at_the_sampling_temperature() {
    // At T = 0.7 the token is drawn from softmax(z / 0.7): its behaviour log-prob must be that distribution's,
    // or the PPO ratio and the distillation signal are off by the temperature.
    let logits = [2.0f32, 1.0, 0.5, -1.0, -3.0];
    let t = 0.7f64;
    let log_z_t = logits
        .iter()
        .map(|&x| (x as f64 / t).exp())
        .sum::<f64>()
        .ln();
    let mut warm = Sampler::new(params(t, 1.0), 3, "w", 0).unwrap();
    for _ in 0..50 {
        let s = warm.sample(&logits).unwrap();
        let expected = logits[s.token as usize] as f64 / t - log_z_t;
        assert!(
            (s.logprob as f64 - expected).abs() < 1e-5,
            "token {}: {} vs {expected}",
            s.token,
            s.logprob
        );
        // Without top-p the tempered log-prob is the sampling log-prob.
        assert!((s.logprob - s.sampling_logprob).abs() < 1e-5);
    }
}

fn samplers(ids: &[(&str, u64)], temperature: f64) -> Vec<Sampler> {
    ids.iter()
        .map(|(p, i)| Sampler::new(params(temperature, 0.95), 11, p, *i).unwrap())
        .collect()
}

/// Four prompts of different lengths, their sampler keys (two samples of prompt "a") and three stop tokens.
fn batch() -> (Vec<Vec<u32>>, [(&'static str, u64); 4], [u32; 3]) {
    (
        vec![
            vec![5, 6, 7, 8, 9, 10, 11],
            vec![42],
            vec![100, 200, 17],
            vec![1, 2, 3, 4],
        ],
        [("a", 0), ("b", 0), ("c", 0), ("a", 1)],
        [13, 14, 15],
    )
}

#[test]
fn batched_generation_matches_generating_alone() {
    let m = model(3);
    let (prompts, keys, stop) = batch();
    let batched = m
        .model
        .generate_batch(&prompts, 12, &stop, &mut samplers(&keys, 1.0))
        .unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = m
            .model
            .generate_batch(
                std::slice::from_ref(prompt),
                12,
                &stop,
                &mut samplers(&keys[i..=i], 1.0),
            )
            .unwrap()
            .remove(0);
        assert_eq!(batched[i].tokens, alone.tokens, "sequence {i}");
        assert_eq!(batched[i].finish, alone.finish);
        for (a, b) in batched[i].logprobs.iter().zip(&alone.logprobs) {
            assert!((a - b).abs() < 1e-4, "sequence {i}: {a} vs {b}");
        }
    }
    // Reordering the batch changes nothing either.
    let order = [2usize, 0, 3, 1];
    let reordered_prompts: Vec<_> = order.iter().map(|&i| prompts[i].clone()).collect();
    let reordered_keys: Vec<_> = order.iter().map(|&i| keys[i]).collect();
    let reordered = m
        .model
        .generate_batch(
            &reordered_prompts,
            12,
            &stop,
            &mut samplers(&reordered_keys, 1.0),
        )
        .unwrap();
    for (k, &i) in order.iter().enumerate() {
        assert_eq!(reordered[k].tokens, batched[i].tokens);
    }
    // Same batch, same seeds: identical, bit for bit.
    let again = m
        .model
        .generate_batch(&prompts, 12, &stop, &mut samplers(&keys, 1.0))
        .unwrap();
    assert_eq!(again, batched);
    // Different sample indices give different trajectories.
    let other = m
        .model
        .generate_batch(
            &prompts,
            12,
            &stop,
            &mut samplers(&[("a", 5), ("b", 5), ("c", 5), ("a", 6)], 1.0),
        )
        .unwrap();
    assert_ne!(
        other.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        batched.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
}

#[test]
fn generation_logprobs_match_the_model_and_stop_tokens_end_sequences() {
    let m = model(4);
    let prompt = vec![7u32, 8, 9];
    let g = m
        .model
        .generate_batch(
            std::slice::from_ref(&prompt),
            10,
            &[],
            &mut samplers(&[("x", 0)], 1.0),
        )
        .unwrap()
        .remove(0);
    assert_eq!(g.tokens.len(), 10);
    assert_eq!(g.finish, FinishReason::Length);
    // Behaviour log-probs equal teacher-forced log-probs of the full sequence.
    let full: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
    let input = Tensor::new(full.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let lp = m
        .model
        .detached()
        .next_token_logprobs(&input, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (k, &l) in g.logprobs.iter().enumerate() {
        assert!(
            (l - lp[prompt.len() - 1 + k]).abs() < 1e-4,
            "token {k}: {l} vs {}",
            lp[prompt.len() - 1 + k]
        );
    }
    // Greedy generation picks the arg-max at every step.
    let greedy = m
        .model
        .generate_batch(
            std::slice::from_ref(&prompt),
            6,
            &[],
            &mut samplers(&[("x", 0)], 0.0),
        )
        .unwrap()
        .remove(0);
    let full: Vec<u32> = prompt.iter().chain(&greedy.tokens).copied().collect();
    let input = Tensor::new(full.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let argmax = m
        .model
        .forward(&input, None)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(
        &argmax[prompt.len() - 1..full.len() - 1],
        greedy.tokens.as_slice()
    );
    // Stopping at the first greedy token's id ends right there, with the stop token included.
    let stop = greedy.tokens[2];
    let first = greedy.tokens.iter().position(|&t| t == stop).unwrap();
    let stopped = m
        .model
        .generate_batch(
            &[prompt.clone(), vec![1, 2]],
            6,
            &[stop],
            &mut samplers(&[("x", 0), ("y", 0)], 0.0),
        )
        .unwrap();
    assert_eq!(stopped[0].tokens, &greedy.tokens[..=first]);
    assert_eq!(stopped[0].finish, FinishReason::Stop);
    // The other sequence went on after the first one left the batch, exactly as if it were alone.
    let other_alone = m
        .model
        .generate_batch(&[vec![1, 2]], 6, &[stop], &mut samplers(&[("y", 0)], 0.0))
        .unwrap()
        .remove(0);
    assert_eq!(stopped[1].tokens, other_alone.tokens);
    assert!(
        stopped[1].tokens.len() > stopped[0].tokens.len(),
        "the batch never shrank: {stopped:?}"
    );
    // Errors instead of panics.
    assert!(
        m.model
            .generate_batch(&[vec![]], 3, &[], &mut samplers(&[("x", 0)], 1.0))
            .is_err()
    );
    assert!(m.model.generate_batch(&[vec![1]], 3, &[], &mut []).is_err());
    assert!(
        m.model
            .generate_batch(&[vec![1, 999]], 3, &[], &mut samplers(&[("x", 0)], 1.0))
            .is_err()
    );
    assert!(
        m.model
            .generate_batch(&[vec![1]], 5000, &[], &mut samplers(&[("x", 0)], 1.0))
            .is_err()
    );
}

/// A second turn that continues from the states the first left (what a multi-turn rollout does) generates
/// what generating it from the whole conversation does: the same tokens, log-probs equal up to rounding, and
/// states that cover exactly what the model was fed. A prompt that does not continue its state, and rows
/// without a state, are generated from scratch.
#[test]
fn continuing_from_kept_states_matches_generating_from_scratch() {
    let m = model(3);
    let (prompts, keys, stop) = batch();
    let mut states: Vec<SequenceKv> = prompts.iter().map(|_| SequenceKv::default()).collect();
    let mut kept = samplers(&keys, 1.0);
    let first = m
        .model
        .generate_batch_with(&prompts, &mut states, 6, &stop, &mut kept)
        .unwrap();
    for (i, (p, g)) in prompts.iter().zip(&first).enumerate() {
        let fed: Vec<u32> = p
            .iter()
            .chain(&g.tokens[..g.tokens.len() - 1])
            .copied()
            .collect();
        assert_eq!(states[i].tokens(), &fed[..], "sequence {i}");
    }
    // Turn two: the first turn, a "tool response" of different lengths per row, and row 2 rewritten (its
    // state no longer applies).
    let second: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&first)
        .enumerate()
        .map(|(i, (p, g))| {
            let mut next = if i == 2 { vec![99, 98] } else { p.clone() };
            next.extend(&g.tokens);
            next.extend((0..=i as u32).map(|k| 20 + k));
            next
        })
        .collect();
    let mut fresh_samplers = kept.clone();
    let continued = m
        .model
        .generate_batch_with(&second, &mut states, 8, &stop, &mut kept)
        .unwrap();
    let fresh = m
        .model
        .generate_batch(&second, 8, &stop, &mut fresh_samplers)
        .unwrap();
    for (i, (c, f)) in continued.iter().zip(&fresh).enumerate() {
        assert_eq!(c.tokens, f.tokens, "sequence {i}");
        assert_eq!(c.finish, f.finish);
        for (a, b) in c.logprobs.iter().zip(&f.logprobs) {
            assert!((a - b).abs() < 1e-4, "sequence {i}: {a} vs {b}");
        }
        let fed: Vec<u32> = second[i]
            .iter()
            .chain(&c.tokens[..c.tokens.len() - 1])
            .copied()
            .collect();
        assert_eq!(states[i].tokens(), &fed[..], "sequence {i}");
    }
    // The states are really used: another model continuing from this model's states computes differently
    // from that model generating from scratch (the rewritten row 2 excepted).
    let mut states: Vec<SequenceKv> = prompts.iter().map(|_| SequenceKv::default()).collect();
    let mut kept = samplers(&keys, 1.0);
    m.model
        .generate_batch_with(&prompts, &mut states, 6, &stop, &mut kept)
        .unwrap();
    let other = model(4);
    let mut fresh_samplers = kept.clone();
    let continued = other
        .model
        .generate_batch_with(&second, &mut states, 1, &stop, &mut kept)
        .unwrap();
    let fresh = other
        .model
        .generate_batch(&second, 1, &stop, &mut fresh_samplers)
        .unwrap();
    for i in 0..prompts.len() {
        let gap = (continued[i].logprobs[0] - fresh[i].logprobs[0]).abs();
        if i == 2 {
            assert!(gap < 1e-4, "sequence 2 was rewritten: {gap}");
        } else {
            assert!(gap > 1e-3, "sequence {i} did not use its state: {gap}");
        }
    }
}
