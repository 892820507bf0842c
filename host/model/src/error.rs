//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `sod-model`.
///
/// Errors about files name the file; errors about tensors name the tensor (with its Hugging Face name).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "renaming", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// `config.json` describes a model this crate cannot build.
    #[error("invalid model config: {0}")]
    Config(#[from] crate::config::ConfigError),

    /// The model directory lacks a tensor the model needs.
    #[error("tensor {name} is missing from the model weights ({location})")]
    MissingTensor {
        /// Hugging Face name of the tensor, e.g. `model.layers.0.mlp.up_proj.weight`.
        name: String,
        /// Where it was looked for.
        location: String,
    },

    /// A tensor exists but has the wrong shape for the config.
    #[error("tensor {name} has shape {found:?} but the config requires {expected:?}")]
    TensorShape {
        /// Hugging Face name of the tensor.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },

    /// A tensor has a dtype that cannot be turned into trainable f32 weights.
    #[error("tensor {name} has unsupported dtype {dtype:?} (expected bf16, f16 or f32)")]
    TensorDtype {
        /// Hugging Face name of the tensor.
        name: String,
        /// The dtype found.
        dtype: candle_core::DType,
    },

    /// A model directory lacks a required file or is otherwise malformed.
    #[error("model directory {dir}: {message}")]
    ModelDir {
        /// The directory concerned.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A safetensors file could not be opened or read.
    #[error("cannot read safetensors file(s) {files}: {message}")]
    Safetensors {
        /// The files concerned.
        files: String,
        /// What went wrong.
        message: String,
    },

    /// Inputs to a model call are inconsistent (shapes, lengths, ids out of range...).
    #[error("invalid input: {0}")]
    Input(String),

    /// The tokenizer failed or its files are malformed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(String),
}

impl ModelError {
    /// Builds an [`ModelError::Io`] from an operation name and a path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ModelError::Io { op, path, source }
    }
}

/// Result alias with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
