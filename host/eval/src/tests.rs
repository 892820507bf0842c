//! `sod eval` on a tiny random model with the real calculator: a run verifies as identical; a changed dataset,
//! tool artifact or code version is detected and named.

use std::path::{Path, PathBuf};

use candle_core::Device;
use sod_model::{Qwen3Config, write_tiny_model_dir};

use super::config::EvalConfig;
use super::manifest::{
    EvalRun, MANIFEST_FILE, Manifest, RESULTS_FILE, SUMMARY_FILE, VerifyReport, first_difference,
    sha256,
};
use super::run::pass_at_k;
use super::*;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn code_version() -> CodeVersion {
    CodeVersion {
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        dirty: Some(false),
        crate_version: "0.0.0-test".into(),
    }
}

const PROBLEMS: &str = r#"{"id": "p1", "source": "test", "question": "What is 2 + 3?", "answer": "5"}
{"id": "p2", "source": "test", "question": "What is 7 * 6?", "answer": "42"}
{"id": "p3", "source": "test", "question": "What is 10 - 4?", "answer": "6"}
"#;

/// A directory with a tiny model, a tools directory (calculator, word-count), a dataset and `eval.toml`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let built = target_dir().join("tools");
        assert!(
            built.join("calculator.wasm").is_file() && built.join("word-count.wasm").is_file(),
            "build the tools first: cargo xtask build-tools"
        );
        let dir = tempfile::tempdir().unwrap();
        let tools = dir.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        for name in ["calculator.wasm", "word-count.wasm"] {
            std::fs::copy(built.join(name), tools.join(name)).unwrap();
        }
        let corpus = [
            PROBLEMS,
            "<tool_call>{\"name\": \"calculator\"}</tool_call> \\boxed{5}",
        ];
        write_tiny_model_dir(
            &dir.path().join("model"),
            &Qwen3Config::tiny(512, 32, 1),
            &corpus,
            7,
        )
        .unwrap();
        std::fs::write(dir.path().join("math.jsonl"), PROBLEMS).unwrap();
        std::fs::write(
            dir.path().join("eval.toml"),
            "model = \"model\"\ntools = [\"calculator\"]\nsamples = 2\ntemperature = 1.0\n\
             max_turns = 2\nmax_new_tokens_per_turn = 12\nmax_total_tokens = 4096\nseed = 3\n\
             batch_size = 4\nout_dir = \"out\"\n\
             [[datasets]]\nname = \"tiny-math\"\npath = \"math.jsonl\"\nkind = \"math\"\nlimit = 2\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn options(&self) -> EvalOptions {
        EvalOptions {
            tools_dir: self.path("tools"),
            device: Device::Cpu,
            code_version: code_version(),
        }
    }

    fn run(&self) -> EvalRun {
        run_eval(&self.path("eval.toml"), &[], &self.options(), &|_| {}).unwrap()
    }

    fn verify(&self, options: &EvalOptions) -> VerifyReport {
        verify(&self.path("out").join(MANIFEST_FILE), options, &|_| {}).unwrap()
    }
}

#[test]
fn pass_at_k_is_the_unbiased_estimator() {
    assert_eq!(pass_at_k(5, 0, 1), 0.0);
    assert_eq!(pass_at_k(5, 5, 3), 1.0);
    assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
    // 1 - C(2, 2) / C(4, 2) = 1 - 1/6.
    assert!((pass_at_k(4, 2, 2) - 5.0 / 6.0).abs() < 1e-12);
    // Fewer misses than k: some sample of every k-subset is right.
    assert_eq!(pass_at_k(4, 3, 2), 1.0);
}

#[test]
fn first_difference_names_the_problem() {
    let a =
        b"{\"dataset\":\"d\",\"id\":\"x\",\"avg\":0}\n{\"dataset\":\"d\",\"id\":\"y\",\"avg\":0}\n";
    let b =
        b"{\"dataset\":\"d\",\"id\":\"x\",\"avg\":0}\n{\"dataset\":\"d\",\"id\":\"y\",\"avg\":1}\n";
    assert_eq!(first_difference(a, a), None);
    let d = first_difference(a, b).unwrap();
    assert!(d.contains("line 2") && d.contains("d/y"), "{d}");
    let short = first_difference(a, &a[..a.len() / 2 + 1]).unwrap();
    assert!(short.contains("line 2"), "{short}");
}

#[test]
fn config_rejects_bad_values() {
    let base = Path::new("/base");
    let ok = "model = \"m\"\nout_dir = \"o\"\nsamples = 4\n[[datasets]]\nname = \"a\"\npath = \"a.jsonl\"\nkind = \"code\"\n";
    let config = EvalConfig::from_toml_str(ok, &[], base).unwrap();
    assert_eq!(config.pass_at, vec![1, 4]);
    assert_eq!(config.datasets[0].path, base.join("a.jsonl"));
    assert!(config.has_code());
    for bad in [
        ok.replace("samples = 4", "samples = 4\npass_at = [5]"),
        ok.replace("kind = \"code\"", "kind = \"poetry\""),
        ok.replace("samples = 4", "samples = 0"),
        format!("{ok}[[datasets]]\nname = \"a\"\npath = \"b.jsonl\"\nkind = \"math\"\n"),
    ] {
        assert!(EvalConfig::from_toml_str(&bad, &[], base).is_err(), "{bad}");
    }
}

#[test]
fn a_run_verifies_as_identical_and_changes_are_named() {
    let fixture = Fixture::new();
    let outcome = fixture.run();

    // What the run wrote.
    assert_eq!(outcome.results.len(), 2, "limit = 2 of 3 problems");
    let ids: Vec<&str> = outcome.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2"]);
    for r in &outcome.results {
        assert_eq!(r.samples.len(), 2);
        assert_eq!(r.rewards.len(), 2);
        assert_eq!(r.pass_at.keys().collect::<Vec<_>>(), ["1", "2"]);
    }
    let results = std::fs::read(fixture.path("out").join(RESULTS_FILE)).unwrap();
    assert_eq!(results.iter().filter(|&&b| b == b'\n').count(), 2);
    assert_eq!(outcome.manifest.results_sha256, sha256(&results));
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(fixture.path("out").join(MANIFEST_FILE)).unwrap())
            .unwrap();
    assert_eq!(manifest, outcome.manifest);
    let inputs = &manifest.inputs;
    assert!(inputs.model_files.contains_key("config.json"));
    assert!(
        inputs
            .model_files
            .keys()
            .any(|f| f.ends_with(".safetensors"))
    );
    assert_eq!(inputs.tools.keys().collect::<Vec<_>>(), ["calculator"]);
    assert!(inputs.tools["calculator"].starts_with("sha256:"));
    assert_eq!(
        inputs.datasets["tiny-math"].sha256,
        sha256(PROBLEMS.as_bytes())
    );
    assert_eq!(inputs.seed, 3);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.path("out").join(SUMMARY_FILE)).unwrap())
            .unwrap();
    assert_eq!(summary["tiny-math"]["problems"], 2);
    assert_eq!(summary["all"]["samples"], 4);
    assert!(summary["tiny-math"]["avg@2"].is_number());
    assert!(summary["tiny-math"]["pass@2"].is_number());

    // A second run into the same directory is refused.
    assert!(run_eval(&fixture.path("eval.toml"), &[], &fixture.options(), &|_| {}).is_err());

    // Unchanged: identical.
    let report = fixture.verify(&fixture.options());
    assert!(report.identical(), "{report}");
    assert!(report.to_string().starts_with("identical"));

    // Another code version is named.
    let mut other = fixture.options();
    other.code_version.dirty = Some(true);
    let report = fixture.verify(&other);
    assert!(!report.identical());
    assert_eq!(report.changed_inputs.len(), 1, "{report}");
    assert!(
        report.changed_inputs[0].starts_with("code version"),
        "{report}"
    );
    assert_eq!(report.first_difference, None, "{report}");

    // One byte of the dataset changed (in p1's question): the dataset is named, and so is p1's result.
    let data = fixture.path("math.jsonl");
    std::fs::write(&data, PROBLEMS.replacen("2 + 3", "2 + 4", 1)).unwrap();
    let report = fixture.verify(&fixture.options());
    assert!(!report.identical());
    assert_eq!(report.changed_inputs.len(), 1, "{report}");
    assert!(
        report.changed_inputs[0].starts_with("dataset tiny-math"),
        "{report}"
    );
    if let Some(d) = &report.first_difference {
        assert!(d.contains("tiny-math/p1"), "{report}");
    }
    std::fs::write(&data, PROBLEMS).unwrap();
    assert!(fixture.verify(&fixture.options()).identical());

    // The calculator swapped for another component under its name: the tool is named.
    std::fs::copy(
        fixture.path("tools/word-count.wasm"),
        fixture.path("tools/calculator.wasm"),
    )
    .unwrap();
    let report = fixture.verify(&fixture.options());
    assert!(!report.identical());
    assert!(
        report
            .changed_inputs
            .iter()
            .any(|c| c.starts_with("tool calculator: sha256:")),
        "{report}"
    );
    assert!(
        !report
            .changed_inputs
            .iter()
            .any(|c| c.starts_with("dataset")),
        "{report}"
    );
}

#[test]
fn overrides_are_recorded_and_applied_again_by_verify() {
    let fixture = Fixture::new();
    let overrides = vec!["out_dir=set-out".to_string(), "seed=11".to_string()];
    let outcome = run_eval(
        &fixture.path("eval.toml"),
        &overrides,
        &fixture.options(),
        &|_| {},
    )
    .unwrap();
    assert!(
        outcome.out_dir.ends_with("set-out"),
        "{:?}",
        outcome.out_dir
    );
    assert_eq!(outcome.manifest.inputs.seed, 11);
    assert_eq!(outcome.manifest.inputs.config_overrides, overrides);
    assert!(!fixture.path("out").exists(), "out_dir was overridden");
    let manifest = fixture.path("set-out").join(MANIFEST_FILE);
    let report = verify(&manifest, &fixture.options(), &|_| {}).unwrap();
    assert!(report.identical(), "{report}");
    // A bad override is a clear error, not a silent default.
    let err = run_eval(
        &fixture.path("eval.toml"),
        &["samples=many".to_string()],
        &fixture.options(),
        &|_| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("samples"), "{err:#}");
}

#[test]
fn code_benchmark_is_scored_by_the_judge() {
    let built = target_dir().join("tools");
    let humaneval = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/benchmarks/humaneval.jsonl");
    assert!(humaneval.is_file(), "{} is missing", humaneval.display());
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model_dir(
        &dir.path().join("model"),
        &Qwen3Config::tiny(512, 32, 1),
        &["def f(x):\n    return x\n"],
        1,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("eval.toml"),
        format!(
            "model = \"model\"\nsamples = 1\nmax_turns = 1\nmax_new_tokens_per_turn = 8\n\
             out_dir = \"out\"\n[[datasets]]\nname = \"humaneval\"\npath = {:?}\nkind = \"code\"\nlimit = 1\n",
            humaneval.display().to_string()
        ),
    )
    .unwrap();
    let options = EvalOptions {
        tools_dir: built,
        device: Device::Cpu,
        code_version: code_version(),
    };
    let outcome = run_eval(&dir.path().join("eval.toml"), &[], &options, &|_| {}).unwrap();
    assert_eq!(outcome.results.len(), 1);
    let sample = &outcome.results[0].samples[0];
    // A random model's text is no solution, and the judge says so without a fault.
    assert_eq!(sample.fault, None, "{sample:?}");
    assert_eq!(sample.reward, 0.0);
    assert_eq!(
        outcome.manifest.inputs.tools.keys().collect::<Vec<_>>(),
        ["judge", "python"]
    );
    assert!(
        outcome.manifest.inputs.datasets["humaneval"]
            .sha256
            .starts_with("sha256:")
    );
}

#[test]
fn the_code_version_names_the_commit_this_was_built_from() {
    // host/eval/build.rs records the commit at build time, and cargo builds again when HEAD moves: so a test binary
    // (built from this checkout) names the checkout's HEAD, or no commit outside a git checkout.
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = CodeVersion::detect();
    assert_eq!(version.git_commit, head);
    assert_eq!(version.crate_version, env!("CARGO_PKG_VERSION"));
    if head.is_some() {
        assert!(
            version.dirty.is_some(),
            "at the built commit, dirty is known"
        );
    }
}
