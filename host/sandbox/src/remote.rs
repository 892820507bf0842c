//! Tool calls on remote sandboxes: a client of one or more `sod serve` endpoints (`POST /v1/tools/{name}/call`)
//! that gives the outcome an in-process [`crate::Sandbox`] would give.
//!
//! Determinism: everything a call's outcome depends on travels with it (the exact argument text, fuel, memory,
//! output and file limits, seed, call key, files), so any endpoint serving the same tool artifacts computes the same
//! outcome; [`RemoteTools::check_artifacts`] refuses endpoints whose tools differ from the caller's.
//!
//! Spreading and faults: a stateless call goes to the endpoint with the fewest calls outstanding from this client;
//! a session's calls all go to the endpoint that holds it. A 503 (the server's admission bound) is retried after
//! its `Retry-After`; an endpoint that cannot be reached is set aside for [`RETRY_DEAD_AFTER`] and a stateless call
//! it was serving is retried on another one with the same seed and key. A call that cannot be served (every
//! endpoint lost, a lost session, a malformed answer) is an [`crate::OutcomeKind::InfraFault`], never the model's error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::backend::ToolBackend;
use crate::limits::Limits;
use crate::outcome::{Outcome, files_to_base64};
use crate::sandbox::{CallOptions, call_key_for};

/// How long an endpoint that could not be reached is left out before it is tried again.
pub const RETRY_DEAD_AFTER: Duration = Duration::from_secs(5);

/// Most waits on a busy endpoint (503) for one call before it becomes an infra fault.
const MAX_BUSY_RETRIES: usize = 600;

/// Longest wait on one `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

struct Endpoint {
    url: String,
    outstanding: AtomicUsize,
    /// When it last failed to answer, if it is set aside.
    lost_at: Mutex<Option<Instant>>,
    /// It came back serving other artifacts than were checked: never used again by this client.
    refused: AtomicBool,
}

impl Endpoint {
    /// Whether it was set aside and its time out is over: it must show its artifacts again before a call.
    fn due_back(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
            && matches!(
                *self.lost_at.lock().unwrap_or_else(|e| e.into_inner()),
                Some(when) if when.elapsed() >= RETRY_DEAD_AFTER
            )
    }

    fn usable(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
            && self
                .lost_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
    }

    fn set_lost(&self, lost: bool) {
        *self.lost_at.lock().unwrap_or_else(|e| e.into_inner()) = lost.then(Instant::now);
    }
}

/// A client of `sod serve` endpoints (see the module docs). Cheap to share across threads.
pub struct RemoteTools {
    endpoints: Vec<Endpoint>,
    agent: ureq::Agent,
    /// (tool, session) -> the endpoint that holds it.
    sessions: Mutex<HashMap<(String, String), usize>>,
    /// The tools (name, artifact) the last [`RemoteTools::check_artifacts`] asked for: an endpoint back from being
    /// set aside must serve them again (it may have been restarted with other tools).
    expected: Mutex<Vec<(String, String)>>,
}

impl std::fmt::Debug for RemoteTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.url.as_str()).collect();
        f.debug_struct("RemoteTools")
            .field("endpoints", &urls)
            .finish()
    }
}

impl ToolBackend for RemoteTools {
    fn call(&self, tool: &str, arguments: &str, options: &CallOptions) -> Outcome {
        RemoteTools::call(self, tool, arguments, options)
    }

    fn release_session(&self, tool: &str, session: &str) -> bool {
        RemoteTools::release_session(self, tool, session)
    }

    fn check_artifacts(&self, tools: &[(String, String)]) -> Result<(), String> {
        RemoteTools::check_artifacts(self, tools)
    }
}

/// Why an endpoint does not serve the checked tools.
enum Mismatch {
    /// It could not be asked.
    Unreachable(String),
    /// It serves other artifacts, or lacks a tool.
    Other(String),
}

/// How one attempt on one endpoint went.
enum Attempt {
    Answered(Outcome),
    /// 503: come back after this long.
    Busy(Duration),
    /// Not reached, or no answer: the endpoint is lost for now.
    Lost(String),
    /// An answer that is not an outcome (a 4xx: the request itself is wrong).
    Refused(String),
}

impl RemoteTools {
    /// A client of `urls` (`http://host:port`, no trailing path). Makes no request yet.
    pub fn new(urls: &[String]) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no tool endpoints given".to_string());
        }
        let endpoints = urls
            .iter()
            .map(|url| {
                let url = url.trim_end_matches('/').to_string();
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(format!(
                        "tool endpoint {url:?} must start with http:// or https://"
                    ));
                }
                Ok(Endpoint {
                    url,
                    outstanding: AtomicUsize::new(0),
                    lost_at: Mutex::new(None),
                    refused: AtomicBool::new(false),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(RemoteTools {
            endpoints,
            agent,
            sessions: Mutex::new(HashMap::new()),
            expected: Mutex::new(Vec::new()),
        })
    }

    /// The endpoints' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The endpoint holding a session, if this client has pinned it to one.
    pub fn session_url(&self, tool: &str, session: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let index = *sessions.get(&(tool.to_string(), session.to_string()))?;
        Some(self.endpoints[index].url.clone())
    }

    /// Checks that every endpoint serves each of `tools` (name, `sha256:` artifact) with the same artifact, so
    /// that remote outcomes are the ones the local tools would give. An endpoint that cannot be reached is set
    /// aside (as a call would set it aside) rather than failing the check, as long as one endpoint answers; an
    /// endpoint serving other artifacts fails it. An endpoint set aside later is asked again before it takes calls
    /// again, and left out for good if it then serves other artifacts.
    pub fn check_artifacts(&self, tools: &[(String, String)]) -> Result<(), String> {
        let mut unreachable = Vec::new();
        for endpoint in &self.endpoints {
            match self.serves(endpoint, tools) {
                Ok(()) => {}
                Err(Mismatch::Unreachable(err)) => {
                    endpoint.set_lost(true);
                    unreachable.push(err);
                }
                Err(Mismatch::Other(err)) => return Err(err),
            }
        }
        if unreachable.len() == self.endpoints.len() {
            return Err(unreachable.join("; "));
        }
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = tools.to_vec();
        Ok(())
    }

    /// Whether `endpoint` serves each of `tools` with that artifact.
    fn serves(&self, endpoint: &Endpoint, tools: &[(String, String)]) -> Result<(), Mismatch> {
        let url = format!("{}/v1/tools", endpoint.url);
        let listed = self.list_tools(&url).map_err(Mismatch::Unreachable)?;
        for (name, artifact) in tools {
            let served = listed
                .as_array()
                .and_then(|rows| rows.iter().find(|row| row["name"] == name.as_str()))
                .and_then(|row| row["artifact"].as_str());
            match served {
                Some(served) if served == artifact => {}
                Some(served) => {
                    return Err(Mismatch::Other(format!(
                        "{} serves tool {name:?} as {served}, not {artifact}: its outcomes would differ",
                        endpoint.url
                    )));
                }
                None => {
                    return Err(Mismatch::Other(format!(
                        "{} does not serve tool {name:?}",
                        endpoint.url
                    )));
                }
            }
        }
        Ok(())
    }

    /// Asks each endpoint whose time out is over for its artifacts again: back in use if they are the checked
    /// ones, out for good if not, set aside again if it still cannot be reached.
    fn bring_back_due(&self) {
        for endpoint in self.endpoints.iter().filter(|e| e.due_back()) {
            let expected = self
                .expected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match self.serves(endpoint, &expected) {
                Ok(()) => endpoint.set_lost(false),
                Err(Mismatch::Unreachable(_)) => endpoint.set_lost(true),
                Err(Mismatch::Other(err)) => {
                    tracing::warn!(endpoint = %endpoint.url, "tool endpoint left out: {err}");
                    endpoint.refused.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    fn list_tools(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    /// Calls `tool` on some endpoint (the session's for a session call); never fails: what cannot be served is
    /// an infra fault.
    pub fn call(&self, tool: &str, arguments: &str, options: &CallOptions) -> Outcome {
        let body = request_body(arguments, options, tool);
        let session = options
            .session
            .as_ref()
            .map(|s| (tool.to_string(), s.clone()));
        let mut busy = 0;
        let mut lost = Vec::new();
        loop {
            let index = match &session {
                Some(key) => match self.session_endpoint(key) {
                    Some(index) => index,
                    None => {
                        return Outcome::infra_fault(
                            tool,
                            "every tool endpoint is lost".to_string(),
                        );
                    }
                },
                None => match self.least_outstanding() {
                    Some(index) => index,
                    None => {
                        return Outcome::infra_fault(
                            tool,
                            format!("every tool endpoint is lost: {}", lost.join("; ")),
                        );
                    }
                },
            };
            let endpoint = &self.endpoints[index];
            endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
            let attempt = self.attempt(endpoint, tool, &body);
            endpoint.outstanding.fetch_sub(1, Ordering::Relaxed);
            match attempt {
                Attempt::Answered(outcome) => return outcome,
                Attempt::Busy(wait) => {
                    busy += 1;
                    if busy > MAX_BUSY_RETRIES {
                        return Outcome::infra_fault(tool, format!("{} stayed busy", endpoint.url));
                    }
                    std::thread::sleep(wait.min(MAX_RETRY_AFTER));
                }
                Attempt::Refused(message) => return Outcome::infra_fault(tool, message),
                Attempt::Lost(message) => {
                    endpoint.set_lost(true);
                    if let Some(key) = &session {
                        // The session's interpreter and files lived there: it cannot go on elsewhere.
                        self.sessions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(key);
                        return Outcome::infra_fault(
                            tool,
                            format!(
                                "the endpoint holding session {:?} is lost: {message}",
                                key.1
                            ),
                        );
                    }
                    lost.push(message);
                    // Each endpoint twice at most: a lost one may come back after RETRY_DEAD_AFTER.
                    if lost.len() >= 2 * self.endpoints.len() {
                        return Outcome::infra_fault(
                            tool,
                            format!("no tool endpoint answered: {}", lost.join("; ")),
                        );
                    }
                }
            }
        }
    }

    /// Releases a session on the endpoint that holds it; whether it existed there.
    pub fn release_session(&self, tool: &str, session: &str) -> bool {
        let key = (tool.to_string(), session.to_string());
        let Some(index) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
        else {
            return false;
        };
        let url = format!(
            "{}/v1/tools/{}/sessions/{}",
            self.endpoints[index].url,
            encode_path(tool),
            encode_path(session)
        );
        let answer = self.agent.delete(&url).call();
        match answer {
            Ok(mut response) if response.status() == 200 => response
                .body_mut()
                .read_to_string()
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["released"].as_bool())
                .unwrap_or(false),
            _ => false,
        }
    }

    fn least_outstanding(&self) -> Option<usize> {
        self.bring_back_due();
        // Ties go to the lowest index, so a sequential run uses the endpoints in a fixed order.
        (0..self.endpoints.len())
            .filter(|&i| self.endpoints[i].usable())
            .min_by_key(|&i| self.endpoints[i].outstanding.load(Ordering::Relaxed))
    }

    fn session_endpoint(&self, key: &(String, String)) -> Option<usize> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&index) = sessions.get(key) {
            return Some(index);
        }
        let index = self.least_outstanding()?;
        sessions.insert(key.clone(), index);
        Some(index)
    }

    fn attempt(&self, endpoint: &Endpoint, tool: &str, body: &str) -> Attempt {
        let url = format!("{}/v1/tools/{}/call", endpoint.url, encode_path(tool));
        let sent = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body);
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return Attempt::Lost(format!("{url}: {err}")),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = match response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
        {
            Ok(text) => text,
            Err(err) => return Attempt::Lost(format!("{url}: {err}")),
        };
        match status {
            200 => match serde_json::from_str::<Outcome>(&text) {
                Ok(outcome) => Attempt::Answered(outcome),
                Err(err) => {
                    Attempt::Refused(format!("{url} answered no outcome ({err}): {text:.200}"))
                }
            },
            503 => Attempt::Busy(Duration::from_secs(retry_after.unwrap_or(1))),
            _ => Attempt::Refused(format!("{url} answered {status}: {text:.500}")),
        }
    }
}

/// `/v1/tools/{name}/call`'s body for a call: the exact argument text and every input of the outcome.
fn request_body(arguments: &str, options: &CallOptions, tool: &str) -> String {
    let limits: Limits = options.limits.unwrap_or_default();
    let call_key = options
        .call_key
        .clone()
        .unwrap_or_else(|| call_key_for(tool, arguments, &options.files));
    let files = files_to_base64(&options.files);
    let mut body = serde_json::json!({
        "arguments": arguments,
        "fuel": limits.fuel,
        "memory_bytes": limits.memory_bytes,
        "output_bytes": limits.output_bytes,
        "fs": limits.fs,
        "call_key": call_key,
        "files": files,
        "fetch_files": options.fetch_files,
    });
    if let Some(seed) = options.seed {
        body["seed"] = seed.into();
    }
    if let Some(session) = &options.session {
        body["session"] = session.clone().into();
    }
    body.to_string()
}

/// `text` as one URL path segment (unreserved characters kept, the rest percent-encoded).
fn encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutcomeKind;

    #[test]
    fn paths_are_encoded_and_bad_urls_refused() {
        assert_eq!(encode_path("prompt 3/sample-1"), "prompt%203%2Fsample-1");
        assert!(RemoteTools::new(&[]).is_err());
        assert!(RemoteTools::new(&["localhost:8080".to_string()]).is_err());
        let remote = RemoteTools::new(&["http://127.0.0.1:1/".to_string()]).unwrap();
        assert_eq!(remote.urls(), ["http://127.0.0.1:1"]);
    }

    #[test]
    fn an_unreachable_endpoint_is_an_infra_fault() {
        // Port 1 on loopback: nothing listens there.
        let remote = RemoteTools::new(&["http://127.0.0.1:1".to_string()]).unwrap();
        let outcome = remote.call("calculator", "{}", &CallOptions::default());
        assert_eq!(outcome.kind, OutcomeKind::InfraFault, "{outcome:?}");
        assert!(outcome.message.unwrap_or_default().contains("lost"));
    }
}
