//! The loader against misbehaving plugins: each failure is a clear error naming the file and the
//! problem, and the host keeps working afterwards.

mod common;

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use common::{compile_c, plugin_dir, settings, small_batch};
use sod_loss::{Batch, DataSource, LossError, LossPlugin, RunShape};
use sod_loss_abi::{
    BatchView, LossImpl, MetricSink, PluginError, PluginErrorKind, Requirements, Settings,
    SodLossPlugin, plugin_table,
};

fn broken_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken_plugin.c")
}

/// Builds the misbehaving plugin with `defines` into `dir`.
fn broken(dir: &Path, defines: &[&str]) -> PathBuf {
    compile_c(&broken_source(), dir, "libbroken.so", defines)
}

/// The host still loads and runs a real plugin.
fn host_is_alive() {
    let plugin = LossPlugin::load("opd", &plugin_dir()).expect("load opd");
    let output = plugin
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .expect("opd computes");
    assert_eq!(output.advantages.len(), small_batch().num_tokens());
}

fn load_error(path: &Path) -> String {
    let error = LossPlugin::load_path(path).expect_err("loading should fail");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "message does not name the file: {message}"
    );
    message
}

#[test]
fn a_valid_c_plugin_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &[])).unwrap();
    assert_eq!(plugin.name(), "broken");
    let output = plugin
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .unwrap();
    assert_eq!(output.advantages, vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(output.metrics, vec![("tokens".to_string(), 7.0)]);
}

#[test]
fn wrong_abi_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_error(&broken(dir.path(), &["-DABI_VERSION=999"]));
    assert!(message.contains("ABI version 999"), "{message}");
    assert!(message.contains("speaks versions 1 to 2"), "{message}");
    // Version 0 predates every version: refused too.
    let message = load_error(&broken(dir.path(), &["-DABI_VERSION=0"]));
    assert!(message.contains("ABI version 0"), "{message}");
    host_is_alive();
}

#[test]
fn missing_entry_symbol_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken(dir.path(), &["-DNO_ENTRY"]);
    let error = LossPlugin::load_path(&path).unwrap_err();
    assert!(
        matches!(error, LossError::MissingSymbol { .. }),
        "{error:?}"
    );
    let message = load_error(&path);
    assert!(
        message.contains("does not export the symbol `sod_loss_plugin`"),
        "{message}"
    );
    host_is_alive();
}

#[test]
fn null_table_and_null_functions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_error(&broken(dir.path(), &["-DNULL_TABLE"]));
    assert!(message.contains("returned a null table"), "{message}");
    let message = load_error(&broken(dir.path(), &["-DNULL_COMPUTE"]));
    assert!(message.contains("function `compute` is null"), "{message}");
    host_is_alive();
}

#[test]
fn a_file_that_is_not_a_library_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libsod_loss_junk.so");
    std::fs::write(&path, b"this is not an ELF file").unwrap();
    let message = load_error(&path);
    assert!(message.contains("cannot load loss plugin"), "{message}");
    host_is_alive();
}

#[test]
fn plugin_errors_are_reported_with_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCREATE_FAILS"])).unwrap();
    let error = plugin.configure(&settings(&[("beta", "1")])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            LossError::Plugin {
                kind: Some(PluginErrorKind::Config),
                operation: "configure",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        message.contains("setting 'alpha' is required by this test plugin"),
        "{message}"
    );
    assert!(message.contains("libbroken.so"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCOMPUTE_FAILS"])).unwrap();
    let mut loss = plugin.configure(&[]).unwrap();
    let message = loss.compute(&small_batch()).unwrap_err().to_string();
    assert!(
        message.contains("failed in compute: computation failed: the teacher server went away"),
        "{message}"
    );
    // The instance stays usable: a second call reports the same error.
    assert!(loss.compute(&small_batch()).is_err());
    host_is_alive();
}

#[test]
fn a_c_plugin_reporting_a_panic_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCOMPUTE_PANICS"])).unwrap();
    let error = plugin
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .unwrap_err();
    assert!(
        matches!(
            error,
            LossError::Plugin {
                kind: Some(PluginErrorKind::Panic),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("panicked: index out of bounds"),
        "{error}"
    );
    host_is_alive();
}

/// A Rust loss that panics where told to.
struct Panicky {
    in_compute: bool,
}

impl LossImpl for Panicky {
    const NAME: &'static CStr = c"panicky";
    const DESCRIPTION: &'static CStr = c"panics on purpose";

    fn configure(settings: &mut Settings) -> Result<Self, PluginError> {
        if settings.take_bool("panic_in_configure", false)? {
            panic!("configure exploded");
        }
        Ok(Panicky {
            in_compute: settings.take_bool("panic_in_compute", true)?,
        })
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            needs_teacher: false,
            data: DataSource::OnPolicy,
            min_group_size: 1,
            divergence: None,
        }
    }

    fn compute(
        &mut self,
        batch: &BatchView<'_>,
        _: &mut [f32],
        _: &mut MetricSink<'_>,
    ) -> Result<(), PluginError> {
        if self.in_compute {
            let steps: Vec<u32> = Vec::new();
            panic!("step {} of {} tokens", steps.len(), batch.num_tokens());
        }
        Ok(())
    }
}

static PANICKY: SodLossPlugin = plugin_table::<Panicky>();

#[test]
fn a_panicking_rust_plugin_is_caught_at_its_boundary() {
    let plugin = LossPlugin::from_static(&PANICKY, "test:panicky").unwrap();
    let error = plugin
        .configure(&settings(&[("panic_in_configure", "true")]))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("failed in configure: panicked: configure exploded"),
        "{error}"
    );

    let mut loss = plugin.configure(&[]).unwrap();
    for _ in 0..3 {
        let error = loss.compute(&small_batch()).unwrap_err();
        assert!(
            matches!(
                error,
                LossError::Plugin {
                    kind: Some(PluginErrorKind::Panic),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("panicked: step 0 of 7 tokens"),
            "{error}"
        );
    }
    let mut calm = plugin
        .configure(&settings(&[("panic_in_compute", "false")]))
        .unwrap();
    assert!(calm.compute(&small_batch()).is_ok());
    host_is_alive();
}

#[test]
fn invalid_output_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCOMPUTE_NAN"])).unwrap();
    let message = plugin
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("returned invalid output: advantage NaN at token 0 is not finite"),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCOMPUTE_MASKED"])).unwrap();
    let message = plugin
        .configure(&[])
        .unwrap()
        .compute(&small_batch())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("advantage 0.5 at token 0, where the mask is 0"),
        "{message}"
    );
}

#[test]
fn invalid_batches_never_reach_the_plugin() {
    // This plugin aborts the process if its compute is ever called.
    let dir = tempfile::tempdir().unwrap();
    let plugin = LossPlugin::load_path(&broken(dir.path(), &["-DCOMPUTE_ABORTS"])).unwrap();
    let mut loss = plugin.configure(&[]).unwrap();
    let mut cases: Vec<(Batch, &str)> = Vec::new();
    let mut b = small_batch();
    b.seq_offsets = vec![0, 6, 5];
    cases.push((b, "seq_offsets: must be non-decreasing"));
    let mut b = small_batch();
    b.seq_offsets = vec![0, 5, 8];
    cases.push((b, "must end at the number of tokens (7), ends at 8"));
    let mut b = small_batch();
    b.mask[2] = 2;
    cases.push((b, "mask[2] is 2, expected 0 or 1"));
    let mut b = small_batch();
    b.old_logprob[1] = f32::INFINITY;
    cases.push((b, "old_logprob[1] is inf at a generated token"));
    let mut b = small_batch();
    b.reward.pop();
    cases.push((
        b,
        "array `reward` has 1 values, expected 2 (one per sequence)",
    ));
    let mut b = small_batch();
    b.flags[1] = 8;
    cases.push((b, "flags[1] is 0x8"));
    let mut b = small_batch();
    b.step_index = Some(vec![u32::MAX, 0, 2, u32::MAX, 0, 0, 0]);
    cases.push((b, "step_index[2]: step 2 follows step 0"));
    for (batch, needle) in cases {
        let message = loss.compute(&batch).unwrap_err().to_string();
        assert!(
            message.starts_with("invalid batch for loss 'broken'"),
            "{message}"
        );
        assert!(
            message.contains(needle),
            "{message} does not contain {needle}"
        );
    }
}

#[test]
fn names_resolve_in_the_plugin_directory() {
    let dir = plugin_dir();
    for name in ["sod", "opd", "grpo", "sft"] {
        let plugin = LossPlugin::load(name, &dir).unwrap();
        assert_eq!(plugin.name(), name);
        assert!(!plugin.description().is_empty());
    }
    let error = LossPlugin::load("sdo", &dir).unwrap_err().to_string();
    assert!(error.contains("loss plugin 'sdo' not found"), "{error}");
    assert!(error.contains("grpo, opd, sft, sod"), "{error}");
    let error = LossPlugin::load("s o d", &dir).unwrap_err().to_string();
    assert!(error.contains("is not a loss plugin name"), "{error}");
    let error = LossPlugin::load("/nowhere/libx.so", &dir)
        .unwrap_err()
        .to_string();
    assert!(error.contains("/nowhere/libx.so does not exist"), "{error}");

    // A file named for one plugin that contains another is refused.
    let renamed = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join(sod_loss::plugin_file_name("opd")),
        renamed.path().join(sod_loss::plugin_file_name("sod")),
    )
    .unwrap();
    let error = LossPlugin::load("sod", renamed.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("calls itself 'opd'"), "{error}");
}

#[test]
fn requirements_refuse_mismatched_runs() {
    let dir = plugin_dir();
    let on_policy = |has_teacher, group_size| RunShape {
        has_teacher,
        data: DataSource::OnPolicy,
        group_size,
    };
    let sod = LossPlugin::load("sod", &dir).unwrap();
    assert!(sod.requirements().unwrap().needs_teacher);
    let loss = sod.configure(&[]).unwrap();
    loss.check_run(&on_policy(true, 8)).unwrap();
    let error = loss
        .check_run(&on_policy(false, 8))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("loss 'sod' cannot run here: it needs teacher log-probs"),
        "{error}"
    );
    // With c = 0 SOD is GRPO and needs no teacher.
    let grpo_like = sod.configure(&settings(&[("c", "0")])).unwrap();
    grpo_like.check_run(&on_policy(false, 8)).unwrap();

    let grpo = LossPlugin::load("grpo", &dir)
        .unwrap()
        .configure(&[])
        .unwrap();
    let error = grpo
        .check_run(&on_policy(false, 1))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("at least 2 samples per prompt, but the run draws 1"),
        "{error}"
    );

    let sft = LossPlugin::load("sft", &dir)
        .unwrap()
        .configure(&[])
        .unwrap();
    let error = sft.check_run(&on_policy(false, 1)).unwrap_err().to_string();
    assert!(
        error.contains("trains on an offline dataset, but the run provides on-policy samples"),
        "{error}"
    );

    let mut teacherless = small_batch();
    teacherless.teacher_logprob = None;
    let error = sod
        .configure(&[])
        .unwrap()
        .compute(&teacherless)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("needs teacher log-probs, but the batch has none"),
        "{error}"
    );

    let error = sod
        .configure(&settings(&[("detla", "0.3")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("invalid settings: unknown setting 'detla' for loss 'sod'"),
        "{error}"
    );
}
