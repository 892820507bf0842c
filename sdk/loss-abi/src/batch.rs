//! Batches: the owned [`Batch`] a host builds, the borrowed [`BatchView`] a plugin reads, and the
//! validation both sides share.

use std::ops::Range;

use crate::ffi::{SOD_LOSS_FLAG_ALL, SOD_LOSS_NO_STEP, SodLossBatch};
use crate::math;

/// Why a batch was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// An array has the wrong number of values.
    #[error("array `{array}` has {found} values, expected {expected} ({per})")]
    Length {
        /// The array's name.
        array: &'static str,
        /// How many values it should have.
        expected: usize,
        /// How many it has.
        found: usize,
        /// What the expected count is made of, e.g. "one per token".
        per: &'static str,
    },
    /// The sequence offsets are not 0, non-decreasing, ending at the number of tokens.
    #[error("seq_offsets: {0}")]
    Offsets(String),
    /// A mask value other than 0 or 1.
    #[error("mask[{index}] is {value}, expected 0 or 1")]
    MaskValue {
        /// Token position.
        index: usize,
        /// The value found.
        value: u8,
    },
    /// A step index that breaks the step rules.
    #[error("step_index[{index}]: {problem}")]
    StepIndex {
        /// Token position.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// A NaN or infinite log-prob at a generated token.
    #[error(
        "{array}[{index}] is {value} at a generated token (mask 1); log-probs there must be finite"
    )]
    NonFiniteLogprob {
        /// The array's name.
        array: &'static str,
        /// Token position.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A NaN or infinite reward.
    #[error("reward[{seq}] is {value}; rewards must be finite")]
    NonFiniteReward {
        /// Sequence index.
        seq: usize,
        /// The value found.
        value: f32,
    },
    /// Flag bits this ABI version does not define.
    #[error("flags[{seq}] is {flags:#x}; only bits {known:#x} are defined")]
    UnknownFlags {
        /// Sequence index.
        seq: usize,
        /// The flags found.
        flags: u32,
        /// The defined bits.
        known: u32,
    },
    /// A required pointer of a raw batch is null.
    #[error("pointer `{0}` is null")]
    NullPointer(&'static str),
    /// A count does not fit this platform's address space.
    #[error("{0} does not fit in memory on this platform")]
    TooLarge(&'static str),
}

/// An owned batch, as a host (the trainer, `sod loss`) builds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Log-prob of each sampled token under the behaviour (old) student.
    pub old_logprob: Vec<f32>,
    /// Log-prob under the current student (detached). `None` means equal to `old_logprob`, as in
    /// the first optimisation epoch on fresh samples.
    pub cur_logprob: Option<Vec<f32>>,
    /// Log-prob under the teacher; `None` when the run has no teacher.
    pub teacher_logprob: Option<Vec<f32>>,
    /// 1 where the policy generated the token; 0 for prompt, tool output, padding.
    pub mask: Vec<u8>,
    /// Step index per token; `None` derives it from the mask (see [`math::derive_step_indices`]).
    pub step_index: Option<Vec<u32>>,
    /// `sequences + 1` offsets into the token arrays.
    pub seq_offsets: Vec<u64>,
    /// Outcome reward per sequence.
    pub reward: Vec<f32>,
    /// Group id per sequence (samples of one prompt share it).
    pub group: Vec<u32>,
    /// Flags per sequence ([`crate::SOD_LOSS_FLAG_TRUNCATED`], [`crate::SOD_LOSS_FLAG_INFRA_FAULT`]).
    pub flags: Vec<u32>,
    /// (v2) The requested full-distribution divergence per token (detached); `None` when the loss asked for none.
    pub divergence: Option<Vec<f32>>,
}

impl Batch {
    /// Number of token positions.
    pub fn num_tokens(&self) -> usize {
        self.old_logprob.len()
    }

    /// Number of sequences.
    pub fn num_sequences(&self) -> usize {
        self.seq_offsets.len().saturating_sub(1)
    }

    /// Validates the batch, derives step indices if none are given, and calls `f` with a view
    /// of the validated batch.
    pub fn with_view<R>(&self, f: impl FnOnce(BatchView<'_>) -> R) -> Result<R, BatchError> {
        let derived;
        let steps: &[u32] = match &self.step_index {
            Some(steps) => steps,
            None => {
                // Deriving reads the mask through the offsets: check those two first.
                check_len("mask", &self.mask, self.num_tokens(), "one per token")?;
                check_offsets(&self.seq_offsets, self.num_tokens())?;
                derived = math::derive_step_indices(&self.mask, &self.seq_offsets);
                &derived
            }
        };
        let view = BatchView {
            old_logprob: &self.old_logprob,
            cur_logprob: self.cur_logprob.as_deref().unwrap_or(&self.old_logprob),
            teacher_logprob: self.teacher_logprob.as_deref(),
            mask: &self.mask,
            step_index: steps,
            seq_offsets: &self.seq_offsets,
            reward: &self.reward,
            group: &self.group,
            flags: &self.flags,
            divergence: self.divergence.as_deref(),
        };
        view.validate()?;
        Ok(f(view))
    }

    /// Returns the batch with its sequences reordered: sequence `order[i]` of `self` becomes
    /// sequence `i`. Useful to check that a loss does not depend on batch order.
    ///
    /// # Panics
    /// If `order` is not a permutation of the sequence indices or the offsets are invalid.
    pub fn permuted(&self, order: &[usize]) -> Batch {
        assert_eq!(
            order.len(),
            self.num_sequences(),
            "order must cover every sequence"
        );
        let ranges: Vec<Range<usize>> = (0..self.num_sequences())
            .map(|i| self.seq_offsets[i] as usize..self.seq_offsets[i + 1] as usize)
            .collect();
        let gather_tokens = |values: &[f32]| -> Vec<f32> {
            order
                .iter()
                .flat_map(|&i| values[ranges[i].clone()].iter().copied())
                .collect()
        };
        let mut seq_offsets = vec![0u64];
        for &i in order {
            let last = *seq_offsets.last().unwrap_or(&0);
            seq_offsets.push(last + ranges[i].len() as u64);
        }
        Batch {
            old_logprob: gather_tokens(&self.old_logprob),
            cur_logprob: self.cur_logprob.as_deref().map(gather_tokens),
            teacher_logprob: self.teacher_logprob.as_deref().map(gather_tokens),
            mask: order
                .iter()
                .flat_map(|&i| self.mask[ranges[i].clone()].iter().copied())
                .collect(),
            step_index: self.step_index.as_ref().map(|steps| {
                order
                    .iter()
                    .flat_map(|&i| steps[ranges[i].clone()].iter().copied())
                    .collect()
            }),
            seq_offsets,
            reward: order.iter().map(|&i| self.reward[i]).collect(),
            group: order.iter().map(|&i| self.group[i]).collect(),
            flags: order.iter().map(|&i| self.flags[i]).collect(),
            divergence: self.divergence.as_deref().map(gather_tokens),
        }
    }
}

/// A borrowed, validated-on-demand view of a batch: what a plugin computes on.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// Log-prob under the behaviour (old) student, one per token.
    pub old_logprob: &'a [f32],
    /// Log-prob under the current student (detached), one per token.
    pub cur_logprob: &'a [f32],
    /// Log-prob under the teacher, one per token, if the run has a teacher.
    pub teacher_logprob: Option<&'a [f32]>,
    /// Loss mask, one per token.
    pub mask: &'a [u8],
    /// Step index, one per token ([`SOD_LOSS_NO_STEP`] where the mask is 0).
    pub step_index: &'a [u32],
    /// `sequences + 1` offsets.
    pub seq_offsets: &'a [u64],
    /// Reward per sequence.
    pub reward: &'a [f32],
    /// Group id per sequence.
    pub group: &'a [u32],
    /// Flags per sequence.
    pub flags: &'a [u32],
    /// (v2) The requested divergence per token, if the loss asked for one.
    pub divergence: Option<&'a [f32]>,
}

impl<'a> BatchView<'a> {
    /// Builds a view over a raw ABI batch and validates it.
    ///
    /// # Safety
    /// Every non-null pointer of `raw` must point to as many initialised values as the ABI says
    /// (`num_tokens`, `num_sequences` or `num_sequences + 1`), valid and unmodified for `'a`.
    pub unsafe fn from_ffi(raw: &SodLossBatch) -> Result<BatchView<'a>, BatchError> {
        let tokens =
            usize::try_from(raw.num_tokens).map_err(|_| BatchError::TooLarge("num_tokens"))?;
        let sequences = usize::try_from(raw.num_sequences)
            .map_err(|_| BatchError::TooLarge("num_sequences"))?;
        let offsets = sequences
            .checked_add(1)
            .ok_or(BatchError::TooLarge("num_sequences"))?;
        // SAFETY (all calls below): the caller guarantees each pointer covers its length.
        let view = unsafe {
            BatchView {
                old_logprob: slice(raw.old_logprob, tokens, "old_logprob")?,
                cur_logprob: slice(raw.cur_logprob, tokens, "cur_logprob")?,
                teacher_logprob: if raw.teacher_logprob.is_null() {
                    None
                } else {
                    Some(slice(raw.teacher_logprob, tokens, "teacher_logprob")?)
                },
                mask: slice(raw.mask, tokens, "mask")?,
                step_index: slice(raw.step_index, tokens, "step_index")?,
                seq_offsets: slice(raw.seq_offsets, offsets, "seq_offsets")?,
                reward: slice(raw.reward, sequences, "reward")?,
                group: slice(raw.group, sequences, "group")?,
                flags: slice(raw.flags, sequences, "flags")?,
                divergence: if raw.divergence.is_null() {
                    None
                } else {
                    Some(slice(raw.divergence, tokens, "divergence")?)
                },
            }
        };
        view.validate()?;
        Ok(view)
    }

    /// The raw ABI form of this view, borrowing its arrays.
    pub fn to_ffi(&self) -> SodLossBatch {
        SodLossBatch {
            num_tokens: self.num_tokens() as u64,
            num_sequences: self.num_sequences() as u64,
            old_logprob: self.old_logprob.as_ptr(),
            cur_logprob: self.cur_logprob.as_ptr(),
            teacher_logprob: self
                .teacher_logprob
                .map_or(std::ptr::null(), <[f32]>::as_ptr),
            mask: self.mask.as_ptr(),
            step_index: self.step_index.as_ptr(),
            seq_offsets: self.seq_offsets.as_ptr(),
            reward: self.reward.as_ptr(),
            group: self.group.as_ptr(),
            flags: self.flags.as_ptr(),
            divergence: self.divergence.map_or(std::ptr::null(), <[f32]>::as_ptr),
        }
    }

    /// Number of token positions.
    pub fn num_tokens(&self) -> usize {
        self.old_logprob.len()
    }

    /// Number of sequences.
    pub fn num_sequences(&self) -> usize {
        self.seq_offsets.len().saturating_sub(1)
    }

    /// The token range of sequence `seq`.
    ///
    /// # Panics
    /// If `seq` is out of range (a validated view has valid offsets).
    pub fn sequence(&self, seq: usize) -> Range<usize> {
        self.seq_offsets[seq] as usize..self.seq_offsets[seq + 1] as usize
    }

    /// The token ranges of all sequences, in order.
    pub fn sequences(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.num_sequences()).map(|seq| self.sequence(seq))
    }

    /// Checks every rule of the ABI: lengths, offsets, mask values, step indices, finite
    /// log-probs at generated tokens, finite rewards, known flags.
    pub fn validate(&self) -> Result<(), BatchError> {
        let tokens = self.num_tokens();
        if self.seq_offsets.is_empty() {
            return Err(BatchError::Offsets(
                "must have one more value than there are sequences (at least [0])".into(),
            ));
        }
        let sequences = self.num_sequences();
        check_len("cur_logprob", self.cur_logprob, tokens, "one per token")?;
        if let Some(teacher) = self.teacher_logprob {
            check_len("teacher_logprob", teacher, tokens, "one per token")?;
        }
        if let Some(divergence) = self.divergence {
            check_len("divergence", divergence, tokens, "one per token")?;
        }
        check_len("mask", self.mask, tokens, "one per token")?;
        check_len("step_index", self.step_index, tokens, "one per token")?;
        check_len("reward", self.reward, sequences, "one per sequence")?;
        check_len("group", self.group, sequences, "one per sequence")?;
        check_len("flags", self.flags, sequences, "one per sequence")?;
        check_offsets(self.seq_offsets, tokens)?;
        if let Some(index) = self.mask.iter().position(|&m| m > 1) {
            return Err(BatchError::MaskValue {
                index,
                value: self.mask[index],
            });
        }
        for range in self.sequences() {
            check_steps(
                &self.mask[range.clone()],
                &self.step_index[range.clone()],
                range.start,
            )?;
        }
        let logprobs = [
            ("old_logprob", Some(self.old_logprob)),
            ("cur_logprob", Some(self.cur_logprob)),
            ("teacher_logprob", self.teacher_logprob),
            ("divergence", self.divergence),
        ];
        for (array, values) in logprobs {
            let Some(values) = values else { continue };
            let bad = values
                .iter()
                .zip(self.mask)
                .position(|(value, &mask)| mask == 1 && !value.is_finite());
            if let Some(index) = bad {
                return Err(BatchError::NonFiniteLogprob {
                    array,
                    index,
                    value: values[index],
                });
            }
        }
        if let Some(seq) = self.reward.iter().position(|r| !r.is_finite()) {
            return Err(BatchError::NonFiniteReward {
                seq,
                value: self.reward[seq],
            });
        }
        if let Some(seq) = self.flags.iter().position(|f| f & !SOD_LOSS_FLAG_ALL != 0) {
            return Err(BatchError::UnknownFlags {
                seq,
                flags: self.flags[seq],
                known: SOD_LOSS_FLAG_ALL,
            });
        }
        Ok(())
    }
}

/// # Safety
/// A non-null `ptr` must point to `len` initialised values valid for `'a`.
unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    name: &'static str,
) -> Result<&'a [T], BatchError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(BatchError::NullPointer(name));
    }
    // SAFETY: non-null and covering `len` values, as the caller guarantees.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

fn check_len<T>(
    array: &'static str,
    values: &[T],
    expected: usize,
    per: &'static str,
) -> Result<(), BatchError> {
    if values.len() == expected {
        Ok(())
    } else {
        Err(BatchError::Length {
            array,
            expected,
            found: values.len(),
            per,
        })
    }
}

fn check_offsets(offsets: &[u64], tokens: usize) -> Result<(), BatchError> {
    match offsets.first() {
        None => {
            return Err(BatchError::Offsets(
                "must have one more value than there are sequences (at least [0])".into(),
            ));
        }
        Some(&first) if first != 0 => {
            return Err(BatchError::Offsets(format!(
                "must start at 0, starts at {first}"
            )));
        }
        Some(_) => {}
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(BatchError::Offsets(format!(
            "must be non-decreasing, but seq_offsets[{}] = {} > seq_offsets[{}] = {}",
            i,
            offsets[i],
            i + 1,
            offsets[i + 1]
        )));
    }
    let last = offsets[offsets.len() - 1];
    if last != tokens as u64 {
        return Err(BatchError::Offsets(format!(
            "must end at the number of tokens ({tokens}), ends at {last}"
        )));
    }
    Ok(())
}

/// Checks the step rules within one sequence: mask 0 has no step; generated tokens start at
/// step 0 and their step grows by 0 or 1 from one generated token to the next.
fn check_steps(mask: &[u8], steps: &[u32], start: usize) -> Result<(), BatchError> {
    let mut previous: Option<u32> = None;
    for (i, (&m, &step)) in mask.iter().zip(steps).enumerate() {
        let problem = if m == 0 {
            (step != SOD_LOSS_NO_STEP).then(|| {
                format!("is {step} at a token with mask 0, expected {SOD_LOSS_NO_STEP} (no step)")
            })
        } else {
            match previous {
                None if step != 0 => Some(format!(
                    "the first generated token of a sequence is in step {step}, expected 0"
                )),
                Some(prev) if step != prev && step != prev.wrapping_add(1) => Some(format!(
                    "step {step} follows step {prev}; steps must grow by 0 or 1"
                )),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            return Err(BatchError::StepIndex {
                index: start + i,
                problem,
            });
        }
        if m == 1 {
            previous = Some(step);
        }
    }
    Ok(())
}
