//! The in-memory file tree of one call or session (docs/sandbox.md): an inode arena whose directories
//! keep their entries in a `BTreeMap`, so a listing is in byte order of the names on every host; inode numbers
//! count up from the root and are never reused; timestamps are what the caller passes (the call's virtual clock);
//! every size is checked against [`FsLimits`] before anything is allocated, so a 2 GB write or truncate fails
//! with [`FsError::InsufficientSpace`] having allocated nothing.
//!
//! Paths are relative to a directory inode: components separated by `/`, `.` skipped, `..` going up but never
//! above the directory resolution started from (a leading `/` or an escape is [`FsError::NotPermitted`], as
//! cap-std refuses them). There are no symbolic or hard links: every node but the root is in exactly one
//! directory. A file unlinked while open keeps its data (and its quota) until its last handle is released.

use std::collections::BTreeMap;

pub use super::types::{FsError, FsLimits, Ino, NODE_OVERHEAD_BYTES, NodeKind, Stat};

#[derive(Debug)]
enum Data {
    File(Vec<u8>),
    Dir {
        entries: BTreeMap<String, Ino>,
        parent: Ino,
    },
}

#[derive(Debug)]
struct Node {
    data: Data,
    /// The length of the name it is linked under (charged to the quota).
    name_bytes: u64,
    accessed: u64,
    modified: u64,
    changed: u64,
    /// Open handles (descriptors, streams).
    open: u32,
    /// Whether a directory holds it.
    linked: bool,
}

impl Node {
    fn new(data: Data, name_bytes: u64, now: u64) -> Self {
        Node {
            data,
            name_bytes,
            accessed: now,
            modified: now,
            changed: now,
            open: 0,
            linked: true,
        }
    }

    fn kind(&self) -> NodeKind {
        match self.data {
            Data::File(_) => NodeKind::File,
            Data::Dir { .. } => NodeKind::Directory,
        }
    }

    /// What it costs the byte quota.
    fn cost(&self) -> u64 {
        let data = match &self.data {
            Data::File(bytes) => bytes.len() as u64,
            Data::Dir { .. } => 0,
        };
        data + NODE_OVERHEAD_BYTES + self.name_bytes
    }
}

/// An in-memory file tree (see the module docs).
#[derive(Debug)]
pub struct Tree {
    nodes: BTreeMap<Ino, Node>,
    next: Ino,
    bytes: u64,
    /// Open handles over all nodes.
    open: u64,
    limits: FsLimits,
}

impl Tree {
    /// The root directory's inode.
    pub const ROOT: Ino = 1;

    /// An empty tree (its root created at `now`).
    pub fn new(limits: FsLimits, now: u64) -> Self {
        let mut nodes = BTreeMap::new();
        // The root is its own parent and costs nothing: it is there before the guest does anything.
        let root = Node::new(
            Data::Dir {
                entries: BTreeMap::new(),
                parent: Self::ROOT,
            },
            0,
            now,
        );
        nodes.insert(Self::ROOT, root);
        Tree {
            nodes,
            next: Self::ROOT + 1,
            bytes: 0,
            open: 0,
            limits,
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> FsLimits {
        self.limits
    }

    /// Enforces `limits` from now on: what is stored stays, growth past them is refused.
    pub fn set_limits(&mut self, limits: FsLimits) {
        self.limits = limits;
    }

    /// Bytes charged (data, per-node overhead and names) and nodes held, the root excluded.
    pub fn usage(&self) -> (u64, u64) {
        (self.bytes, self.nodes.len() as u64 - 1)
    }

    fn node(&self, ino: Ino) -> Result<&Node, FsError> {
        self.nodes.get(&ino).ok_or(FsError::BadDescriptor)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, FsError> {
        self.nodes.get_mut(&ino).ok_or(FsError::BadDescriptor)
    }

    fn entries(&self, dir: Ino) -> Result<&BTreeMap<String, Ino>, FsError> {
        match &self.node(dir)?.data {
            Data::Dir { entries, .. } => Ok(entries),
            Data::File(_) => Err(FsError::NotDirectory),
        }
    }

    /// The components of `path` after the length checks.
    fn components<'p>(&self, path: &'p str) -> Result<Vec<&'p str>, FsError> {
        if path.is_empty() {
            return Err(FsError::NoEntry);
        }
        if path.starts_with('/') {
            return Err(FsError::NotPermitted);
        }
        if path.len() > self.limits.max_path_bytes {
            return Err(FsError::NameTooLong);
        }
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if parts.len() > self.limits.max_depth {
            return Err(FsError::NameTooLong);
        }
        if parts.iter().any(|c| c.len() > self.limits.max_name_bytes) {
            return Err(FsError::NameTooLong);
        }
        Ok(parts)
    }

    /// Walks `parts` from `start`, never above it; returns the inode reached.
    fn walk(&self, start: Ino, parts: &[&str]) -> Result<Ino, FsError> {
        let mut stack = vec![start];
        for part in parts {
            let here = *stack.last().unwrap_or(&start);
            match *part {
                "." => {
                    self.entries(here)?;
                }
                ".." => {
                    self.entries(here)?;
                    if stack.len() == 1 {
                        return Err(FsError::NotPermitted);
                    }
                    stack.pop();
                }
                name => {
                    let next = *self.entries(here)?.get(name).ok_or(FsError::NoEntry)?;
                    stack.push(next);
                }
            }
        }
        Ok(*stack.last().unwrap_or(&start))
    }

    /// The directory that would hold `path`'s last component, and that component (never `.` or `..`).
    fn parent_of<'p>(&self, dir: Ino, path: &'p str) -> Result<(Ino, &'p str), FsError> {
        let parts = self.components(path)?;
        let (last, init) = parts.split_last().ok_or(FsError::Invalid)?;
        if matches!(*last, "." | "..") {
            return Err(FsError::Invalid);
        }
        let parent = self.walk(dir, init)?;
        self.entries(parent)?;
        Ok((parent, last))
    }

    /// The inode `path` names, resolved from the directory `dir`.
    pub fn lookup(&self, dir: Ino, path: &str) -> Result<Ino, FsError> {
        let parts = self.components(path)?;
        let ino = self.walk(dir, &parts)?;
        if path.ends_with('/') && self.node(ino)?.kind() != NodeKind::Directory {
            return Err(FsError::NotDirectory);
        }
        Ok(ino)
    }

    /// Charges `extra` bytes and one node, or says which quota stops it.
    fn charge_node(&self, extra: u64) -> Result<(), FsError> {
        let (bytes, nodes) = self.usage();
        if nodes + 1 > self.limits.max_nodes {
            return Err(FsError::Quota);
        }
        if bytes + extra > self.limits.max_bytes {
            return Err(FsError::InsufficientSpace);
        }
        Ok(())
    }

    fn link(&mut self, parent: Ino, name: &str, data: Data, now: u64) -> Result<Ino, FsError> {
        let node = Node::new(data, name.len() as u64, now);
        self.charge_node(node.cost())?;
        let ino = self.next;
        self.next += 1;
        self.bytes += node.cost();
        self.nodes.insert(ino, node);
        let dir = self.node_mut(parent)?;
        if let Data::Dir { entries, .. } = &mut dir.data {
            entries.insert(name.to_string(), ino);
        }
        dir.modified = now;
        dir.changed = now;
        Ok(ino)
    }

    /// Opens `path` as a file, creating it empty when `create` (an existing one with `exclusive` is
    /// [`FsError::Exist`]); returns its inode. A directory is [`FsError::IsDirectory`].
    pub fn open_file(
        &mut self,
        dir: Ino,
        path: &str,
        create: bool,
        exclusive: bool,
        now: u64,
    ) -> Result<Ino, FsError> {
        let (parent, name) = self.parent_of(dir, path)?;
        match self.entries(parent)?.get(name).copied() {
            Some(ino) => {
                if create && exclusive {
                    return Err(FsError::Exist);
                }
                if self.node(ino)?.kind() == NodeKind::Directory {
                    return Err(FsError::IsDirectory);
                }
                if path.ends_with('/') {
                    return Err(FsError::NotDirectory);
                }
                Ok(ino)
            }
            None if create => {
                if path.ends_with('/') {
                    return Err(FsError::IsDirectory);
                }
                self.link(parent, name, Data::File(Vec::new()), now)
            }
            None => Err(FsError::NoEntry),
        }
    }

    /// Creates the directory `path`.
    pub fn create_dir(&mut self, dir: Ino, path: &str, now: u64) -> Result<Ino, FsError> {
        let (parent, name) = self.parent_of(dir, path)?;
        if self.entries(parent)?.contains_key(name) {
            return Err(FsError::Exist);
        }
        let data = Data::Dir {
            entries: BTreeMap::new(),
            parent,
        };
        self.link(parent, name, data, now)
    }

    /// Up to `len` bytes of the file `ino` from `offset` (fewer at its end; none past it).
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<&[u8], FsError> {
        match &self.node(ino)?.data {
            Data::File(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                Ok(&bytes[start..end])
            }
            Data::Dir { .. } => Err(FsError::IsDirectory),
        }
    }

    /// Checks that the file `ino` may grow from `old` to `new` bytes.
    fn check_size(&self, old: u64, new: u64) -> Result<(), FsError> {
        if new > self.limits.max_file_bytes {
            return Err(FsError::FileTooLarge);
        }
        if new > old && self.bytes + (new - old) > self.limits.max_bytes {
            return Err(FsError::InsufficientSpace);
        }
        Ok(())
    }

    /// Writes `data` into the file `ino` at `offset` (a gap before it reads as zeros); returns the bytes
    /// written. The new size is checked against the quotas before anything is allocated.
    pub fn write(
        &mut self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        now: u64,
    ) -> Result<usize, FsError> {
        let old = match &self.node(ino)?.data {
            Data::File(bytes) => bytes.len() as u64,
            Data::Dir { .. } => return Err(FsError::IsDirectory),
        };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooLarge)?;
        let new = old.max(end);
        self.check_size(old, new)?;
        self.bytes = self.bytes + new - old;
        let node = self.node_mut(ino)?;
        if let Data::File(bytes) = &mut node.data {
            if (bytes.len() as u64) < end {
                bytes.resize(end as usize, 0);
            }
            bytes[offset as usize..end as usize].copy_from_slice(data);
        }
        node.modified = now;
        node.changed = now;
        Ok(data.len())
    }

    /// Truncates or extends (with zeros) the file `ino` to `size` bytes.
    pub fn set_size(&mut self, ino: Ino, size: u64, now: u64) -> Result<(), FsError> {
        let old = match &self.node(ino)?.data {
            Data::File(bytes) => bytes.len() as u64,
            Data::Dir { .. } => return Err(FsError::IsDirectory),
        };
        self.check_size(old, size)?;
        // `bytes` holds every file's length, so it never goes below `old`.
        self.bytes = self.bytes - old + size;
        let node = self.node_mut(ino)?;
        if let Data::File(bytes) = &mut node.data {
            bytes.resize(size as usize, 0);
            bytes.shrink_to_fit();
        }
        node.modified = now;
        node.changed = now;
        Ok(())
    }

    /// A directory's entries in byte order of their names, with their inodes and kinds.
    pub fn read_dir(&self, ino: Ino) -> Result<Vec<(String, Ino, NodeKind)>, FsError> {
        self.entries(ino)?
            .iter()
            .map(|(name, &child)| Ok((name.clone(), child, self.node(child)?.kind())))
            .collect()
    }

    /// The entry of the directory `ino` that follows `after` in byte order of the names (the first with `None`),
    /// with its kind: a listing read one entry at a time stays well defined while the directory changes.
    pub fn next_entry(
        &self,
        ino: Ino,
        after: Option<&str>,
    ) -> Result<Option<(String, NodeKind)>, FsError> {
        use std::ops::Bound;
        let entries = self.entries(ino)?;
        let mut range = match after {
            Some(name) => entries.range::<str, _>((Bound::Excluded(name), Bound::Unbounded)),
            None => entries.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
        };
        match range.next() {
            Some((name, &child)) => Ok(Some((name.clone(), self.node(child)?.kind()))),
            None => Ok(None),
        }
    }

    /// What `stat` reports of `ino`.
    pub fn stat(&self, ino: Ino) -> Result<Stat, FsError> {
        let node = self.node(ino)?;
        let (size, link_count) = match &node.data {
            Data::File(bytes) => (bytes.len() as u64, 1),
            Data::Dir { entries, .. } => {
                let subdirs = entries
                    .values()
                    .filter(|c| {
                        self.nodes
                            .get(c)
                            .is_some_and(|n| n.kind() == NodeKind::Directory)
                    })
                    .count() as u64;
                (0, 2 + subdirs)
            }
        };
        Ok(Stat {
            ino,
            kind: node.kind(),
            size,
            link_count,
            accessed: node.accessed,
            modified: node.modified,
            changed: node.changed,
        })
    }

    /// Sets a node's access and modification times (`None` leaves one as it is); its change time is `now`.
    pub fn set_times(
        &mut self,
        ino: Ino,
        accessed: Option<u64>,
        modified: Option<u64>,
        now: u64,
    ) -> Result<(), FsError> {
        let node = self.node_mut(ino)?;
        if let Some(t) = accessed {
            node.accessed = t;
        }
        if let Some(t) = modified {
            node.modified = t;
        }
        node.changed = now;
        Ok(())
    }

    /// Counts an open handle to `ino` (a file unlinked while open lives on until [`Self::release`]).
    pub fn retain(&mut self, ino: Ino) -> Result<(), FsError> {
        if self.open >= self.limits.max_open {
            return Err(FsError::TooManyOpen);
        }
        self.node_mut(ino)?.open += 1;
        self.open += 1;
        Ok(())
    }

    /// Drops an open handle to `ino`, freeing an unlinked node with its last one.
    pub fn release(&mut self, ino: Ino) {
        let free = match self.nodes.get_mut(&ino) {
            Some(node) if node.open > 0 => {
                node.open -= 1;
                self.open -= 1;
                node.open == 0 && !node.linked
            }
            _ => false,
        };
        if free {
            self.free(ino);
        }
    }

    fn free(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.remove(&ino) {
            self.bytes -= node.cost();
        }
    }

    /// Takes the entry `name` out of `parent`, freeing the node unless it is open.
    fn unlink_entry(&mut self, parent: Ino, name: &str, now: u64) -> Result<(), FsError> {
        let dir = self.node_mut(parent)?;
        let ino = match &mut dir.data {
            Data::Dir { entries, .. } => entries.remove(name).ok_or(FsError::NoEntry)?,
            Data::File(_) => return Err(FsError::NotDirectory),
        };
        dir.modified = now;
        dir.changed = now;
        let node = self.node_mut(ino)?;
        node.linked = false;
        if node.open == 0 {
            self.free(ino);
        }
        Ok(())
    }

    /// Removes the file `path`.
    pub fn unlink_file(&mut self, dir: Ino, path: &str, now: u64) -> Result<(), FsError> {
        let (parent, name) = self.parent_of(dir, path)?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NoEntry)?;
        if self.node(ino)?.kind() == NodeKind::Directory {
            return Err(FsError::IsDirectory);
        }
        self.unlink_entry(parent, name, now)
    }

    /// Removes the empty directory `path`.
    pub fn remove_dir(&mut self, dir: Ino, path: &str, now: u64) -> Result<(), FsError> {
        let (parent, name) = self.parent_of(dir, path)?;
        let ino = *self.entries(parent)?.get(name).ok_or(FsError::NoEntry)?;
        if !self.entries(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.unlink_entry(parent, name, now)
    }

    /// Whether `ino` is `ancestor` or lies below it.
    fn is_within(&self, mut ino: Ino, ancestor: Ino) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino).map(|n| &n.data) {
                Some(Data::Dir { parent, .. }) if *parent != ino => ino = *parent,
                _ => return false,
            }
        }
    }

    /// Moves `from` (resolved from `from_dir`) to `to` (from `to_dir`), replacing a file there, or an empty
    /// directory when it moves a directory.
    pub fn rename(
        &mut self,
        from_dir: Ino,
        from: &str,
        to_dir: Ino,
        to: &str,
        now: u64,
    ) -> Result<(), FsError> {
        let (src_parent, src_name) = self.parent_of(from_dir, from)?;
        let (dst_parent, dst_name) = self.parent_of(to_dir, to)?;
        let ino = *self
            .entries(src_parent)?
            .get(src_name)
            .ok_or(FsError::NoEntry)?;
        let kind = self.node(ino)?.kind();
        if kind == NodeKind::Directory && self.is_within(dst_parent, ino) {
            return Err(FsError::Invalid);
        }
        if let Some(&existing) = self.entries(dst_parent)?.get(dst_name) {
            if existing == ino {
                return Ok(());
            }
            match (kind, self.node(existing)?.kind()) {
                (NodeKind::File, NodeKind::Directory) => return Err(FsError::IsDirectory),
                (NodeKind::Directory, NodeKind::File) => return Err(FsError::NotDirectory),
                (NodeKind::Directory, NodeKind::Directory)
                    if !self.entries(existing)?.is_empty() =>
                {
                    return Err(FsError::NotEmpty);
                }
                _ => {}
            }
        }
        let (old_name, new_name) = (src_name.len() as u64, dst_name.len() as u64);
        if new_name > old_name && self.bytes + (new_name - old_name) > self.limits.max_bytes {
            return Err(FsError::InsufficientSpace);
        }
        if self.entries(dst_parent)?.contains_key(dst_name) {
            self.unlink_entry(dst_parent, dst_name, now)?;
        }
        let src = self.node_mut(src_parent)?;
        if let Data::Dir { entries, .. } = &mut src.data {
            entries.remove(src_name);
        }
        src.modified = now;
        src.changed = now;
        let dst = self.node_mut(dst_parent)?;
        if let Data::Dir { entries, .. } = &mut dst.data {
            entries.insert(dst_name.to_string(), ino);
        }
        dst.modified = now;
        dst.changed = now;
        self.bytes = self.bytes + new_name - old_name;
        let node = self.node_mut(ino)?;
        node.name_bytes = new_name;
        node.changed = now;
        if let Data::Dir { parent, .. } = &mut node.data {
            *parent = dst_parent;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Ino = Tree::ROOT;

    fn tree() -> Tree {
        Tree::new(FsLimits::default(), 7)
    }

    #[test]
    fn listings_are_sorted_and_inodes_count_up() {
        let mut t = tree();
        for (k, name) in ["zeta", "alpha", "Beta", "é", "10", "9"].iter().enumerate() {
            let ino = t.open_file(ROOT, name, true, true, 100 + k as u64).unwrap();
            assert_eq!(ino, 2 + k as u64);
        }
        t.create_dir(ROOT, "dir", 200).unwrap();
        let names: Vec<String> = t.read_dir(ROOT).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["10", "9", "Beta", "alpha", "dir", "zeta", "é"]);
        let s = t.stat(ROOT).unwrap();
        assert_eq!(
            (s.kind, s.link_count, s.modified, s.accessed),
            (NodeKind::Directory, 3, 200, 7)
        );
    }

    #[test]
    fn files_read_write_and_keep_their_times() {
        let mut t = tree();
        let f = t.open_file(ROOT, "a.txt", true, false, 10).unwrap();
        assert_eq!(t.write(f, 0, b"hello", 11).unwrap(), 5);
        assert_eq!(t.write(f, 8, b"!", 12).unwrap(), 1);
        assert_eq!(t.read(f, 0, 100).unwrap(), b"hello\0\0\0!");
        assert_eq!(t.read(f, 100, 4).unwrap(), b"");
        let s = t.stat(f).unwrap();
        assert_eq!((s.size, s.accessed, s.modified, s.changed), (9, 10, 12, 12));
        t.set_size(f, 2, 13).unwrap();
        assert_eq!(t.read(f, 0, 100).unwrap(), b"he");
        assert_eq!(t.usage(), (2 + NODE_OVERHEAD_BYTES + 5, 1));
        // Opening again finds it; exclusive creation does not.
        assert_eq!(t.open_file(ROOT, "a.txt", true, false, 14), Ok(f));
        assert_eq!(
            t.open_file(ROOT, "a.txt", true, true, 14),
            Err(FsError::Exist)
        );
        assert_eq!(
            t.open_file(ROOT, "b.txt", false, false, 14),
            Err(FsError::NoEntry)
        );
    }

    #[test]
    fn paths_resolve_inside_their_directory_only() {
        let mut t = tree();
        let d = t.create_dir(ROOT, "d", 1).unwrap();
        t.create_dir(ROOT, "d/e", 1).unwrap();
        let f = t.open_file(ROOT, "d/e/f", true, false, 1).unwrap();
        assert_eq!(t.lookup(ROOT, "d/./e/../e/f"), Ok(f));
        assert_eq!(t.lookup(d, "e/f"), Ok(f));
        assert_eq!(t.lookup(d, "../d/e/f"), Err(FsError::NotPermitted));
        assert_eq!(t.lookup(ROOT, "../etc/passwd"), Err(FsError::NotPermitted));
        assert_eq!(t.lookup(ROOT, "/d"), Err(FsError::NotPermitted));
        assert_eq!(t.lookup(ROOT, "d/e/f/"), Err(FsError::NotDirectory));
        assert_eq!(t.lookup(ROOT, "d/e/f/g"), Err(FsError::NotDirectory));
        assert_eq!(t.lookup(ROOT, ""), Err(FsError::NoEntry));
        assert_eq!(
            t.open_file(ROOT, "d", true, false, 1),
            Err(FsError::IsDirectory)
        );
        assert_eq!(t.create_dir(ROOT, "d/..", 1), Err(FsError::Invalid));
    }

    #[test]
    fn quotas_fail_before_anything_is_allocated() {
        let limits = FsLimits {
            max_bytes: 4096,
            max_file_bytes: 3000,
            max_nodes: 3,
            max_name_bytes: 8,
            max_depth: 3,
            max_path_bytes: 64,
            max_open: 2,
        };
        let mut t = Tree::new(limits, 0);
        let f = t.open_file(ROOT, "f", true, false, 0).unwrap();
        // A 2 GB write or truncate: refused, the file unchanged.
        assert_eq!(t.write(f, 2 << 30, b"x", 1), Err(FsError::FileTooLarge));
        assert_eq!(t.set_size(f, 2 << 30, 1), Err(FsError::FileTooLarge));
        assert_eq!(t.write(f, 0, &[1; 2900], 1), Ok(2900));
        let g = t.open_file(ROOT, "g", true, false, 0).unwrap();
        assert_eq!(
            t.write(g, 0, &[1; 1000], 1),
            Err(FsError::InsufficientSpace)
        );
        assert_eq!(t.stat(g).unwrap().size, 0);
        t.create_dir(ROOT, "d", 0).unwrap();
        assert_eq!(t.create_dir(ROOT, "e", 0), Err(FsError::Quota));
        assert_eq!(
            t.open_file(ROOT, "123456789", true, false, 0),
            Err(FsError::NameTooLong)
        );
        assert_eq!(t.lookup(ROOT, "a/b/c/d"), Err(FsError::NameTooLong));
        t.retain(f).unwrap();
        t.retain(f).unwrap();
        assert_eq!(t.retain(ROOT), Err(FsError::TooManyOpen));
        t.release(f);
        t.release(f);
        // Freeing space makes room again.
        t.unlink_file(ROOT, "f", 2).unwrap();
        assert_eq!(t.write(g, 0, &[1; 1000], 3), Ok(1000));
        assert_eq!(t.usage(), (1000 + 2 * NODE_OVERHEAD_BYTES + 2, 2));
    }

    #[test]
    fn unlinked_open_files_live_until_released() {
        let mut t = tree();
        let f = t.open_file(ROOT, "f", true, false, 0).unwrap();
        t.write(f, 0, b"data", 0).unwrap();
        t.retain(f).unwrap();
        t.unlink_file(ROOT, "f", 1).unwrap();
        assert_eq!(t.lookup(ROOT, "f"), Err(FsError::NoEntry));
        assert_eq!(t.read(f, 0, 10).unwrap(), b"data");
        t.release(f);
        assert_eq!(t.read(f, 0, 10), Err(FsError::BadDescriptor));
        assert_eq!(t.usage(), (0, 0));
    }

    #[test]
    fn removing_and_renaming_follow_posix() {
        let mut t = tree();
        t.create_dir(ROOT, "d", 0).unwrap();
        let f = t.open_file(ROOT, "d/f", true, false, 0).unwrap();
        assert_eq!(t.remove_dir(ROOT, "d", 1), Err(FsError::NotEmpty));
        assert_eq!(t.unlink_file(ROOT, "d", 1), Err(FsError::IsDirectory));
        assert_eq!(t.remove_dir(ROOT, "d/f", 1), Err(FsError::NotDirectory));
        t.rename(ROOT, "d/f", ROOT, "g", 2).unwrap();
        assert_eq!(t.lookup(ROOT, "g"), Ok(f));
        assert_eq!(t.stat(f).unwrap().changed, 2);
        assert_eq!(t.rename(ROOT, "d", ROOT, "d/sub", 3), Err(FsError::Invalid));
        assert_eq!(t.rename(ROOT, "g", ROOT, "d", 3), Err(FsError::IsDirectory));
        let h = t.open_file(ROOT, "h", true, false, 0).unwrap();
        t.rename(ROOT, "h", ROOT, "g", 4).unwrap();
        assert_eq!(t.lookup(ROOT, "g"), Ok(h));
        assert_eq!(t.read(f, 0, 1), Err(FsError::BadDescriptor));
        t.remove_dir(ROOT, "d", 5).unwrap();
        assert_eq!(t.usage(), (NODE_OVERHEAD_BYTES + 1, 1));
    }
}
