//! The tools' files in memory (issue 16, docs/vfs-design.md): what will serve `wasi:filesystem` to a call or a
//! session instead of a host scratch directory, so that everything a guest sees of its files is a function of the
//! call's inputs, and its files are bounded by quotas and never reach the host's disk.
//!
//! Built so far: [`tree`], the file tree itself with its quotas and POSIX-like errors (unit-tested). Still to come:
//! the `wasi:filesystem` host implementation over it, streams, the fuel charge per operation and byte, and files in
//! and out of calls.

pub mod tree;

pub use tree::{FsError, FsLimits, Ino, NodeKind, Stat, Tree};
