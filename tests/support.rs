//! Helpers shared by the end-to-end tests: where the built artifacts are, and a sandbox with them loaded.
//!
//! The artifacts come from `cargo xtask build-tools` (run by `cargo xtask test`); a test that cannot
//! find them fails with a message saying so rather than skipping.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sod_sandbox::{Sandbox, SandboxConfig, Tool};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Path of a built artifact under the target directory, e.g. `tools/calculator.wasm`.
pub fn artifact(relative: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: build the tools first with `cargo xtask build-tools` (or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// A compile cache private to the test run, so tests never touch the user's cache.
pub fn test_config() -> SandboxConfig {
    SandboxConfig {
        cache_dir: Some(target_dir().join("test-cache")),
        ..SandboxConfig::default()
    }
}

/// A process-wide sandbox with the shipped tools and the hostile fixture loaded.
pub fn shared_sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let sandbox = Sandbox::new(test_config()).expect("sandbox");
        for name in ["tools/calculator.wasm", "test-tools/hostile.wasm"] {
            sandbox.load_tool(&artifact(name)).expect(name);
        }
        sandbox
    })
}

/// The loaded tool called `name` in [`shared_sandbox`].
pub fn tool(name: &str) -> Tool {
    shared_sandbox().tool(name).expect("tool loaded")
}

/// The `sod` binary built by cargo for this test run.
pub fn sod_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/sod
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("profile directory");
    let sod = profile_dir.join(format!("sod{}", std::env::consts::EXE_SUFFIX));
    assert!(
        sod.is_file(),
        "{} is missing: run `cargo build --workspace` first (or `cargo xtask test`)",
        sod.display()
    );
    sod
}
