//! The sandbox: its settings ([`SandboxConfig`], [`CallOptions`]), the public [`Sandbox`] handle, and the call
//! path every call takes, whichever way it came (a caller, a composing tool's child call, a backend's worker).
//!
//! The call path: [`SandboxInner::call_async`] resolves the call's limits ([`SandboxInner::call_limits`]) and
//! identity, then runs it on an instance made ahead (`crate::ahead`), a fresh instance, or its session's
//! (`crate::session`); each binds the store through `crate::store::bind` and ends in
//! `crate::classify::finish`. With a backend ([`Sandbox::with_backend`]) the call is handed over instead, after
//! the same limits and seed are filled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use crate::ahead::AheadPool;
use crate::backend::ToolBackend;
use crate::bindings::CompositeTool;
use crate::bindings::sod::tool::types::ToolError;
use crate::cache::{CompileCache, default_cache_dir};
use crate::classify::finish;
use crate::engine::{new_engine, new_linker, spawn_epoch_ticker};
use crate::error::SandboxError;
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::registry::{Registry, Tool, tool_files};
use crate::remote::RemoteTools;
use crate::session::Sessions;
use crate::store::{CallIdentity, CallState, store_for_call};
use crate::vfs;
use crate::workers::WorkerPool;

/// Deepest chain of tools calling tools.
pub const MAX_CALL_DEPTH: u32 = 4;

/// Settings of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Directory of tool components: a tool not loaded yet is loaded from `<tools_dir>/<name>.wasm` on
    /// first use (by a caller or by a composing tool).
    pub tools_dir: Option<PathBuf>,
    /// Limits of a call that names none.
    pub default_limits: Limits,
    /// Largest memory limit any call may ask for; sizes the pooling allocator's slots.
    pub max_memory_bytes: u64,
    /// Wasm stack of a call. CPython needs about 4 MiB to turn deep recursion into a RecursionError.
    pub max_wasm_stack: usize,
    /// Instances that may exist at once (running calls plus open sessions).
    pub max_instances: u32,
    /// Bytes of each linear memory reset with `memset` instead of returned to the kernel between
    /// instances, where the kernel cannot report written pages (see `pagemap_keep_resident`): saves page
    /// faults and `madvise` calls for small tools, costs a memset for large ones.
    pub memory_keep_resident: usize,
    /// Where the kernel reports which pages a call wrote (Linux's `PAGEMAP_SCAN`, kernel 6.7 and later), up to
    /// this many bytes of each memory are kept resident: only the written pages are copied back from the image
    /// when an instance is reset, instead of being returned to the kernel, so the next instance starts without
    /// page faults and without the `madvise` that interrupts other cores. `None` never uses the scan. Where
    /// the scan is unavailable, `memory_keep_resident` applies.
    pub pagemap_keep_resident: Option<usize>,
    /// Make the next fresh instance of a tool while its current call runs, and drop finished instances on a
    /// background thread, so that a stateless call starts at once and returns without waiting for its
    /// memory to be reset. Outcomes are the same either way: the call's seed, limits and output cap are
    /// bound when it takes the instance, and an instance that did anything they govern before that (drew
    /// randomness, wrote output, used more fuel or memory than the call may) is set aside for a fresh one.
    pub instances_ahead: bool,
    /// Run seed: every call's randomness derives from it and the call key.
    pub seed: u64,
    /// Sessions untouched for this long are released.
    pub session_idle: Duration,
    /// Most sessions kept at once; the least recently used is released beyond it.
    pub max_sessions: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: default_cache_dir(),
            tools_dir: None,
            default_limits: Limits::default(),
            max_memory_bytes: 4 << 30,
            max_wasm_stack: 4 << 20,
            max_instances: 128,
            // Measured best for light calls (docs/benchmarks.md): 64 KiB.
            memory_keep_resident: 64 << 10,
            // Measured (docs/benchmarks.md): calculator 91 -> 66 us, python 3.2 -> 2.7 ms, and two threads
            // scale 1.8x instead of 1.5x.
            pagemap_keep_resident: Some(64 << 20),
            instances_ahead: true,
            seed: 0,
            session_idle: Duration::from_secs(600),
            max_sessions: 256,
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Limits; `None` uses the sandbox's defaults.
    pub limits: Option<Limits>,
    /// Seed; `None` uses the sandbox's run seed.
    pub seed: Option<u64>,
    /// Names the call for seeding (e.g. `"prompt-3/sample-1/turn-2"`); `None` derives it from the tool
    /// and the arguments, so identical calls see identical randomness.
    pub call_key: Option<String>,
    /// Keeps the instance (and so the tool's state, its files included) across calls with the same id.
    pub session: Option<String>,
    /// Files written into the tool's filesystem before it runs (path relative to its `/`, contents);
    /// directories are created. They count toward the call's file quotas (`Limits::fs`).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Files read back after the call into [`Outcome::files`] (those that exist and are regular files),
    /// whichever way it ended.
    pub fetch_files: Vec<String>,
}

/// Shared state behind [`Sandbox`].
pub(crate) struct SandboxInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) config: SandboxConfig,
    pub(crate) cache: Option<CompileCache>,
    pub(crate) registry: Registry,
    pub(crate) sessions: Sessions,
    pub(crate) ahead: AheadPool,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for SandboxInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The deterministic, resource-limited tool sandbox. Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
    /// Where calls run when not here ([`Sandbox::with_backend`]): remote `sod serve` endpoints or worker
    /// processes. Tools are still loaded and described here, so that prompts, schemas and artifact hashes are the
    /// same either way.
    backend: Option<Arc<dyn ToolBackend>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("tools", &self.tool_names())
            .finish()
    }
}

impl Sandbox {
    /// Creates a sandbox with no tools loaded.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = new_engine(&config)?;
        let linker = new_linker(&engine)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), stop_ticker.clone());
        let cache = config
            .cache_dir
            .clone()
            .map(|dir| CompileCache::new(dir, &engine));
        Ok(Sandbox {
            backend: None,
            inner: Arc::new(SandboxInner {
                engine,
                linker,
                registry: Registry::new(config.tools_dir.clone()),
                config,
                cache,
                sessions: Sessions::default(),
                ahead: AheadPool::default(),
                stop_ticker,
            }),
        })
    }

    /// The sandbox's settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Loads (compiling or reading from the cache) the tool at `path`, describes it and registers it by
    /// name so that other tools can call it.
    pub fn load_tool(&self, path: &Path) -> Result<Tool, SandboxError> {
        self.inner.load_tool(path)
    }

    /// Loads every `*.wasm` in `dir`, in file-name order.
    pub fn load_tools_dir(&self, dir: &Path) -> Result<Vec<Tool>, SandboxError> {
        let entries = std::fs::read_dir(dir).map_err(|source| SandboxError::ToolsDir {
            path: dir.to_path_buf(),
            source,
        })?;
        drop(entries);
        tool_files(dir).iter().map(|p| self.load_tool(p)).collect()
    }

    /// The tool called `name`: already loaded, or loaded now from the tools directory.
    pub fn tool(&self, name: &str) -> Result<Tool, SandboxError> {
        self.inner.tool(name)
    }

    /// Names of the loaded tools, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        self.inner.registry.names()
    }

    /// All loaded tools, sorted by name.
    pub fn tools(&self) -> Vec<Tool> {
        self.inner.registry.all()
    }

    /// Calls `tool` with JSON `arguments`. Never fails: every way a call can end is an [`Outcome`].
    pub fn call(&self, tool: &Tool, arguments: &str, options: &CallOptions) -> Outcome {
        if let Some(backend) = &self.backend {
            // What this sandbox would fill in and cap, done here: the backend's own defaults may differ.
            let options = CallOptions {
                limits: Some(self.inner.call_limits(options)),
                seed: Some(options.seed.unwrap_or(self.inner.config.seed)),
                ..options.clone()
            };
            return backend.call(tool.name(), arguments, &options);
        }
        wasmtime_wasi::runtime::in_tokio(self.inner.call_async(tool, arguments, options, 0))
    }

    /// This sandbox with its calls run by `backend` instead (same outcomes: see [`ToolBackend`]). Call
    /// [`Sandbox::check_backend`] once the tools are loaded.
    pub fn with_backend(mut self, backend: Arc<dyn ToolBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// This sandbox with its calls run where a run's settings say: on the `sod serve` endpoints `endpoints` if
    /// any, else in `processes` worker processes if more than zero (each a `sod worker` with this sandbox's tools
    /// directory, compile cache, seed and memory cap), else here.
    pub fn with_backend_from(
        self,
        endpoints: &[String],
        processes: usize,
    ) -> Result<Self, SandboxError> {
        if !endpoints.is_empty() && processes > 0 {
            return Err(SandboxError::Backend(
                "tool_endpoints and tool_processes both set: choose one".to_string(),
            ));
        }
        if !endpoints.is_empty() {
            let remote = RemoteTools::new(endpoints)
                .map_err(|e| SandboxError::Backend(format!("tool_endpoints: {e}")))?;
            return Ok(self.with_backend(Arc::new(remote)));
        }
        if processes == 0 {
            return Ok(self);
        }
        let config = &self.inner.config;
        let tools_dir = config.tools_dir.clone().ok_or_else(|| {
            SandboxError::Backend("tool_processes needs the sandbox's tools directory".to_string())
        })?;
        let mut command = WorkerPool::current_exe_command(&tools_dir, config.seed)
            .map_err(|e| SandboxError::Backend(format!("tool_processes: {e}")))?;
        command.cache_dir = config.cache_dir.clone();
        command.max_memory_bytes = Some(config.max_memory_bytes);
        let pool = WorkerPool::start(command, processes).map_err(|e| {
            SandboxError::Backend(format!("tool_processes: cannot start sandbox workers: {e}"))
        })?;
        Ok(self.with_backend(Arc::new(pool)))
    }

    /// Checks that the backend serves each loaded tool with the same artifact (nothing to check without one).
    pub fn check_backend(&self) -> Result<(), SandboxError> {
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        let tools: Vec<(String, String)> = self
            .tools()
            .iter()
            .map(|t| (t.name().to_string(), t.artifact_hash().to_string()))
            .collect();
        backend
            .check_artifacts(&tools)
            .map_err(SandboxError::Backend)
    }

    /// Calls the loaded tool called `name`.
    pub fn call_by_name(
        &self,
        name: &str,
        arguments: &str,
        options: &CallOptions,
    ) -> Result<Outcome, SandboxError> {
        let tool = self.tool(name)?;
        Ok(self.call(&tool, arguments, options))
    }

    /// Releases a session's instance. Returns whether it existed.
    pub fn release_session(&self, tool: &str, session: &str) -> bool {
        if let Some(backend) = &self.backend {
            return backend.release_session(tool, session);
        }
        self.inner.sessions.release(tool, session)
    }

    /// Calls that ran on an instance made ahead of them, and instances made ahead that a call could not use
    /// (it then got a fresh one). See `SandboxConfig::instances_ahead`.
    pub fn instances_ahead_counts(&self) -> (u64, u64) {
        self.inner.ahead.counts()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.count()
    }
}

/// The call key of a call whose caller names none (also what a remote client sends): the tool, the arguments, and
/// the files given to it (left out when there are none, so keys of calls without files stay as they were).
pub fn call_key_for(tool: &str, arguments: &str, files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{tool}\0{arguments}").as_bytes());
    for (path, bytes) in files {
        hasher.update(b"\0file\0");
        hasher.update(path.as_bytes());
        hasher.update(b"\0");
        hasher.update(Sha256::digest(bytes));
    }
    format!("args:{}", hex::encode(&hasher.finalize()[..16]))
}

impl SandboxInner {
    /// The limits a call runs under: its own or the sandbox's defaults, memory and file bytes capped at the
    /// sandbox's ceiling (a call's files are host memory like its linear memory is).
    fn call_limits(&self, options: &CallOptions) -> Limits {
        let limits = options.limits.unwrap_or(self.config.default_limits);
        Limits {
            memory_bytes: limits.memory_bytes.min(self.config.max_memory_bytes),
            fs: vfs::FsLimits {
                max_bytes: limits.fs.max_bytes.min(self.config.max_memory_bytes),
                ..limits.fs
            },
            ..limits
        }
    }

    /// The call path shared by top-level calls and child calls of composing tools.
    pub(crate) async fn call_async(
        self: &Arc<Self>,
        tool: &Tool,
        arguments: &str,
        options: &CallOptions,
        depth: u32,
    ) -> Outcome {
        let limits = self.call_limits(options);
        let identity = CallIdentity {
            seed: options.seed.unwrap_or(self.config.seed),
            call_key: options
                .call_key
                .clone()
                .unwrap_or_else(|| call_key_for(tool.name(), arguments, &options.files)),
            depth,
        };
        let call = Call {
            arguments,
            limits,
            files: &options.files,
            fetch: &options.fetch_files,
        };
        match &options.session {
            None => self.call_fresh(tool, &call, identity).await,
            Some(session) => self.call_in_session(tool, &call, identity, session).await,
        }
    }

    /// A stateless call: on the instance made ahead of it if that can serve it, else on a fresh one.
    async fn call_fresh(
        self: &Arc<Self>,
        tool: &Tool,
        call: &Call<'_>,
        identity: CallIdentity,
    ) -> Outcome {
        if self.config.instances_ahead
            && let Some(outcome) = self.call_on_ahead(tool, call, &identity).await
        {
            return outcome;
        }
        let mut store = store_for_call(&self.engine, call.limits, identity, Arc::downgrade(self));
        let result = match tool.inner.pre.instantiate_async(&mut store).await {
            Ok(instance) => run_call(&instance, &mut store, call).await,
            Err(err) => Err(err),
        };
        let outcome = finish(tool, &mut store, call, result);
        self.drop_later(store);
        outcome
    }
}

/// What one call runs with, past its identity.
pub(crate) struct Call<'a> {
    pub(crate) arguments: &'a str,
    pub(crate) limits: Limits,
    pub(crate) files: &'a BTreeMap<String, Vec<u8>>,
    pub(crate) fetch: &'a [String],
}

/// Installs the call's files (after instantiation, so that an instance made ahead saw exactly what a fresh one
/// sees while it was made) and runs the call on a bound store. Files the quotas refuse are the caller's error,
/// reported as the tool's `invalid_arguments`; the guest never runs then.
pub(crate) async fn run_call(
    instance: &CompositeTool,
    store: &mut Store<CallState>,
    call: &Call<'_>,
) -> wasmtime::Result<Result<String, ToolError>> {
    if !call.files.is_empty()
        && let Err(message) = store.data().vfs.install(call.files)
    {
        return Ok(Err(ToolError::InvalidArguments(format!(
            "files: {message}"
        ))));
    }
    instance.call_call(&mut *store, call.arguments).await
}
