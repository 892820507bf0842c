//! Where sod finds its artifacts: tool components and loss plugins.
//!
//! Search order, first match wins: an explicit flag, an environment variable, then places relative to the
//! running executable (a cargo build puts the binary in `target/<profile>/`, tools in `target/tools/`,
//! plugins beside the binary), then the current directory's `target/`.

use std::path::{Path, PathBuf};

/// Environment variable naming the tools directory.
pub const TOOLS_DIR_ENV: &str = "SOD_TOOLS_DIR";
/// Environment variable naming the plugin directory.
pub const PLUGIN_DIR_ENV: &str = "SOD_PLUGIN_DIR";

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// The directory holding tool components (`*.wasm`).
pub fn tools_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(TOOLS_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let mut candidates = Vec::new();
    if let Some(dir) = exe_dir() {
        candidates.push(dir.join("tools"));
        // target/<profile>/sod -> target/tools; target/<profile>/deps/test -> target/tools
        for ancestor in dir.ancestors().skip(1).take(2) {
            candidates.push(ancestor.join("tools"));
        }
    }
    candidates.push(PathBuf::from("target/tools"));
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("target/tools"))
}

/// The directory holding loss plugins: an explicit flag, `$SOD_PLUGIN_DIR`, else the executable's directory
/// (where cargo puts the plugin libraries next to `sod`).
pub fn plugin_dir(explicit: Option<&Path>) -> Result<PathBuf, sod_loss::LossError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    sod_loss::default_plugin_dir()
}
