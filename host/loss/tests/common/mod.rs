//! Shared helpers of the loss host tests: locating the built plugins, compiling C plugins.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;

use sod_loss::Batch;

/// The directory with the workspace's plugin libraries: `cargo test` leaves them in
/// `target/<profile>/deps` (next to the test binary); `cargo build` also copies them one level up.
pub fn plugin_dir() -> PathBuf {
    let exe_dir = sod_loss::default_plugin_dir().expect("test executable directory");
    let wanted = sod_loss::plugin_file_name("opd");
    let candidates = [
        exe_dir.clone(),
        exe_dir.parent().map(Path::to_path_buf).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|dir| dir.join(&wanted).is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the loss plugins are not built: {wanted} is in none of {candidates:?}; \
                 run `cargo test -p sod-loss` (it builds them as dev-dependencies) or `cargo build --workspace`"
            )
        })
}

/// The C header of the ABI.
pub fn header_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/loss-abi/include")
}

/// The system C compiler: `$CC`, or `cc`.
pub fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

/// Compiles a C source into a shared library `out_dir/file_name` with extra flags.
pub fn compile_c(source: &Path, out_dir: &Path, file_name: &str, defines: &[&str]) -> PathBuf {
    let output = out_dir.join(file_name);
    let result = Command::new(compiler())
        .args([
            "-std=c11", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-I",
        ])
        .arg(header_dir())
        .args(defines)
        .arg(source)
        .arg("-o")
        .arg(&output)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}` (set CC): {e}", compiler()));
    assert!(
        result.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// A small valid batch with teacher log-probs: two sequences of one group.
pub fn small_batch() -> Batch {
    let nan = f32::NAN;
    Batch {
        old_logprob: vec![nan, -1.0, -2.0, nan, -0.5, -1.0, -3.0],
        teacher_logprob: Some(vec![nan, -0.5, -1.0, nan, -1.5, -1.0, -2.0]),
        mask: vec![0, 1, 1, 0, 1, 1, 1],
        seq_offsets: vec![0, 5, 7],
        reward: vec![1.0, 0.0],
        group: vec![0, 0],
        flags: vec![0, 0],
        ..Batch::default()
    }
}

/// Owned `key=value` pairs.
pub fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
