//! `sod serve`: the sandbox over HTTP.
//!
//! Routes:
//! - `POST /run_code`: SandboxFusion's API for python (see [`run_code`] for the shapes and the mapping of
//!   outcomes onto SandboxFusion's statuses);
//! - `POST /v1/tools/{name}/call`: one tool call; the body is a [`ToolCallRequest`], the answer the same
//!   JSON [`sod_sandbox::Outcome`] that `sod tool call` prints (HTTP 200 for every outcome);
//! - `DELETE /v1/tools/{name}/sessions/{session}`: releases a session (its instance and files);
//! - `GET /v1/tools`: the loaded tools (name, version, description, artifact, parameters);
//! - `GET /healthz`: `{"status": "ok", ...}` with the worker and queue counts.
//!
//! Time limits given in seconds become fuel at the fixed rate [`sod_sandbox::Limits::FUEL_PER_SECOND`],
//! so a request gets the same verdict under any load. At most [`ServeConfig::workers`] calls run at once
//! and [`ServeConfig::queue`] more wait; beyond that the server answers 503 with `Retry-After` (see
//! [`admission`]). Bodies over [`ServeConfig::max_body_bytes`] get 413. Shutdown is graceful: the
//! listener closes, waiting requests get 503, running calls finish and their answers are sent. Every
//! request is logged as one structured `tracing` event (the CLI prints them as JSON lines).

pub mod admission;
pub mod bench;
mod routes;
pub mod run_code;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Deserialize;
use sod_sandbox::{CallOptions, Outcome, Sandbox, Tool};
use tokio::sync::watch;

use admission::Admission;
use run_code::{RunCodePolicy, RunCodeWrapper};

use sod_sandbox::workers::WorkerPool;

/// Settings of the HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Calls that run at once (each on its own thread; one per core is the sweet spot).
    pub workers: usize,
    /// Requests that may wait for a worker; beyond `workers + queue` the answer is 503.
    pub queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a refused client is told to wait (`Retry-After`).
    pub retry_after_secs: u64,
    /// Limits of `POST /run_code`.
    pub run_code: RunCodePolicy,
    /// The tool that runs `POST /run_code`.
    pub python_tool: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 128,
            max_body_bytes: 2 << 20,
            retry_after_secs: 1,
            run_code: RunCodePolicy::default(),
            python_tool: "python".to_string(),
        }
    }
}

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Any other I/O failure (runtime, thread, listener).
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server thread (or the wrapper's preparation) panicked.
    #[error("the server thread panicked")]
    Panicked,
}

/// The body of `POST /v1/tools/{name}/call`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRequest {
    /// The tool's arguments: a JSON object, or a string holding one, passed to the tool as that exact text (what
    /// `sod_sandbox::RemoteTools` sends, so that a remote call sees the bytes an in-process one would).
    pub arguments: serde_json::Value,
    /// Time limit in seconds of compute (turned into fuel at the fixed rate); exclusive with `fuel`.
    #[serde(default)]
    pub time_limit_secs: Option<f64>,
    /// Fuel limit; exclusive with `time_limit_secs`. Default: the sandbox's.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Memory limit in MiB. Default: the sandbox's.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Memory limit in bytes; exclusive with `memory_mb`.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Output limit in bytes. Default: the sandbox's.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// Seed of the call's randomness. Default: the server's run seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Call key for seeding. Default: derived from the tool and the arguments.
    #[serde(default)]
    pub call_key: Option<String>,
    /// Keeps the tool's instance (its files included) across calls with the same id.
    #[serde(default)]
    pub session: Option<String>,
    /// File quotas of the call (`max_bytes`, `max_nodes`, ...; any left out keep their defaults). The bytes are
    /// capped by the server's largest memory limit.
    #[serde(default)]
    pub fs: Option<sod_sandbox::FsLimits>,
    /// Files written into the tool's filesystem before the call: path to base64 content.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// Files read back after the call into the outcome's `files` (base64).
    #[serde(default)]
    pub fetch_files: Vec<String>,
}

/// Where the server's calls run.
///
/// Tool names are always resolved (and tools described) by the in-process `sandbox`. The calls run there too,
/// unless a `pool` of worker processes is given: then each call runs in a `sod worker` process with its own
/// sandbox over the same tools and seed, so the outcome is the same, and heavy guests such as CPython scale
/// with the processes instead of contending in one address space (docs/benchmarks.md).
#[derive(Debug, Clone)]
pub struct Backend {
    /// Resolves and describes tools; runs the calls when there is no pool.
    pub sandbox: Sandbox,
    /// Worker processes that run the calls instead; a session's calls always go to the same worker.
    pub pool: Option<Arc<WorkerPool>>,
}

impl From<Sandbox> for Backend {
    fn from(sandbox: Sandbox) -> Self {
        Backend {
            sandbox,
            pool: None,
        }
    }
}

impl Backend {
    /// Worker processes running the calls (0: the server's own process).
    pub fn processes(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.len())
    }

    /// Runs one call (blocking): in a worker process when there is a pool, else in the sandbox.
    fn call(&self, tool: &Tool, arguments: &str, options: &CallOptions) -> Outcome {
        match &self.pool {
            Some(pool) => pool.call(tool.name(), arguments, options),
            None => self.sandbox.call(tool, arguments, options),
        }
    }
}

/// Shared state of the handlers.
struct AppState {
    backend: Backend,
    config: ServeConfig,
    admission: Arc<Admission>,
    shutdown: watch::Receiver<bool>,
    next_id: AtomicU64,
    wrapper: RunCodeWrapper,
}

/// Serves on `listener` until `shutdown` completes, then shuts down gracefully: stops accepting,
/// refuses waiting requests, lets running calls finish and sends their answers.
///
/// Before accepting, the `/run_code` wrapper is compiled once inside the python tool (a fraction of a
/// second; see [`RunCodeWrapper::prepare`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: impl Into<Backend>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let backend = backend.into();
    let wrapper = {
        let sandbox = backend.sandbox.clone();
        let tool = config.python_tool.clone();
        tokio::task::spawn_blocking(move || RunCodeWrapper::prepare(&sandbox, &tool))
            .await
            .map_err(|_| ServeError::Panicked)?
    };
    let precompiled = matches!(wrapper, RunCodeWrapper::Compiled(_));
    let (stop_tx, stop_rx) = watch::channel(false);
    let processes = backend.processes();
    let app = routes::router(backend, config, wrapper, stop_rx);
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, precompiled_wrapper = precompiled, processes, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing running calls");
            let _ = stop_tx.send(true);
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds `addr` without a runtime, so that the caller learns about a taken port at once.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A server running on its own thread and runtime: for tests and the load test. Dropping it shuts
/// it down gracefully.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves `backend` (a [`Sandbox`], or a [`Backend`] with
    /// worker processes) on a background thread.
    pub fn start(
        backend: impl Into<Backend>,
        config: ServeConfig,
        addr: SocketAddr,
    ) -> Result<Self, ServeError> {
        let backend = backend.into();
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sod-serve")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sod-serve-main".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    serve(listener, backend, config, async move {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down gracefully and waits until every running call has been answered.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| ServeError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(err) = self.stop_and_join() {
            tracing::warn!("server shutdown failed: {err}");
        }
    }
}
