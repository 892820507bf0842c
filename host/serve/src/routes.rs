//! The HTTP routes of `sod serve` and their handlers: `/run_code` (SandboxFusion's), `/v1/tools/{name}/call`,
//! session release, `/v1/tools`, `/healthz`, the access log; each handler admits the request, calls the backend
//! off the async runtime and maps the outcome to its response.

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
use serde_json::json;
use sod_sandbox::{CallOptions, Limits, Outcome};
use tokio::sync::watch;

use admission::{Admission, Rejection, Timing};
use run_code::{PlanError, RunCodePolicy, RunCodeRequest, RunCodeResponse, RunCodeWrapper};

use super::*;

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
pub(super) fn router(
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
