//! Scores of finished trajectories without gradients: the current student's and the teacher's log-probs of every
//! generated token at the rollout temperature (the distillation signal and the plugin's batch), and, for a loss
//! that asks for one, the full-distribution divergence between them at every generated position.

use std::path::Path;

use candle_core::{D, Device, Tensor};
use sod_loss_abi::DivergenceSpec;
use sod_model::{ChatTokenizer, Qwen3, load_model_dir};

use crate::divergence::{CHUNK_ELEMENTS, divergence, rows_per_chunk, tempered_log_softmax};
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

    /// This teacher computing in `compute` (see [`Qwen3::with_compute_dtype`]).
    pub fn with_compute_dtype(self, compute: sod_model::ComputeDtype) -> Self {
        Teacher {
            model: self.model.with_compute_dtype(compute),
        }
    }

    /// A teacher from a model already loaded (benchmarks, tests); the caller vouches for the tokenizer.
    pub fn from_model(model: Qwen3) -> Self {
        Teacher {
            model: model.detached(),
        }
    }

    /// The frozen teacher model.
    pub fn model(&self) -> &Qwen3 {
        &self.model
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

/// Token ids `[b, len]` and padding mask `[b, len]` of right-padded trajectories, and `len`.
pub(crate) fn right_padded<T: AsRef<Trajectory>>(
    chunk: &[T],
    device: &Device,
) -> Result<(Tensor, Tensor, usize)> {
    let len = chunk
        .iter()
        .map(|t| t.as_ref().tokens.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut ids = Vec::with_capacity(chunk.len() * len);
    let mut mask = Vec::with_capacity(chunk.len() * len);
    for traj in chunk {
        let traj = traj.as_ref();
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

/// The generated positions of a batch, in trajectory order: the rows of trajectory `i`'s generated tokens in the
/// batch's gathered hidden states are `start[i]..start[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRows {
    /// First row of each trajectory (one more entry than trajectories: the last is the row count).
    pub start: Vec<usize>,
}

impl GeneratedRows {
    /// The rows of `trajectories`' generated tokens.
    pub fn of<T: AsRef<Trajectory>>(trajectories: &[T]) -> Self {
        let mut start = Vec::with_capacity(trajectories.len() + 1);
        start.push(0);
        for t in trajectories {
            start.push(start.last().copied().unwrap_or(0) + t.as_ref().generated_tokens());
        }
        GeneratedRows { start }
    }

    /// Number of generated positions.
    pub fn len(&self) -> usize {
        self.start.last().copied().unwrap_or(0)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hidden states `[n, hidden]` at the positions that predict the generated tokens of `chunk` (in order), from
/// the model's final hidden states `hidden: [b, len, hidden]` of the right-padded chunk, and the tokens they
/// predict. Differentiable when `hidden` is.
pub(crate) fn generated_hidden<T: AsRef<Trajectory>>(
    hidden: &Tensor,
    chunk: &[T],
) -> Result<(Tensor, Vec<u32>)> {
    let (b, len, width) = hidden.dims3()?;
    let mut index = Vec::new();
    let mut targets = Vec::new();
    for (row, traj) in chunk.iter().enumerate() {
        let traj = traj.as_ref();
        for (j, &m) in traj.mask.iter().enumerate() {
            if m == 1 {
                // Response token j sits at position prompt_len + j and is predicted at the position before.
                index.push((row * len + traj.prompt_len + j - 1) as u32);
                targets.push(traj.tokens[traj.prompt_len + j]);
            }
        }
    }
    let n = index.len();
    let index = Tensor::from_vec(index, n, hidden.device())?;
    let rows = hidden.reshape((b * len, width))?.index_select(&index, 0)?;
    Ok((rows, targets))
}

/// Picks `lp[r, targets[r]]` of each row: `[n]`.
pub(crate) fn pick(lp: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let n = targets.len();
    let idx = Tensor::from_vec(targets.to_vec(), (n, 1), lp.device())?;
    Ok(lp.gather(&idx, D::Minus1)?.squeeze(1)?)
}

/// What the trainer knows of a batch before its update, all without gradients and at the rollout temperature.
#[derive(Debug)]
pub struct Scores {
    /// Current student's log-prob of each response token, per trajectory (0 where the mask is 0).
    pub current: Vec<Vec<f32>>,
    /// Teacher's log-prob of each response token, per trajectory (0 where the mask is 0); `None` without one.
    pub teacher: Option<Vec<Vec<f32>>>,
    /// The requested divergence at each response token, per trajectory (0 where the mask is 0).
    pub divergence: Option<Vec<Vec<f32>>>,
    /// The teacher's final hidden states at the generated positions (rows of [`GeneratedRows`], after
    /// `teacher_order`), kept for the update's divergence term; `None` without a divergence.
    pub teacher_rows: Option<Tensor>,
}

/// Scores `trajectories` (see [`Scores`]) `micro_batch` at a time: current student and teacher log-probs of the
/// generated tokens under `softmax(logits / temperature)`, the distribution the rollout sampled from, and, with
/// `divergence_at = Some((spec, t))`, the divergence between their whole next-token distributions, both taken at
/// temperature `t`. With `teacher_order`, the divergence's teacher distribution at generated row `r` is the one it
/// has at row `teacher_order[r]` (the null-signal control: the teacher's guidance shuffled across positions); the
/// teacher log-probs of the sampled tokens stay the real ones. Logits exist `CHUNK_ELEMENTS` at a time, whatever
/// the vocabulary.
pub fn score<T: AsRef<Trajectory>>(
    student: &Qwen3,
    teacher: Option<&Teacher>,
    trajectories: &[T],
    micro_batch: usize,
    temperature: f64,
    divergence_at: Option<(&DivergenceSpec, f64)>,
    teacher_order: Option<&[u32]>,
) -> Result<Scores> {
    let spec = divergence_at.map(|(spec, _)| spec);
    let student = student.detached();
    let rows = GeneratedRows::of(trajectories);
    let mut student_rows = Vec::new();
    let mut teacher_rows = Vec::new();
    let mut targets = Vec::with_capacity(rows.len());
    for chunk in trajectories.chunks(micro_batch.max(1)) {
        let (ids, mask, _) = right_padded(chunk, student.device())?;
        let hidden = student.forward_hidden(&ids, Some(&mask))?;
        let (h, t) = generated_hidden(&hidden, chunk)?;
        student_rows.push(h);
        targets.extend(t);
        if let Some(teacher) = teacher {
            let hidden = teacher.model.forward_hidden(&ids, Some(&mask))?;
            teacher_rows.push(generated_hidden(&hidden, chunk)?.0);
        }
    }
    let zeros = || -> Vec<Vec<f32>> {
        trajectories
            .iter()
            .map(|t| vec![0.0; t.as_ref().mask.len()])
            .collect()
    };
    let mut scores = Scores {
        current: zeros(),
        teacher: teacher.map(|_| zeros()),
        divergence: spec.filter(|_| teacher.is_some()).map(|_| zeros()),
        teacher_rows: None,
    };
    if rows.is_empty() {
        return Ok(scores);
    }
    let student_rows = Tensor::cat(&student_rows, 0)?;
    // The teacher's rows as they are (its log-probs of the sampled tokens are always the real ones), and as the
    // divergence sees them (shuffled under the null-signal control).
    let (real_rows, teacher_rows) = match teacher {
        None => (None, None),
        Some(_) => {
            let all = Tensor::cat(&teacher_rows, 0)?;
            let seen = match teacher_order {
                Some(order) => {
                    let order = Tensor::from_vec(order.to_vec(), order.len(), all.device())?;
                    all.index_select(&order, 0)?
                }
                None => all.clone(),
            };
            (Some(all), Some(seen))
        }
    };
    let vocab = student.config().vocab_size;
    let step = rows_per_chunk(CHUNK_ELEMENTS, vocab);
    let (mut current, mut teacher_lp, mut div) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < rows.len() {
        let len = step.min(rows.len() - start);
        let picked = &targets[start..start + len];
        // Each model's logits once per chunk, at each temperature they are needed at.
        let s_logits = student.lm_head(&student_rows.narrow(0, start, len)?)?;
        let ls = tempered_log_softmax(&s_logits, temperature)?;
        current.extend(pick(&ls, picked)?.to_vec1::<f32>()?);
        if let (Some(t), Some(t_rows), Some(real)) = (teacher, &teacher_rows, &real_rows) {
            let t_logits = t.model.lm_head(&real.narrow(0, start, len)?)?;
            let lt = tempered_log_softmax(&t_logits, temperature)?;
            teacher_lp.extend(pick(&lt, picked)?.to_vec1::<f32>()?);
            if let Some((spec, t_div)) = divergence_at {
                let ls_d = if t_div == temperature {
                    ls
                } else {
                    tempered_log_softmax(&s_logits, t_div)?
                };
                let lt_d = match (teacher_order.is_some(), t_div == temperature) {
                    (false, true) => lt,
                    (false, false) => tempered_log_softmax(&t_logits, t_div)?,
                    // The shuffled rows are other positions' teacher states: their own logits.
                    (true, _) => tempered_log_softmax(
                        &t.model.lm_head(&t_rows.narrow(0, start, len)?)?,
                        t_div,
                    )?,
                };
                div.extend(divergence(&ls_d, &lt_d, spec)?.to_vec1::<f32>()?);
            }
        }
        start += len;
    }
    // Back to per-trajectory arrays over response tokens.
    for (i, traj) in trajectories.iter().enumerate() {
        let mut r = rows.start[i];
        for (j, &m) in traj.as_ref().mask.iter().enumerate() {
            if m == 1 {
                scores.current[i][j] = current[r];
                if let Some(t) = &mut scores.teacher {
                    t[i][j] = teacher_lp[r];
                }
                if let Some(d) = &mut scores.divergence {
                    d[i][j] = div[r];
                }
                r += 1;
            }
        }
    }
    if scores.divergence.is_some() {
        scores.teacher_rows = teacher_rows;
    }
    Ok(scores)
}
