//! The trainer's error type.

use std::path::PathBuf;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run configuration is invalid; the message names the field and what is expected.
    #[error("invalid run config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A dataset row is malformed.
    #[error("dataset {path}, line {line}: {message}")]
    Dataset {
        /// The dataset file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A row of a Parquet dataset is malformed.
    #[error("dataset {path}, row {row} (counting from 0): {message}")]
    DatasetRow {
        /// The dataset file.
        path: PathBuf,
        /// 0-based row number.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A dataset as a whole cannot be used (not Parquet, no rows).
    #[error("dataset {path}: {message}")]
    DatasetFile {
        /// The dataset file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model layer failed (loading, generation, forward pass, checkpoint).
    #[error(transparent)]
    Model(#[from] sod_model::ModelError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The loss plugin failed or refused the run.
    #[error(transparent)]
    Loss(#[from] sod_loss::LossError),
    /// The tool sandbox could not be set up or a tool could not be loaded.
    #[error(transparent)]
    Sandbox(#[from] sod_sandbox::SandboxError),
    /// Student and teacher cannot be paired (different tokenizers or vocabularies).
    #[error("teacher and student do not match: {0}")]
    TeacherMismatch(String),
    /// A checkpoint to resume from is missing or inconsistent.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// Training produced a non-finite value (loss or gradient norm).
    #[error("training diverged at step {step}: {what}")]
    Diverged {
        /// The optimiser step.
        step: u64,
        /// What became non-finite.
        what: String,
    },
}

impl TrainError {
    /// A closure that wraps an I/O error with the action and path, for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io {
            action,
            path,
            source,
        }
    }
}

/// The trainer's result type.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
