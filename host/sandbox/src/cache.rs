//! On-disk cache of compiled components, keyed by the artifact's content hash and the engine's codegen
//! settings (a `.cwasm` only loads into an engine compiled with the same settings).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of serialized components.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        CompileCache { dir, engine_key }
    }

    fn path_for(&self, artifact_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{artifact_hash}-{}.cwasm", self.engine_key))
    }

    /// Loads the compiled form of the artifact with `artifact_hash`, or compiles `bytes` and stores it.
    /// A cache that cannot be read or written only costs time: compilation is the fallback.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        artifact_hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path_for(artifact_hash);
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the same
            // compatibility hash (it is in the file name), into a directory owned by this cache, through a
            // rename from a temporary file, so it is complete. wasmtime also checks the header and settings.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(path = %path.display(), "stale compile cache entry: {err}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot write compile cache: {err}");
        }
        Ok(component)
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let serialized = component.serialize().map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &serialized)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Default cache directory: `$SOD_CACHE_DIR/wasm`, else `$XDG_CACHE_HOME/sod/wasm`, else `~/.cache/sod/wasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SOD_CACHE_DIR") {
        return Some(PathBuf::from(dir).join("wasm"));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("sod").join("wasm"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("sod").join("wasm"))
}
