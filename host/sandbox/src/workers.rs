//! A pool of sandbox worker processes, as a [`ToolBackend`] of a [`Sandbox`] or on its own.
//!
//! Two threads calling one in-process [`Sandbox`] scale poorly for heavy guests such as CPython: resetting
//! a pooled instance's memory unmaps pages, and every unmap in a shared address space interrupts the other
//! cores with a TLB shootdown (docs/benchmarks.md measured 1.33x for two threads, 2.0x for two processes).
//! A [`WorkerPool`] runs each sandbox in its own `sod worker` process and talks to it over pipes, one JSON
//! line per request and per answer. Results are identical to in-process calls: every worker has the same
//! tools and seed, and an outcome depends only on the call, never on which worker ran it.
//!
//! Calls of one session always go to the same worker (chosen by a hash of tool and session id), because the
//! session's interpreter lives in that process. A worker that dies is replaced; the call it was running ends
//! as `infra_fault`.
//!
//! The worker program is `sod worker` (a [`serve_requests`] loop over stdin and stdout).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::backend::ToolBackend;
use crate::limits::Limits;
use crate::outcome::{Outcome, files_from_base64, files_to_base64};
use crate::sandbox::{CallOptions, Sandbox};

/// Overrides the worker program of [`WorkerPool::current_exe_command`] (for a library user whose executable is not
/// `sod`, such as a test binary).
pub const WORKER_PROGRAM_ENV: &str = "SOD_WORKER_PROGRAM";

/// One request from the pool to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WorkerRequest {
    /// Call a tool.
    Call {
        /// The tool's name.
        tool: String,
        /// JSON arguments, as text.
        arguments: String,
        /// Limits; absent for the worker's defaults.
        limits: Option<Limits>,
        /// Seed; absent for the worker's run seed.
        seed: Option<u64>,
        /// Call key; absent to derive it from tool and arguments.
        call_key: Option<String>,
        /// Session id.
        session: Option<String>,
        /// Files put into the tool's filesystem, path to standard base64.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        files: BTreeMap<String, String>,
        /// Files fetched back into the outcome.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fetch_files: Vec<String>,
    },
    /// Release a session.
    Release {
        /// The tool's name.
        tool: String,
        /// The session id.
        session: String,
    },
    /// Name the artifacts (`sha256:...`) of these tools, loading them; answered with `{"artifacts": {name:
    /// artifact}}`, a tool that cannot be loaded left out.
    Artifacts {
        /// The tools' names.
        tools: Vec<String>,
    },
}

/// Serves [`WorkerRequest`]s read as JSON lines from `input`, answering each with one JSON line on
/// `output`: an [`Outcome`] for a call, `{"released": bool}` for a release, `{"artifacts": {...}}` for artifacts.
/// Ends at end of input.
pub fn serve_requests(
    sandbox: &Sandbox,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<WorkerRequest>(&line) {
            Ok(WorkerRequest::Call {
                tool,
                arguments,
                limits,
                seed,
                call_key,
                session,
                files,
                fetch_files,
            }) => {
                let outcome = match (files_from_base64(&files), sandbox.tool(&tool)) {
                    (Ok(files), Ok(found)) => {
                        let options = CallOptions {
                            limits,
                            seed,
                            call_key,
                            session,
                            files,
                            fetch_files,
                        };
                        sandbox.call(&found, &arguments, &options)
                    }
                    (Err(err), _) => Outcome::infra_fault(&tool, format!("files: {err}")),
                    (_, Err(err)) => Outcome::infra_fault(&tool, format!("{err}")),
                };
                serde_json::to_string(&outcome)
            }
            Ok(WorkerRequest::Release { tool, session }) => serde_json::to_string(
                &serde_json::json!({ "released": sandbox.release_session(&tool, &session) }),
            ),
            Ok(WorkerRequest::Artifacts { tools }) => {
                let artifacts: BTreeMap<String, String> = tools
                    .into_iter()
                    .filter_map(|name| {
                        let tool = sandbox.tool(&name).ok()?;
                        Some((name, tool.artifact_hash().to_string()))
                    })
                    .collect();
                serde_json::to_string(&serde_json::json!({ "artifacts": artifacts }))
            }
            Err(err) => serde_json::to_string(&Outcome::infra_fault(
                "",
                format!("malformed worker request: {err}"),
            )),
        }
        .map_err(std::io::Error::other)?;
        writeln!(output, "{answer}")?;
        output.flush()?;
    }
    Ok(())
}

/// A running `sod worker` process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start workers.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The `sod` executable.
    pub program: PathBuf,
    /// The tools directory each worker serves.
    pub tools_dir: PathBuf,
    /// The run seed of each worker's sandbox.
    pub seed: u64,
    /// Compile cache directory of the workers (`SOD_CACHE_DIR`); `None` keeps the inherited setting.
    pub cache_dir: Option<PathBuf>,
    /// Whether each worker makes instances ahead of their calls (`SandboxConfig::instances_ahead`); off in
    /// [`WorkerPool::current_exe_command`].
    pub instances_ahead: bool,
    /// Each worker's `SandboxConfig::max_memory_bytes`; `None` for the default. A pool behind a sandbox gets that
    /// sandbox's, so that a limit it lets through is not capped again in the worker.
    pub max_memory_bytes: Option<u64>,
}

impl WorkerCommand {
    fn spawn(&self) -> std::io::Result<Worker> {
        let mut command = Command::new(&self.program);
        if let Some(dir) = &self.cache_dir {
            command.env("SOD_CACHE_DIR", dir);
        }
        command
            .arg("--tools-dir")
            .arg(&self.tools_dir)
            .arg("worker")
            .arg("--seed")
            .arg(self.seed.to_string())
            .arg("--instances-ahead")
            .arg(self.instances_ahead.to_string());
        if let Some(bytes) = self.max_memory_bytes {
            command.arg("--max-memory-bytes").arg(bytes.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("worker has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("worker has no stdout"))?;
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }
}

/// A fixed number of worker processes shared by any number of calling threads.
pub struct WorkerPool {
    command: WorkerCommand,
    workers: Vec<Mutex<Option<Worker>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.workers.len())
            .field("tools_dir", &self.command.tools_dir)
            .finish()
    }
}

impl WorkerPool {
    /// Starts `count` workers (at least one).
    pub fn start(command: WorkerCommand, count: usize) -> std::io::Result<Self> {
        let workers = (0..count.max(1))
            .map(|_| command.spawn().map(|w| Mutex::new(Some(w))))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(WorkerPool {
            command,
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// The `sod` executable running this code (or [`WORKER_PROGRAM_ENV`]), as the worker program.
    pub fn current_exe_command(tools_dir: &Path, seed: u64) -> std::io::Result<WorkerCommand> {
        let program = match std::env::var_os(WORKER_PROGRAM_ENV) {
            Some(program) => PathBuf::from(program),
            None => std::env::current_exe()?,
        };
        Ok(WorkerCommand {
            program,
            tools_dir: tools_dir.to_path_buf(),
            seed,
            cache_dir: None,
            // A pool has about one worker per core: a background thread in each would compete with the calls
            // (python, 2 workers on 2 cores, release: 805 to 820 calls/s without, 659 to 746 with).
            instances_ahead: false,
            max_memory_bytes: None,
        })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether the pool has no workers (never: it starts at least one).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Calls `tool` in some worker (the session's worker for a session call). Never fails: a dead worker
    /// makes the call an `infra_fault` and is replaced.
    pub fn call(&self, tool: &str, arguments: &str, options: &CallOptions) -> Outcome {
        let request = WorkerRequest::Call {
            tool: tool.to_string(),
            arguments: arguments.to_string(),
            limits: options.limits,
            seed: options.seed,
            call_key: options.call_key.clone(),
            session: options.session.clone(),
            files: files_to_base64(&options.files),
            fetch_files: options.fetch_files.clone(),
        };
        let answer = match &options.session {
            Some(session) => self.exchange(self.session_worker(tool, session), &request),
            None => self.exchange_any(&request),
        };
        match answer.and_then(|line| serde_json::from_str(&line).map_err(std::io::Error::other)) {
            Ok(outcome) => outcome,
            Err(err) => Outcome::infra_fault(tool, format!("sandbox worker failed: {err}")),
        }
    }

    /// Releases a session in its worker. Returns whether it existed.
    pub fn release_session(&self, tool: &str, session: &str) -> bool {
        let request = WorkerRequest::Release {
            tool: tool.to_string(),
            session: session.to_string(),
        };
        self.exchange(self.session_worker(tool, session), &request)
            .ok()
            .and_then(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .and_then(|v| v["released"].as_bool())
            .unwrap_or(false)
    }

    /// The artifacts the workers serve `tools` with (asked of one worker: all run one command).
    pub fn artifacts(&self, tools: &[String]) -> std::io::Result<BTreeMap<String, String>> {
        let request = WorkerRequest::Artifacts {
            tools: tools.to_vec(),
        };
        let line = self.exchange_any(&request)?;
        let answer: serde_json::Value =
            serde_json::from_str(&line).map_err(std::io::Error::other)?;
        serde_json::from_value(answer["artifacts"].clone()).map_err(std::io::Error::other)
    }

    fn session_worker(&self, tool: &str, session: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        (tool, session).hash(&mut hasher);
        (hasher.finish() % self.workers.len() as u64) as usize
    }

    /// Sends `request` to the first idle worker, or waits for the next one in turn.
    fn exchange_any(&self, request: &WorkerRequest) -> std::io::Result<String> {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let index = (start + offset) % n;
            if let Ok(mut slot) = self.workers[index].try_lock() {
                return self.exchange_locked(&mut slot, request);
            }
        }
        self.exchange(start % n, request)
    }

    fn exchange(&self, index: usize, request: &WorkerRequest) -> std::io::Result<String> {
        let mut slot = self.workers[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.exchange_locked(&mut slot, request)
    }

    fn exchange_locked(
        &self,
        slot: &mut Option<Worker>,
        request: &WorkerRequest,
    ) -> std::io::Result<String> {
        if slot.is_none() {
            *slot = Some(self.command.spawn()?);
        }
        let result = slot.as_mut().map_or_else(
            || Err(std::io::Error::other("no worker")),
            |worker| roundtrip(worker, request),
        );
        if result.is_err() {
            // The worker is gone or out of step: replace it on the next call.
            *slot = None;
        }
        result
    }
}

impl ToolBackend for WorkerPool {
    fn call(&self, tool: &str, arguments: &str, options: &CallOptions) -> Outcome {
        WorkerPool::call(self, tool, arguments, options)
    }

    fn release_session(&self, tool: &str, session: &str) -> bool {
        WorkerPool::release_session(self, tool, session)
    }

    fn check_artifacts(&self, tools: &[(String, String)]) -> Result<(), String> {
        let names: Vec<String> = tools.iter().map(|(name, _)| name.clone()).collect();
        let served = self
            .artifacts(&names)
            .map_err(|e| format!("sandbox workers: {e}"))?;
        for (name, artifact) in tools {
            match served.get(name) {
                Some(served) if served == artifact => {}
                Some(served) => {
                    return Err(format!(
                        "the sandbox workers serve tool {name:?} as {served}, not {artifact}"
                    ));
                }
                None => return Err(format!("the sandbox workers cannot load tool {name:?}")),
            }
        }
        Ok(())
    }
}

fn roundtrip(worker: &mut Worker, request: &WorkerRequest) -> std::io::Result<String> {
    let line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    writeln!(worker.stdin, "{line}")?;
    worker.stdin.flush()?;
    let mut answer = String::new();
    if worker.stdout.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the worker exited",
        ));
    }
    Ok(answer)
}
