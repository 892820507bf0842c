//! What the file tree's API speaks in: inode numbers, node kinds, what `stat` reports, the quotas of a tree
//! ([`FsLimits`], part of a call's [`crate::Limits`]) and the errors an operation gives ([`FsError`], one
//! `wasi:filesystem` error code each). Re-exported by [`super::tree`], whose operations use them.

use serde::{Deserialize, Serialize};

/// An inode number. The root is [`super::Tree::ROOT`]; the others count up from 2 in creation order.
pub type Ino = u64;

/// Bytes charged per node besides its data and its name: what a directory entry and an inode cost a real
/// filesystem, so that a flood of empty files runs into the byte quota as well as the node quota.
pub const NODE_OVERHEAD_BYTES: u64 = 128;

/// Why an operation failed; each maps to one `wasi:filesystem` error code (and so to one POSIX errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// ENOENT: no such file or directory.
    NoEntry,
    /// EEXIST: the name is taken.
    Exist,
    /// ENOTDIR: a path component, or the target, is not a directory.
    NotDirectory,
    /// EISDIR: a file operation on a directory.
    IsDirectory,
    /// ENOTEMPTY: a directory that must be empty is not.
    NotEmpty,
    /// ENAMETOOLONG: a name, a path or its depth is over its limit.
    NameTooLong,
    /// ENOSPC: the tree's byte quota would be exceeded.
    InsufficientSpace,
    /// EDQUOT: the tree's node quota would be exceeded.
    Quota,
    /// EFBIG: one file would exceed its size limit.
    FileTooLarge,
    /// EPERM: the path leaves the directory it is resolved from.
    NotPermitted,
    /// EINVAL: an invalid request (removing `.`, moving a directory into itself, ...).
    Invalid,
    /// EBADF: no such inode (a handle to a node that is gone).
    BadDescriptor,
    /// Too many open handles (EMFILE; WASI has no such code, so the guest sees ENOMEM).
    TooManyOpen,
}

impl FsError {
    /// What went wrong, as `strerror` words it.
    pub fn describe(self) -> &'static str {
        match self {
            FsError::NoEntry => "no such file or directory",
            FsError::Exist => "file exists",
            FsError::NotDirectory => "not a directory",
            FsError::IsDirectory => "is a directory",
            FsError::NotEmpty => "directory not empty",
            FsError::NameTooLong => "file name too long",
            FsError::InsufficientSpace => "no space left on device (the byte quota)",
            FsError::Quota => "disk quota exceeded (the file and directory quota)",
            FsError::FileTooLarge => "file too large",
            FsError::NotPermitted => "operation not permitted",
            FsError::Invalid => "invalid argument",
            FsError::BadDescriptor => "bad file descriptor",
            FsError::TooManyOpen => "too many open files",
        }
    }
}

/// What a tree may hold: the file quotas of one call or session. Part of [`crate::Limits`], so set per call
/// like fuel and memory (`[tool_limits.fs]` in run.toml, `fs` in a request's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsLimits {
    /// Total bytes: file data, plus [`NODE_OVERHEAD_BYTES`] and the name's length per node.
    pub max_bytes: u64,
    /// Bytes of one file.
    pub max_file_bytes: u64,
    /// Files and directories, the root excluded.
    pub max_nodes: u64,
    /// Bytes of one path component.
    pub max_name_bytes: usize,
    /// Components of one path.
    pub max_depth: usize,
    /// Bytes of one path.
    pub max_path_bytes: usize,
    /// Open handles at once: descriptors, file streams, directory listings.
    pub max_open: u64,
}

impl Default for FsLimits {
    fn default() -> Self {
        FsLimits {
            max_bytes: 64 << 20,
            max_file_bytes: 64 << 20,
            max_nodes: 10_000,
            max_name_bytes: 255,
            max_depth: 64,
            max_path_bytes: 4096,
            max_open: 1024,
        }
    }
}

impl FsLimits {
    /// Whether these are the defaults (then a serialised [`crate::Limits`] leaves them out, so that records
    /// written before file quotas existed stay byte-identical).
    pub fn is_default(&self) -> bool {
        *self == FsLimits::default()
    }
}

/// A node's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
}

/// What `stat` reports of a node; times in nanoseconds of the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The inode number.
    pub ino: Ino,
    /// File or directory.
    pub kind: NodeKind,
    /// Bytes of a file; 0 for a directory.
    pub size: u64,
    /// 1 for a file; 2 plus its subdirectories for a directory.
    pub link_count: u64,
    /// Last access (set at creation only: reads do not touch it).
    pub accessed: u64,
    /// Last change of the data (or of a directory's entries).
    pub modified: u64,
    /// Last change of the data or the metadata.
    pub changed: u64,
}
