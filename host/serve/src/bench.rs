//! Load test of `sod serve` on loopback: a bounded number of `POST /run_code` requests at a given
//! concurrency, with throughput and latency percentiles.
//!
//! Each of the `concurrency` clients holds one keep-alive HTTP/1.1 connection and sends requests one
//! after another until the request budget or the time budget is spent. A request counts as a success
//! when the answer is HTTP 200 with SandboxFusion status `Success` and the expected stdout; 503 answers
//! (backpressure) and every other answer are counted apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

/// Errors of the load-test client.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Connecting or talking to the server failed.
    #[error("HTTP client error: {0}")]
    Client(String),
    /// The runtime could not start.
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// One measurement's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Clients sending at once.
    pub concurrency: usize,
    /// Most requests sent.
    pub requests: usize,
    /// Time budget: no request is started after it.
    pub max_duration: Duration,
    /// The JSON body of every request.
    pub body: String,
    /// The stdout a successful answer carries.
    pub expected_stdout: String,
}

/// One measurement's results.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Clients sending at once.
    pub concurrency: usize,
    /// Requests answered (any way).
    pub sent: usize,
    /// Answers with status `Success` and the expected stdout.
    pub succeeded: usize,
    /// 503 answers (the queue was full).
    pub overloaded: usize,
    /// Every other answer (a wrong result, another HTTP status, a broken connection).
    pub failed: usize,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Latency of the successful requests, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the successful requests' latency.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies.len() - 1;
        let index = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        self.latencies[index]
    }
}

enum Answer {
    Success,
    Overloaded,
    Failed,
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| BenchError::Client(format!("connect {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BenchError::Client(format!("handshake: {e}")))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    body: &Bytes,
    expected_stdout: &str,
) -> Result<Answer, BenchError> {
    sender
        .ready()
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let request = Request::post("/run_code")
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| BenchError::Client(e.to_string()))?
        .to_bytes();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Ok(Answer::Overloaded);
    }
    if status != StatusCode::OK {
        return Ok(Answer::Failed);
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| BenchError::Client(e.to_string()))?;
    let ok = answer["status"] == "Success" && answer["run_result"]["stdout"] == expected_stdout;
    Ok(if ok { Answer::Success } else { Answer::Failed })
}

#[derive(Default)]
struct ClientTally {
    succeeded: usize,
    overloaded: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

async fn client(
    addr: SocketAddr,
    spec: Arc<LoadSpec>,
    body: Bytes,
    tickets: Arc<AtomicUsize>,
    deadline: Instant,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut sender = None;
    while Instant::now() < deadline && tickets.fetch_add(1, Ordering::SeqCst) < spec.requests {
        let start = Instant::now();
        let answer = match sender.as_mut() {
            Some(sender) => send(sender, addr, &body, &spec.expected_stdout).await,
            None => match connect(addr).await {
                Ok(new) => send(sender.insert(new), addr, &body, &spec.expected_stdout).await,
                Err(err) => Err(err),
            },
        };
        match answer {
            Ok(Answer::Success) => {
                tally.succeeded += 1;
                tally.latencies.push(start.elapsed());
            }
            Ok(Answer::Overloaded) => tally.overloaded += 1,
            Ok(Answer::Failed) => tally.failed += 1,
            Err(_) => {
                tally.failed += 1;
                sender = None;
            }
        }
    }
    tally
}

/// Runs one measurement against the server at `addr`.
pub fn run_load(addr: SocketAddr, spec: &LoadSpec) -> Result<LoadReport, BenchError> {
    run_load_across(&[addr], spec)
}

/// [`run_load`] against several servers: client `i` talks to `addrs[i % addrs.len()]`.
pub fn run_load_across(addrs: &[SocketAddr], spec: &LoadSpec) -> Result<LoadReport, BenchError> {
    if addrs.is_empty() {
        return Err(BenchError::Client("no server to load".to_string()));
    }
    let addrs = addrs.to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spec = Arc::new(spec.clone());
    runtime.block_on(async move {
        let body = Bytes::from(spec.body.clone());
        let tickets = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let deadline = start + spec.max_duration;
        let clients: Vec<_> = (0..spec.concurrency.max(1))
            .map(|i| {
                tokio::spawn(client(
                    addrs[i % addrs.len()],
                    spec.clone(),
                    body.clone(),
                    tickets.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut report = LoadReport {
            concurrency: spec.concurrency.max(1),
            sent: 0,
            succeeded: 0,
            overloaded: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        };
        for handle in clients {
            let tally = handle
                .await
                .map_err(|e| BenchError::Client(format!("client task: {e}")))?;
            report.succeeded += tally.succeeded;
            report.overloaded += tally.overloaded;
            report.failed += tally.failed;
            report.latencies.extend(tally.latencies);
        }
        report.elapsed = start.elapsed();
        report.sent = report.succeeded + report.overloaded + report.failed;
        report.latencies.sort();
        Ok(report)
    })
}
