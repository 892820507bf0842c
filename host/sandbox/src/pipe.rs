//! Captured stdout/stderr that keeps a bounded prefix and never fails a write.
//!
//! wasmtime-wasi's memory pipe traps when full, which would turn an output flood into a crash. Here a full
//! pipe silently drops the rest and remembers that it did, so the host can report `output_truncated`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Captured {
    capacity: usize,
    bytes: Vec<u8>,
    dropped: u64,
}

/// A bounded capture buffer shared by the guest's stream and the host.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    inner: Arc<Mutex<Captured>>,
}

impl CappedPipe {
    /// A pipe keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        CappedPipe {
            inner: Arc::new(Mutex::new(Captured {
                capacity,
                ..Captured::default()
            })),
        }
    }

    /// Sets the capacity for what is written from now on (a store built ahead of its call learns the call's
    /// output limit when the call comes).
    pub fn set_capacity(&self, capacity: usize) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity = capacity;
    }

    /// Whether nothing was written yet.
    pub fn is_untouched(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.bytes.is_empty() && inner.dropped == 0
    }

    fn push(&self, data: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = inner.capacity.saturating_sub(inner.bytes.len());
        let kept = room.min(data.len());
        inner.bytes.extend_from_slice(&data[..kept]);
        inner.dropped += (data.len() - kept) as u64;
    }

    /// The kept bytes as (lossy) UTF-8, and whether anything was dropped.
    pub fn contents(&self) -> (String, bool) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (
            String::from_utf8_lossy(&inner.bytes).into_owned(),
            inner.dropped > 0,
        )
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a full chunk: excess is dropped, not refused.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
