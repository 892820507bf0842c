//! Hugging Face model directories: loading into trainable f32 variables, random initialisation and atomic
//! checkpoint saving.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::config::Qwen3Config;
use crate::error::{ModelError, Result};
use crate::qwen3::{Qwen3, parameter_shapes};

/// Files copied from a source directory by [`save_checkpoint`] when they exist (tokenizer and generation
/// settings; the weights and `config.json` are written, never copied).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
];

/// A model ready for training: its config, the `VarMap` holding every trainable f32 variable under its Hugging
/// Face name (hand `varmap.all_vars()` to the optimiser), and the model built on those variables.
pub struct TrainableModel {
    /// The validated config.
    pub config: Qwen3Config,
    /// Trainable variables, keyed by Hugging Face tensor name.
    pub varmap: VarMap,
    /// The model; its weights share storage with `varmap`.
    pub model: Qwen3,
    /// Tensors present in the weight files that the model does not use (e.g. `lm_head.weight` of a tied model).
    pub ignored_tensors: Vec<String>,
    /// The dtype of the weight files it was loaded from (the widest, when they mix; f32 for a random model):
    /// checkpoints are written in it unless asked otherwise, so that bf16 in gives bf16 out.
    pub source_dtype: SaveDtype,
}

/// The dtype weights are written in by [`save_checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SaveDtype {
    /// 32-bit floats: exact round trip of the trainable variables.
    #[serde(rename = "float32")]
    F32,
    /// bfloat16: half the size, the usual published format; rounding loses precision.
    #[serde(rename = "bfloat16")]
    Bf16,
    /// IEEE half precision (older published checkpoints).
    #[serde(rename = "float16")]
    F16,
}

impl SaveDtype {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            SaveDtype::F32 => DType::F32,
            SaveDtype::Bf16 => DType::BF16,
            SaveDtype::F16 => DType::F16,
        }
    }

    /// The name `config.json` gives it (`torch_dtype`): `float32`, `bfloat16`, `float16`.
    pub fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
            SaveDtype::F16 => "float16",
        }
    }

    /// The save dtype of weights stored as `dtype` (f64 is saved as f32); `None` for integer dtypes.
    pub fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 | DType::F64 => Some(SaveDtype::F32),
            DType::BF16 => Some(SaveDtype::Bf16),
            DType::F16 => Some(SaveDtype::F16),
            _ => None,
        }
    }

    /// Bytes per value.
    fn width(self) -> usize {
        match self {
            SaveDtype::F32 => 4,
            SaveDtype::Bf16 | SaveDtype::F16 => 2,
        }
    }
}

impl std::fmt::Debug for TrainableModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableModel")
            .field("config", &self.config)
            .field("variables", &self.varmap.all_vars().len())
            .field("ignored_tensors", &self.ignored_tensors)
            .field("source_dtype", &self.source_dtype)
            .finish_non_exhaustive()
    }
}

impl TrainableModel {
    /// Loads a Hugging Face model directory (see [`load_model_dir`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        load_model_dir(dir, device)
    }

    /// A randomly initialised model (see [`init_random`]).
    pub fn init_random(config: &Qwen3Config, seed: u64, device: &Device) -> Result<Self> {
        init_random(config, seed, device)
    }

    /// Writes the model to `dir` atomically (see [`save_checkpoint`]).
    pub fn save_checkpoint(
        &self,
        dir: &Path,
        dtype: SaveDtype,
        copy_files_from: Option<&Path>,
    ) -> Result<()> {
        save_checkpoint(dir, &self.config, &self.varmap, dtype, copy_files_from)
    }
}

/// Builds the model on the variables of `varmap` and checks that the model used exactly the variables the
/// config requires: none missing, none misshapen, and none created behind our back.
fn build(
    config: &Qwen3Config,
    varmap: VarMap,
    device: &Device,
    ignored_tensors: Vec<String>,
    source_dtype: SaveDtype,
) -> Result<TrainableModel> {
    let before = lock_len(&varmap)?;
    let model = Qwen3::from_varmap(config, &varmap, device)?;
    let after = lock_len(&varmap)?;
    if after != before {
        return Err(ModelError::Input(format!(
            "building the model changed the number of variables from {before} to {after}"
        )));
    }
    Ok(TrainableModel {
        config: config.clone(),
        varmap,
        model,
        ignored_tensors,
        source_dtype,
    })
}

fn lock_len(varmap: &VarMap) -> Result<usize> {
    Ok(varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Input("the VarMap's lock is poisoned".to_string()))?
        .len())
}

/// The safetensors files of a model directory: the shards named by `model.safetensors.index.json`, else
/// `model.safetensors`, else every `*.safetensors` file (sorted).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = fs::read_to_string(&index).map_err(ModelError::io("reading", &index))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: index.clone(),
                source,
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::ModelDir {
                dir: dir.to_path_buf(),
                message: "model.safetensors.index.json has no \"weight_map\" object".to_string(),
            })?;
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| ModelError::ModelDir {
                dir: dir.to_path_buf(),
                message: format!("model.safetensors.index.json maps {tensor} to a non-string"),
            })?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(ModelError::ModelDir {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "model.safetensors.index.json names shard {file:?} outside the directory"
                    ),
                });
            }
            files.insert(file.to_string());
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(ModelError::ModelDir {
                dir: dir.to_path_buf(),
                message: format!(
                    "shard {} named by the index does not exist",
                    missing.display()
                ),
            });
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(ModelError::io("listing", dir))? {
        let path = entry.map_err(ModelError::io("listing", dir))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelError::ModelDir {
            dir: dir.to_path_buf(),
            message: "no model.safetensors, model.safetensors.index.json or *.safetensors file"
                .to_string(),
        });
    }
    Ok(files)
}

/// Loads a Hugging Face Qwen3 directory (`config.json` plus safetensors weights, single or sharded) into trainable
/// f32 variables on `device`: bf16/f16/f32 tensors are converted to f32 and inserted under their Hugging Face
/// names into a fresh `VarMap`, from which the model is built. A tensor the config requires that the files lack
/// or whose shape differs is an error naming it.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<TrainableModel> {
    let config = Qwen3Config::from_file(&dir.join("config.json"))?;
    let files = weight_files(dir)?;
    let listing = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // SAFETY: the files are memory-mapped read-only; like every mmap-based loader we rely on them not being
    // truncated by another process while they are mapped (the mapping is dropped at the end of this function,
    // after every tensor was copied into its own f32 buffer).
    let st =
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
            ModelError::Safetensors {
                files: listing.clone(),
                message: e.to_string(),
            }
        })?;
    let expected = parameter_shapes(&config);
    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let varmap = VarMap::new();
    let mut source_dtype: Option<SaveDtype> = None;
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Input("the VarMap's lock is poisoned".to_string()))?;
        for (name, shape) in &expected {
            let view = st.get(name).map_err(|_| ModelError::MissingTensor {
                name: name.clone(),
                location: listing.clone(),
            })?;
            if view.shape() != shape.as_slice() {
                return Err(ModelError::TensorShape {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: view.shape().to_vec(),
                });
            }
            let tensor = st.load(name, device).map_err(|e| ModelError::Safetensors {
                files: listing.clone(),
                message: format!("tensor {name}: {e}"),
            })?;
            let Some(dtype) = SaveDtype::of(tensor.dtype()) else {
                return Err(ModelError::TensorDtype {
                    name: name.clone(),
                    dtype: tensor.dtype(),
                });
            };
            if source_dtype.is_none_or(|d| dtype.width() > d.width()) {
                source_dtype = Some(dtype);
            }
            let var = Var::from_tensor(&tensor.to_dtype(DType::F32)?)?;
            data.insert(name.clone(), var);
        }
    }
    let mut ignored: Vec<String> = st
        .tensors()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !expected_names.contains(name.as_str()))
        .collect();
    ignored.sort();
    build(
        &config,
        varmap,
        device,
        ignored,
        source_dtype.unwrap_or(SaveDtype::F32),
    )
}

/// A 32-byte seed from a domain string and parts, by SHA-256.
pub(crate) fn derive_seed(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A randomly initialised model, deterministic in `(config, seed)`: weight matrices are drawn from
/// `N(0, initializer_range²)` and norm weights are 1, like Hugging Face's initialisation. Each tensor has its own
/// random stream derived from the seed and its name, so changing the depth leaves the other tensors unchanged.
pub fn init_random(config: &Qwen3Config, seed: u64, device: &Device) -> Result<TrainableModel> {
    config.validate()?;
    let std = config.initializer_range;
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Input("the VarMap's lock is poisoned".to_string()))?;
        for (name, shape) in parameter_shapes(config) {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                let mut rng = ChaCha8Rng::from_seed(derive_seed(
                    "sod-model/init",
                    &[&seed.to_le_bytes(), name.as_bytes()],
                ));
                normal_samples(&mut rng, n, std)
            };
            let tensor = Tensor::from_vec(values, shape, device)?;
            data.insert(name, Var::from_tensor(&tensor)?);
        }
    }
    build(config, varmap, device, Vec::new(), SaveDtype::F32)
}

/// `n` samples of `N(0, std²)` by the Box–Muller transform.
fn normal_samples(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Writes a Hugging Face model directory at `dir`: `config.json` (with `torch_dtype` set to the saved dtype),
/// `model.safetensors` holding every variable of `varmap` in `dtype`, and the tokenizer files
/// ([`TOKENIZER_FILES`]) found in `copy_files_from`.
///
/// The write is atomic: everything goes into a temporary directory beside `dir`, each file and the directory are
/// fsynced, and the directory is renamed into place. An existing `dir` is first renamed aside and removed only
/// after the new one is in place, so at every moment `dir` is either absent, the complete old checkpoint, or the
/// complete new one.
pub fn save_checkpoint(
    dir: &Path,
    config: &Qwen3Config,
    varmap: &VarMap,
    dtype: SaveDtype,
    copy_files_from: Option<&Path>,
) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| {
            ModelError::Input(format!(
                "checkpoint path {} has no final component",
                dir.display()
            ))
        })?
        .to_string_lossy()
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(ModelError::io("creating", &parent))?;
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let tmp = parent.join(format!(".{name}.tmp-{unique}"));
    let result = write_checkpoint_files(&tmp, config, varmap, dtype, copy_files_from)
        .and_then(|()| swap_into_place(&tmp, dir, &parent, &format!(".{name}.old-{unique}")));
    if result.is_err() {
        // Best effort: the temporary directory is ours and incomplete.
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn write_checkpoint_files(
    tmp: &Path,
    config: &Qwen3Config,
    varmap: &VarMap,
    dtype: SaveDtype,
    copy_files_from: Option<&Path>,
) -> Result<()> {
    fs::create_dir(tmp).map_err(ModelError::io("creating", tmp))?;
    let mut config = config.clone();
    config.torch_dtype = Some(dtype.torch_name().to_string());
    // transformers 4.56 and later write the dtype under `dtype` as well; keep the two in agreement.
    if config.extra.contains_key("dtype") {
        config
            .extra
            .insert("dtype".into(), dtype.torch_name().into());
    }
    let config_path = tmp.join("config.json");
    fs::write(&config_path, config.to_json_string())
        .map_err(ModelError::io("writing", &config_path))?;
    fsync_file(&config_path)?;

    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Input("the VarMap's lock is poisoned".to_string()))?;
        data.iter()
            .map(|(name, var)| {
                Ok((
                    name.clone(),
                    var.as_tensor().detach().to_dtype(dtype.dtype())?,
                ))
            })
            .collect::<Result<_>>()?
    };
    let weights = tmp.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|e| ModelError::Safetensors {
        files: weights.display().to_string(),
        message: e.to_string(),
    })?;
    fsync_file(&weights)?;

    if let Some(src) = copy_files_from {
        for file in TOKENIZER_FILES {
            let from = src.join(file);
            if from.is_file() {
                let to = tmp.join(file);
                fs::copy(&from, &to).map_err(ModelError::io("copying", &from))?;
                fsync_file(&to)?;
            }
        }
    }
    // What transformers' `save_pretrained` writes for a model without generation settings of its own: the
    // special tokens of the config.
    let generation = tmp.join("generation_config.json");
    if !generation.exists() {
        let mut record = serde_json::Map::new();
        if let Some(bos) = config.bos_token_id {
            record.insert("bos_token_id".into(), bos.into());
        }
        match config.eos_token_id.as_slice() {
            [] => {}
            [one] => {
                record.insert("eos_token_id".into(), (*one).into());
            }
            many => {
                record.insert("eos_token_id".into(), many.to_vec().into());
            }
        }
        record.insert("_from_model_config".into(), true.into());
        let text =
            serde_json::to_string_pretty(&serde_json::Value::Object(record)).unwrap_or_default();
        fs::write(&generation, text).map_err(ModelError::io("writing", &generation))?;
        fsync_file(&generation)?;
    }
    fsync_dir(tmp)
}

fn swap_into_place(tmp: &Path, dir: &Path, parent: &Path, old_name: &str) -> Result<()> {
    let old = parent.join(old_name);
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(ModelError::io("renaming", dir))?;
    }
    if let Err(e) = fs::rename(tmp, dir) {
        if had_old {
            // Put the previous checkpoint back; the original error is what matters.
            let _ = fs::rename(&old, dir);
        }
        return Err(ModelError::io("renaming", tmp)(e));
    }
    fsync_dir(parent)?;
    if had_old {
        fs::remove_dir_all(&old).map_err(ModelError::io("removing", &old))?;
    }
    Ok(())
}

fn fsync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(ModelError::io("syncing", path))
}

fn fsync_dir(path: &Path) -> Result<()> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is a no-op that may fail harmlessly.
    match fs::File::open(path).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if cfg!(unix) => Err(ModelError::io("syncing", path)(e)),
        Err(_) => Ok(()),
    }
}
