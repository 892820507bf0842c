//! A configured loss: the plugin instance made by [`crate::LossPlugin::configure`], what a run must offer it
//! ([`RunShape`]), and one batch's call through the ABI to its [`LossOutput`] (advantages, divergence weights,
//! metrics), with the plugin's panics, errors and malformed answers turned into [`LossError`]s.

use std::ffi::{CStr, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::*;

/// What a run offers a loss, checked against the loss's [`Requirements`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// The run computes teacher log-probs.
    pub has_teacher: bool,
    /// The run trains on on-policy samples or an offline dataset.
    pub data: DataSource,
    /// Samples per prompt.
    pub group_size: u32,
}

/// Per-token advantages and named metrics of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput {
    /// One advantage per token position (0 where the mask is 0).
    pub advantages: Vec<f32>,
    /// One weight of the divergence term per token position (0 where the mask is 0; all 0 for a loss that asked
    /// for no divergence, every version-1 plugin among them).
    pub divergence_weights: Vec<f32>,
    /// Named scalar metrics, in the order the plugin emitted them.
    pub metrics: Vec<(String, f64)>,
}

/// A configured loss instance.
pub struct ConfiguredLoss {
    // Keeps the plugin's code mapped while the instance lives.
    pub(crate) library: Option<Arc<libloading::Library>>,
    pub(crate) functions: Functions,
    pub(crate) instance: *mut c_void,
    pub(crate) origin: String,
    pub(crate) name: String,
    pub(crate) requirements: Requirements,
}

// SAFETY: the ABI lets an instance move between threads; `&mut self` on `compute` keeps it to one
// thread at a time.
unsafe impl Send for ConfiguredLoss {}

impl std::fmt::Debug for ConfiguredLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredLoss")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("requirements", &self.requirements)
            .field("statically_linked", &self.library.is_none())
            .finish_non_exhaustive()
    }
}

impl ConfiguredLoss {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this configured loss needs from a run.
    pub fn requirements(&self) -> Requirements {
        self.requirements
    }

    pub(crate) fn query_requirements(&self) -> Result<Requirements, LossError> {
        // Zero-filled: a version-1 plugin writes only the version-1 prefix, leaving "no divergence".
        let mut raw = SodLossRequirements::default();
        let mut message = ErrorMessage::new();
        // SAFETY: a live instance of this plugin and valid out pointers.
        let status =
            unsafe { (self.functions.requirements)(self.instance, &mut raw, message.as_ffi()) };
        plugin_status(&self.name, &self.origin, "requirements", status, &message)?;
        Requirements::from_ffi(&raw).map_err(|problem| LossError::Output {
            plugin: self.name.clone(),
            origin: self.origin.clone(),
            problem: format!("bad requirements: {problem}"),
        })
    }

    /// Refuses a run that does not give the loss what it needs: teacher log-probs, the right
    /// kind of data, enough samples per prompt.
    pub fn check_run(&self, run: &RunShape) -> Result<(), LossError> {
        let needs = &self.requirements;
        let problem = if needs.needs_teacher && !run.has_teacher {
            Some("it needs teacher log-probs, but the run has no teacher".to_string())
        } else if needs.data != run.data {
            Some(format!(
                "it trains on {}, but the run provides {}",
                needs.data, run.data
            ))
        } else if run.group_size < needs.min_group_size {
            Some(format!(
                "it needs at least {} samples per prompt, but the run draws {}",
                needs.min_group_size, run.group_size
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(LossError::Requirement {
                plugin: self.name.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// Validates `batch`, runs the plugin on it, and validates the output: one finite advantage
    /// per token, 0 where the mask is 0, unique metric names.
    pub fn compute(&mut self, batch: &Batch) -> Result<LossOutput, LossError> {
        let name = self.name.clone();
        batch
            .with_view(|view| {
                if self.requirements.needs_teacher && view.teacher_logprob.is_none() {
                    return Err(LossError::Requirement {
                        plugin: name.clone(),
                        problem: "it needs teacher log-probs, but the batch has none".into(),
                    });
                }
                if let Some(spec) = &self.requirements.divergence
                    && view.divergence.is_none()
                {
                    return Err(LossError::Requirement {
                        plugin: name.clone(),
                        problem: format!(
                            "it needs the {} divergence per token, but the batch has none",
                            spec.kind.name()
                        ),
                    });
                }
                let raw_batch = view.to_ffi();
                let mut advantages = vec![0.0f32; view.num_tokens()];
                let mut weights = vec![0.0f32; view.num_tokens()];
                let mut collector = MetricCollector::default();
                let output = SodLossOutput {
                    advantages: advantages.as_mut_ptr(),
                    metric_ctx: (&mut collector as *mut MetricCollector).cast::<c_void>(),
                    emit_metric: Some(collect_metric),
                    divergence_weights: if self.requirements.divergence.is_some() {
                        weights.as_mut_ptr()
                    } else {
                        std::ptr::null_mut()
                    },
                };
                let mut message = ErrorMessage::new();
                // SAFETY: the batch arrays, the output buffer and the collector outlive the call.
                let status = unsafe {
                    (self.functions.compute)(self.instance, &raw_batch, &output, message.as_ffi())
                };
                plugin_status(&self.name, &self.origin, "compute", status, &message)?;
                self.check_output(&advantages, &weights, view.mask, &collector)?;
                Ok(LossOutput {
                    advantages,
                    divergence_weights: weights,
                    metrics: collector.metrics,
                })
            })
            .map_err(|source| LossError::Batch {
                plugin: name,
                source,
            })?
    }

    fn check_output(
        &self,
        advantages: &[f32],
        weights: &[f32],
        mask: &[u8],
        collector: &MetricCollector,
    ) -> Result<(), LossError> {
        // Each per-token output must be finite everywhere and 0 where the mask is 0.
        let per_token = |what: &str, values: &[f32]| {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                Some(format!("{what} {} at token {i} is not finite", values[i]))
            } else {
                values
                    .iter()
                    .zip(mask)
                    .position(|(&v, &m)| m == 0 && v != 0.0)
                    .map(|i| {
                        format!(
                            "{what} {} at token {i}, where the mask is 0 (must be 0)",
                            values[i]
                        )
                    })
            }
        };
        let problem = if let Some(problem) = &collector.problem {
            Some(problem.clone())
        } else if let Some(problem) =
            per_token("advantage", advantages).or_else(|| per_token("divergence weight", weights))
        {
            Some(problem)
        } else {
            let mut names: Vec<&str> = collector.metrics.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names
                .windows(2)
                .find(|w| w[0] == w[1])
                .map(|w| format!("metric '{}' emitted more than once", w[0]))
        };
        match problem {
            Some(problem) => Err(LossError::Output {
                plugin: self.name.clone(),
                origin: self.origin.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ConfiguredLoss {
    fn drop(&mut self) {
        // SAFETY: the instance came from this plugin's `create` and is destroyed once; the
        // library is still loaded because `self.library` is dropped after this.
        unsafe { (self.functions.destroy)(self.instance) };
    }
}

/// Receives metrics from a plugin during `compute`.
#[derive(Default)]
struct MetricCollector {
    pub(crate) metrics: Vec<(String, f64)>,
    pub(crate) problem: Option<String>,
}

/// The metric callback lent to plugins. Must not unwind into the plugin.
unsafe extern "C" fn collect_metric(ctx: *mut c_void, name: *const c_char, value: f64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the collector `compute` passed in; it outlives the call.
        let Some(collector) = (unsafe { ctx.cast::<MetricCollector>().as_mut() }) else {
            return;
        };
        if name.is_null() {
            collector
                .problem
                .get_or_insert_with(|| "a metric with a null name".into());
            return;
        }
        // SAFETY: the ABI requires a NUL-terminated name valid during the call.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        collector.metrics.push((name, value));
    }));
}
