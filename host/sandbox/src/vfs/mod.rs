//! The tools' files in memory (docs/sandbox.md, "Files"): `wasi:filesystem` served from a [`Tree`] per call
//! (or per session) instead of a host directory, so that everything a guest sees of its files is a function of the
//! call's inputs, its files are bounded by quotas ([`FsLimits`], part of [`crate::Limits`]) and never reach the
//! host's disk, and filesystem work costs fuel like computation does.
//!
//! Map of the types: [`Vfs`] is the call's tree behind a mutex, shared by the store ([`crate::store::CallState`])
//! and by the streams the guest holds; [`tree`] is the tree itself, speaking the vocabulary in `types`
//! ([`FsLimits`], [`FsError`], [`Stat`]); `host` serves `wasi:filesystem/{types,preopens}` over it through the
//! resources in `stream` (descriptors, directory listings, file streams); [`charge_hook`] turns the fuel debt that
//! filesystem work runs up into spent fuel each time the guest resumes.
//!
//! Fuel: every filesystem host call costs [`OP_FUEL`] and every byte read or written [`BYTE_FUEL`], so a flood of
//! cheap operations (creating and deleting files in a loop) ends by the fuel limit in a wall time of the same order
//! as a compute loop of the same fuel, on every machine the same way.

mod host;
mod stream;
pub mod tree;
mod types;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::component::Linker;
use wasmtime::{CallHook, StoreContextMut, Trap};

use crate::clock::{EPOCH_UNIX_SECONDS, VirtualClock};
use crate::store::CallState;

pub(crate) use host::VfsCtxView;
pub use tree::{FsError, FsLimits, Ino, NodeKind, Stat, Tree};

/// Fuel charged per filesystem host call (open, stat, a listing's entry, a stream's read or write, ...): about
/// 1 us at [`crate::Limits::FUEL_PER_SECOND`], more than the host's in-memory work for one operation.
pub const OP_FUEL: u64 = 5_000;

/// Fuel charged per byte read or written.
pub const BYTE_FUEL: u64 = 1;

struct Shared {
    tree: Mutex<Tree>,
    /// Fuel owed for filesystem work since the guest last resumed (see [`charge_hook`]).
    debt: AtomicU64,
    clock: VirtualClock,
}

/// One call's (or session's) file tree, with its clock and fuel debt. Cheap to clone; clones share the tree.
#[derive(Clone)]
pub(crate) struct Vfs(Arc<Shared>);

impl Vfs {
    /// An empty tree whose timestamps come from `clock`.
    pub(crate) fn new(limits: FsLimits, clock: VirtualClock) -> Self {
        // The root's times, like every other, are the virtual wall clock's.
        let now = wall_nanos(&clock);
        Vfs(Arc::new(Shared {
            tree: Mutex::new(Tree::new(limits, now)),
            debt: AtomicU64::new(0),
            clock,
        }))
    }

    /// The tree, locked. Never held across a call that may drop a handle (a handle's drop locks it).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tree> {
        self.0.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Now on the virtual wall clock, in nanoseconds since the Unix epoch (read without advancing it, so
    /// filesystem work does not move the guest's clock).
    pub(crate) fn now(&self) -> u64 {
        wall_nanos(&self.0.clock)
    }

    /// Owes the fuel of `ops` operations moving `bytes` bytes.
    pub(crate) fn charge(&self, ops: u64, bytes: u64) {
        let cost = ops
            .saturating_mul(OP_FUEL)
            .saturating_add(bytes.saturating_mul(BYTE_FUEL));
        self.0.debt.fetch_add(cost, Ordering::Relaxed);
    }

    /// Takes the fuel owed so far.
    fn take_debt(&self) -> u64 {
        self.0.debt.swap(0, Ordering::Relaxed)
    }

    /// Gives the tree the call's quotas (an instance made ahead, a session's next call): what is stored stays,
    /// growth past them is refused.
    pub(crate) fn set_limits(&self, limits: FsLimits) {
        self.lock().set_limits(limits);
    }

    /// Whether the tree is as a fresh one (nothing created, nothing open but what `get-directories` handed
    /// out): an instance made ahead whose tree is not cannot serve a call as a fresh one would.
    pub(crate) fn is_pristine(&self) -> bool {
        self.lock().usage() == (0, 0)
    }

    /// Writes the caller's files into the tree (creating their directories), before the guest runs. Host work:
    /// no fuel is charged; the quotas apply.
    pub(crate) fn install(&self, files: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
        let now = self.now();
        let mut tree = self.lock();
        for (path, bytes) in files {
            let clean = normalise(path).ok_or_else(|| {
                format!(
                    "file path {path:?} must be relative to the tool's root, without '..' or empty components"
                )
            })?;
            let parts: Vec<&str> = clean.split('/').collect();
            for depth in 1..parts.len() {
                let dir = parts[..depth].join("/");
                match tree.lookup(Tree::ROOT, &dir) {
                    Ok(_) => {}
                    Err(FsError::NoEntry) => {
                        tree.create_dir(Tree::ROOT, &dir, now).map_err(|e| {
                            format!("cannot create directory {dir:?}: {}", e.describe())
                        })?;
                    }
                    Err(e) => {
                        return Err(format!("cannot create directory {dir:?}: {}", e.describe()));
                    }
                }
            }
            let written = tree
                .open_file(Tree::ROOT, &clean, true, false, now)
                .and_then(|ino| {
                    tree.set_size(ino, 0, now)?;
                    tree.write(ino, 0, bytes, now)
                });
            written.map_err(|e| format!("cannot write file {path:?}: {}", e.describe()))?;
        }
        Ok(())
    }

    /// The regular files among `paths` that exist after the call, by the caller's names (missing ones and
    /// directories are left out).
    pub(crate) fn fetch(&self, paths: &[String]) -> BTreeMap<String, Vec<u8>> {
        let tree = self.lock();
        let mut files = BTreeMap::new();
        for path in paths {
            let Some(clean) = normalise(path) else {
                continue;
            };
            let Ok(ino) = tree.lookup(Tree::ROOT, &clean) else {
                continue;
            };
            if let Ok(stat) = tree.stat(ino)
                && stat.kind == NodeKind::File
                && let Ok(bytes) = tree.read(ino, 0, usize::MAX)
            {
                files.insert(path.clone(), bytes.to_vec());
            }
        }
        files
    }
}

/// `clock`'s wall time in nanoseconds since the Unix epoch, without advancing it.
fn wall_nanos(clock: &VirtualClock) -> u64 {
    EPOCH_UNIX_SECONDS * 1_000_000_000 + clock.peek()
}

/// `path` relative to the root: leading `/` and `./` dropped; `None` for `..`, empty paths or components.
fn normalise(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|p| *p != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| p.is_empty() || *p == "..") {
        return None;
    }
    Some(parts.join("/"))
}

/// Turns the fuel debt of filesystem work into spent fuel whenever a host call returns to the guest; a debt
/// larger than the fuel left ends the call as running out of fuel does (`time_limit`), deterministically.
pub(crate) fn charge_hook(
    mut store: StoreContextMut<'_, CallState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    if !matches!(hook, CallHook::ReturningFromHost) {
        return Ok(());
    }
    let debt = store.data().vfs.take_debt();
    if debt == 0 {
        return Ok(());
    }
    let fuel = store.get_fuel()?;
    if debt > fuel {
        store.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    store.set_fuel(fuel - debt)?;
    Ok(())
}

/// Serves `wasi:filesystem/{types,preopens}` from the call's [`Vfs`], shadowing wasmtime-wasi's host-directory
/// implementation (the linker must allow shadowing). The generated bindings are wasmtime-wasi's own, so the
/// interface versions are the ones the rest of WASI is linked at.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
    types::add_to_linker::<CallState, host::VfsHost>(linker, CallState::vfs_view)?;
    preopens::add_to_linker::<CallState, host::VfsHost>(linker, CallState::vfs_view)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_files_are_fetched_back_and_bad_paths_refused() {
        let vfs = Vfs::new(FsLimits::default(), VirtualClock::default());
        let files = BTreeMap::from([
            ("/data/in.txt".to_string(), b"hello".to_vec()),
            ("./a/b/c.bin".to_string(), vec![0, 1, 2]),
        ]);
        vfs.install(&files).unwrap();
        let fetched = vfs.fetch(&[
            "data/in.txt".to_string(),
            "a/b/c.bin".to_string(),
            "a/b".to_string(),
            "missing".to_string(),
        ]);
        assert_eq!(fetched.len(), 2);
        assert_eq!(fetched["data/in.txt"], b"hello");
        for bad in ["../x", "a/../../x", "", "a//b"] {
            let files = BTreeMap::from([(bad.to_string(), vec![])]);
            assert!(vfs.install(&files).is_err(), "{bad:?} was accepted");
        }
        let small = FsLimits {
            max_bytes: 1000,
            ..FsLimits::default()
        };
        let vfs = Vfs::new(small, VirtualClock::default());
        let err = vfs
            .install(&BTreeMap::from([("big".to_string(), vec![0; 2000])]))
            .unwrap_err();
        assert!(err.contains("no space"), "{err}");
        assert_eq!(vfs.lock().usage().0, NODE_OVERHEAD + 3);
    }

    const NODE_OVERHEAD: u64 = tree::NODE_OVERHEAD_BYTES;
}
