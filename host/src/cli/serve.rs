//! `sod serve` (the HTTP server) and `sod serve bench` (its load test on loopback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use sod_sandbox::SandboxConfig;

use super::{Cli, open_sandbox, usage};
use sod_sandbox::workers::WorkerPool;
use sod_serve::bench::{LoadReport, LoadSpec, run_load_across};
use sod_serve::run_code::RunCodePolicy;
use sod_serve::{Backend, ServeConfig, Server};

/// `sod serve [--bind ADDR] ...` or `sod serve bench ...`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Log format of the per-request events (on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(flatten)]
    server: ServerOptions,
}

#[derive(Debug, Subcommand)]
enum ServeCommand {
    /// Start the server on loopback and measure POST /run_code throughput and latency.
    Bench(ServeBench),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Args)]
struct ServerOptions {
    /// Calls running at once (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests waiting for a worker; beyond workers + queue the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 128)]
    queue: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 2 << 20)]
    max_body_bytes: usize,
    /// Longest time limit a request gets, in seconds of compute (run_timeout is clamped to it).
    #[arg(long, default_value_t = 60.0)]
    max_run_timeout: f64,
    /// Run seed of every call's randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the calls in this many `sod worker` processes instead of in the server's own process (0). Same
    /// outcomes; heavy guests such as the python tool scale better across processes than across threads of
    /// one process (docs/benchmarks.md). Pair it with `--workers` of at least the same number.
    #[arg(long, default_value_t = 0)]
    processes: usize,
}

#[derive(Debug, Args)]
struct ServeBench {
    #[command(flatten)]
    server: ServerOptions,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Most requests per level.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Time budget per level in seconds: no request starts after it.
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
    /// Requests before measuring (page in code, fill the allocator's pool).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// The program every request runs.
    #[arg(long, default_value = "print(1+1)")]
    code: String,
    /// Its expected stdout.
    #[arg(long, default_value = "2\n")]
    expected_stdout: String,
    /// Load these running servers (`HOST:PORT`, repeatable; clients spread round-robin) instead of one started
    /// in this process.
    #[arg(long = "target", value_name = "HOST:PORT")]
    targets: Vec<SocketAddr>,
    /// Print one JSON object per level (with every latency in ms, for merging the reports of several client
    /// processes) instead of the table.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    match &args.command {
        Some(ServeCommand::Bench(bench)) => run_bench(cli, bench),
        None => run_server(cli, args),
    }
}

impl ServerOptions {
    fn serve_config(&self) -> anyhow::Result<ServeConfig> {
        if !self.max_run_timeout.is_finite() || self.max_run_timeout <= 0.0 {
            return Err(usage(
                "--max-run-timeout must be a positive number of seconds",
            ));
        }
        let defaults = ServeConfig::default();
        let workers = self.workers.unwrap_or(defaults.workers);
        if workers == 0 {
            return Err(usage("--workers must be at least 1"));
        }
        Ok(ServeConfig {
            workers,
            queue: self.queue,
            max_body_bytes: self.max_body_bytes,
            run_code: RunCodePolicy {
                max_run_timeout_secs: self.max_run_timeout,
                ..RunCodePolicy::default()
            },
            ..defaults
        })
    }

    /// The in-process sandbox, with a pool of worker processes over the same tools and seed if asked.
    fn backend(&self, cli: &Cli, config: &ServeConfig) -> anyhow::Result<Backend> {
        let sandbox = open_sandbox(cli, self.sandbox_config(config), true)?;
        let pool = if self.processes == 0 {
            None
        } else {
            let tools_dir = crate::locate::tools_dir(cli.tools_dir.as_deref());
            let command = WorkerPool::current_exe_command(&tools_dir, self.seed)?;
            let pool = WorkerPool::start(command, self.processes).map_err(|e| {
                anyhow::anyhow!("starting {} worker processes: {e}", self.processes)
            })?;
            Some(Arc::new(pool))
        };
        Ok(Backend { sandbox, pool })
    }

    fn sandbox_config(&self, config: &ServeConfig) -> SandboxConfig {
        let defaults = SandboxConfig::default();
        let workers = u32::try_from(config.workers).unwrap_or(u32::MAX);
        SandboxConfig {
            seed: self.seed,
            // Running calls plus sessions must fit the instance pool.
            max_instances: defaults.max_instances.max(workers.saturating_mul(2)),
            max_sessions: 64,
            ..defaults
        }
    }
}

fn init_logs(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false);
    // A subscriber already installed (by an embedding program) keeps logging.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn run_server(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let config = args.server.serve_config()?;
    // Load (and compile, the first time) every tool before listening: a listening server is ready.
    tracing::info!("loading tools");
    let backend = args.server.backend(cli, &config)?;
    let listener = sod_serve::bind(args.bind)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sod-serve")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        sod_serve::serve(listener, backend, config, shutdown_signal()).await
    })?;
    Ok(())
}

fn run_bench(cli: &Cli, bench: &ServeBench) -> anyhow::Result<()> {
    if bench.requests == 0 || bench.concurrency.contains(&0) {
        return Err(usage(
            "--requests and every --concurrency must be at least 1",
        ));
    }
    if !bench.max_seconds.is_finite() || bench.max_seconds <= 0.0 {
        return Err(usage("--max-seconds must be positive"));
    }
    let config = bench.server.serve_config()?;
    let (workers, queue) = (config.workers, config.queue);
    let server = if bench.targets.is_empty() {
        let backend = bench.server.backend(cli, &config)?;
        Some(Server::start(
            backend,
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )?)
    } else {
        None
    };
    let addrs = match &server {
        Some(server) => vec![server.addr()],
        None => bench.targets.clone(),
    };
    let body = serde_json::json!({"code": bench.code, "language": "python"}).to_string();
    let spec = |concurrency: usize, requests: usize| LoadSpec {
        concurrency,
        requests,
        max_duration: Duration::from_secs_f64(bench.max_seconds),
        body: body.clone(),
        expected_stdout: bench.expected_stdout.clone(),
    };
    if bench.warmup > 0 {
        let warm = run_load_across(&addrs, &spec(addrs.len(), bench.warmup))?;
        if warm.succeeded != warm.sent {
            anyhow::bail!("warm-up requests failed: {warm:?}");
        }
    }
    if !bench.json {
        let servers = match &server {
            Some(_) => format!("{workers} workers, queue {queue}"),
            None => format!("{} running server(s)", addrs.len()),
        };
        println!(
            "### `sod serve`: POST /run_code `{}` on loopback ({servers})",
            bench.code.escape_debug()
        );
        println!();
        println!("| concurrency | requests | ok | 503 | failed | req/s | p50 | p99 | wall |");
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for &concurrency in &bench.concurrency {
        let report = run_load_across(&addrs, &spec(concurrency, bench.requests))?;
        if bench.json {
            println!("{}", report_json(&report));
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} ms | {:.1} ms | {:.1} s |",
            report.concurrency,
            report.sent,
            report.succeeded,
            report.overloaded,
            report.failed,
            report.throughput(),
            report.quantile(0.5).as_secs_f64() * 1e3,
            report.quantile(0.99).as_secs_f64() * 1e3,
            report.elapsed.as_secs_f64(),
        );
    }
    if let Some(server) = server {
        server.shutdown()?;
    }
    Ok(())
}

fn report_json(report: &LoadReport) -> serde_json::Value {
    let latencies: Vec<f64> = report
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    serde_json::json!({
        "concurrency": report.concurrency,
        "sent": report.sent,
        "ok": report.succeeded,
        "overloaded": report.overloaded,
        "failed": report.failed,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "latencies_ms": latencies,
    })
}
