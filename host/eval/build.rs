//! Records the git commit this crate is built from (`SOD_BUILD_COMMIT`), so that a manifest names the code that
//! ran even when the binary has left its source tree (the GPU bundle) or the tree has moved on since the build.
//! Set `SOD_BUILD_COMMIT` to name it where there is no git checkout; empty when neither tells.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-env-changed=SOD_BUILD_COMMIT");
    let commit = std::env::var("SOD_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&dir, &["rev-parse", "HEAD"]))
        .unwrap_or_default();
    // Built again when HEAD moves: a commit, a checkout, or the branch's ref (loose or packed). Only files that
    // exist are named: cargo would run the script on every build for a missing one.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rustc-env=SOD_BUILD_COMMIT={commit}");
}
