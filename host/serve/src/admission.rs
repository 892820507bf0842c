//! Bounded concurrency with a bounded queue: backpressure instead of collapse.
//!
//! At most `workers` sandbox calls run at once, each on a blocking thread (a call is synchronous and
//! CPU-bound); up to `queue` more requests wait for a worker. A request beyond `workers + queue` is
//! refused at once ([`Rejection::Overloaded`], HTTP 503 with `Retry-After`), and so is every waiting
//! request once shutdown begins. A call that started always runs to its end, even if its client went
//! away, so the worker bound holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

/// Why a request did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Every worker is busy and the queue is full.
    #[error("the server is at capacity ({running} running, {queued} queued); retry later")]
    Overloaded {
        /// Calls running when the request arrived.
        running: usize,
        /// Requests waiting when the request arrived.
        queued: usize,
    },
    /// The server is shutting down and starts no new call.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The call's thread panicked (a bug: the sandbox turns every guest failure into an outcome).
    #[error("the call failed inside the server: {0}")]
    Panicked(String),
}

/// Timings of an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time spent waiting for a worker.
    pub queued: Duration,
    /// Time the call ran.
    pub run: Duration,
}

/// Counts of the admission controller, for `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Load {
    /// Worker bound.
    pub workers: usize,
    /// Queue bound.
    pub queue: usize,
    /// Calls running now.
    pub running: usize,
    /// Requests waiting for a worker now.
    pub queued: usize,
}

/// The admission controller shared by all handlers.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    workers: usize,
    queue: usize,
    admitted: AtomicUsize,
    running: AtomicUsize,
}

/// Releases an admission slot when dropped (request finished, or abandoned while waiting).
struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a running call while alive.
struct Running(Arc<Admission>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// A controller running at most `workers` calls (at least one) with `queue` waiting places.
    pub fn new(workers: usize, queue: usize) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Admission {
            permits: Arc::new(Semaphore::new(workers)),
            workers,
            queue,
            admitted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        })
    }

    /// Current counts.
    pub fn load(&self) -> Load {
        let admitted = self.admitted.load(Ordering::SeqCst);
        let running = self.running.load(Ordering::SeqCst);
        Load {
            workers: self.workers,
            queue: self.queue,
            running,
            queued: admitted.saturating_sub(running),
        }
    }

    /// Runs `job` on a blocking thread once a worker is free; refuses at once when the queue is full,
    /// and while waiting when `shutdown` turns true.
    pub async fn run<T, F>(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        job: F,
    ) -> Result<(T, Timing), Rejection>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.clone());
        if before >= self.workers + self.queue {
            let load = self.load();
            return Err(Rejection::Overloaded {
                running: load.running,
                queued: load.queued.saturating_sub(1),
            });
        }
        if *shutdown.borrow() {
            return Err(Rejection::ShuttingDown);
        }
        let waiting_since = Instant::now();
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => {
                permit.map_err(|_| Rejection::ShuttingDown)?
            }
            _ = shutdown.wait_for(|stopping| *stopping) => return Err(Rejection::ShuttingDown),
        };
        let queued = waiting_since.elapsed();
        self.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(self.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let _held = (permit, slot, running);
            let start = Instant::now();
            let value = job();
            (value, start.elapsed())
        });
        match handle.await {
            Ok((value, run)) => Ok((value, Timing { queued, run })),
            Err(err) => Err(Rejection::Panicked(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_beyond_workers_plus_queue_and_recovers() {
        let admission = Admission::new(1, 1);
        let (_tx, rx) = watch::channel(false);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let admission = admission.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                admission
                    .run(rx, move || {
                        let _ = started_tx.send(());
                        release_rx.recv().is_ok()
                    })
                    .await
            })
        };
        started_rx.await.expect("first call started");
        let second = {
            let admission = admission.clone();
            let rx = rx.clone();
            tokio::spawn(async move { admission.run(rx, || 2).await })
        };
        while admission.load().queued < 1 {
            tokio::task::yield_now().await;
        }
        let third = admission.run(rx.clone(), || 3).await;
        assert!(
            matches!(third, Err(Rejection::Overloaded { .. })),
            "{third:?}"
        );
        release_tx.send(()).expect("release");
        assert!(first.await.expect("join").expect("first ran").0);
        assert_eq!(second.await.expect("join").expect("second ran").0, 2);
        assert_eq!(admission.run(rx, || 4).await.expect("after").0, 4);
        assert_eq!(admission.load().running + admission.load().queued, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_refuses_waiting_requests() {
        let admission = Admission::new(1, 4);
        let (tx, rx) = watch::channel(false);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let admission = admission.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                admission
                    .run(rx, move || {
                        let _ = started_tx.send(());
                        release_rx.recv().is_ok()
                    })
                    .await
            })
        };
        started_rx.await.expect("first call started");
        let waiting = {
            let admission = admission.clone();
            let rx = rx.clone();
            tokio::spawn(async move { admission.run(rx, || 2).await })
        };
        while admission.load().queued < 1 {
            tokio::task::yield_now().await;
        }
        tx.send(true).expect("signal");
        assert_eq!(waiting.await.expect("join"), Err(Rejection::ShuttingDown));
        release_tx.send(()).expect("release");
        assert!(first.await.expect("join").expect("running call finishes").0);
    }
}
