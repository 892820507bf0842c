//! `sod bench device --device cuda:N`: a device against the CPU on one tiny random model ([`sod_bench::device`]).
//! Prints one JSON report with the differences, the tolerances and whether each check passed; exits 1 if one
//! failed. With `--device cpu` both sides are the CPU (the check of the check).

use clap::Args;

use crate::cli::usage;

/// `sod bench device ...`
#[derive(Debug, Args)]
pub(super) struct DeviceBench {
    /// The device checked against the CPU: cuda / cuda:N (in a build with the `cuda` feature), or cpu.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Seed of the weights, token ids and samplers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Update steps compared.
    #[arg(long, default_value_t = 4)]
    steps: usize,
}

pub(super) fn run(bench: &DeviceBench) -> anyhow::Result<()> {
    if bench.steps == 0 {
        return Err(usage("--steps must be at least 1"));
    }
    let config = sod_bench::device::DeviceBench {
        device: crate::cli::device(&bench.device)?,
        device_name: bench.device.clone(),
        seed: bench.seed,
        steps: bench.steps,
    };
    let report = sod_bench::device::run(&config)?;
    println!("{}", report.json);
    if !report.pass {
        anyhow::bail!(
            "{} differs from the CPU beyond the tolerances",
            bench.device
        );
    }
    Ok(())
}
