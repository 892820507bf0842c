//! The raw C ABI, mirrored one to one by `include/sod_loss.h`.
//!
//! Every struct is `#[repr(C)]`; every function pointer is `extern "C"` and must not unwind.
//! Function pointers are `Option`s so that a null pointer in a table written in C is representable
//! and the host can reject it with a message instead of jumping to address zero.

use std::ffi::{c_char, c_void};

/// The ABI version this crate implements. Version 2 extends version 1 by appending fields (the full-distribution
/// divergence: [`SodLossRequirements::divergence`], [`SodLossBatch::divergence`],
/// [`SodLossOutput::divergence_weights`]); every version-1 field keeps its place, so a host passes version-2
/// structs to a version-1 plugin, which reads and writes only their version-1 prefix.
pub const SOD_LOSS_ABI_VERSION: u32 = 2;

/// The oldest ABI version a host of this crate still loads.
pub const SOD_LOSS_ABI_VERSION_MIN: u32 = 1;

/// The name of the one symbol a plugin exports: a [`SodLossEntryFn`].
pub const SOD_LOSS_ENTRY_SYMBOL: &str = "sod_loss_plugin";

/// The step index of a token that belongs to no step (mask 0: prompt, tool output, padding).
pub const SOD_LOSS_NO_STEP: u32 = u32::MAX;

/// Sequence flag: generation stopped at the length limit.
pub const SOD_LOSS_FLAG_TRUNCATED: u32 = 1;
/// Sequence flag: an infrastructure fault (sandbox crash, timeout of the harness) spoiled the
/// sequence; its reward says nothing about the policy.
pub const SOD_LOSS_FLAG_INFRA_FAULT: u32 = 2;
/// All flag bits this ABI version defines.
pub const SOD_LOSS_FLAG_ALL: u32 = SOD_LOSS_FLAG_TRUNCATED | SOD_LOSS_FLAG_INFRA_FAULT;

/// [`SodLossRequirements::data_source`]: trains on samples of the current policy.
pub const SOD_LOSS_DATA_ON_POLICY: u32 = 0;
/// [`SodLossRequirements::data_source`]: trains on a fixed dataset.
pub const SOD_LOSS_DATA_OFFLINE: u32 = 1;

/// [`SodLossRequirements::divergence`]: no full-distribution term (every version-1 plugin).
pub const SOD_LOSS_DIVERGENCE_NONE: u32 = 0;
/// Reverse KL, `KL(pS || pT) = sum_v pS(v) (log pS(v) - log pT(v))`: mode-seeking.
pub const SOD_LOSS_DIVERGENCE_REVERSE_KL: u32 = 1;
/// Forward KL, `KL(pT || pS) = sum_v pT(v) (log pT(v) - log pS(v))`: mode-covering.
pub const SOD_LOSS_DIVERGENCE_FORWARD_KL: u32 = 2;
/// Generalised Jensen-Shannon divergence with `M = beta pT + (1 - beta) pS`:
/// `beta KL(pT || M) + (1 - beta) KL(pS || M)`, `0 < beta < 1` (GKD's form).
pub const SOD_LOSS_DIVERGENCE_JSD: u32 = 3;

/// Status: success.
pub const SOD_LOSS_OK: i32 = 0;
/// Status: the settings were rejected (unknown key, bad value).
pub const SOD_LOSS_ERR_CONFIG: i32 = 1;
/// Status: the batch was rejected (inconsistent shapes, missing teacher log-probs).
pub const SOD_LOSS_ERR_BATCH: i32 = 2;
/// Status: the computation failed for another reason.
pub const SOD_LOSS_ERR_COMPUTE: i32 = 3;
/// Status: the plugin panicked (or hit the equivalent of a panic) and caught it at the boundary.
pub const SOD_LOSS_ERR_PANIC: i32 = 4;

/// A buffer the host lends a plugin for an error message. The plugin writes a NUL-terminated
/// UTF-8 message of at most `capacity` bytes including the NUL, truncating if needed.
#[repr(C)]
#[derive(Debug)]
pub struct SodLossErrorBuf {
    /// Start of the buffer.
    pub message: *mut c_char,
    /// Size of the buffer in bytes.
    pub capacity: usize,
}

/// One configuration setting: NUL-terminated UTF-8 key and value, valid during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SodLossSetting {
    /// The key, e.g. `delta`.
    pub key: *const c_char,
    /// The value as written on the command line, e.g. `0.2`.
    pub value: *const c_char,
}

/// What a configured loss needs from a run.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SodLossRequirements {
    /// 1 if the loss reads teacher log-probs, else 0.
    pub needs_teacher: u32,
    /// [`SOD_LOSS_DATA_ON_POLICY`] or [`SOD_LOSS_DATA_OFFLINE`].
    pub data_source: u32,
    /// The smallest group size the loss is meaningful with (at least 1).
    pub min_group_size: u32,
    /// Must be 0.
    pub reserved: u32,
    /// (v2) The full-distribution divergence the loss wants the host to compute per generated position between
    /// student and teacher: a `SOD_LOSS_DIVERGENCE_*` code. The host hands its values to `compute`
    /// ([`SodLossBatch::divergence`]), and differentiates `sum_t divergence_weights[t] * D_t / N` next to the
    /// PPO surrogate. A version-1 plugin leaves it 0 (the host zero-fills the struct).
    pub divergence: u32,
    /// (v2) 0: over the whole vocabulary; k > 0: over the teacher's top-k tokens plus one bucket for the rest
    /// of the mass (both distributions renormalised onto those k + 1 outcomes).
    pub top_k: u32,
    /// (v2) `beta` of [`SOD_LOSS_DIVERGENCE_JSD`], in (0, 1); ignored by the other kinds.
    pub beta: f64,
}

/// A batch: flat arrays over the token positions of all sequences, concatenated.
///
/// Sequence `i` owns token positions `seq_offsets[i] .. seq_offsets[i + 1]`. Log-prob values at
/// positions with mask 0 are unspecified (they may be NaN) and must not be read. All pointers stay
/// valid for the duration of the `compute` call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SodLossBatch {
    /// Number of token positions.
    pub num_tokens: u64,
    /// Number of sequences.
    pub num_sequences: u64,
    /// Log-prob of the sampled token under the behaviour (old) student; `num_tokens` values.
    pub old_logprob: *const f32,
    /// Log-prob of the sampled token under the current student, detached; `num_tokens` values.
    pub cur_logprob: *const f32,
    /// Log-prob of the sampled token under the teacher; `num_tokens` values, or null when the run
    /// has no teacher.
    pub teacher_logprob: *const f32,
    /// 1 where the policy generated the token, 0 for prompt, tool output and padding.
    pub mask: *const u8,
    /// The 0-based step of each generated token within its sequence, [`SOD_LOSS_NO_STEP`] where
    /// the mask is 0. Within a sequence, step indices of generated tokens start at 0 and grow by
    /// 0 or 1 from one generated token to the next.
    pub step_index: *const u32,
    /// `num_sequences + 1` offsets into the token arrays: 0, then non-decreasing, last `num_tokens`.
    pub seq_offsets: *const u64,
    /// Outcome reward per sequence.
    pub reward: *const f32,
    /// Group id per sequence: the samples of one prompt share a group id.
    pub group: *const u32,
    /// Flags per sequence: [`SOD_LOSS_FLAG_TRUNCATED`], [`SOD_LOSS_FLAG_INFRA_FAULT`].
    pub flags: *const u32,
    /// (v2) The divergence the loss asked for ([`SodLossRequirements::divergence`]) between the current student
    /// and the teacher at each generated position, detached; `num_tokens` values (unspecified at mask 0), or null
    /// when the loss asked for none.
    pub divergence: *const f32,
}

/// Receives one named metric. `name` is NUL-terminated UTF-8, valid during the call.
pub type SodLossMetricFn = unsafe extern "C" fn(ctx: *mut c_void, name: *const c_char, value: f64);

/// Where a plugin writes its results.
#[repr(C)]
#[derive(Debug)]
pub struct SodLossOutput {
    /// `num_tokens` advantages, zero-initialised by the host. Must stay 0 where the mask is 0.
    pub advantages: *mut f32,
    /// Opaque context for `emit_metric`.
    pub metric_ctx: *mut c_void,
    /// Called once per metric; may be null, then metrics are discarded.
    pub emit_metric: Option<SodLossMetricFn>,
    /// (v2) `num_tokens` weights of the divergence term, zero-initialised by the host; null when the loss asked
    /// for no divergence. Must stay 0 where the mask is 0. A version-1 plugin never sees or writes it.
    pub divergence_weights: *mut f32,
}

/// Creates an instance from settings (`num_settings` entries; `settings` may be null when 0).
/// On success writes a non-null instance to `out_instance` and returns [`SOD_LOSS_OK`].
pub type SodLossCreateFn = unsafe extern "C" fn(
    settings: *const SodLossSetting,
    num_settings: usize,
    out_instance: *mut *mut c_void,
    error: *mut SodLossErrorBuf,
) -> i32;

/// Writes the requirements of a configured instance.
pub type SodLossRequirementsFn = unsafe extern "C" fn(
    instance: *const c_void,
    out: *mut SodLossRequirements,
    error: *mut SodLossErrorBuf,
) -> i32;

/// Computes advantages and metrics for a batch.
pub type SodLossComputeFn = unsafe extern "C" fn(
    instance: *mut c_void,
    batch: *const SodLossBatch,
    output: *const SodLossOutput,
    error: *mut SodLossErrorBuf,
) -> i32;

/// Frees an instance.
pub type SodLossDestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// The table a plugin's entry function returns. It must live as long as the library is loaded.
///
/// An instance is used by one thread at a time but may move between threads; `create` may be
/// called from any thread.
#[repr(C)]
#[derive(Debug)]
pub struct SodLossPlugin {
    /// [`SOD_LOSS_ABI_VERSION`] (or an older version from [`SOD_LOSS_ABI_VERSION_MIN`] on); read before any
    /// other field.
    pub abi_version: u32,
    /// Must be 0.
    pub reserved: u32,
    /// Short name, NUL-terminated UTF-8, e.g. `sod`.
    pub name: *const c_char,
    /// One-line description, NUL-terminated UTF-8.
    pub description: *const c_char,
    /// See [`SodLossCreateFn`].
    pub create: Option<SodLossCreateFn>,
    /// See [`SodLossRequirementsFn`].
    pub requirements: Option<SodLossRequirementsFn>,
    /// See [`SodLossComputeFn`].
    pub compute: Option<SodLossComputeFn>,
    /// See [`SodLossDestroyFn`].
    pub destroy: Option<SodLossDestroyFn>,
}

// SAFETY: a table holds pointers to immutable static strings and to functions; sharing it between
// threads shares nothing mutable.
unsafe impl Sync for SodLossPlugin {}
// SAFETY: as above.
unsafe impl Send for SodLossPlugin {}

/// The signature of the entry symbol.
pub type SodLossEntryFn = unsafe extern "C" fn() -> *const SodLossPlugin;
