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

/// A `sod serve` process (2 workers) over the tools in `tools_dir`, on a free loopback port; its log is drained so
/// that it never blocks on it. Kill it when done.
pub fn serve_process(tools_dir: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let (child, addr, _) = serve_process_counting(tools_dir);
    (child, addr)
}

/// [`serve_process`], with the number of tool calls it has logged so far.
pub fn serve_process_counting(
    tools_dir: &Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    serve_process_at(tools_dir, "127.0.0.1:0")
}

/// [`serve_process_counting`] listening on `bind` (`127.0.0.1:0` for a free port).
pub fn serve_process_at(
    tools_dir: &Path,
    bind: &str,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(sod_binary())
        .args(["serve", "--bind", bind, "--workers", "2"])
        .env("SOD_TOOLS_DIR", tools_dir)
        .env("SOD_CACHE_DIR", target_dir().join("test-cache-cli"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sod serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sod serve exited before listening")
            .expect("read");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            break event["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("address");
        }
    };
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "call" {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    (child, addr, calls)
}
