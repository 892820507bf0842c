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
pub mod run_code;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sod_sandbox::{CallOptions, Limits, Outcome, Sandbox, Tool};
use tokio::sync::watch;

use admission::{Admission, Rejection, Timing};
use run_code::{PlanError, RunCodePolicy, RunCodeRequest, RunCodeResponse, RunCodeWrapper};

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

/// An error answer: `{"detail": message}` (FastAPI's shape, which SandboxFusion clients know).
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "detail": message.into() }))).into_response()
}

fn rejected(state: &AppState, rejection: &Rejection) -> Response {
    match rejection {
        Rejection::Overloaded { .. } | Rejection::ShuttingDown => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, rejection.to_string());
            let headers = response.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(state.config.retry_after_secs),
            );
            if matches!(rejection, Rejection::ShuttingDown) {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        Rejection::Panicked(_) => error(StatusCode::INTERNAL_SERVER_ERROR, rejection.to_string()),
    }
}

fn log_call(id: u64, route: &str, tool: &str, outcome: &Outcome, timing: &Timing) {
    tracing::info!(
        request_id = id,
        route,
        tool,
        outcome = outcome.kind.as_str(),
        fuel_used = outcome.fuel_used,
        queue_ms = timing.queued.as_secs_f64() * 1e3,
        run_ms = timing.run.as_secs_f64() * 1e3,
        "call"
    );
}

async fn run_code_handler(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let request: RunCodeRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid run_code request: {err}"),
            );
        }
    };
    let plan = match run_code::plan(&request, &state.config.run_code, &state.wrapper) {
        Ok(plan) => plan,
        Err(PlanError::UnsupportedLanguage(language)) => {
            let message = PlanError::UnsupportedLanguage(language).to_string();
            return axum::Json(RunCodeResponse::sandbox_error(message)).into_response();
        }
        Err(PlanError::Invalid(message)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, message);
        }
        Err(files @ PlanError::Files(_)) => {
            return axum::Json(RunCodeResponse::sandbox_error(files.to_string())).into_response();
        }
    };
    let tool = match state.backend.sandbox.tool(&state.config.python_tool) {
        Ok(tool) => tool,
        Err(err) => {
            let message = format!("the python tool is not available: {err}");
            return axum::Json(RunCodeResponse::sandbox_error(message)).into_response();
        }
    };
    let backend = state.backend.clone();
    let options = CallOptions {
        limits: Some(plan.limits),
        files: plan.files,
        fetch_files: plan.fetch_files,
        ..CallOptions::default()
    };
    let call_tool = tool.clone();
    let result = state
        .admission
        .run(state.shutdown.clone(), move || {
            backend.call(&call_tool, &plan.arguments, &options)
        })
        .await;
    match result {
        Ok((outcome, timing)) => {
            log_call(id, "/run_code", tool.name(), &outcome, &timing);
            axum::Json(run_code::response(&outcome)).into_response()
        }
        Err(rejection) => rejected(&state, &rejection),
    }
}

fn tool_call_limits(request: &ToolCallRequest, policy: &RunCodePolicy) -> Result<Limits, String> {
    let mut limits = Limits::default();
    match (request.time_limit_secs, request.fuel) {
        (Some(_), Some(_)) => return Err("give time_limit_secs or fuel, not both".to_string()),
        (Some(seconds), None) => {
            if !seconds.is_finite() || seconds <= 0.0 {
                return Err(format!("time_limit_secs must be positive, not {seconds}"));
            }
            if seconds > policy.max_run_timeout_secs {
                return Err(format!(
                    "time_limit_secs {seconds} exceeds the server's maximum of {}",
                    policy.max_run_timeout_secs
                ));
            }
            limits.fuel = Limits::fuel_for_seconds(seconds);
            limits.wall_ms = run_code::wall_backstop_ms(seconds);
        }
        (None, Some(fuel)) => {
            let max = Limits::fuel_for_seconds(policy.max_run_timeout_secs);
            if fuel > max {
                return Err(format!("fuel {fuel} exceeds the server's maximum of {max}"));
            }
            limits.fuel = fuel;
            limits.wall_ms = run_code::wall_backstop_ms(run_code::virtual_seconds(fuel));
        }
        (None, None) => {}
    }
    let memory = match (request.memory_mb, request.memory_bytes) {
        (Some(_), Some(_)) => return Err("give memory_mb or memory_bytes, not both".to_string()),
        (Some(mb), None) => Some(mb.saturating_mul(1 << 20)),
        (None, bytes) => bytes,
    };
    if let Some(bytes) = memory {
        if bytes > policy.max_memory_bytes {
            return Err(format!(
                "a memory limit of {bytes} bytes exceeds the server's maximum of {} MiB",
                policy.max_memory_bytes >> 20
            ));
        }
        limits.memory_bytes = bytes;
    }
    if let Some(bytes) = request.output_bytes {
        limits.output_bytes = bytes;
    }
    if let Some(fs) = request.fs {
        if fs.max_bytes > policy.max_memory_bytes {
            return Err(format!(
                "fs.max_bytes {} exceeds the server's maximum of {} bytes",
                fs.max_bytes, policy.max_memory_bytes
            ));
        }
        limits.fs = fs;
    }
    Ok(limits)
}

async fn tool_call_handler(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let request: ToolCallRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid tool call request: {err}"),
            );
        }
    };
    let arguments = match &request.arguments {
        serde_json::Value::Object(_) => request.arguments.to_string(),
        serde_json::Value::String(text)
            if serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object()) =>
        {
            text.clone()
        }
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "arguments must be a JSON object (or a string holding one)",
            );
        }
    };
    let limits = match tool_call_limits(&request, &state.config.run_code) {
        Ok(limits) => limits,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message),
    };
    let tool = match state.backend.sandbox.tool(&name) {
        Ok(tool) => tool,
        Err(err) => return error(StatusCode::NOT_FOUND, err.to_string()),
    };
    let files = match sod_sandbox::files_from_base64(&request.files) {
        Ok(files) => files,
        Err(err) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("files: {err}")),
    };
    let options = CallOptions {
        limits: Some(limits),
        seed: request.seed,
        call_key: request.call_key,
        session: request.session,
        files,
        fetch_files: request.fetch_files,
    };
    let backend = state.backend.clone();
    let call_tool = tool.clone();
    let result = state
        .admission
        .run(state.shutdown.clone(), move || {
            backend.call(&call_tool, &arguments, &options)
        })
        .await;
    match result {
        Ok((outcome, timing)) => {
            log_call(id, "/v1/tools/call", tool.name(), &outcome, &timing);
            axum::Json(outcome).into_response()
        }
        Err(rejection) => rejected(&state, &rejection),
    }
}

/// `DELETE /v1/tools/{name}/sessions/{session}`: releases a session (its instance and files); answers
/// `{"released": bool}`, false when there was none.
async fn release_session_handler(
    State(state): State<Arc<AppState>>,
    Path((name, session)): Path<(String, String)>,
) -> Response {
    let backend = state.backend.clone();
    let released = tokio::task::spawn_blocking(move || match &backend.pool {
        Some(pool) => pool.release_session(&name, &session),
        None => backend.sandbox.release_session(&name, &session),
    })
    .await
    .unwrap_or(false);
    axum::Json(json!({ "released": released })).into_response()
}

async fn tools_handler(State(state): State<Arc<AppState>>) -> Response {
    let rows: Vec<serde_json::Value> = state
        .backend
        .sandbox
        .tools()
        .iter()
        .map(|tool| {
            let d = tool.descriptor();
            json!({
                "name": d.name,
                "version": d.version,
                "description": d.description,
                "artifact": tool.artifact_hash(),
                "parameters": d.parameters,
            })
        })
        .collect();
    axum::Json(rows).into_response()
}

async fn healthz_handler(State(state): State<Arc<AppState>>) -> Response {
    let load = state.admission.load();
    let stopping = *state.shutdown.borrow();
    let status = if stopping { "stopping" } else { "ok" };
    let code = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        axum::Json(json!({
            "status": status,
            "workers": load.workers,
            "processes": state.backend.processes(),
            "queue": load.queue,
            "running": load.running,
            "queued": load.queued,
            "tools": state.backend.sandbox.tool_names(),
        })),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// Logs every request: method, path, status, latency.
async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        method = %method,
        path,
        status = response.status().as_u16(),
        latency_ms = start.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}

/// The server's routes over `backend`. Waiting requests are refused once `shutdown` turns true.
fn router(
    backend: Backend,
    config: ServeConfig,
    wrapper: RunCodeWrapper,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let admission = Admission::new(config.workers, config.queue);
    let max_body = config.max_body_bytes;
    let state = Arc::new(AppState {
        backend,
        config,
        admission,
        shutdown,
        next_id: AtomicU64::new(1),
        wrapper,
    });
    Router::new()
        .route("/run_code", post(run_code_handler))
        .route("/v1/tools", get(tools_handler))
        .route("/v1/tools/{name}/call", post(tool_call_handler))
        .route(
            "/v1/tools/{name}/sessions/{session}",
            axum::routing::delete(release_session_handler),
        )
        .route("/healthz", get(healthz_handler))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
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
    let app = router(backend, config, wrapper, stop_rx);
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
