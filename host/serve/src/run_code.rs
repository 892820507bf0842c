//! SandboxFusion's `POST /run_code` on top of the python tool.
//!
//! The request and response shapes are SandboxFusion's (`RunCodeRequest`, `RunCodeResponse`,
//! `CommandRunResult`). Only `language: "python"` runs; any other language is answered with status
//! `SandboxError` and a message naming the supported one.
//!
//! The python tool returns stdout and the traceback as one text. To separate stdout, stderr and the
//! return code, the request's program runs inside a wrapper (`run_code.py`, the tool's `code`): it
//! gives the program a fresh `__main__` namespace, `sys.stdin` over the request's `stdin` and private
//! stdout/stderr buffers, runs it, maps `SystemExit` and uncaught exceptions to the return code CPython
//! would exit with, and only then writes one line: [`RESULT_MARKER`] and the run protocol's record
//! ([`sod_judge_protocol::run`]: the wrapper is that protocol's Python side followed by `run_code.py`).
//!
//! Files: the request's `files` are decoded here and written into the call's in-memory filesystem by the
//! sandbox before the program starts (`CallOptions::files`), and `fetch_files` are read back by the sandbox
//! after it ends, whichever way it ended (`Outcome::files`); neither travels through the wrapper, so fetched
//! files do not compete with stdout for the tool's output cap. The program's prints never reach the tool's output, so it
//! cannot forge that line by printing; code that deliberately reaches into the interpreter can only
//! change its own response, because every request runs in a fresh instance.
//!
//! Time: `run_timeout` seconds become fuel at the fixed rate [`Limits::FUEL_PER_SECOND`], so a request
//! gets the same verdict under any load. `execution_time` is virtual: `fuel_used / FUEL_PER_SECOND`
//! (wrapper included, a fraction of a millisecond), not wall-clock time.
//!
//! Outcome kinds map onto SandboxFusion's statuses as follows (top-level status, run status, return
//! code):
//!
//! | sandbox outcome | status | run_result.status | return_code |
//! |---|---|---|---|
//! | `ok` | `Success` if the code is 0, else `Failed` | `Finished` | the program's |
//! | `memory_limit`, program survived (`MemoryError`) | `Failed` | `Finished` | the program's (1) |
//! | `memory_limit`, instance killed | `Failed` | `Finished` | -9 (like an OOM kill) |
//! | `time_limit` | `Failed` | `TimeLimitExceeded` | none |
//! | `crashed` by `os._exit(n)` | by `n` | `Finished` | `n` |
//! | `crashed` (trap) | `Failed` | `Finished` | -11 (like a segfault) |
//! | `tool_error`, `output_truncated`, `infra_fault`, unreadable result | `SandboxError` | `Error` | none |
//!
//! Limits of this adapter: stdout and stderr are kept up to [`RESULT_BUDGET_BYTES`] together (the
//! python tool's output cap); beyond it they are cut and `message` says so. A time limit loses the
//! output written before it (the instance is stopped, its buffers are never printed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sod_judge_protocol::run::{self, RecordError, RunRecord};
use sod_sandbox::{Limits, Outcome, OutcomeKind};

/// Prefix of the wrapper's one output line.
pub const RESULT_MARKER: &str = "SOD-RUN-CODE-RESULT:";

/// Most bytes of the wrapper's JSON result. The python tool keeps 48 KiB of stdout
/// (`sod_runner.OUTPUT_LIMIT_BYTES`); the marker and the newline must fit too, with room to spare.
pub const RESULT_BUDGET_BYTES: usize = 48 * 1024 - 512;

/// The wrapper's source, with `@…@` placeholders filled by [`wrapper_source`].
const WRAPPER: &str = include_str!("run_code.py");

/// Name of the wrapper's code object in tracebacks of the wrapper itself.
const WRAPPER_FILENAME: &str = "<sod-run-code>";

/// SandboxFusion's default `compile_timeout` and `run_timeout`, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// The one language this server runs.
pub const SUPPORTED_LANGUAGE: &str = "python";

/// Return code reported when the instance was stopped for memory (what a process killed by the
/// kernel's OOM killer reports to SandboxFusion: `-SIGKILL`).
pub const MEMORY_KILL_RETURN_CODE: i32 = -9;

/// Return code reported when the interpreter itself trapped (what a segfaulting process reports:
/// `-SIGSEGV`).
pub const CRASH_RETURN_CODE: i32 = -11;

fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_memory() -> i64 {
    -1
}

/// SandboxFusion's `RunCodeRequest`. Unknown fields are ignored, as SandboxFusion does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCodeRequest {
    /// The program.
    pub code: String,
    /// The language; only `python` runs here.
    pub language: String,
    /// Ignored: python has no compile step.
    #[serde(default = "default_timeout")]
    pub compile_timeout: f64,
    /// Time limit in seconds of compute, turned into fuel at [`Limits::FUEL_PER_SECOND`].
    #[serde(default = "default_timeout")]
    pub run_timeout: f64,
    /// Memory limit in MiB; zero or negative means the server's default.
    #[serde(default = "default_memory", rename = "memory_limit_MB")]
    pub memory_limit_mb: i64,
    /// Text given to the program as its standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Files written into the working directory before the run: path to base64 content (`null`
    /// entries are skipped).
    #[serde(default)]
    pub files: BTreeMap<String, Option<String>>,
    /// Paths read after the run and returned base64-encoded in the response's `files`.
    #[serde(default)]
    pub fetch_files: Vec<String>,
}

/// SandboxFusion's `RunStatus`: how the whole request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Every command finished with return code 0.
    Success,
    /// A command timed out or returned a non-zero code.
    Failed,
    /// The sandbox could not run the request.
    SandboxError,
}

/// SandboxFusion's `CommandRunStatus`: how one command went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandRunStatus {
    /// The command ran to its end (whatever its return code).
    Finished,
    /// The sandbox failed to run the command.
    Error,
    /// The command hit its time limit.
    TimeLimitExceeded,
}

/// SandboxFusion's `CommandRunResult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRunResult {
    /// How the command ended.
    pub status: CommandRunStatus,
    /// Virtual seconds of compute: fuel used divided by [`Limits::FUEL_PER_SECOND`].
    pub execution_time: Option<f64>,
    /// The exit status; `None` when the command did not finish.
    pub return_code: Option<i32>,
    /// What the program wrote to stdout.
    pub stdout: Option<String>,
    /// What the program wrote to stderr, including the traceback of an uncaught exception.
    pub stderr: Option<String>,
}

/// SandboxFusion's `RunCodeResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCodeResponse {
    /// How the request went.
    pub status: RunStatus,
    /// Why the sandbox failed, or notes about cut output; empty otherwise.
    pub message: String,
    /// Always `None`: python has no compile step.
    pub compile_result: Option<CommandRunResult>,
    /// The run; `None` when the request could not be run at all.
    pub run_result: Option<CommandRunResult>,
    /// Always `None` (SandboxFusion names its Kubernetes pod here).
    pub executor_pod_name: Option<String>,
    /// The fetched files: path to base64 content.
    pub files: BTreeMap<String, String>,
}

impl RunCodeResponse {
    /// A response for a request the sandbox could not run.
    pub fn sandbox_error(message: impl Into<String>) -> Self {
        RunCodeResponse {
            status: RunStatus::SandboxError,
            message: message.into(),
            compile_result: None,
            run_result: None,
            executor_pod_name: None,
            files: BTreeMap::new(),
        }
    }
}

/// What the server allows a request to ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCodePolicy {
    /// Memory limit of a request that names none.
    pub default_memory_bytes: u64,
    /// Largest memory limit a request gets; larger requests are clamped to it.
    pub max_memory_bytes: u64,
    /// Longest `run_timeout` a request gets, in seconds; longer requests are clamped to it.
    pub max_run_timeout_secs: f64,
    /// Bytes of tool output kept (must exceed the wrapper's result line).
    pub output_bytes: u64,
}

impl Default for RunCodePolicy {
    fn default() -> Self {
        RunCodePolicy {
            default_memory_bytes: Limits::default().memory_bytes,
            max_memory_bytes: 4 << 30,
            max_run_timeout_secs: 60.0,
            output_bytes: Limits::default().output_bytes,
        }
    }
}

/// Why a request is not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A language other than python: answered `SandboxError`, as the request is well-formed.
    #[error("language {0:?} is not supported by this server; supported: \"python\"")]
    UnsupportedLanguage(String),
    /// A field out of range: answered HTTP 422.
    #[error("{0}")]
    Invalid(String),
    /// A file that is not base64: answered `SandboxError`, as SandboxFusion does.
    #[error("cannot write the request's files: {0}")]
    Files(String),
}

/// A request turned into a python tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCodePlan {
    /// The python tool's JSON arguments.
    pub arguments: String,
    /// The call's limits.
    pub limits: Limits,
    /// The request's files, decoded (`null` entries skipped).
    pub files: BTreeMap<String, Vec<u8>>,
    /// The files to read back after the run.
    pub fetch_files: Vec<String>,
}

/// The payload the wrapper decodes: field order is fixed, so the arguments (and the call key derived
/// from them) are a pure function of the request.
#[derive(Serialize)]
struct WrapperRequest<'a> {
    code: &'a str,
    stdin: &'a str,
}

/// The wrapper's python source: the run protocol's Python side, then `run_code.py` with its constants
/// filled in.
pub fn wrapper_source() -> String {
    let wrapper = WRAPPER
        .replace("@RESULT_MARKER@", RESULT_MARKER)
        .replace("@RESULT_BUDGET@", &RESULT_BUDGET_BYTES.to_string())
        .replace("@STREAM_CAP@", &RESULT_BUDGET_BYTES.to_string());
    format!("{}\n\n{wrapper}", run::PYTHON)
}

/// How the wrapper travels with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCodeWrapper {
    /// The base64 of the wrapper's code object, marshalled by the python tool itself at start-up:
    /// each request only unmarshals it (about 5 million fuel less than compiling the source).
    Compiled(String),
    /// The base64 of the wrapper's source, compiled by every request (the fallback).
    Source(String),
}

impl RunCodeWrapper {
    /// The wrapper as source: works with any python tool.
    pub fn source() -> Self {
        RunCodeWrapper::Source(run::base64(wrapper_source().as_bytes()))
    }

    /// Compiles the wrapper inside the python tool and returns its marshalled code object; falls back
    /// to [`RunCodeWrapper::source`] (with a warning) if the tool cannot. Marshal data is specific to
    /// the interpreter, which is why the tool that runs the requests produces it.
    pub fn prepare(sandbox: &sod_sandbox::Sandbox, python_tool: &str) -> Self {
        let source = run::base64(wrapper_source().as_bytes());
        let code = format!(
            "import base64, marshal\n\
             _source = base64.b64decode(\"{source}\").decode()\n\
             _code = compile(_source, \"{WRAPPER_FILENAME}\", \"exec\", dont_inherit=True)\n\
             print(base64.b64encode(marshal.dumps(_code)).decode())\n"
        );
        let arguments = run::tool_arguments(&code);
        let outcome = sandbox
            .tool(python_tool)
            .map(|tool| sandbox.call(&tool, &arguments, &sod_sandbox::CallOptions::default()));
        match outcome {
            Ok(outcome) if outcome.is_ok() => {
                let blob = outcome.output.trim_end();
                let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
                if !blob.is_empty() && blob.chars().all(base64) {
                    return RunCodeWrapper::Compiled(blob.to_string());
                }
                tracing::warn!(output = %outcome.output, "cannot precompile the run_code wrapper");
            }
            Ok(outcome) => {
                tracing::warn!(outcome = %outcome.to_json(), "cannot precompile the run_code wrapper");
            }
            Err(err) => tracing::warn!(error = %err, "cannot precompile the run_code wrapper"),
        }
        Self::source()
    }

    /// The python tool's `code` that runs `request`. It ends with `pass`: a final bare expression would
    /// make the tool compile it a second time to print its value.
    pub fn tool_code(&self, request: &RunCodeRequest) -> String {
        let payload = WrapperRequest {
            code: &request.code,
            stdin: request.stdin.as_deref().unwrap_or(""),
        };
        // Serialising strings and maps of strings cannot fail.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let payload = run::base64(&json);
        let load = match self {
            RunCodeWrapper::Compiled(blob) => {
                format!("exec(marshal.loads(base64.b64decode(\"{blob}\")))")
            }
            RunCodeWrapper::Source(source) => format!(
                "exec(compile(base64.b64decode(\"{source}\").decode(), \"{WRAPPER_FILENAME}\", \"exec\", dont_inherit=True))"
            ),
        };
        format!("_sod_request = \"{payload}\"\nimport base64, marshal\n{load}\npass\n")
    }
}

/// Turns a request into a python tool call under `policy`.
pub fn plan(
    request: &RunCodeRequest,
    policy: &RunCodePolicy,
    wrapper: &RunCodeWrapper,
) -> Result<RunCodePlan, PlanError> {
    if request.language != SUPPORTED_LANGUAGE {
        return Err(PlanError::UnsupportedLanguage(request.language.clone()));
    }
    if !request.run_timeout.is_finite() || request.run_timeout <= 0.0 {
        return Err(PlanError::Invalid(format!(
            "run_timeout must be a positive number of seconds, not {}",
            request.run_timeout
        )));
    }
    let seconds = request.run_timeout.min(policy.max_run_timeout_secs);
    let memory_bytes = match u64::try_from(request.memory_limit_mb) {
        Ok(mb) if mb > 0 => mb.saturating_mul(1 << 20).min(policy.max_memory_bytes),
        _ => policy.default_memory_bytes,
    };
    // `null` entries are skipped, as SandboxFusion does.
    let given = request
        .files
        .iter()
        .filter_map(|(path, content)| Some((path, content.as_ref()?)));
    let files = sod_sandbox::files_from_base64(given).map_err(PlanError::Files)?;
    let arguments = run::tool_arguments(&wrapper.tool_code(request));
    Ok(RunCodePlan {
        arguments,
        limits: Limits {
            fuel: Limits::fuel_for_seconds(seconds),
            memory_bytes,
            output_bytes: policy.output_bytes,
            wall_ms: wall_backstop_ms(seconds),
            ..Limits::default()
        },
        files,
        fetch_files: request.fetch_files.clone(),
    })
}

/// The wall-clock backstop of a call with `seconds` of fuel: generous, since fuel is the real limit
/// and the backstop only guards against a stalled machine (an `infra_fault`, never a verdict).
pub fn wall_backstop_ms(seconds: f64) -> u64 {
    let scaled = (seconds * 10_000.0).ceil();
    let scaled = if scaled.is_finite() && scaled > 0.0 {
        scaled.min(u64::MAX as f64 / 2.0) as u64
    } else {
        0
    };
    Limits::default().wall_ms.saturating_add(scaled)
}

/// Virtual seconds of compute of `fuel`.
pub fn virtual_seconds(fuel: u64) -> f64 {
    fuel as f64 / Limits::FUEL_PER_SECOND as f64
}

/// The wrapper's record in the tool's `output`, or why there is none.
fn parse_wrapper_output(output: &str) -> Result<RunRecord, String> {
    run::parse_record(output, RESULT_MARKER).map_err(|error| match error {
        RecordError::Missing => {
            let head: String = output.chars().take(500).collect();
            format!("the run_code wrapper printed no result; tool output: {head:?}")
        }
        // Only code that reaches into the interpreter writes a second line: it loses its response.
        RecordError::Repeated(n) => format!("the run_code wrapper's result was written {n} times"),
        RecordError::Malformed(e) => format!("the run_code wrapper's result is invalid: {e}"),
    })
}

fn finished(fuel_used: u64, return_code: i32, stdout: String, stderr: String) -> CommandRunResult {
    CommandRunResult {
        status: CommandRunStatus::Finished,
        execution_time: Some(virtual_seconds(fuel_used)),
        return_code: Some(return_code),
        stdout: Some(stdout),
        stderr: Some(stderr),
    }
}

fn with_run(status: RunStatus, message: String, run: CommandRunResult) -> RunCodeResponse {
    RunCodeResponse {
        status,
        message,
        compile_result: None,
        run_result: Some(run),
        executor_pod_name: None,
        files: BTreeMap::new(),
    }
}

fn by_return_code(code: i32) -> RunStatus {
    if code == 0 {
        RunStatus::Success
    } else {
        RunStatus::Failed
    }
}

fn sandbox_error_run(outcome: &Outcome, message: String) -> RunCodeResponse {
    let run = CommandRunResult {
        status: CommandRunStatus::Error,
        execution_time: Some(virtual_seconds(outcome.fuel_used)),
        return_code: None,
        stdout: None,
        stderr: Some(message.clone()),
    };
    with_run(RunStatus::SandboxError, message, run)
}

/// Maps the outcome of a planned call onto SandboxFusion's response (see the module documentation).
pub fn response(outcome: &Outcome) -> RunCodeResponse {
    let message = outcome.message.clone().unwrap_or_default();
    match outcome.kind {
        OutcomeKind::Ok | OutcomeKind::MemoryLimit if !outcome.output.is_empty() => {
            match parse_wrapper_output(&outcome.output) {
                Ok(result) => {
                    let status = by_return_code(result.return_code);
                    let run = finished(
                        outcome.fuel_used,
                        result.return_code,
                        result.stdout,
                        result.stderr,
                    );
                    let mut response = with_run(status, result.notes.join("; "), run);
                    response.files = outcome.files.clone();
                    response
                }
                Err(error) => sandbox_error_run(outcome, error),
            }
        }
        OutcomeKind::Ok => {
            sandbox_error_run(outcome, "the run_code wrapper printed nothing".to_string())
        }
        OutcomeKind::MemoryLimit => {
            let stderr = format!("MemoryError: {message}\n");
            let run = finished(
                outcome.fuel_used,
                MEMORY_KILL_RETURN_CODE,
                String::new(),
                stderr,
            );
            with_run(RunStatus::Failed, String::new(), run)
        }
        OutcomeKind::TimeLimit => {
            let run = CommandRunResult {
                status: CommandRunStatus::TimeLimitExceeded,
                execution_time: Some(virtual_seconds(outcome.fuel_used)),
                return_code: None,
                stdout: Some(String::new()),
                stderr: Some(String::new()),
            };
            with_run(RunStatus::Failed, String::new(), run)
        }
        OutcomeKind::Crashed => {
            let (code, stderr) = match outcome.exit_status {
                Some(code) => (code & 0xFF, String::new()),
                None => (CRASH_RETURN_CODE, format!("{message}\n")),
            };
            let run = finished(outcome.fuel_used, code, String::new(), stderr);
            with_run(by_return_code(code), String::new(), run)
        }
        OutcomeKind::ToolError | OutcomeKind::OutputTruncated | OutcomeKind::InfraFault => {
            sandbox_error_run(
                outcome,
                format!(
                    "the sandbox could not run the code ({}): {message}",
                    outcome.kind
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(code: &str) -> RunCodeRequest {
        serde_json::from_value(serde_json::json!({"code": code, "language": "python"}))
            .expect("minimal request")
    }

    fn outcome(kind: OutcomeKind, output: &str, message: Option<&str>) -> Outcome {
        Outcome {
            kind,
            output: output.to_string(),
            message: message.map(str::to_string),
            error_code: None,
            exit_status: None,
            fuel_used: Limits::FUEL_PER_SECOND / 4,
            tool: "python".to_string(),
            artifact: "sha256:0".to_string(),
            files: Default::default(),
        }
    }

    #[test]
    fn wrapper_cannot_look_like_a_fenced_block() {
        assert!(
            !wrapper_source().contains('`'),
            "the tool runs only the first ``` block of its code"
        );
        assert!(
            !wrapper_source().contains('@'),
            "every placeholder is filled"
        );
        let request = request("print('```python\\nprint(1)\\n```')");
        for wrapper in [
            RunCodeWrapper::source(),
            RunCodeWrapper::Compiled("YWJj".to_string()),
        ] {
            let code = wrapper.tool_code(&request);
            assert!(!code.contains('`'), "{code}");
            assert!(code.ends_with("\npass\n"));
        }
    }

    #[test]
    fn defaults_follow_sandboxfusion() {
        let request = request("print(1)");
        assert_eq!(request.run_timeout, 10.0);
        assert_eq!(request.memory_limit_mb, -1);
        let plan = plan(
            &request,
            &RunCodePolicy::default(),
            &RunCodeWrapper::source(),
        )
        .expect("plan");
        assert_eq!(plan.limits.fuel, 10 * Limits::FUEL_PER_SECOND);
        assert_eq!(plan.limits.memory_bytes, Limits::default().memory_bytes);
    }

    #[test]
    fn limits_are_clamped_and_deterministic() {
        let mut request = request("print(1)");
        request.run_timeout = 1e9;
        request.memory_limit_mb = 1 << 40;
        let policy = RunCodePolicy::default();
        let wrapper = RunCodeWrapper::source();
        let first = plan(&request, &policy, &wrapper).expect("plan");
        assert_eq!(first.limits.fuel, 60 * Limits::FUEL_PER_SECOND);
        assert_eq!(first.limits.memory_bytes, policy.max_memory_bytes);
        assert_eq!(first, plan(&request, &policy, &wrapper).expect("plan"));
    }

    #[test]
    fn bad_language_and_timeout_are_rejected() {
        let mut cpp = request("int main() {}");
        cpp.language = "cpp".to_string();
        assert_eq!(
            plan(&cpp, &RunCodePolicy::default(), &RunCodeWrapper::source()),
            Err(PlanError::UnsupportedLanguage("cpp".to_string()))
        );
        let mut zero = request("print(1)");
        zero.run_timeout = 0.0;
        assert!(matches!(
            plan(&zero, &RunCodePolicy::default(), &RunCodeWrapper::source()),
            Err(PlanError::Invalid(_))
        ));
    }

    #[test]
    fn outcomes_map_to_sandboxfusion_statuses() {
        let ok = format!(
            "{RESULT_MARKER}{}\n",
            r#"{"status":"ok","return_code":0,"stdout":"2\n","stdout_bytes":2,"stderr":"","detail":"","notes":[]}"#
        );
        let response = response(&outcome(OutcomeKind::Ok, &ok, None));
        assert_eq!(response.status, RunStatus::Success);
        let run = response.run_result.expect("run");
        assert_eq!(run.status, CommandRunStatus::Finished);
        assert_eq!(run.stdout.as_deref(), Some("2\n"));
        assert_eq!(run.execution_time, Some(0.25));

        let failed = ok.replace("\"return_code\":0", "\"return_code\":3");
        let response = super::response(&outcome(OutcomeKind::Ok, &failed, None));
        assert_eq!(response.status, RunStatus::Failed);

        let tle = super::response(&outcome(OutcomeKind::TimeLimit, "", Some("fuel")));
        assert_eq!(tle.status, RunStatus::Failed);
        let run = tle.run_result.expect("run");
        assert_eq!(run.status, CommandRunStatus::TimeLimitExceeded);
        assert_eq!(run.return_code, None);

        // The exit status comes from the outcome's field, never from its message's text.
        let exit = super::response(&Outcome {
            exit_status: Some(3),
            ..outcome(OutcomeKind::Crashed, "", Some("the tool exited"))
        });
        assert_eq!(exit.run_result.expect("run").return_code, Some(3));
        let worded = super::response(&outcome(
            OutcomeKind::Crashed,
            "",
            Some("the tool exited with status 3"),
        ));
        assert_eq!(
            worded.run_result.expect("run").return_code,
            Some(CRASH_RETURN_CODE)
        );

        let trap = super::response(&outcome(OutcomeKind::Crashed, "", Some("wasm trap")));
        assert_eq!(trap.status, RunStatus::Failed);
        assert_eq!(
            trap.run_result.expect("run").return_code,
            Some(CRASH_RETURN_CODE)
        );

        let oom = super::response(&outcome(OutcomeKind::MemoryLimit, "", Some("memory")));
        assert_eq!(
            oom.run_result.expect("run").return_code,
            Some(MEMORY_KILL_RETURN_CODE)
        );

        for kind in [OutcomeKind::InfraFault, OutcomeKind::ToolError] {
            let error = super::response(&outcome(kind, "", Some("boom")));
            assert_eq!(error.status, RunStatus::SandboxError);
            assert_eq!(
                error.run_result.expect("run").status,
                CommandRunStatus::Error
            );
        }
    }

    #[test]
    fn forged_or_missing_result_lines_are_sandbox_errors() {
        for output in [
            "hello\n",
            "SOD-RUN-CODE-RESULT:{not json}\n",
            "SOD-RUN-CODE-RESULT:{}\nSOD-RUN-CODE-RESULT:{}\n",
        ] {
            let response = response(&outcome(OutcomeKind::Ok, output, None));
            assert_eq!(response.status, RunStatus::SandboxError, "{output:?}");
        }
    }
}
