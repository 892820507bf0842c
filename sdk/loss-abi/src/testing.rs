//! Seeded batch generators for tests and benchmarks of losses (no dependency on a random crate).

use crate::batch::Batch;
use crate::ffi::{SOD_LOSS_FLAG_INFRA_FAULT, SOD_LOSS_FLAG_TRUNCATED};

/// SplitMix64: a small, fast, seeded generator; plenty for test data.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// A uniform float in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    /// A permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.range(0, i as u64) as usize);
        }
        order
    }
}

/// A random batch of 1 to 8 sequences. Each sequence: a prompt (0-4 tokens), 1-5 steps of 1-6
/// generated tokens separated by tool outputs (1-3 tokens), and sometimes padding. Groups are
/// drawn from a few ids, so some have one sample. Log-probs at mask-0 positions are NaN, so a
/// loss that reads them shows up. About one sequence in ten is flagged truncated or faulty.
/// With `teacher` the batch carries teacher log-probs.
pub fn random_batch(rng: &mut SplitMix64, teacher: bool) -> Batch {
    let sequences = rng.range(1, 8) as usize;
    let mut batch = Batch {
        seq_offsets: vec![0],
        teacher_logprob: teacher.then(Vec::new),
        ..Batch::default()
    };
    let push = |batch: &mut Batch, rng: &mut SplitMix64, generated: bool| {
        let (old, teach) = if generated {
            (rng.uniform(-6.0, 0.0) as f32, rng.uniform(-6.0, 0.0) as f32)
        } else {
            (f32::NAN, f32::NAN)
        };
        batch.old_logprob.push(old);
        if let Some(t) = batch.teacher_logprob.as_mut() {
            t.push(teach);
        }
        batch.mask.push(u8::from(generated));
    };
    for _ in 0..sequences {
        for _ in 0..rng.range(0, 4) {
            push(&mut batch, rng, false);
        }
        let steps = rng.range(1, 5);
        for step in 0..steps {
            if step > 0 {
                for _ in 0..rng.range(1, 3) {
                    push(&mut batch, rng, false);
                }
            }
            for _ in 0..rng.range(1, 6) {
                push(&mut batch, rng, true);
            }
        }
        if rng.range(0, 3) == 0 {
            for _ in 0..rng.range(1, 3) {
                push(&mut batch, rng, false);
            }
        }
        batch.seq_offsets.push(batch.mask.len() as u64);
        batch.reward.push(if rng.range(0, 1) == 0 {
            rng.range(0, 1) as f32
        } else {
            rng.uniform(-1.0, 2.0) as f32
        });
        batch.group.push(rng.range(0, 3) as u32);
        batch.flags.push(match rng.range(0, 19) {
            0 => SOD_LOSS_FLAG_INFRA_FAULT,
            1 => SOD_LOSS_FLAG_TRUNCATED,
            _ => 0,
        });
    }
    batch
}

/// A large synthetic batch for benchmarks: `sequences` sequences of `tokens_per_sequence` tokens,
/// each a prompt, then `steps` generated runs separated by tool outputs (a tenth of the tokens go
/// to the prompt, a fifth to tool outputs), groups of 8, teacher log-probs.
///
/// # Panics
/// If a sequence is too short to hold the layout (fewer than 10 tokens per step).
pub fn synthetic_batch(
    sequences: usize,
    tokens_per_sequence: usize,
    steps: usize,
    seed: u64,
) -> Batch {
    assert!(
        steps >= 1 && tokens_per_sequence >= 10 * steps,
        "sequence too short for {steps} steps"
    );
    let mut rng = SplitMix64::new(seed);
    let prompt = tokens_per_sequence / 10;
    let tool_total = if steps > 1 {
        tokens_per_sequence / 5
    } else {
        0
    };
    let tool_each = tool_total / steps.saturating_sub(1).max(1);
    let generated_total = tokens_per_sequence - prompt - tool_each * (steps - 1);
    let total = sequences * tokens_per_sequence;
    let mut batch = Batch {
        old_logprob: Vec::with_capacity(total),
        teacher_logprob: Some(Vec::with_capacity(total)),
        mask: Vec::with_capacity(total),
        seq_offsets: vec![0],
        ..Batch::default()
    };
    for seq in 0..sequences {
        let mut layout = vec![(false, prompt)];
        for step in 0..steps {
            if step > 0 {
                layout.push((false, tool_each));
            }
            let base = generated_total / steps;
            let extra = usize::from(step < generated_total % steps);
            layout.push((true, base + extra));
        }
        for (generated, len) in layout {
            for _ in 0..len {
                batch.mask.push(u8::from(generated));
                batch.old_logprob.push(rng.uniform(-8.0, 0.0) as f32);
                if let Some(t) = batch.teacher_logprob.as_mut() {
                    t.push(rng.uniform(-8.0, 0.0) as f32);
                }
            }
        }
        batch.seq_offsets.push(batch.mask.len() as u64);
        batch.reward.push(rng.range(0, 1) as f32);
        batch.group.push((seq / 8) as u32);
        batch.flags.push(0);
    }
    batch
}
