//! Writing a plugin in Rust: implement [`LossImpl`], then `export_loss_plugin!(MyLoss);`.
//!
//! The generated entry points validate everything that crosses the boundary, reject unknown
//! settings, and catch panics: unwinding out of an `extern "C"` function would abort the host,
//! so a panic becomes [`SOD_LOSS_ERR_PANIC`] with the panic message.

use std::ffi::{CStr, CString, c_char, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::batch::{BatchError, BatchView};
use crate::ffi::*;
use crate::settings::Settings;
use crate::{DataSource, Requirements};

/// The kind of a plugin error; each maps to one ABI status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// Bad settings ([`SOD_LOSS_ERR_CONFIG`]).
    Config,
    /// Bad batch ([`SOD_LOSS_ERR_BATCH`]).
    Batch,
    /// Another failure while computing ([`SOD_LOSS_ERR_COMPUTE`]).
    Compute,
    /// A panic caught at the boundary ([`SOD_LOSS_ERR_PANIC`]).
    Panic,
}

impl PluginErrorKind {
    /// The ABI status code of this kind.
    pub fn status(self) -> i32 {
        match self {
            PluginErrorKind::Config => SOD_LOSS_ERR_CONFIG,
            PluginErrorKind::Batch => SOD_LOSS_ERR_BATCH,
            PluginErrorKind::Compute => SOD_LOSS_ERR_COMPUTE,
            PluginErrorKind::Panic => SOD_LOSS_ERR_PANIC,
        }
    }

    /// The kind of an ABI error status, if the status is a known error.
    pub fn from_status(status: i32) -> Option<Self> {
        match status {
            SOD_LOSS_ERR_CONFIG => Some(PluginErrorKind::Config),
            SOD_LOSS_ERR_BATCH => Some(PluginErrorKind::Batch),
            SOD_LOSS_ERR_COMPUTE => Some(PluginErrorKind::Compute),
            SOD_LOSS_ERR_PANIC => Some(PluginErrorKind::Panic),
            _ => None,
        }
    }
}

impl std::fmt::Display for PluginErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginErrorKind::Config => "invalid settings",
            PluginErrorKind::Batch => "invalid batch",
            PluginErrorKind::Compute => "computation failed",
            PluginErrorKind::Panic => "panicked",
        })
    }
}

/// An error a plugin reports through the ABI.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct PluginError {
    /// What went wrong, broadly.
    pub kind: PluginErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl PluginError {
    /// An error in the settings.
    pub fn config(message: impl Into<String>) -> Self {
        PluginError {
            kind: PluginErrorKind::Config,
            message: message.into(),
        }
    }

    /// An error in the batch.
    pub fn batch(message: impl Into<String>) -> Self {
        PluginError {
            kind: PluginErrorKind::Batch,
            message: message.into(),
        }
    }

    /// Another computation error.
    pub fn compute(message: impl Into<String>) -> Self {
        PluginError {
            kind: PluginErrorKind::Compute,
            message: message.into(),
        }
    }
}

impl From<BatchError> for PluginError {
    fn from(error: BatchError) -> Self {
        PluginError::batch(error.to_string())
    }
}

/// A loss written in Rust. [`crate::export_loss_plugin!`] turns it into a plugin.
pub trait LossImpl: Sized + Send + 'static {
    /// Short name, e.g. `c"sod"`.
    const NAME: &'static CStr;
    /// One-line description.
    const DESCRIPTION: &'static CStr;

    /// Builds the loss from settings, taking the keys it knows; keys left over are rejected
    /// afterwards by the caller.
    fn configure(settings: &mut Settings) -> Result<Self, PluginError>;

    /// What this configured loss needs from a run.
    fn requirements(&self) -> Requirements;

    /// Writes one advantage per token into `advantages` (zero-initialised, as long as the batch)
    /// and emits metrics. The batch is validated and satisfies [`Self::requirements`].
    fn compute(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError>;

    /// (ABI v2) Like [`Self::compute`], and also writes the weight of the full-distribution divergence term of
    /// each token into `divergence_weights` (zero-initialised, as long as the batch; 0 where the mask is 0). Only
    /// called with a non-empty `divergence_weights` for a loss whose requirements ask for a divergence; the
    /// default ignores it and calls [`Self::compute`].
    fn compute_weighted(
        &mut self,
        batch: &BatchView<'_>,
        advantages: &mut [f32],
        divergence_weights: &mut [f32],
        metrics: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        let _ = divergence_weights;
        self.compute(batch, advantages, metrics)
    }
}

/// Where a loss sends its named scalar metrics.
pub struct MetricSink<'a> {
    target: SinkTarget<'a>,
}

enum SinkTarget<'a> {
    Ffi {
        ctx: *mut c_void,
        emit: Option<SodLossMetricFn>,
        _borrow: PhantomData<&'a mut ()>,
    },
    Collect(&'a mut Vec<(String, f64)>),
}

impl<'a> MetricSink<'a> {
    /// A sink that appends to a vector (tests, statically linked use).
    pub fn collect_into(metrics: &'a mut Vec<(String, f64)>) -> Self {
        MetricSink {
            target: SinkTarget::Collect(metrics),
        }
    }

    /// Emits one metric. Fails if the name contains a NUL byte.
    pub fn emit(&mut self, name: &str, value: f64) -> Result<(), PluginError> {
        match &mut self.target {
            SinkTarget::Collect(metrics) => metrics.push((name.to_string(), value)),
            SinkTarget::Ffi { ctx, emit, .. } => {
                let Some(emit) = emit else { return Ok(()) };
                let name = CString::new(name).map_err(|_| {
                    PluginError::compute(format!("metric name {name:?} contains a NUL byte"))
                })?;
                // SAFETY: the host gave this callback and context for the duration of `compute`.
                unsafe { emit(*ctx, name.as_ptr(), value) };
            }
        }
        Ok(())
    }
}

/// Named scalar metrics, in the order they were emitted.
pub type Metrics = Vec<(String, f64)>;

/// Rejects a batch that lacks what `requirements` says the loss needs.
pub fn check_batch_requirements(
    plugin: &str,
    requirements: &Requirements,
    batch: &BatchView<'_>,
) -> Result<(), PluginError> {
    if requirements.needs_teacher && batch.teacher_logprob.is_none() {
        return Err(PluginError::batch(format!(
            "loss '{plugin}' needs teacher log-probs, but the batch has none"
        )));
    }
    if let Some(spec) = &requirements.divergence
        && batch.divergence.is_none()
    {
        return Err(PluginError::batch(format!(
            "loss '{plugin}' needs the {} divergence per token, but the batch has none",
            spec.kind.name()
        )));
    }
    Ok(())
}

/// Runs a loss on a batch without going through the C ABI: validates the batch, checks the
/// requirements, and returns the advantages and metrics.
pub fn run_loss<L: LossImpl>(
    loss: &mut L,
    batch: &BatchView<'_>,
) -> Result<(Vec<f32>, Metrics), PluginError> {
    run_loss_weighted(loss, batch).map(|(advantages, _, metrics)| (advantages, metrics))
}

/// Like [`run_loss`], also returning the divergence weights (all 0 for a loss without a divergence).
pub fn run_loss_weighted<L: LossImpl>(
    loss: &mut L,
    batch: &BatchView<'_>,
) -> Result<(Vec<f32>, Vec<f32>, Metrics), PluginError> {
    batch.validate()?;
    let requirements = loss.requirements();
    check_batch_requirements(&L::NAME.to_string_lossy(), &requirements, batch)?;
    let mut advantages = vec![0.0f32; batch.num_tokens()];
    let mut weights = vec![0.0f32; batch.num_tokens()];
    let mut metrics = Vec::new();
    let sink = &mut MetricSink::collect_into(&mut metrics);
    if requirements.divergence.is_some() {
        loss.compute_weighted(batch, &mut advantages, &mut weights, sink)?;
    } else {
        loss.compute(batch, &mut advantages, sink)?;
    }
    Ok((advantages, weights, metrics))
}

/// The ABI table for a Rust loss. [`crate::export_loss_plugin!`] puts it in a static and exports
/// the entry symbol; a host that links a plugin statically can use the table directly.
pub const fn plugin_table<L: LossImpl>() -> SodLossPlugin {
    SodLossPlugin {
        abi_version: SOD_LOSS_ABI_VERSION,
        reserved: 0,
        name: L::NAME.as_ptr(),
        description: L::DESCRIPTION.as_ptr(),
        create: Some(ffi_create::<L> as SodLossCreateFn),
        requirements: Some(ffi_requirements::<L> as SodLossRequirementsFn),
        compute: Some(ffi_compute::<L> as SodLossComputeFn),
        destroy: Some(ffi_destroy::<L> as SodLossDestroyFn),
    }
}

/// Exports a [`LossImpl`] as a loss plugin: a static table `SOD_LOSS_PLUGIN_TABLE` and the entry
/// symbol `sod_loss_plugin` returning it. Use it once per cdylib crate.
#[macro_export]
macro_rules! export_loss_plugin {
    ($loss:ty) => {
        /// The loss plugin table of this library.
        pub static SOD_LOSS_PLUGIN_TABLE: $crate::SodLossPlugin = $crate::plugin_table::<$loss>();

        /// The entry symbol of this loss plugin: returns [`SOD_LOSS_PLUGIN_TABLE`].
        #[unsafe(no_mangle)]
        pub extern "C" fn sod_loss_plugin() -> *const $crate::SodLossPlugin {
            &SOD_LOSS_PLUGIN_TABLE
        }
    };
}

/// Copies `message` into the host's error buffer, truncated at a character boundary and
/// NUL-terminated.
///
/// # Safety
/// `error` is null or points to a buffer description whose `message` covers `capacity` bytes.
pub unsafe fn write_error(error: *mut SodLossErrorBuf, message: &str) {
    // SAFETY: null or valid, as the caller guarantees.
    let Some(buffer) = (unsafe { error.as_ref() }) else {
        return;
    };
    if buffer.message.is_null() || buffer.capacity == 0 {
        return;
    }
    let mut len = message.len().min(buffer.capacity - 1);
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: the buffer holds `capacity` bytes and `len + 1 <= capacity`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buffer.message.cast::<u8>(), len);
        *buffer.message.add(len) = 0;
    }
}

/// Runs `body` catching panics, and turns its result into a status code and error message.
unsafe fn boundary(
    error: *mut SodLossErrorBuf,
    body: impl FnOnce() -> Result<(), PluginError>,
) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_string());
        Err(PluginError {
            kind: PluginErrorKind::Panic,
            message,
        })
    });
    match outcome {
        Ok(()) => SOD_LOSS_OK,
        Err(failure) => {
            // SAFETY: forwarded from the ABI caller.
            unsafe { write_error(error, &failure.message) };
            failure.kind.status()
        }
    }
}

unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, PluginError> {
    if ptr.is_null() {
        return Err(PluginError::config(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null NUL-terminated string, as the ABI requires.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| PluginError::config(format!("{what} is not valid UTF-8")))
}

unsafe extern "C" fn ffi_create<L: LossImpl>(
    settings: *const SodLossSetting,
    num_settings: usize,
    out_instance: *mut *mut c_void,
    error: *mut SodLossErrorBuf,
) -> i32 {
    // SAFETY: each pointer is checked or valid per the ABI.
    unsafe {
        boundary(error, || {
            if out_instance.is_null() {
                return Err(PluginError::config("out_instance is a null pointer"));
            }
            let raw: &[SodLossSetting] = if num_settings == 0 {
                &[]
            } else if settings.is_null() {
                return Err(PluginError::config("settings is a null pointer"));
            } else {
                std::slice::from_raw_parts(settings, num_settings)
            };
            let mut pairs = Vec::with_capacity(raw.len());
            for (i, setting) in raw.iter().enumerate() {
                pairs.push((
                    c_str(setting.key, &format!("key of setting {i}"))?,
                    c_str(setting.value, &format!("value of setting {i}"))?,
                ));
            }
            let mut settings = Settings::new(pairs)?;
            let loss = L::configure(&mut settings)?;
            settings.finish(&L::NAME.to_string_lossy())?;
            *out_instance = Box::into_raw(Box::new(loss)).cast::<c_void>();
            Ok(())
        })
    }
}

unsafe extern "C" fn ffi_requirements<L: LossImpl>(
    instance: *const c_void,
    out: *mut SodLossRequirements,
    error: *mut SodLossErrorBuf,
) -> i32 {
    // SAFETY: `instance` comes from `ffi_create::<L>`; `out` is checked.
    unsafe {
        boundary(error, || {
            let loss = instance
                .cast::<L>()
                .as_ref()
                .ok_or_else(|| PluginError::compute("instance is a null pointer"))?;
            let out = out
                .as_mut()
                .ok_or_else(|| PluginError::compute("out is a null pointer"))?;
            *out = loss.requirements().to_ffi();
            Ok(())
        })
    }
}

unsafe extern "C" fn ffi_compute<L: LossImpl>(
    instance: *mut c_void,
    batch: *const SodLossBatch,
    output: *const SodLossOutput,
    error: *mut SodLossErrorBuf,
) -> i32 {
    // SAFETY: `instance` comes from `ffi_create::<L>`; the batch and output follow the ABI.
    unsafe {
        boundary(error, || {
            let loss = instance
                .cast::<L>()
                .as_mut()
                .ok_or_else(|| PluginError::compute("instance is a null pointer"))?;
            let raw = batch
                .as_ref()
                .ok_or_else(|| PluginError::batch("batch is a null pointer"))?;
            let output = output
                .as_ref()
                .ok_or_else(|| PluginError::compute("output is a null pointer"))?;
            let view = BatchView::from_ffi(raw)?;
            let requirements = loss.requirements();
            check_batch_requirements(&L::NAME.to_string_lossy(), &requirements, &view)?;
            let advantages: &mut [f32] = if view.num_tokens() == 0 {
                &mut []
            } else if output.advantages.is_null() {
                return Err(PluginError::compute("output.advantages is a null pointer"));
            } else {
                std::slice::from_raw_parts_mut(output.advantages, view.num_tokens())
            };
            let mut metrics = MetricSink {
                target: SinkTarget::Ffi {
                    ctx: output.metric_ctx,
                    emit: output.emit_metric,
                    _borrow: PhantomData,
                },
            };
            if requirements.divergence.is_none() {
                return loss.compute(&view, advantages, &mut metrics);
            }
            let weights: &mut [f32] = if view.num_tokens() == 0 {
                &mut []
            } else if output.divergence_weights.is_null() {
                return Err(PluginError::compute(
                    "output.divergence_weights is a null pointer, but the loss asked for a divergence",
                ));
            } else {
                std::slice::from_raw_parts_mut(output.divergence_weights, view.num_tokens())
            };
            loss.compute_weighted(&view, advantages, weights, &mut metrics)
        })
    }
}

unsafe extern "C" fn ffi_destroy<L: LossImpl>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in a destructor has nowhere to be reported; catching it keeps the host alive.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` comes from `ffi_create::<L>` and is destroyed once.
        drop(unsafe { Box::from_raw(instance.cast::<L>()) });
    }));
}

/// The default requirements of an on-policy loss.
pub const fn on_policy(needs_teacher: bool, min_group_size: u32) -> Requirements {
    Requirements {
        needs_teacher,
        data: DataSource::OnPolicy,
        min_group_size,
        divergence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_truncated_at_a_character_boundary() {
        let mut bytes = [0xffu8; 6];
        let mut buffer = SodLossErrorBuf {
            message: bytes.as_mut_ptr().cast::<c_char>(),
            capacity: bytes.len(),
        };
        // "ab" then a 4-byte character: only "ab" and the NUL fit in 6 bytes with the character cut.
        unsafe { write_error(&mut buffer, "ab\u{1F600}cd") };
        assert_eq!(&bytes[..3], b"ab\0");
        unsafe { write_error(&mut buffer, "xyz") };
        assert_eq!(&bytes[..4], b"xyz\0");
        // A null buffer is ignored.
        unsafe { write_error(std::ptr::null_mut(), "ignored") };
    }

    #[test]
    fn status_codes_round_trip() {
        for kind in [
            PluginErrorKind::Config,
            PluginErrorKind::Batch,
            PluginErrorKind::Compute,
            PluginErrorKind::Panic,
        ] {
            assert_eq!(PluginErrorKind::from_status(kind.status()), Some(kind));
        }
        assert_eq!(PluginErrorKind::from_status(SOD_LOSS_OK), None);
        assert_eq!(PluginErrorKind::from_status(77), None);
    }
}
