//! Building the demo's models: gold (and recovery) conversations checked against the real calculator, a tokenizer
//! trained on them, supervised training with the student's cold-start stop, and the cache entry keyed by the
//! model's settings (`<cache>/<key>/model` with `record.json` written last, so that its presence marks a complete
//! entry).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sod_model::{
    ChatMessage, ChatTemplate, ChatTokenizer, SaveDtype, load_model_dir, save_checkpoint,
    write_tiny_model_dir,
};
use sod_train::sft::{SftStepMetrics, SftTrainer, tokenize_conversation};

use super::gold::{Calculator, gold_conversation, recovery_conversation};
use super::jobs::{self, Job};
use super::tasks::{self, Task};

use super::evaluate::{TOOL_SCHEMAS_IN_PROMPT, calculator_toolbox, evaluate};
use super::pipeline::DemoPaths;
use super::settings::*;

/// What building one cached model measured (written next to it once, read on later runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltModel {
    /// The cache directory's name (`DemoSettings::model_cache_key`).
    pub key: String,
    /// Conversations it was trained on (gold, and recovery ones for the recovery teacher).
    pub conversations: usize,
    /// Of them, recovery conversations.
    #[serde(default)]
    pub recovery_conversations: usize,
    /// Trained (assistant) tokens over all gold conversations.
    pub gold_trained_tokens: usize,
    /// Prompt tokens over all gold conversations.
    pub gold_prompt_tokens: usize,
    /// Parameters.
    pub parameters: usize,
    /// The last supervised step.
    pub sft_last: Option<SftStepMetrics>,
    /// The cold start's checks (see [`ColdStartStop`]): step and greedy accuracy on the checked train problems.
    #[serde(default)]
    pub checks: Vec<(u64, f64)>,
    /// Seconds spent building it (gold data, tokenizer, training).
    pub build_seconds: f64,
    /// Whether this run found it in the cache rather than building it.
    pub cached: bool,
}

/// The models of a demo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsRecord {
    /// The teachers, in [`DemoSettings::teachers`] order.
    pub teachers: Vec<(TeacherKind, BuiltModel)>,
    /// The student after its cold start.
    pub student: BuiltModel,
}

/// In a model's cache directory: its record, written last (its presence marks a complete entry).
const RECORD_FILE: &str = "record.json";
/// In a model's cache directory: the Hugging Face-format model.
const MODEL_DIR: &str = "model";

/// The models' directories.
#[derive(Debug, Clone)]
pub struct ModelDirs {
    /// Each teacher's, in [`DemoSettings::teachers`] order.
    pub teachers: Vec<(TeacherKind, PathBuf)>,
    /// The cold-start student's.
    pub student: PathBuf,
}

impl ModelDirs {
    /// The directory of the `kind` teacher.
    pub fn teacher(&self, kind: TeacherKind) -> anyhow::Result<&Path> {
        self.teachers
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, dir)| dir.as_path())
            .with_context(|| format!("the plan has no {}", kind.label()))
    }
}

/// Builds (or finds in the cache) the teachers and the student, `jobs` at a time; returns their model directories
/// and records.
pub fn prepare_models(
    settings: &DemoSettings,
    paths: &DemoPaths,
    calculator: &Calculator<'_>,
    jobs: usize,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(ModelDirs, ModelsRecord)> {
    let teacher_kinds = settings.teachers();
    // The gold-only teacher and the student side by side (the teacher first: it takes longest), then the recovery
    // teacher, which starts from the gold-only one.
    let roles = [DemoModel::Teacher(TeacherKind::Gold), DemoModel::Student];
    let builds: Vec<Job<'_, (PathBuf, BuiltModel)>> = roles
        .iter()
        .map(|&role| {
            Box::new(move || prepare_model(settings, role, paths, calculator, None, log))
                as Job<'_, (PathBuf, BuiltModel)>
        })
        .collect();
    let mut built = jobs::run(jobs, builds)?;
    let student = built.pop().context("the student's build")?;
    if teacher_kinds.contains(&TeacherKind::Recovery) {
        let gold = &built[0].0;
        built.push(prepare_model(
            settings,
            DemoModel::Teacher(TeacherKind::Recovery),
            paths,
            calculator,
            Some(gold),
            log,
        )?);
    }
    let built: Vec<(PathBuf, BuiltModel)> = teacher_kinds
        .iter()
        .map(|kind| match kind {
            TeacherKind::Gold => built[0].clone(),
            TeacherKind::Recovery => built[1].clone(),
        })
        .collect();
    let mut dirs = ModelDirs {
        teachers: Vec::new(),
        student: student.0,
    };
    let mut teachers = Vec::new();
    // Every tokenizer is trained on the same corpus with the same settings; a teacher scores the student's tokens,
    // so they must be the same file.
    let tokenizer = |dir: &Path| {
        let path = dir.join("tokenizer.json");
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let student_tokenizer = tokenizer(&dirs.student)?;
    for (kind, (dir, record)) in teacher_kinds.into_iter().zip(built) {
        if tokenizer(&dir)? != student_tokenizer {
            bail!(
                "the cached teacher ({}) and student ({}) have different tokenizers; remove the cache directory \
                 and run again",
                dir.display(),
                dirs.student.display()
            );
        }
        dirs.teachers.push((kind, dir));
        teachers.push((kind, record));
    }
    Ok((
        dirs,
        ModelsRecord {
            teachers,
            student: student.1,
        },
    ))
}

/// Whether the recovery teacher's data holds a recovery conversation of `task` (a function of its id).
fn has_recovery(task: &Task, fraction: f64) -> bool {
    let digest = Sha256::digest(format!("sod-demo-recovery-pick-v1/{}", task.id));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    ((u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// Builds (or finds in the cache) one model; returns its model directory and record.
fn prepare_model(
    settings: &DemoSettings,
    role: DemoModel,
    paths: &DemoPaths,
    calculator: &Calculator<'_>,
    base: Option<&Path>,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(PathBuf, BuiltModel)> {
    let name = role.name();
    let key = settings.model_cache_key(role);
    let dir = paths.cache_root.join(&key);
    let model_dir = dir.join(MODEL_DIR);
    let record_path = dir.join(RECORD_FILE);
    if record_path.is_file() && model_dir.is_dir() {
        let text = std::fs::read_to_string(&record_path)
            .with_context(|| format!("reading {}", record_path.display()))?;
        let mut record: BuiltModel = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", record_path.display()))?;
        record.cached = true;
        log(&format!("{name}: cached in {}", dir.display()));
        return Ok((model_dir, record));
    }
    let started = Instant::now();
    // A directory without a record is an interrupted build: start it over.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let train = tasks::train_tasks(settings.seed, settings.train_tasks, settings.test_tasks);
    let schemas: Vec<serde_json::Value> = if TOOL_SCHEMAS_IN_PROMPT {
        vec![calculator.schema()]
    } else {
        Vec::new()
    };
    let gold: Vec<Vec<ChatMessage>> = train
        .iter()
        .map(|task| gold_conversation(calculator, task))
        .collect::<anyhow::Result<_>>()?;
    let mut conversations: Vec<(&Task, Vec<ChatMessage>)> =
        train.iter().zip(gold.iter().cloned()).collect();
    let mut recovery_conversations = 0;
    if role == DemoModel::Teacher(TeacherKind::Recovery) {
        for task in train
            .iter()
            .filter(|t| has_recovery(t, settings.recovery_fraction))
        {
            conversations.push((task, recovery_conversation(calculator, task)?));
            recovery_conversations += 1;
        }
    }
    log(&format!(
        "{name}: {} gold and {recovery_conversations} recovery conversations, every step checked against the real \
         calculator",
        gold.len()
    ));
    // The tokenizer's corpus is the gold conversations for every model (see `prepare_models`).
    let template = ChatTemplate::builtin();
    let rendered: Vec<String> = gold
        .iter()
        .map(|c| template.render(c, &schemas, false, &serde_json::Map::new()))
        .collect::<Result<_, _>>()?;
    let corpus_refs: Vec<&str> = rendered.iter().map(String::as_str).collect();

    let (size, sft_config) = settings.model(role);
    // A fresh model with a tokenizer trained on the corpus, or the base model (weights and tokenizer) to go on from.
    let fresh = dir.join("init");
    let init = match base {
        Some(base) => base.to_path_buf(),
        None => {
            let config = size.config(settings.vocab_size, settings.rope_theta);
            write_tiny_model_dir(&fresh, &config, &corpus_refs, settings.seed)
                .with_context(|| format!("writing {}", fresh.display()))?;
            fresh.clone()
        }
    };
    let tokenizer = ChatTokenizer::from_dir(&init)?;
    let examples = conversations
        .iter()
        .map(|(task, c)| tokenize_conversation(&tokenizer, &task.id, c, &schemas))
        .collect::<Result<Vec<_>, _>>()?;
    let model = load_model_dir(&init, &Device::Cpu)?;
    let parameters = model.config.num_parameters();
    let count = examples.len().max(1);
    // The gold conversations come first.
    let gold_trained_tokens: usize = examples[..gold.len()]
        .iter()
        .map(|e| e.trained_tokens())
        .sum();
    let gold_prompt_tokens: usize = examples[..gold.len()].iter().map(|e| e.prompt_len).sum();
    log(&format!(
        "{name}: {parameters} parameters{}, supervised training for {} steps of {} conversations \
         ({} tokens per conversation on average, {} of them trained)",
        base.map_or(String::new(), |b| format!(" from {}", b.display())),
        sft_config.steps,
        sft_config.batch_size,
        examples.iter().map(|e| e.tokens.len()).sum::<usize>() / count,
        examples.iter().map(|e| e.trained_tokens()).sum::<usize>() / count,
    ));
    let conversations = examples.len();
    let sft_started = Instant::now();
    let mut trainer = SftTrainer::new(&model, examples, sft_config)?;
    let log_every = (sft_config.steps / 8).max(1);
    // The cold start's checks: the criterion, the train problems it is checked on and their toolbox.
    let stop = match (role, settings.cold_start_stop) {
        (DemoModel::Student, Some(stop)) => Some((
            stop,
            &train[train.len() - stop.problems.min(train.len())..],
            calculator_toolbox(settings, calculator.sandbox())?,
        )),
        _ => None,
    };
    let mut checks = Vec::new();
    let history = trainer.run(|m| -> anyhow::Result<ControlFlow<()>> {
        if m.step % log_every == 0 || m.step == sft_config.steps {
            log(&format!(
                "  {name} sft step {:>4}/{}: loss {:.4}, tokens predicted with p > 1/2: {:.3} ({:.2} s/step)",
                m.step,
                sft_config.steps,
                m.loss,
                m.confident_fraction,
                sft_started.elapsed().as_secs_f64() / m.step as f64
            ));
        }
        let Some((stop, checked, toolbox)) = &stop else {
            return Ok(ControlFlow::Continue(()));
        };
        if !stop.checks_at(m.step) {
            return Ok(ControlFlow::Continue(()));
        }
        let (evaluation, _) = evaluate(&model.model, &tokenizer, toolbox, settings, checked)?;
        checks.push((m.step, evaluation.accuracy));
        log(&format!(
            "  {name} at step {}: greedy accuracy {:.3} on {} train problems (stops at {:.3})",
            m.step,
            evaluation.accuracy,
            checked.len(),
            stop.accuracy
        ));
        Ok(if evaluation.accuracy >= stop.accuracy {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    let jsonl: String = history
        .iter()
        .map(|m| serde_json::to_string(m).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let sft_log = dir.join("sft.jsonl");
    std::fs::write(&sft_log, jsonl).with_context(|| format!("writing {}", sft_log.display()))?;
    save_checkpoint(
        &model_dir,
        &model.config,
        &model.varmap,
        SaveDtype::F32,
        Some(&init),
    )?;
    let _ = std::fs::remove_dir_all(&fresh);
    let record = BuiltModel {
        key,
        conversations,
        recovery_conversations,
        gold_trained_tokens,
        gold_prompt_tokens,
        parameters,
        sft_last: history.last().copied(),
        checks,
        build_seconds: started.elapsed().as_secs_f64(),
        cached: false,
    };
    // Written last: its presence marks a complete cache entry.
    let text = serde_json::to_string_pretty(&record)?;
    std::fs::write(&record_path, &text)
        .with_context(|| format!("writing {}", record_path.display()))?;
    // Returned as a later run will read it: JSON does not round-trip every float to the last bit, and a run
    // that built the models must report the same numbers as one that found them cached.
    let record = serde_json::from_str(&text)?;
    Ok((model_dir, record))
}
