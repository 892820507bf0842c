//! Per-call scratch directories.
//!
//! Each call (or session) gets its own empty directory as its only preopen. Creating and removing a
//! directory costs a filesystem journal round trip per call (half of a light call's time on ext4), so an
//! empty directory is recycled after the call instead: a recycled empty directory is indistinguishable to
//! the guest from a new one. A directory the guest wrote into is removed with its contents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most idle directories kept for reuse.
const MAX_IDLE: usize = 256;

/// A pool of empty scratch directories under one private root.
#[derive(Debug)]
pub(crate) struct ScratchPool {
    root: tempfile::TempDir,
    idle: Mutex<Vec<PathBuf>>,
    created: AtomicU64,
}

impl ScratchPool {
    /// A pool rooted in a new private directory inside `parent` (the system temporary directory if `None`).
    pub(crate) fn new(parent: Option<&Path>) -> std::io::Result<Arc<Self>> {
        let builder = {
            let mut builder = tempfile::Builder::new();
            builder.prefix("sod-scratch-");
            builder
        };
        let root = match parent {
            Some(parent) => builder.tempdir_in(parent)?,
            None => builder.tempdir()?,
        };
        Ok(Arc::new(ScratchPool {
            root,
            idle: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        }))
    }

    /// An empty directory for one call.
    pub(crate) fn take(self: &Arc<Self>) -> std::io::Result<ScratchDir> {
        let reused = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let path = match reused {
            Some(path) => path,
            None => {
                let n = self.created.fetch_add(1, Ordering::Relaxed);
                let path = self.root.path().join(format!("call-{n}"));
                std::fs::create_dir(&path)?;
                path
            }
        };
        Ok(ScratchDir {
            path,
            pool: self.clone(),
        })
    }

    fn give_back(&self, path: PathBuf) {
        let empty = std::fs::read_dir(&path).is_ok_and(|mut entries| entries.next().is_none());
        if empty {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(path);
                return;
            }
        }
        // Failing to remove leaves litter inside the pool's root, which is removed with the pool.
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// A scratch directory lent to one call; returned to its pool (or removed) when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
    pool: Arc<ScratchPool>,
}

impl ScratchDir {
    /// The directory on the host.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_directories_are_reused_and_written_ones_removed() {
        let pool = ScratchPool::new(None).expect("pool");
        let first = pool.take().expect("dir");
        let first_path = first.path().to_path_buf();
        drop(first);
        let again = pool.take().expect("dir");
        assert_eq!(again.path(), first_path);
        std::fs::write(again.path().join("file"), b"x").expect("write");
        drop(again);
        assert!(!first_path.exists());
        let fresh = pool.take().expect("dir");
        assert_ne!(fresh.path(), first_path);
        assert_eq!(std::fs::read_dir(fresh.path()).expect("list").count(), 0);
    }
}
