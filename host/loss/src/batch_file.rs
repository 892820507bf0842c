//! `sod loss NAME --batch BATCH.json`: run a plugin on a recorded batch.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Batch, LossError, LossPlugin};

/// A recorded batch. Log-probs may be `null` where the mask is 0 (there is nothing to record);
/// `teacher_logprob`, `cur_logprob` and `divergence` (a full-distribution loss's per-token divergence) may be
/// absent; `flags` defaults to zeros. Step indices are derived from the mask.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    old_logprob: Vec<Option<f32>>,
    #[serde(default)]
    cur_logprob: Option<Vec<Option<f32>>>,
    #[serde(default)]
    teacher_logprob: Option<Vec<Option<f32>>>,
    mask: Vec<u8>,
    seq_offsets: Vec<u64>,
    reward: Vec<f32>,
    group: Vec<u32>,
    #[serde(default)]
    flags: Option<Vec<u32>>,
    #[serde(default)]
    divergence: Option<Vec<Option<f32>>>,
}

fn logprobs(values: Vec<Option<f32>>) -> Vec<f32> {
    // A null becomes NaN; validation rejects it where the mask is 1.
    values.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect()
}

impl BatchFile {
    fn into_batch(self) -> Batch {
        let flags = self.flags.unwrap_or_else(|| vec![0; self.reward.len()]);
        Batch {
            old_logprob: logprobs(self.old_logprob),
            cur_logprob: self.cur_logprob.map(logprobs),
            teacher_logprob: self.teacher_logprob.map(logprobs),
            mask: self.mask,
            step_index: None,
            seq_offsets: self.seq_offsets,
            reward: self.reward,
            group: self.group,
            flags,
            divergence: self.divergence.map(logprobs),
        }
    }
}

/// Reads a batch file in the `sod loss` format.
pub fn read_batch_file(batch_json: &Path) -> Result<Batch, LossError> {
    let problem = |problem: String| LossError::BatchFile {
        path: batch_json.to_path_buf(),
        problem,
    };
    let text =
        std::fs::read_to_string(batch_json).map_err(|e| problem(format!("cannot read: {e}")))?;
    let file: BatchFile =
        serde_json::from_str(&text).map_err(|e| problem(format!("invalid batch JSON: {e}")))?;
    Ok(file.into_batch())
}

/// A float as JSON, written with the shortest decimal that reads back as the same `f32`.
fn f32_json(value: f32) -> Value {
    // f32's Display is the shortest round-tripping decimal; parsing it as f64 keeps that decimal.
    let decimal: f64 = value.to_string().parse().unwrap_or(f64::from(value));
    Value::from(decimal)
}

/// Loads `plugin` (a name looked up in `plugin_dir`, or a path), configures it with `settings`,
/// runs it on the batch in `batch_json`, and returns `{"advantages": [...], "metrics": {...}}`, with
/// `"divergence_weights": [...]` for a loss that asks for a divergence.
pub fn run_batch_file(
    plugin: &str,
    plugin_dir: &Path,
    batch_json: &Path,
    settings: &[(String, String)],
) -> Result<Value, LossError> {
    let batch = read_batch_file(batch_json)?;
    let loaded = LossPlugin::load(plugin, plugin_dir)?;
    let mut loss = loaded.configure(settings)?;
    let output = loss.compute(&batch)?;
    let metrics: Map<String, Value> = output
        .metrics
        .into_iter()
        .map(|(name, value)| (name, Value::from(value)))
        .collect();
    let advantages: Vec<Value> = output.advantages.into_iter().map(f32_json).collect();
    let mut result = Map::new();
    result.insert("advantages".into(), Value::Array(advantages));
    if loss.requirements().divergence.is_some() {
        let weights: Vec<Value> = output
            .divergence_weights
            .into_iter()
            .map(f32_json)
            .collect();
        result.insert("divergence_weights".into(), Value::Array(weights));
    }
    result.insert("metrics".into(), Value::Object(metrics));
    Ok(Value::Object(result))
}
