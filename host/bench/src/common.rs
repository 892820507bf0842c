//! What the benches share: latency percentiles, a baseline command's JSON line, the seeded stream of token ids
//! and advantages, and the update as `sod train` defaults it.

use std::time::{Duration, Instant};

use sod_train::update::{AdamW, AdamWConfig, Params, PpoClip};

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub median: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

/// The percentiles of `samples` (sorted in place).
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort();
    let n = samples.len().max(1);
    let at = |q: f64| {
        samples[((q * (n as f64 - 1.0)).round() as usize).min(samples.len().saturating_sub(1))]
    };
    let total: Duration = samples.iter().sum();
    Percentiles {
        median: at(0.5),
        p99: at(0.99),
        mean: total / n as u32,
    }
}

/// Runs a baseline command line (a program and its own arguments, split on whitespace) with `args` appended as
/// `--flag value` pairs, its stderr shown, and returns the last JSON line it printed.
pub fn baseline_json(command: &str, args: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
    let mut words = command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| anyhow::anyhow!("the baseline command is empty"))?;
    let mut child = std::process::Command::new(program);
    child.args(words);
    for (flag, value) in args {
        child.arg(flag).arg(value);
    }
    let output = child
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run the baseline {program:?}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!("the baseline failed with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("the baseline printed no JSON line"))?;
    Ok(serde_json::from_str(line)?)
}

/// Times `command` (program then arguments, split on the first two spaces so a Python snippet stays whole) run
/// as a subprocess `calls` times; `None` for an empty command.
pub fn subprocess_latency(command: &str, calls: usize) -> anyhow::Result<Option<Percentiles>> {
    let mut parts = command.splitn(3, ' ');
    let Some(program) = parts.next().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let args: Vec<&str> = parts.collect();
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls.max(1) {
        let start = Instant::now();
        let output = std::process::Command::new(program).args(&args).output()?;
        samples.push(start.elapsed());
        if !output.status.success() {
            anyhow::bail!(
                "baseline {command:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(Some(percentiles(&mut samples)))
}

/// Runs `work` on `threads` threads at once and returns the first error, if any.
pub fn on_threads<T: Send>(
    threads: usize,
    work: impl Fn() -> anyhow::Result<T> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(&work)).collect();
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("benchmark thread panicked")))?;
        }
        Ok(())
    })
}

/// The update the benches run: AdamW as `sod train` defaults it (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
pub fn bench_optimizer(params: &Params) -> sod_train::Result<AdamW> {
    AdamW::new(
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        params,
    )
}

/// PPO's clip as the paper sets it: 0.2 below, 0.28 above.
pub const BENCH_CLIP: PpoClip = PpoClip {
    low: 0.2,
    high: 0.28,
};

/// A 64-bit xorshift stream: the benches' token ids and advantages.
pub struct Stream(u64);

impl Stream {
    /// A stream seeded by `seed` (never the all-zero state).
    pub fn seeded(seed: u64) -> Self {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` token ids below `vocab`.
    pub fn token_ids(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n)
            .map(|_| (self.next() % vocab as u64) as u32)
            .collect()
    }

    /// `n` advantages in [-1, 1], in steps of 1/1000.
    pub fn advantages(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranks_of_the_sorted_sample() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let p = percentiles(&mut samples);
        // Rank round(q * (n - 1)) of 1..=100 µs: 0.5 * 99 = 49.5 rounds to 50 (51 µs), 0.99 * 99 = 98.01 to 98.
        assert_eq!(p.median, Duration::from_micros(51));
        assert_eq!(p.p99, Duration::from_micros(99));
        assert_eq!(p.mean, Duration::from_nanos(50_500));
    }

    #[test]
    fn the_stream_is_the_same_on_every_machine() {
        // The benches' inputs are part of what docs/benchmarks.md and the PyTorch baselines compare: these values
        // are xorshift64 (13, 7, 17) from the seed times the golden ratio, computed independently in Python.
        assert_eq!(
            Stream::seeded(0).token_ids(5, 1000),
            vec![761, 505, 457, 445, 733]
        );
        let advantages = Stream::seeded(7).advantages(3);
        for (got, want) in advantages.iter().zip([-0.611f32, -0.419, -0.841]) {
            assert!((got - want).abs() < 1e-6, "{advantages:?}");
        }
    }

    #[test]
    fn an_empty_baseline_is_skipped_and_a_failing_one_is_an_error() {
        assert!(subprocess_latency("", 3).unwrap().is_none());
        assert!(subprocess_latency("false", 1).is_err());
        assert!(baseline_json("   ", &[]).is_err());
        let v = baseline_json("echo {\"seconds\":1.5}", &[]).unwrap();
        assert_eq!(v["seconds"], 1.5);
    }
}
