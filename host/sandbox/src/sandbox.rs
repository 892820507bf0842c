//! The sandbox: one engine, the loaded tools, and the call path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};

use crate::backend::ToolBackend;
use crate::bindings::sod::tool::types::ToolError;
use crate::bindings::{CompositeTool, CompositeToolPre};
use crate::cache::{CompileCache, default_cache_dir};
use crate::clock::VirtualMonotonicClock;
use crate::error::SandboxError;
use crate::limits::Limits;
use crate::outcome::{Outcome, OutcomeKind};
use crate::random::InsecureSeedHost;
use crate::remote::RemoteTools;
use crate::state::{CallIdentity, CallState};
use crate::vfs;
use crate::workers::WorkerPool;

/// How often the wall-clock backstop's epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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

/// What a tool says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The name the model calls it by.
    pub name: String,
    /// The tool's version.
    pub version: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

impl Descriptor {
    /// The OpenAI-style function schema a chat template puts into the system prompt.
    pub fn function_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

/// A loaded tool: compiled, linked and described.
#[derive(Clone)]
pub struct Tool {
    inner: Arc<ToolInner>,
}

struct ToolInner {
    descriptor: Descriptor,
    artifact: String,
    path: PathBuf,
    pre: CompositeToolPre<CallState>,
    /// A fresh instance made ahead of the next stateless call (see `SandboxConfig::instances_ahead`).
    ahead: Mutex<Option<Ahead>>,
}

/// A fresh instance made ahead of its call, with its store's state not yet bound to a call.
struct Ahead {
    store: Store<CallState>,
    instance: CompositeTool,
    /// Fuel its instantiation used: charged to the call that takes it, as a fresh instantiation would be.
    fuel_spent: u64,
}

/// Fuel an instance made ahead may spend on instantiation (a call's limit is applied when it takes it).
const AHEAD_FUEL: u64 = u64::MAX >> 2;

/// Work for the background thread of a sandbox with `instances_ahead`.
enum AheadJob {
    /// Make an instance of the tool unless one is waiting already.
    Make(Tool),
    /// Drop a finished call's store (resetting its memories) off the caller's path.
    Drop(Box<Store<CallState>>),
}

impl Tool {
    /// The tool's self-description.
    pub fn descriptor(&self) -> &Descriptor {
        &self.inner.descriptor
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.inner.descriptor.name
    }

    /// `sha256:<hex>` of the artifact.
    pub fn artifact_hash(&self) -> &str {
        &self.inner.artifact
    }

    /// Where the artifact was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.inner.descriptor.name)
            .field("artifact", &self.inner.artifact)
            .field("path", &self.inner.path)
            .finish()
    }
}

/// A live instance kept for a session.
struct Session {
    store: Store<CallState>,
    instance: CompositeTool,
    last_used: Instant,
}

/// A session's instance behind an async mutex: calls on one session run one at a time, and the guard may
/// be held across the call's await points.
type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// Shared state behind [`Sandbox`].
pub(crate) struct SandboxInner {
    engine: Engine,
    linker: Linker<CallState>,
    config: SandboxConfig,
    cache: Option<CompileCache>,
    tools: RwLock<BTreeMap<String, Tool>>,
    sessions: Mutex<HashMap<(String, String), SessionSlot>>,
    stop_ticker: Arc<AtomicBool>,
    /// The background thread's queue, started on first use (see `SandboxConfig::instances_ahead`).
    ahead_jobs: Mutex<Option<std::sync::mpsc::Sender<AheadJob>>>,
    /// Stores queued for dropping and not dropped yet: past [`MAX_PENDING_DROPS`] callers drop their own, so
    /// that finished instances never pile up in the instance pool.
    pending_drops: Arc<std::sync::atomic::AtomicUsize>,
    /// Calls that ran on an instance made ahead.
    ahead_used: std::sync::atomic::AtomicU64,
    /// Instances made ahead that a call could not use (it got a fresh one).
    ahead_set_aside: std::sync::atomic::AtomicU64,
}

/// Most finished stores waiting for the background thread.
const MAX_PENDING_DROPS: usize = 2;

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

/// The engine's configuration; `pagemap_keep_resident` is `Some` to require `PAGEMAP_SCAN` (building the
/// engine then fails where the kernel lacks it).
fn engine_config(config: &SandboxConfig, pagemap_keep_resident: Option<usize>) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        // Fuel is the deterministic time limit; epochs are only the wall-clock backstop.
        .consume_fuel(true)
        .epoch_interruption(true)
        // Same bits on every machine: canonical NaNs and deterministic relaxed SIMD.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        .wasm_backtrace_max_frames(None)
        .memory_init_cow(true)
        .parallel_compilation(true);
    let keep_resident = pagemap_keep_resident.unwrap_or(config.memory_keep_resident);
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances.max(1);
    pool.total_component_instances(instances)
        // componentize-py components hold dozens of core instances.
        .max_core_instances_per_component(128)
        .total_core_instances(instances.saturating_mul(64))
        .max_memories_per_component(16)
        .total_memories(instances.saturating_mul(4))
        .max_tables_per_component(64)
        .total_tables(instances.saturating_mul(32))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident)
        .pagemap_scan(if pagemap_keep_resident.is_some() {
            Enabled::Yes
        } else {
            Enabled::No
        });
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

impl Sandbox {
    /// Creates a sandbox with no tools loaded.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let plain = || Engine::new(&engine_config(&config, None));
        let engine = match config.pagemap_keep_resident {
            // A large keep-resident without the scan would memset every memory in full: fall back to the
            // plain setting where the kernel lacks the scan.
            Some(bytes) => Engine::new(&engine_config(&config, Some(bytes))).or_else(|_| plain()),
            None => plain(),
        }
        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        // Shadow the monotonic clock: sleeps advance virtual time instead of blocking a host thread.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<
            CallState,
            VirtualMonotonicClock,
        >(&mut linker, CallState::clock_view)
        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        // Shadow the filesystem: a call's files live in memory (`crate::vfs`), not in a host directory.
        vfs::add_to_linker(&mut linker).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        // Shadow the insecure seed: wasmtime-wasi fixes it when the context is built, and an instance made
        // ahead of its call learns its seed later.
        wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<
            CallState,
            InsecureSeedHost,
        >(&mut linker, |state| &mut state.insecure_seed)
        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        linker.allow_shadowing(false);
        crate::compose::add_to_linker(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

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
                config,
                cache,
                tools: RwLock::new(BTreeMap::new()),
                sessions: Mutex::new(HashMap::new()),
                stop_ticker,
                ahead_jobs: Mutex::new(None),
                pending_drops: Arc::default(),
                ahead_used: Default::default(),
                ahead_set_aside: Default::default(),
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
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.keys().cloned().collect()
    }

    /// All loaded tools, sorted by name.
    pub fn tools(&self) -> Vec<Tool> {
        let tools = self.inner.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.values().cloned().collect()
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
        let mut sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions
            .remove(&(tool.to_string(), session.to_string()))
            .is_some()
    }

    /// Calls that ran on an instance made ahead of them, and instances made ahead that a call could not use
    /// (it then got a fresh one). See `SandboxConfig::instances_ahead`.
    pub fn instances_ahead_counts(&self) -> (u64, u64) {
        (
            self.inner.ahead_used.load(Ordering::Relaxed),
            self.inner.ahead_set_aside.load(Ordering::Relaxed),
        )
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        let sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions.len()
    }
}

/// The background thread of a sandbox with `instances_ahead`: makes instances ahead and drops finished
/// stores, in the order asked. Ends when the sandbox is gone.
fn ahead_worker(
    sandbox: std::sync::Weak<SandboxInner>,
    jobs: std::sync::mpsc::Receiver<AheadJob>,
    pending_drops: &std::sync::atomic::AtomicUsize,
) {
    for job in jobs {
        match job {
            AheadJob::Drop(store) => {
                drop(store);
                pending_drops.fetch_sub(1, Ordering::Relaxed);
            }
            AheadJob::Make(tool) => {
                let Some(sandbox) = sandbox.upgrade() else {
                    break;
                };
                let slot = || tool.inner.ahead.lock().unwrap_or_else(|e| e.into_inner());
                if slot().is_some() {
                    continue;
                }
                if let Some(ahead) = wasmtime_wasi::runtime::in_tokio(sandbox.make_ahead(&tool)) {
                    // Only this thread fills the slot: it is still empty or was emptied by a call meanwhile.
                    *slot() = Some(ahead);
                }
            }
        }
    }
}

/// The `*.wasm` files of a directory, sorted.
fn tool_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    paths.sort();
    paths
}

fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("sod-epoch".to_string())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(err) = spawned {
        // Without the ticker the backstop never fires; fuel still bounds every call.
        tracing::warn!("cannot start the wall-clock backstop thread: {err}");
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

    /// A store for one call (or session): fresh WASI state, an empty file tree, limits armed.
    fn new_store(self: &Arc<Self>, limits: Limits, identity: CallIdentity) -> Store<CallState> {
        let state = CallState::new(limits, identity, Arc::downgrade(self));
        self.store(state, &limits)
    }

    fn store(&self, state: CallState, limits: &Limits) -> Store<CallState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Filesystem work is charged as fuel each time the guest resumes.
        store.call_hook(vfs::charge_hook);
        arm_store(&mut store, limits);
        store
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

    async fn call_fresh(
        self: &Arc<Self>,
        tool: &Tool,
        call: &Call<'_>,
        identity: CallIdentity,
    ) -> Outcome {
        if self.config.instances_ahead {
            let ahead = tool
                .inner
                .ahead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            // Make the next call's instance while this one runs.
            self.queue_ahead(AheadJob::Make(tool.clone()));
            if let Some(ahead) = ahead {
                match self.call_ahead(ahead, tool, call, identity.clone()).await {
                    Ok(outcome) => {
                        self.ahead_used.fetch_add(1, Ordering::Relaxed);
                        return outcome;
                    }
                    // Not usable for this call: make a fresh instance as if there had been none.
                    Err(store) => {
                        self.ahead_set_aside.fetch_add(1, Ordering::Relaxed);
                        self.drop_later(store);
                    }
                }
            }
        }
        let mut store = self.new_store(call.limits, identity);
        let result = match tool.inner.pre.instantiate_async(&mut store).await {
            Ok(instance) => run_call(&instance, &mut store, call).await,
            Err(err) => Err(err),
        };
        let outcome = finish(tool, &mut store, call, result);
        self.drop_later(store);
        outcome
    }

    /// Runs a call on an instance made ahead; gives the store back if the instance cannot serve this call
    /// exactly as a fresh one would.
    async fn call_ahead(
        self: &Arc<Self>,
        ahead: Ahead,
        tool: &Tool,
        call: &Call<'_>,
        identity: CallIdentity,
    ) -> Result<Outcome, Store<CallState>> {
        let limits = &call.limits;
        let Ahead {
            mut store,
            instance,
            fuel_spent,
        } = ahead;
        if fuel_spent > limits.fuel || !store.data_mut().bind(*limits, identity) {
            return Err(store);
        }
        arm_store(&mut store, limits);
        // Charged as a fresh instantiation would have been.
        let _ = store.set_fuel(limits.fuel - fuel_spent);
        let result = run_call(&instance, &mut store, call).await;
        let outcome = finish(tool, &mut store, call, result);
        self.drop_later(store);
        Ok(outcome)
    }

    /// Makes an instance of `tool` ahead of its call.
    async fn make_ahead(self: &Arc<Self>, tool: &Tool) -> Option<Ahead> {
        let ceiling = Limits {
            fuel: AHEAD_FUEL,
            memory_bytes: self.config.max_memory_bytes,
            ..self.config.default_limits
        };
        let state = CallState::ahead(ceiling, Arc::downgrade(self));
        let mut store = self.store(state, &ceiling);
        let instance = tool.inner.pre.instantiate_async(&mut store).await.ok()?;
        let fuel_spent = AHEAD_FUEL.saturating_sub(store.get_fuel().unwrap_or(0));
        Some(Ahead {
            store,
            instance,
            fuel_spent,
        })
    }

    /// Drops a finished store on the background thread when there is one (its memories are reset then).
    fn drop_later(self: &Arc<Self>, store: Store<CallState>) {
        if !self.config.instances_ahead
            || self.pending_drops.load(Ordering::Relaxed) >= MAX_PENDING_DROPS
        {
            return;
        }
        self.pending_drops.fetch_add(1, Ordering::Relaxed);
        self.queue_ahead(AheadJob::Drop(Box::new(store)));
    }

    /// Hands `job` to the background thread, starting it on first use. If the thread cannot be started the
    /// job is done here (a drop) or skipped (an instance made ahead is an optimisation only).
    fn queue_ahead(self: &Arc<Self>, job: AheadJob) {
        let mut jobs = self.ahead_jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_none() {
            let (sender, receiver) = std::sync::mpsc::channel();
            let sandbox = Arc::downgrade(self);
            let pending_drops = self.pending_drops.clone();
            let spawned = std::thread::Builder::new()
                .name("sod-ahead".to_string())
                .spawn(move || ahead_worker(sandbox, receiver, &pending_drops));
            if spawned.is_ok() {
                *jobs = Some(sender);
            }
        }
        if let Some(sender) = jobs.as_ref() {
            // A send fails only if the thread ended; the job (and the store it may hold) is dropped here then.
            let _ = sender.send(job);
        }
    }

    async fn call_in_session(
        self: &Arc<Self>,
        tool: &Tool,
        call: &Call<'_>,
        identity: CallIdentity,
        session_id: &str,
    ) -> Outcome {
        let limits = call.limits;
        let slot = self.session_slot(tool.name(), session_id);
        let mut guard = slot.lock().await;
        let mut session = match guard.take() {
            Some(mut session) => {
                session.store.data_mut().rearm(limits);
                arm_store(&mut session.store, &limits);
                session
            }
            None => {
                let mut store = self.new_store(limits, identity);
                match tool.inner.pre.instantiate_async(&mut store).await {
                    Ok(instance) => Session {
                        store,
                        instance,
                        last_used: Instant::now(),
                    },
                    Err(err) => {
                        drop(guard);
                        self.forget_session(tool.name(), session_id);
                        return finish(tool, &mut store, call, Err(err));
                    }
                }
            }
        };
        let result = run_call(&session.instance, &mut session.store, call).await;
        let trapped = result.is_err();
        let mut outcome = finish(tool, &mut session.store, call, result);
        if trapped {
            // A trapped instance cannot be entered again: end the session; the next call starts fresh.
            drop(guard);
            self.forget_session(tool.name(), session_id);
            let note = "the session ended; the next call starts a fresh interpreter";
            outcome.message = Some(match outcome.message.take() {
                Some(message) => format!("{message} ({note})"),
                None => note.to_string(),
            });
        } else {
            session.last_used = Instant::now();
            *guard = Some(session);
        }
        outcome
    }

    fn session_slot(&self, tool: &str, session: &str) -> SessionSlot {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.evict_sessions(&mut sessions);
        sessions
            .entry((tool.to_string(), session.to_string()))
            .or_default()
            .clone()
    }

    /// Drops idle sessions and, past the session bound, the least recently used ones.
    fn evict_sessions(&self, sessions: &mut HashMap<(String, String), SessionSlot>) {
        let idle = self.config.session_idle;
        let mut ages: Vec<((String, String), Instant)> = Vec::new();
        sessions.retain(|key, slot| match slot.try_lock() {
            Ok(guard) => match guard.as_ref() {
                Some(session) if session.last_used.elapsed() > idle => false,
                Some(session) => {
                    ages.push((key.clone(), session.last_used));
                    true
                }
                None => true,
            },
            // In use right now: certainly not idle.
            Err(_) => true,
        });
        if sessions.len() >= self.config.max_sessions {
            ages.sort_by_key(|(_, used)| *used);
            let excess = sessions.len() + 1 - self.config.max_sessions;
            for (key, _) in ages.into_iter().take(excess) {
                sessions.remove(&key);
            }
        }
    }

    fn forget_session(&self, tool: &str, session: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&(tool.to_string(), session.to_string()));
    }

    /// The tool called `name`: already loaded, or loaded now from the tools directory.
    pub(crate) fn tool(self: &Arc<Self>, name: &str) -> Result<Tool, SandboxError> {
        // A loaded tool or an unknown name needs no executor, so async callers (an HTTP handler) may use
        // this for tools loaded up front; only loading an artifact runs guest code.
        if let Some(tool) = self.loaded(name) {
            return Ok(tool);
        }
        match self.artifact_path(name) {
            Some(path) => self.load_tool(&path),
            None => Err(self.unknown_tool(name)),
        }
    }

    /// [`SandboxInner::tool`] for async callers: a composing tool's child call runs inside the executor,
    /// where starting another runtime (as the synchronous path does) would panic.
    pub(crate) async fn tool_async(self: &Arc<Self>, name: &str) -> Result<Tool, SandboxError> {
        if let Some(tool) = self.loaded(name) {
            return Ok(tool);
        }
        match self.artifact_path(name) {
            Some(path) => self.load_tool_async(&path).await,
            None => Err(self.unknown_tool(name)),
        }
    }

    fn loaded(&self, name: &str) -> Option<Tool> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// `<tools_dir>/<name>.wasm` when it exists and `name` cannot escape the directory.
    fn artifact_path(&self, name: &str) -> Option<PathBuf> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let path = self.config.tools_dir.as_ref()?.join(format!("{name}.wasm"));
        (valid_name && path.is_file()).then_some(path)
    }

    fn unknown_tool(&self, name: &str) -> SandboxError {
        let mut available: Vec<String> = self
            .tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        if let Some(dir) = &self.config.tools_dir {
            available.extend(
                tool_files(dir)
                    .into_iter()
                    .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string)),
            );
        }
        available.sort();
        available.dedup();
        SandboxError::UnknownTool {
            name: name.to_string(),
            available: available.join(", "),
        }
    }

    /// Loads (compiling or reading from the cache) the tool at `path`, describes it and registers it by
    /// name so that other tools can call it.
    pub(crate) fn load_tool(self: &Arc<Self>, path: &Path) -> Result<Tool, SandboxError> {
        wasmtime_wasi::runtime::in_tokio(self.load_tool_async(path))
    }

    /// [`SandboxInner::load_tool`] for async callers.
    async fn load_tool_async(self: &Arc<Self>, path: &Path) -> Result<Tool, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| SandboxError::ReadArtifact {
            path: path.to_path_buf(),
            source,
        })?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let invalid = |reason: String| SandboxError::InvalidArtifact {
            path: path.to_path_buf(),
            reason,
        };
        let engine = &self.engine;
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(engine, &hash, &bytes),
            None => Component::new(engine, &bytes),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = CompositeToolPre::new(instance_pre).map_err(|e| invalid(format!("{e:#}")))?;
        let descriptor = self.describe(&pre, path).await?;
        let tool = Tool {
            inner: Arc::new(ToolInner {
                descriptor,
                artifact: format!("sha256:{hash}"),
                path: path.to_path_buf(),
                pre,
                ahead: Mutex::new(None),
            }),
        };
        let mut tools = self.tools.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = tools.get(tool.name())
            && existing.path() != path
        {
            return Err(SandboxError::DuplicateTool {
                name: tool.name().to_string(),
                first: existing.path().to_path_buf(),
                second: path.to_path_buf(),
            });
        }
        tools.insert(tool.name().to_string(), tool.clone());
        Ok(tool)
    }

    async fn describe(
        self: &Arc<Self>,
        pre: &CompositeToolPre<CallState>,
        path: &Path,
    ) -> Result<Descriptor, SandboxError> {
        let fail = |reason: String| SandboxError::Describe {
            path: path.to_path_buf(),
            reason,
        };
        let identity = CallIdentity {
            seed: self.config.seed,
            call_key: "describe".to_string(),
            depth: 0,
        };
        let limits = self.config.default_limits;
        let mut store = self.new_store(limits, identity);
        let raw = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        }
        .await
        .map_err(|e| fail(format!("{e:#}")))?;
        let parameters: serde_json::Value = serde_json::from_str(&raw.parameters)
            .map_err(|e| fail(format!("parameters is not valid JSON: {e}")))?;
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(fail(format!(
                "name {:?} must be non-empty ASCII letters, digits, '_' or '-'",
                raw.name
            )));
        }
        if !parameters.is_object() {
            return Err(fail("parameters must be a JSON Schema object".to_string()));
        }
        Ok(Descriptor {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            parameters,
        })
    }
}

/// Gives a store its fuel and wall-clock backstop for one call.
fn arm_store(store: &mut Store<CallState>, limits: &Limits) {
    // Setting fuel only fails when fuel is disabled, which this engine never is.
    let _ = store.set_fuel(limits.fuel);
    let ticks = limits
        .wall_ms
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1);
    store.set_epoch_deadline(ticks);
}

/// What one call runs with, past its identity.
struct Call<'a> {
    arguments: &'a str,
    limits: Limits,
    files: &'a BTreeMap<String, Vec<u8>>,
    fetch: &'a [String],
}

/// Installs the call's files (after instantiation, so that an instance made ahead saw exactly what a fresh one
/// sees while it was made) and runs the call. Files the quotas refuse are the caller's error, reported as the
/// tool's `invalid_arguments`; the guest never runs then.
async fn run_call(
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

/// Truncates `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Turns the result of a call into an [`Outcome`].
fn finish(
    tool: &Tool,
    store: &mut Store<CallState>,
    call: &Call<'_>,
    result: wasmtime::Result<Result<String, ToolError>>,
) -> Outcome {
    let limits = &call.limits;
    let remaining = store.get_fuel().unwrap_or(0);
    let fuel_used = limits.fuel.saturating_sub(remaining);
    let state = store.data();
    let memory_refused = state.limiter.refused;
    let max_output = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
    let mut outcome = Outcome {
        kind: OutcomeKind::Ok,
        output: String::new(),
        message: None,
        error_code: None,
        fuel_used,
        tool: tool.name().to_string(),
        artifact: tool.artifact_hash().to_string(),
        files: BTreeMap::new(),
    };
    if !call.fetch.is_empty() {
        outcome.files = crate::outcome::files_to_base64(&state.vfs.fetch(call.fetch));
    }
    match result {
        Ok(Ok(mut output)) => {
            if output.len() > max_output {
                truncate_utf8(&mut output, max_output);
                outcome.kind = OutcomeKind::OutputTruncated;
                outcome.message = Some(format!("output exceeded {max_output} bytes"));
            } else if memory_refused {
                // The guest survived a refused allocation (e.g. CPython raised MemoryError).
                outcome.kind = OutcomeKind::MemoryLimit;
                outcome.message = Some(format!(
                    "memory limit of {} bytes reached",
                    limits.memory_bytes
                ));
            }
            outcome.output = output;
        }
        Ok(Err(error)) => {
            let (code, message) = match error {
                ToolError::InvalidArguments(message) => ("invalid_arguments", message),
                ToolError::Failed(message) => ("failed", message),
            };
            let mut message = message;
            truncate_utf8(&mut message, max_output);
            outcome.kind = OutcomeKind::ToolError;
            outcome.error_code = Some(code.to_string());
            outcome.message = Some(message);
        }
        Err(error) => {
            let (kind, message) = classify_error(&error, memory_refused, limits, state);
            outcome.kind = kind;
            outcome.message = Some(message);
        }
    }
    outcome
}

fn classify_error(
    error: &wasmtime::Error,
    memory_refused: bool,
    limits: &Limits,
    state: &CallState,
) -> (OutcomeKind, String) {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => (
                OutcomeKind::TimeLimit,
                format!("fuel limit of {} exhausted", limits.fuel),
            ),
            Trap::Interrupt => (
                OutcomeKind::InfraFault,
                format!(
                    "wall-clock backstop of {} ms reached before the fuel limit; the machine is overloaded or the fuel limit is too high for it",
                    limits.wall_ms
                ),
            ),
            _ if memory_refused => (
                OutcomeKind::MemoryLimit,
                format!(
                    "memory limit of {} bytes reached ({trap})",
                    limits.memory_bytes
                ),
            ),
            _ => (OutcomeKind::Crashed, with_stderr(trap.to_string(), state)),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            OutcomeKind::Crashed,
            with_stderr(format!("the tool exited with status {}", exit.0), state),
        );
    }
    if memory_refused {
        return (
            OutcomeKind::MemoryLimit,
            format!(
                "memory limit of {} bytes reached: {error:#}",
                limits.memory_bytes
            ),
        );
    }
    (OutcomeKind::InfraFault, format!("{error:#}"))
}

/// Appends the tail of the guest's stderr (a panic message, say) to a trap message.
fn with_stderr(message: String, state: &CallState) -> String {
    let (stderr, _) = state.stderr.contents();
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return message;
    }
    let tail: String = {
        let chars: Vec<char> = stderr.chars().collect();
        let start = chars.len().saturating_sub(2000);
        chars[start..].iter().collect()
    };
    format!("{message}; stderr: {tail}")
}
