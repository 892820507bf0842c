//! The manifest of an evaluation (hashes of everything its results depend on) and `--verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sod_sandbox::Sandbox;

use super::config::EvalConfig;
use super::run::{ProblemResult, evaluate, open_sandbox, results_jsonl, summary, tools_used};

/// Format tag of `manifest.json`.
pub const MANIFEST_FORMAT: &str = "sod-eval-manifest-v1";
/// Per-problem results.
pub const RESULTS_FILE: &str = "results.jsonl";
/// Aggregates.
pub const SUMMARY_FILE: &str = "summary.json";
/// The manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Which code produced a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// The git commit the binary was built from, when it was built from a git checkout.
    pub git_commit: Option<String>,
    /// Whether the source tree had uncommitted changes; unknown when the tree is no longer at that commit.
    pub dirty: Option<bool>,
    /// The `sod` crate's version.
    pub crate_version: String,
}

impl CodeVersion {
    /// The version of this build: the git commit it was built from (host/eval/build.rs), the crate version, and
    /// whether the source tree has uncommitted changes, which is known only while that tree is still at the built
    /// commit. A build that knows no commit (no git checkout, no `SOD_BUILD_COMMIT`) asks its source tree now.
    pub fn detect() -> Self {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"));
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(source)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let head = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
        let built = Some(env!("SOD_BUILD_COMMIT").to_string()).filter(|c| !c.is_empty());
        let git_commit = built.or(head.clone());
        let dirty = git_commit
            .as_ref()
            .filter(|&commit| head.as_ref() == Some(commit))
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty());
        CodeVersion {
            git_commit,
            dirty,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// A dataset file and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// The file.
    pub path: PathBuf,
    /// `sha256:<hex>` of its bytes.
    pub sha256: String,
}

/// Everything the results of a run depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The config file (absolute).
    pub config_path: PathBuf,
    /// `sha256:<hex>` of its text.
    pub config_sha256: String,
    /// The `--set key=value` overrides applied to it, in order (a rerun applies them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_overrides: Vec<String>,
    /// The model directory.
    pub model_dir: PathBuf,
    /// `sha256:<hex>` of every file under the model directory, by relative path.
    pub model_files: BTreeMap<String, String>,
    /// The tools directory.
    pub tools_dir: PathBuf,
    /// Each tool used, with its artifact hash.
    pub tools: BTreeMap<String, String>,
    /// Each benchmark, by name.
    pub datasets: BTreeMap<String, DatasetRecord>,
    /// The seed.
    pub seed: u64,
    /// The code.
    pub code_version: CodeVersion,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The inputs.
    #[serde(flatten)]
    pub inputs: Inputs,
    /// `sha256:<hex>` of `results.jsonl`.
    pub results_sha256: String,
    /// `sha256:<hex>` of `summary.json`.
    pub summary_sha256: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha256(&bytes))
}

fn hash_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            hash_tree(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.insert(rel.display().to_string(), hash_file(&path)?);
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Hashes the inputs of `config` (read from `config_path`): the config text, the model files, the tools as
/// `sandbox` loads them, the datasets. A tool that cannot be loaded is recorded as `missing: <why>`.
pub fn collect_inputs(
    config_path: &Path,
    overrides: &[String],
    config: &EvalConfig,
    sandbox: &Sandbox,
    tools_dir: &Path,
    code_version: &CodeVersion,
) -> anyhow::Result<Inputs> {
    let mut model_files = BTreeMap::new();
    hash_tree(&config.model, &config.model, &mut model_files)?;
    let tools = tools_used(config)
        .into_iter()
        .map(|name| {
            let hash = match sandbox.tool(&name) {
                Ok(tool) => tool.artifact_hash().to_string(),
                Err(e) => format!("missing: {e}"),
            };
            (name, hash)
        })
        .collect();
    let datasets = config
        .datasets
        .iter()
        .map(|d| {
            let record = DatasetRecord {
                path: absolute(&d.path),
                sha256: hash_file(&d.path)?,
            };
            Ok((d.name.clone(), record))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Inputs {
        config_path: absolute(config_path),
        config_sha256: hash_file(config_path)?,
        config_overrides: overrides.to_vec(),
        model_dir: absolute(&config.model),
        model_files,
        tools_dir: absolute(tools_dir),
        tools,
        datasets,
        seed: config.seed,
        code_version: code_version.clone(),
    })
}

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Directory of tool components.
    pub tools_dir: PathBuf,
    /// Where the model runs.
    pub device: Device,
    /// The code version recorded in (or checked against) the manifest.
    pub code_version: CodeVersion,
}

/// What a finished run wrote (the CLI prints the summary; the tests read the rest).
#[derive(Debug, Clone)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct EvalRun {
    /// The output directory.
    pub out_dir: PathBuf,
    /// The per-problem results.
    pub results: Vec<ProblemResult>,
    /// `summary.json`'s content.
    pub summary: serde_json::Value,
    /// `manifest.json`'s content.
    pub manifest: Manifest,
}

fn write_run(
    out_dir: &Path,
    config: &EvalConfig,
    inputs: Inputs,
    results: Vec<ProblemResult>,
) -> anyhow::Result<EvalRun> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let results_bytes = results_jsonl(&results)?;
    let summary = summary(config, &results);
    let summary_bytes = serde_json::to_vec_pretty(&summary)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        inputs,
        results_sha256: sha256(&results_bytes),
        summary_sha256: sha256(&summary_bytes),
    };
    for (name, bytes) in [
        (RESULTS_FILE, results_bytes),
        (SUMMARY_FILE, summary_bytes),
        (MANIFEST_FILE, serde_json::to_vec_pretty(&manifest)?),
    ] {
        let path = out_dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(EvalRun {
        out_dir: out_dir.to_path_buf(),
        results,
        summary,
        manifest,
    })
}

/// Runs the evaluation of the config file at `config_path` (with `key=value` overrides) and writes
/// `results.jsonl`, `summary.json` and `manifest.json` into its `out_dir`, which must not hold a run yet.
pub fn run_eval(
    config_path: &Path,
    overrides: &[String],
    options: &EvalOptions,
    log: &dyn Fn(&str),
) -> anyhow::Result<EvalRun> {
    let config = EvalConfig::load(config_path, overrides)?;
    if config.out_dir.join(MANIFEST_FILE).exists() {
        anyhow::bail!(
            "{} already holds an evaluation; choose another out_dir",
            config.out_dir.display()
        );
    }
    let sandbox = open_sandbox(&config, &options.tools_dir)?;
    let inputs = collect_inputs(
        config_path,
        overrides,
        &config,
        &sandbox,
        &options.tools_dir,
        &options.code_version,
    )?;
    if let Some((name, why)) = inputs.tools.iter().find(|(_, h)| h.starts_with("missing")) {
        anyhow::bail!("tool {name}: {why}");
    }
    let results = evaluate(&config, &sandbox, &options.device, log)?;
    write_run(&config.out_dir, &config, inputs, results)
}

/// What `--verify` found.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Every input that differs from the manifest, named (`dataset aime24 (path): sha256 ... -> ...`).
    pub changed_inputs: Vec<String>,
    /// Why the rerun could not be done or compared, if it could not.
    pub rerun_error: Option<String>,
    /// The first problem whose result line differs (or another difference of `results.jsonl`).
    pub first_difference: Option<String>,
}

impl VerifyReport {
    /// Whether the rerun reproduced every result byte for byte from unchanged inputs.
    pub fn identical(&self) -> bool {
        self.changed_inputs.is_empty()
            && self.rerun_error.is_none()
            && self.first_difference.is_none()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.identical() {
            return writeln!(
                f,
                "identical: every input and every result is byte-identical"
            );
        }
        writeln!(f, "NOT identical")?;
        for change in &self.changed_inputs {
            writeln!(f, "changed input: {change}")?;
        }
        if let Some(e) = &self.rerun_error {
            writeln!(f, "rerun failed: {e}")?;
        }
        match (&self.rerun_error, &self.first_difference) {
            (_, Some(d)) => writeln!(f, "results differ: {d}")?,
            // Changed inputs with the same results (a new commit of the code, say): worth saying apart.
            (None, None) => writeln!(
                f,
                "results identical: every result is byte-identical to the recorded one"
            )?,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

fn diff_maps(
    what: &str,
    recorded: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    for (name, old) in recorded {
        match current.get(name) {
            None => out.push(format!("{what} {name}: no longer used or present")),
            Some(new) if new != old => out.push(format!("{what} {name}: {old} -> {new}")),
            Some(_) => {}
        }
    }
    for name in current.keys().filter(|n| !recorded.contains_key(*n)) {
        out.push(format!("{what} {name}: new"));
    }
}

/// Names every input of `current` that differs from `recorded`.
pub fn changed_inputs(recorded: &Inputs, current: &Inputs) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.config_sha256 != current.config_sha256 {
        out.push(format!(
            "config {}: {} -> {}",
            recorded.config_path.display(),
            recorded.config_sha256,
            current.config_sha256
        ));
    }
    if recorded.model_dir != current.model_dir {
        out.push(format!(
            "model directory: {} -> {}",
            recorded.model_dir.display(),
            current.model_dir.display()
        ));
    }
    diff_maps(
        "model file",
        &recorded.model_files,
        &current.model_files,
        &mut out,
    );
    diff_maps("tool", &recorded.tools, &current.tools, &mut out);
    let hashes = |inputs: &Inputs| -> BTreeMap<String, String> {
        inputs
            .datasets
            .iter()
            .map(|(name, d)| (format!("{name} ({})", d.path.display()), d.sha256.clone()))
            .collect()
    };
    diff_maps("dataset", &hashes(recorded), &hashes(current), &mut out);
    if recorded.seed != current.seed {
        out.push(format!("seed: {} -> {}", recorded.seed, current.seed));
    }
    if recorded.code_version != current.code_version {
        out.push(format!(
            "code version: {} -> {}",
            serde_json::to_string(&recorded.code_version).unwrap_or_default(),
            serde_json::to_string(&current.code_version).unwrap_or_default()
        ));
    }
    out
}

/// The first line where `recorded` and `rerun` differ, named by its problem.
pub fn first_difference(recorded: &[u8], rerun: &[u8]) -> Option<String> {
    if recorded == rerun {
        return None;
    }
    let name = |line: &[u8]| -> String {
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .map(|v| {
                format!(
                    "{}/{}",
                    v["dataset"].as_str().unwrap_or("?"),
                    v["id"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "an unparsable line".to_string())
    };
    let old: Vec<&[u8]> = recorded.split(|&b| b == b'\n').collect();
    let new: Vec<&[u8]> = rerun.split(|&b| b == b'\n').collect();
    for (i, (a, b)) in old.iter().zip(&new).enumerate() {
        if a != b {
            return Some(format!(
                "line {}: problem {} (rerun: {})",
                i + 1,
                name(a),
                name(b)
            ));
        }
    }
    Some(format!(
        "the run has {} result lines, the rerun {}",
        old.len().saturating_sub(1),
        new.len().saturating_sub(1)
    ))
}

/// Checks a finished run: recomputes the hashes of its inputs and names those that changed, then reruns the
/// evaluation into a temporary directory and compares `results.jsonl` byte for byte.
pub fn verify(
    manifest_path: &Path,
    options: &EvalOptions,
    log: &dyn Fn(&str),
) -> anyhow::Result<VerifyReport> {
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", manifest_path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        anyhow::bail!(
            "{} is not a {MANIFEST_FORMAT} manifest",
            manifest_path.display()
        );
    }
    let run_dir = manifest_path.parent().unwrap_or(Path::new("."));
    let recorded = &manifest.inputs;
    let mut report = VerifyReport {
        changed_inputs: Vec::new(),
        rerun_error: None,
        first_difference: None,
    };
    let config = match EvalConfig::load(&recorded.config_path, &recorded.config_overrides) {
        Ok(config) => config,
        Err(e) => {
            report.changed_inputs.push(format!(
                "config {}: no longer readable ({e:#})",
                recorded.config_path.display()
            ));
            return Ok(report);
        }
    };
    let current = open_sandbox(&config, &recorded.tools_dir).and_then(|sandbox| {
        let inputs = collect_inputs(
            &recorded.config_path,
            &recorded.config_overrides,
            &config,
            &sandbox,
            &recorded.tools_dir,
            &options.code_version,
        )?;
        Ok((sandbox, inputs))
    });
    let (sandbox, current) = match current {
        Ok(pair) => pair,
        Err(e) => {
            report.rerun_error = Some(format!("hashing the inputs: {e:#}"));
            return Ok(report);
        }
    };
    report.changed_inputs = changed_inputs(recorded, &current);
    let results_path = run_dir.join(RESULTS_FILE);
    let recorded_results = std::fs::read(&results_path)
        .with_context(|| format!("reading {}", results_path.display()))?;
    if sha256(&recorded_results) != manifest.results_sha256 {
        report.changed_inputs.push(format!(
            "{}: modified since the run ({} -> {})",
            results_path.display(),
            manifest.results_sha256,
            sha256(&recorded_results)
        ));
    }
    log("rerunning the evaluation");
    let scratch = tempfile::tempdir()?;
    match evaluate(&config, &sandbox, &options.device, log)
        .and_then(|results| write_run(scratch.path(), &config, current, results))
    {
        Ok(_) => {
            let path = scratch.path().join(RESULTS_FILE);
            let rerun =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            report.first_difference = first_difference(&recorded_results, &rerun);
        }
        Err(e) => report.rerun_error = Some(format!("{e:#}")),
    }
    Ok(report)
}
