//! `sod bench make-model --config config.json --out DIR`: a Hugging Face model directory with random weights of a
//! config's shape (`sod_model::init_random`: N(0, initializer_range²), norms 1), for benchmarks that need a real
//! model's shape and no download. Tokenizer files are copied from `--tokenizer` when given.

use std::path::PathBuf;

use candle_core::Device;
use clap::Args;
use sod_model::{Qwen3Config, SaveDtype, init_random, save_checkpoint};

/// `sod bench make-model ...`
#[derive(Debug, Args)]
pub(super) struct MakeModel {
    /// A Hugging Face config.json (e.g. ../shared/data/qwen3-tokenizer/config-0.6b.json).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory whose tokenizer files are copied beside the weights.
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// Stored dtype: bf16 (as Hugging Face ships Qwen3) or f32.
    #[arg(long, default_value = "bf16", value_parser = ["bf16", "f32"])]
    dtype: String,
}

pub(super) fn run(args: &MakeModel) -> anyhow::Result<()> {
    let config = Qwen3Config::from_file(&args.config)?;
    let model = init_random(&config, args.seed, &Device::Cpu)?;
    let dtype = if args.dtype == "f32" {
        SaveDtype::F32
    } else {
        SaveDtype::Bf16
    };
    save_checkpoint(
        &args.out,
        &model.config,
        &model.varmap,
        dtype,
        args.tokenizer.as_deref(),
    )?;
    eprintln!(
        "wrote {} ({} parameters, {})",
        args.out.display(),
        config.num_parameters(),
        args.dtype
    );
    Ok(())
}
