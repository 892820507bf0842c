//! Checkpoints: `out_dir/checkpoints/step-N/` holds the student in Hugging Face format (in the dtype of the model
//! it started from unless the config asks for another: bf16 in, bf16 out; tokenizer and template files copied)
//! plus the trainer's state, so that `--resume` continues bit for bit:
//! - `trainer_state.safetensors`: AdamW moments, `m.<name>` and `v.<name>` per variable, and, when the weights
//!   were written in a narrower dtype than the f32 the trainer keeps, the f32 master weights `w.<name>` (what
//!   mixed-precision trainers keep in their optimiser state): resuming starts from them, not from the rounded
//!   weights;
//! - `trainer_state.json`: step, optimiser step count, data cursor and the run config. Written last: a
//!   directory without it is incomplete and ignored.
//!
//! Sampling needs no saved random state: every trajectory's stream is derived from (seed, prompt id, sample
//! index), and the data order from (seed, epoch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sod_model::{Qwen3Config, SaveDtype, save_checkpoint};

use crate::error::{Result, TrainError};
use crate::update::{AdamW, Params};

/// File with the trainer's scalar state; its presence marks a complete checkpoint.
pub const STATE_JSON: &str = "trainer_state.json";
/// File with the optimiser moments.
pub const STATE_TENSORS: &str = "trainer_state.safetensors";

/// The trainer's scalar state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: u64,
    /// AdamW updates applied (equal to `step` unless steps were skipped).
    pub optimizer_steps: u64,
    /// Position in the data order of the next prompt.
    pub data_cursor: u64,
    /// The run config, as TOML, for the record.
    pub config: String,
}

/// `out_dir/checkpoints`.
pub fn checkpoints_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoints")
}

/// The directory of the checkpoint after `step` steps.
pub fn checkpoint_dir(out_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(out_dir).join(format!("step-{step}"))
}

/// Writes the model (atomically, copying tokenizer files from `tokenizer_from`), then the optimiser moments, then
/// the state file that marks the checkpoint complete.
pub fn save(
    out_dir: &Path,
    config: &Qwen3Config,
    varmap: &candle_nn::VarMap,
    tokenizer_from: &Path,
    params: &Params,
    optimizer: &AdamW,
    state: &TrainerState,
    dtype: SaveDtype,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out_dir, state.step);
    save_checkpoint(&dir, config, varmap, dtype, Some(tokenizer_from))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, name) in params.names.iter().enumerate() {
        tensors.insert(format!("m.{name}"), optimizer.m[k].clone());
        tensors.insert(format!("v.{name}"), optimizer.v[k].clone());
        if dtype != SaveDtype::F32 {
            tensors.insert(format!("w.{name}"), params.vars[k].as_tensor().detach());
        }
    }
    let tensors_path = dir.join(STATE_TENSORS);
    candle_core::safetensors::save(&tensors, &tensors_path)?;
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    let json_path = dir.join(STATE_JSON);
    let tmp = dir.join(format!("{STATE_JSON}.tmp"));
    std::fs::write(&tmp, json).map_err(TrainError::io("writing", &tmp))?;
    std::fs::rename(&tmp, &json_path).map_err(TrainError::io("renaming into", &json_path))?;
    Ok(dir)
}

/// The most advanced complete checkpoint of a run, if any.
pub fn latest(out_dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let dir = checkpoints_dir(out_dir);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(&dir).map_err(TrainError::io("listing", &dir))? {
        let entry = entry.map_err(TrainError::io("listing", &dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().join(STATE_JSON).is_file() && best.as_ref().is_none_or(|(b, _)| step > *b) {
            best = Some((step, entry.path()));
        }
    }
    Ok(best)
}

/// Where a run writing into `out_dir` starts: with `resume`, the latest complete checkpoint (none is an error);
/// without, nowhere, and an `out_dir` that already holds a run (its `metrics` file or checkpoints) is an error, so
/// that a second run never mixes its lines and checkpoints with the first one's.
pub fn resume_point(
    out_dir: &Path,
    metrics: &Path,
    resume: bool,
) -> Result<Option<(u64, PathBuf)>> {
    if resume {
        return Ok(Some(latest(out_dir)?.ok_or_else(|| {
            TrainError::Resume(format!(
                "no complete checkpoint in {}; start without --resume",
                checkpoints_dir(out_dir).display()
            ))
        })?));
    }
    if metrics.exists() || checkpoints_dir(out_dir).exists() {
        return Err(TrainError::Config(format!(
            "out_dir {} already holds a run; pass --resume to continue it or choose another out_dir",
            out_dir.display()
        )));
    }
    Ok(None)
}

/// Reads the state of a checkpoint, restores the optimiser moments into `optimizer` and, when the checkpoint holds
/// f32 master weights, puts them into `params`' variables (which were loaded from the checkpoint's rounded
/// weights).
pub fn load_state(
    dir: &Path,
    params: &Params,
    optimizer: &mut AdamW,
    device: &Device,
) -> Result<TrainerState> {
    let json_path = dir.join(STATE_JSON);
    let text =
        std::fs::read_to_string(&json_path).map_err(TrainError::io("reading", &json_path))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Resume(format!("{}: {e}", json_path.display())))?;
    let tensors = candle_core::safetensors::load(dir.join(STATE_TENSORS), device)?;
    let take = |key: String| {
        tensors.get(&key).cloned().ok_or_else(|| {
            TrainError::Resume(format!(
                "{} has no tensor {key}",
                dir.join(STATE_TENSORS).display()
            ))
        })
    };
    let mut m = Vec::with_capacity(params.names.len());
    let mut v = Vec::with_capacity(params.names.len());
    for (k, name) in params.names.iter().enumerate() {
        m.push(take(format!("m.{name}"))?);
        v.push(take(format!("v.{name}"))?);
        if let Some(master) = tensors.get(&format!("w.{name}")) {
            params.vars[k].set(master)?;
        }
    }
    optimizer.restore(m, v, state.optimizer_steps, params)?;
    Ok(state)
}
