//! Running an evaluation: rollouts with tools on every problem of every benchmark, scoring, pass@k.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sod_model::load_model_dir;
use sod_sandbox::Sandbox;
use sod_train::config::EVALUATION_TEMPERATURE;
use sod_train::dataset::{Dataset, Example};
use sod_train::reward::{reward_for, score_all};
use sod_train::rollout::{RolloutRequest, rollout_chunked};

use super::config::EvalConfig;

/// One sample (trajectory) of a problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleResult {
    /// The reward (1 for a right answer or a program passing every test).
    pub reward: f32,
    /// Whether the reward counts as solved.
    pub correct: bool,
    /// Assistant turns.
    pub turns: usize,
    /// Tool calls written.
    pub tool_calls: usize,
    /// Tool calls accepted.
    pub valid_tool_calls: usize,
    /// Ended by a budget.
    pub truncated: bool,
    /// Why the sample could not be scored (a sandbox or judge failure); its reward is then 0.
    pub fault: Option<String>,
    /// The last assistant turn (the one scored).
    pub response: String,
}

/// One problem: its samples, avg@k and pass@k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// The benchmark's name.
    pub dataset: String,
    /// The problem's id.
    pub id: String,
    /// Rewards of the samples, in sample order.
    pub rewards: Vec<f32>,
    /// Samples counted as solved.
    pub correct: usize,
    /// Mean reward over the samples (avg@k).
    pub avg: f64,
    /// `"k" -> pass@k` with the unbiased estimator.
    pub pass_at: BTreeMap<String, f64>,
    /// Every sample.
    pub samples: Vec<SampleResult>,
    /// The dataset row's columns that evaluation does not use (`data_source`, `extra_info`, ...), as they were.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The unbiased pass@k estimator of Chen et al. (2021): `1 - C(n - c, k) / C(n, k)` for `c` solved samples out
/// of `n`, computed as a product to stay exact in floating point for large `n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(k >= 1 && k <= n && c <= n, "pass@{k} of {c}/{n}");
    if n - c < k {
        return 1.0;
    }
    let mut miss = 1.0f64;
    for i in (n - c + 1)..=n {
        miss *= 1.0 - k as f64 / i as f64;
    }
    1.0 - miss
}

/// The sandbox of an evaluation: tools from `tools_dir`, seeded by the config's seed.
pub fn open_sandbox(config: &EvalConfig, tools_dir: &Path) -> anyhow::Result<Sandbox> {
    Ok(config.rollout.open_sandbox(tools_dir, None, config.seed)?)
}

/// The tools an evaluation uses: those offered to the model, plus `judge` and `python` for code benchmarks.
pub fn tools_used(config: &EvalConfig) -> Vec<String> {
    let mut names: Vec<String> = config.rollout.tools.clone();
    if config.has_code() {
        names.push(sod_train::reward::JUDGE_TOOL.to_string());
        names.push("python".to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// The problems of one benchmark (the first `limit`).
pub fn load_problems(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Example>> {
    let dataset = Dataset::load(path)?;
    let mut examples = dataset.examples().to_vec();
    if let Some(limit) = limit {
        examples.truncate(limit);
    }
    Ok(examples)
}

/// Evaluates the config's model on every benchmark with the tools of `sandbox`, and returns one result per
/// problem, benchmarks in config order, problems in file order.
pub fn evaluate(
    config: &EvalConfig,
    sandbox: &Sandbox,
    device: &Device,
    log: &dyn Fn(&str),
) -> anyhow::Result<Vec<ProblemResult>> {
    let rollout = &config.rollout;
    let toolbox = rollout.toolbox(sandbox)?;
    let tokenizer = rollout.tokenizer(&config.model)?;
    let mut model = load_model_dir(&config.model, device)
        .with_context(|| format!("loading the model in {}", config.model.display()))?;
    model.model = model
        .model
        .with_compute_dtype(config.compute_dtype.unwrap_or_default());
    let settings = rollout.settings(config.seed, EVALUATION_TEMPERATURE);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Vec::new();
    for dataset in &config.datasets {
        let problems = load_problems(&dataset.path, dataset.limit)
            .with_context(|| format!("dataset {:?}", dataset.name))?;
        let scorer = reward_for(dataset.kind, rollout.code_reward, sandbox)?;
        scorer
            .check_dataset(&Dataset::from_examples(problems.clone()))
            .with_context(|| format!("dataset {:?}", dataset.name))?;
        // Every tool loaded by now (the rollouts' and the scorer's): a backend must serve the same ones.
        sandbox.check_backend()?;
        let mut requests = Vec::with_capacity(problems.len() * config.samples);
        for (p, problem) in problems.iter().enumerate() {
            let messages = rollout.prompt(&problem.messages);
            for s in 0..config.samples {
                requests.push(RolloutRequest {
                    prompt_id: format!("{}/{}", dataset.name, problem.id),
                    sample_index: s as u64,
                    group: p as u32,
                    messages: messages.clone(),
                    prompt_tokens: None,
                });
            }
        }
        let trajectories = rollout_chunked(
            &model.model,
            &tokenizer,
            &toolbox,
            &settings,
            &requests,
            config.batch_size,
        )?;
        let items: Vec<(&str, &Example)> = trajectories
            .iter()
            .map(|t| (t.final_text.as_str(), &problems[t.group as usize]))
            .collect();
        let scores = score_all(scorer.as_ref(), &items, threads);
        for (p, problem) in problems.iter().enumerate() {
            let range = p * config.samples..(p + 1) * config.samples;
            let samples: Vec<SampleResult> = trajectories[range.clone()]
                .iter()
                .zip(&scores[range])
                .map(|(t, score)| {
                    let fault = if t.infra_fault {
                        Some("a tool call hit a sandbox failure".to_string())
                    } else {
                        score.fault.clone()
                    };
                    let reward = if fault.is_some() { 0.0 } else { score.reward };
                    SampleResult {
                        reward,
                        correct: fault.is_none() && scorer.is_correct(reward),
                        turns: t.turns,
                        tool_calls: t.tool_calls,
                        valid_tool_calls: t.valid_tool_calls,
                        truncated: t.truncated(),
                        fault,
                        response: t.final_text.clone(),
                    }
                })
                .collect();
            results.push(ProblemResult {
                extra: problem.extra.clone(),
                ..problem_result(&dataset.name, &problem.id, samples, &config.pass_at)
            });
        }
        log(&format!(
            "{}: {} problems x {} samples",
            dataset.name,
            problems.len(),
            config.samples
        ));
    }
    Ok(results)
}

/// Aggregates the samples of one problem.
pub fn problem_result(
    dataset: &str,
    id: &str,
    samples: Vec<SampleResult>,
    pass_at: &[usize],
) -> ProblemResult {
    let n = samples.len();
    let correct = samples.iter().filter(|s| s.correct).count();
    let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
    let avg = rewards.iter().map(|&r| r as f64).sum::<f64>() / n.max(1) as f64;
    ProblemResult {
        dataset: dataset.to_string(),
        id: id.to_string(),
        rewards,
        correct,
        avg,
        pass_at: pass_at
            .iter()
            .map(|&k| (k.to_string(), pass_at_k(n, correct, k)))
            .collect(),
        samples,
        extra: serde_json::Map::new(),
    }
}

/// The bytes of `results.jsonl`: one JSON object per problem, one per line.
pub fn results_jsonl(results: &[ProblemResult]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in results {
        serde_json::to_writer(&mut out, r)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Per benchmark (and over all problems, under `"all"`): problems, samples, avg@k, pass@k, truncation and tool
/// use, and faults.
pub fn summary(config: &EvalConfig, results: &[ProblemResult]) -> serde_json::Value {
    let mut datasets = serde_json::Map::new();
    let groups: Vec<(&str, Vec<&ProblemResult>)> = config
        .datasets
        .iter()
        .map(|d| {
            let rows = results.iter().filter(|r| r.dataset == d.name).collect();
            (d.name.as_str(), rows)
        })
        .chain(std::iter::once(("all", results.iter().collect())))
        .collect();
    for (name, rows) in groups {
        let problems = rows.len().max(1) as f64;
        let samples: Vec<&SampleResult> = rows.iter().flat_map(|r| &r.samples).collect();
        let count = samples.len().max(1) as f64;
        let mut entry = serde_json::Map::new();
        entry.insert("problems".into(), rows.len().into());
        entry.insert("samples".into(), samples.len().into());
        entry.insert(
            format!("avg@{}", config.samples),
            (rows.iter().map(|r| r.avg).sum::<f64>() / problems).into(),
        );
        for &k in &config.pass_at {
            let key = k.to_string();
            let mean = rows.iter().map(|r| r.pass_at[&key]).sum::<f64>() / problems;
            entry.insert(format!("pass@{k}"), mean.into());
        }
        entry.insert(
            "truncated_fraction".into(),
            (samples.iter().filter(|s| s.truncated).count() as f64 / count).into(),
        );
        entry.insert(
            "mean_tool_calls".into(),
            (samples.iter().map(|s| s.tool_calls).sum::<usize>() as f64 / count).into(),
        );
        entry.insert(
            "faults".into(),
            samples.iter().filter(|s| s.fault.is_some()).count().into(),
        );
        datasets.insert(name.to_string(), entry.into());
    }
    serde_json::Value::Object(datasets)
}
