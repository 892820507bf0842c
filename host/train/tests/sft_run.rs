//! `sod sft`'s run (sod_train::sft::run) on a bf16 model with Qwen3's real tokenizer, chat template and vocabulary
//! (tiny trunk, random weights): the loss falls, the written model has the input's tensor names, shapes and dtypes
//! (tied embeddings stay tied) and the Hugging Face files, and a resumed run ends bit for bit where an
//! uninterrupted one does.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use sod_model::{ChatTokenizer, Qwen3Config, SaveDtype, TrainableModel, load_model_dir};
use sod_train::sft::run::{SftRunConfig, SftRunOptions, run_sft};

/// A Qwen3-vocabulary model (hidden 16, one layer, tied embeddings) saved in bf16 with Qwen3's tokenizer files.
fn base_model(dir: &Path) -> PathBuf {
    let mut config = Qwen3Config::tiny(151_936, 16, 1);
    config.tie_word_embeddings = true;
    config.bos_token_id = Some(151_643);
    config.eos_token_id = vec![151_645];
    let model = TrainableModel::init_random(&config, 3, &Device::Cpu).unwrap();
    let path = dir.join("base");
    model
        .save_checkpoint(
            &path,
            SaveDtype::Bf16,
            Some(&support::qwen3_tokenizer_dir()),
        )
        .unwrap();
    path
}

/// Tensor name -> (shape, dtype) of a directory's `model.safetensors`.
fn tensors(dir: &Path) -> BTreeMap<String, (Vec<usize>, String)> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, (t.dims().to_vec(), format!("{:?}", t.dtype()))))
        .collect()
}

/// Conversations as a JSONL file: sums answered directly, and the agent conversation of the Qwen3 fixtures
/// (tool calls, tool responses, tools as a JSON string, an extra verl column).
fn write_data(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for k in 0..24 {
        let (a, b) = (k % 7 + 1, k % 5 + 2);
        lines.push(serde_json::json!({
            "id": format!("sum-{k}"),
            "messages": [
                {"role": "user", "content": format!("What is {a} + {b}?")},
                {"role": "assistant", "content": format!("The answer is \\boxed{{{}}}.", a + b)},
            ],
        }));
    }
    let agent = support::qwen3_rendering("agent_conversation_sft");
    lines.push(serde_json::json!({
        "id": "agent",
        "messages": agent["messages"],
        "tools": agent["tools"].to_string(),
        "agent_name": "tool_agent",
    }));
    let path = dir.join("conversations.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

fn config(base: &Path, data: &Path, out: &Path, steps: u64) -> SftRunConfig {
    let text = format!(
        "model = {base:?}\ndata = {data:?}\nout_dir = {out:?}\nsteps = {steps}\nbatch_size = 4\nmicro_batch = 2\n\
         learning_rate = 5e-2\nwarmup_steps = 2\ncheckpoint_every = 4\n"
    );
    let path = out.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    SftRunConfig::load(&path, &[]).unwrap()
}

fn options(resume: bool) -> SftRunOptions {
    SftRunOptions {
        device: Device::Cpu,
        resume,
        progress: false,
        log_every: 0,
    }
}

#[test]
fn sft_lowers_the_loss_and_writes_the_model_as_it_came() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_model(dir.path());
    let data = write_data(dir.path());
    let out = dir.path().join("run");
    let summary = run_sft(&config(&base, &data, &out, 16), &options(false)).unwrap();
    assert_eq!(
        (summary.step, summary.steps, summary.conversations),
        (16, 16, 25)
    );
    let (first, last) = (summary.first_loss.unwrap(), summary.last.unwrap().loss);
    // Measured: 11.9 -> 2.2 (an untrained model's loss is ln 151936 = 11.9).
    eprintln!("loss {first} -> {last}");
    assert!(first > 10.0 && last < 0.6 * first, "{first} -> {last}");

    // The written model: the input's tensors (names, shapes, bf16; no lm_head beside the tied embedding), its
    // config with the dtype, and the Hugging Face files.
    let model = summary.model;
    assert_eq!(tensors(&model), tensors(&base));
    assert!(tensors(&model).values().all(|(_, dtype)| dtype == "BF16"));
    assert!(!tensors(&model).contains_key("lm_head.weight"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["torch_dtype"], "bfloat16");
    assert_eq!(written["tie_word_embeddings"], true);
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(model.join(file).is_file(), "{file}");
    }
    let generation: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(generation["eos_token_id"], 151_645);
    // It loads back, with Qwen3's own template.
    let loaded = load_model_dir(&model, &Device::Cpu).unwrap();
    assert_eq!(loaded.source_dtype, SaveDtype::Bf16);
    assert!(
        !ChatTokenizer::from_dir(&model)
            .unwrap()
            .uses_builtin_template()
    );
    // The run's record and metrics.
    assert!(out.join("sft.toml").is_file());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    assert_eq!(lines[15]["epoch"], 16.0 * 4.0 / 25.0);
    // The cosine schedule: warm-up to the peak at step 2, the peak again at step 3 (the decay's start), then down.
    let lr: Vec<f64> = lines.iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert_eq!((lr[0], lr[1], lr[2]), (2.5e-2, 5e-2, 5e-2));
    assert!(lr.windows(2).skip(2).all(|w| w[1] < w[0]), "{lr:?}");

    // A second run into the same directory is refused; --resume of a finished run does nothing new.
    let err = run_sft(&config(&base, &data, &out, 16), &options(false)).unwrap_err();
    assert!(err.to_string().contains("already holds a run"), "{err}");
}

#[test]
fn a_resumed_sft_run_ends_bit_for_bit_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_model(dir.path());
    let data = write_data(dir.path());
    let whole = dir.path().join("whole");
    run_sft(&config(&base, &data, &whole, 8), &options(false)).unwrap();
    // The interrupted run: what the uninterrupted one had after its step-4 checkpoint (and the metrics line of a
    // step 5 whose checkpoint was never written).
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(cut.join("checkpoints")).unwrap();
    copy_dir(
        &whole.join("checkpoints/step-4"),
        &cut.join("checkpoints/step-4"),
    );
    std::fs::copy(whole.join("sft.toml"), cut.join("sft.toml")).unwrap();
    let metrics = std::fs::read_to_string(whole.join("metrics.jsonl")).unwrap();
    let first_five: Vec<&str> = metrics.lines().take(5).collect();
    std::fs::write(cut.join("metrics.jsonl"), first_five.join("\n") + "\n").unwrap();
    let summary = run_sft(&config(&base, &data, &cut, 8), &options(true)).unwrap();
    assert_eq!(summary.step, 8);
    assert_eq!(
        std::fs::read(cut.join("metrics.jsonl")).unwrap(),
        std::fs::read(whole.join("metrics.jsonl")).unwrap()
    );
    for file in [
        "model/model.safetensors",
        "checkpoints/step-8/model.safetensors",
        "checkpoints/step-8/trainer_state.safetensors",
    ] {
        assert!(
            std::fs::read(cut.join(file)).unwrap() == std::fs::read(whole.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
