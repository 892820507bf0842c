//! Log-probs of finished trajectories under a model without gradients: the teacher's (for the distillation
//! signal) and the current student's (handed to the loss plugin).

use std::path::Path;

use candle_core::{Device, Tensor};
use sod_model::{ChatTokenizer, Qwen3, load_model_dir};

use crate::error::{Result, TrainError};
use crate::rollout::Trajectory;

/// The teacher: a frozen model sharing the student's tokenizer.
pub struct Teacher {
    model: Qwen3,
}

impl Teacher {
    /// Loads the teacher from a Hugging Face directory and checks that it reads the student's tokens the same
    /// way: the same vocabulary (every token string with the same id) and the same number of embedding rows.
    pub fn load(
        dir: &Path,
        device: &Device,
        student: &Qwen3,
        student_tokenizer: &ChatTokenizer,
    ) -> Result<Self> {
        let tokenizer = ChatTokenizer::from_dir(dir)?;
        check_same_tokenizer(student_tokenizer, &tokenizer)?;
        let teacher = load_model_dir(dir, device)?;
        let (s, t) = (student.config().vocab_size, teacher.config.vocab_size);
        if s != t {
            return Err(TrainError::TeacherMismatch(format!(
                "the student's vocab_size is {s} but the teacher's is {t}; log-probs of the same token ids would \
                 not be comparable"
            )));
        }
        Ok(Teacher {
            model: teacher.model.detached(),
        })
    }

    /// The teacher's log-prob of every response token of each trajectory (see [`response_logprobs`]).
    pub fn logprobs(
        &self,
        trajectories: &[Trajectory],
        micro_batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        response_logprobs(&self.model, trajectories, micro_batch)
    }
}

/// Fails unless both tokenizers map every token string to the same id.
pub fn check_same_tokenizer(student: &ChatTokenizer, teacher: &ChatTokenizer) -> Result<()> {
    let (s, t) = (
        student.tokenizer().get_vocab(true),
        teacher.tokenizer().get_vocab(true),
    );
    if s.len() != t.len() {
        return Err(TrainError::TeacherMismatch(format!(
            "the student's tokenizer has {} tokens, the teacher's {}; SOD and OPD need the same tokenizer",
            s.len(),
            t.len()
        )));
    }
    let mut differing: Vec<&String> = s
        .iter()
        .filter(|(token, id)| t.get(*token) != Some(id))
        .map(|(token, _)| token)
        .collect();
    if !differing.is_empty() {
        differing.sort();
        return Err(TrainError::TeacherMismatch(format!(
            "{} tokens have different ids in the two tokenizers (e.g. {:?}); SOD and OPD need the same tokenizer",
            differing.len(),
            differing[0]
        )));
    }
    Ok(())
}

/// `log p(token | everything before it)` under `model` for every response token of each trajectory, without
/// building a graph. Trajectories are run `micro_batch` at a time, right-padded.
pub fn response_logprobs(
    model: &Qwen3,
    trajectories: &[Trajectory],
    micro_batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let model = model.detached();
    let mut out = Vec::with_capacity(trajectories.len());
    for chunk in trajectories.chunks(micro_batch.max(1)) {
        let (ids, mask, len) = right_padded(chunk, model.device())?;
        let logprobs = model
            .next_token_logprobs(&ids, Some(&mask))?
            .to_vec2::<f32>()?;
        for (traj, row) in chunk.iter().zip(logprobs) {
            // Response token j sits at position prompt_len + j; its log-prob is predicted at the position before.
            let start = traj.prompt_len - 1;
            let end = traj.tokens.len() - 1;
            debug_assert!(end < len);
            out.push(row[start..end].to_vec());
        }
    }
    Ok(out)
}

/// Token ids `[b, len]` and padding mask `[b, len]` of right-padded trajectories, and `len`.
pub(crate) fn right_padded(
    chunk: &[Trajectory],
    device: &Device,
) -> Result<(Tensor, Tensor, usize)> {
    let len = chunk
        .iter()
        .map(|t| t.tokens.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut ids = Vec::with_capacity(chunk.len() * len);
    let mut mask = Vec::with_capacity(chunk.len() * len);
    for traj in chunk {
        if traj.prompt_len == 0 {
            return Err(TrainError::Config(format!(
                "trajectory {:?}/{} has an empty prompt",
                traj.prompt_id, traj.sample_index
            )));
        }
        let pad = len - traj.tokens.len();
        ids.extend(
            traj.tokens
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0u32, pad)),
        );
        mask.extend(
            std::iter::repeat_n(1u32, traj.tokens.len()).chain(std::iter::repeat_n(0u32, pad)),
        );
    }
    let b = chunk.len();
    Ok((
        Tensor::from_vec(ids, (b, len), device)?,
        Tensor::from_vec(mask, (b, len), device)?,
        len,
    ))
}
