//! What the guest holds of the tree: descriptors, directory listings and file streams. Each holds a [`Handle`],
//! an open count on its node, so that a file unlinked while open keeps its data until the last one goes, and
//! the open-handle quota counts them all.

use bytes::Bytes;
use wasmtime_wasi::p2::bindings::filesystem::types::{DescriptorFlags, ErrorCode};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::Vfs;
use super::tree::{FsError, Ino, NodeKind, Tree};

/// Bytes a stream moves per read or write call at most.
const CHUNK: usize = 64 << 10;

/// An open count on one node, released when dropped.
pub(crate) struct Handle {
    vfs: Vfs,
    pub(crate) ino: Ino,
}

impl Handle {
    /// Counts a handle to `ino` in `tree` (the caller's lock on `vfs`).
    pub(crate) fn open(vfs: &Vfs, tree: &mut Tree, ino: Ino) -> Result<Handle, FsError> {
        tree.retain(ino)?;
        Ok(Handle {
            vfs: vfs.clone(),
            ino,
        })
    }

    /// [`Handle::open`], taking the lock for it (released before returning, so that a caller that fails later and
    /// drops the handle does not lock twice).
    pub(crate) fn open_unlocked(vfs: &Vfs, ino: Ino) -> Result<Handle, FsError> {
        Handle::open(vfs, &mut vfs.lock(), ino)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Handles are dropped by the resource table, never while the tree is locked.
        self.vfs.lock().release(self.ino);
    }
}

/// A `wasi:filesystem` descriptor: a node, its kind, and the flags it was opened with.
pub(crate) struct VfsDescriptor {
    pub(crate) handle: Handle,
    pub(crate) kind: NodeKind,
    pub(crate) flags: DescriptorFlags,
}

/// A directory listing read one entry at a time, in byte order of the names.
pub(crate) struct VfsDirStream {
    pub(crate) handle: Handle,
    /// The last name returned.
    pub(crate) after: Option<String>,
}

/// The error a stream reports, which `filesystem-error-code` turns back into its code (ENOSPC, say).
#[derive(Debug)]
pub(crate) struct StreamFsError(pub(crate) ErrorCode);

impl std::fmt::Display for StreamFsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for StreamFsError {}

fn failed(error: FsError) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(StreamFsError(error.into())))
}

/// `read-via-stream`: reads a file from a position. Past the end it is closed (never an empty read, which
/// a blocking read would retry until it traps).
pub(crate) struct FileReader {
    pub(crate) handle: Handle,
    pub(crate) position: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileReader {
    async fn ready(&mut self) {}
}

impl InputStream for FileReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let vfs = self.handle.vfs.clone();
        let tree = vfs.lock();
        let data = tree
            .read(self.handle.ino, self.position, size.min(CHUNK))
            .map_err(failed)?;
        vfs.charge(1, data.len() as u64);
        if data.is_empty() && size > 0 {
            return Err(StreamError::Closed);
        }
        self.position += data.len() as u64;
        Ok(Bytes::copy_from_slice(data))
    }
}

/// `write-via-stream` (from a position) and `append-via-stream` (`position` `None`: at the end each time).
/// A write the quotas refuse fails with their error code; nothing of it is stored.
pub(crate) struct FileWriter {
    pub(crate) handle: Handle,
    pub(crate) position: Option<u64>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for FileWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for FileWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let vfs = self.handle.vfs.clone();
        let now = vfs.now();
        let mut tree = vfs.lock();
        vfs.charge(1, bytes.len() as u64);
        let ino = self.handle.ino;
        let at = match self.position {
            Some(at) => at,
            None => tree.stat(ino).map_err(failed)?.size,
        };
        let written = tree.write(ino, at, &bytes, now).map_err(failed)?;
        if let Some(position) = &mut self.position {
            *position += written as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never zero: a blocking write that is granted nothing retries until it traps. A write past a quota
        // fails in `write` instead, with the quota's code.
        Ok(CHUNK)
    }
}
