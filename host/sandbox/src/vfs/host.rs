//! `wasi:filesystem/{types,preopens}` over the call's [`Vfs`]. wasmtime-wasi's bindings name its own resource
//! types (`Descriptor`, `ReaddirIterator`, which wrap host files); the handles handed out here point at this
//! module's [`VfsDescriptor`] and [`VfsDirStream`] in the same resource table instead, and every lookup checks
//! the stored type, so a handle of the wrong kind is an error, never a reinterpretation.
//!
//! Every guest mistake (a missing file, a full quota, a stale handle) is an `error-code` the guest sees; only a
//! host bug would trap, because a trap that is not the guest's reads as a sandbox fault.

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    Filesize, MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError as WasiFsError, FsResult};

use super::Vfs;
use super::stream::{FileReader, FileWriter, Handle, StreamFsError, VfsDescriptor, VfsDirStream};
use super::tree::{FsError, Ino, NodeKind, Stat, Tree};

/// Marker for [`HasData`]: the sandbox's in-memory `wasi:filesystem`.
pub(crate) struct VfsHost;

impl HasData for VfsHost {
    type Data<'a> = VfsCtxView<'a>;
}

/// What the filesystem host needs from the store: the tree and the resource table.
pub(crate) struct VfsCtxView<'a> {
    pub(crate) vfs: &'a Vfs,
    pub(crate) table: &'a mut ResourceTable,
}

impl From<FsError> for ErrorCode {
    fn from(error: FsError) -> Self {
        match error {
            FsError::NoEntry => ErrorCode::NoEntry,
            FsError::Exist => ErrorCode::Exist,
            FsError::NotDirectory => ErrorCode::NotDirectory,
            FsError::IsDirectory => ErrorCode::IsDirectory,
            FsError::NotEmpty => ErrorCode::NotEmpty,
            FsError::NameTooLong => ErrorCode::NameTooLong,
            FsError::InsufficientSpace => ErrorCode::InsufficientSpace,
            FsError::Quota => ErrorCode::Quota,
            FsError::FileTooLarge => ErrorCode::FileTooLarge,
            FsError::NotPermitted => ErrorCode::NotPermitted,
            FsError::Invalid => ErrorCode::Invalid,
            FsError::BadDescriptor => ErrorCode::BadDescriptor,
            FsError::TooManyOpen => ErrorCode::InsufficientMemory,
        }
    }
}

fn code(error: FsError) -> WasiFsError {
    ErrorCode::from(error).into()
}

/// A handle of wasmtime-wasi's type seen as one of ours (same table slot).
fn ours<T: 'static, U: 'static>(handle: &Resource<U>) -> Resource<T> {
    if handle.owned() {
        Resource::new_own(handle.rep())
    } else {
        Resource::new_borrow(handle.rep())
    }
}

/// One of our handles as wasmtime-wasi's type, to give to the guest.
fn theirs<T: 'static, U: 'static>(handle: Resource<U>) -> Resource<T> {
    Resource::new_own(handle.rep())
}

fn datetime(nanos: u64) -> Datetime {
    Datetime {
        seconds: nanos / 1_000_000_000,
        nanoseconds: (nanos % 1_000_000_000) as u32,
    }
}

fn descriptor_type(kind: NodeKind) -> DescriptorType {
    match kind {
        NodeKind::File => DescriptorType::RegularFile,
        NodeKind::Directory => DescriptorType::Directory,
    }
}

fn descriptor_stat(stat: Stat) -> DescriptorStat {
    DescriptorStat {
        type_: descriptor_type(stat.kind),
        link_count: stat.link_count,
        size: stat.size,
        data_access_timestamp: Some(datetime(stat.accessed)),
        data_modification_timestamp: Some(datetime(stat.modified)),
        status_change_timestamp: Some(datetime(stat.changed)),
    }
}

/// The inode is the identity the preview-1 adapter reports as `st_ino`; the device is the same for every node.
fn metadata_hash(ino: Ino) -> MetadataHashValue {
    MetadataHashValue {
        lower: ino,
        upper: 1,
    }
}

impl VfsCtxView<'_> {
    /// The node, kind and flags behind `fd`; charges one operation.
    fn get(&self, fd: &Resource<types::Descriptor>) -> FsResult<(Ino, NodeKind, DescriptorFlags)> {
        self.vfs.charge(1, 0);
        let descriptor = self
            .table
            .get::<VfsDescriptor>(&ours(fd))
            .map_err(|_| code(FsError::BadDescriptor))?;
        Ok((descriptor.handle.ino, descriptor.kind, descriptor.flags))
    }

    /// The directory behind `fd`.
    fn dir(&self, fd: &Resource<types::Descriptor>) -> FsResult<Ino> {
        match self.get(fd)? {
            (ino, NodeKind::Directory, _) => Ok(ino),
            _ => Err(code(FsError::NotDirectory)),
        }
    }

    /// The file behind `fd`, which must have been opened for writing when `write`.
    fn file(&self, fd: &Resource<types::Descriptor>, write: bool) -> FsResult<Ino> {
        match self.get(fd)? {
            (_, NodeKind::Directory, _) => Err(code(FsError::IsDirectory)),
            (_, _, flags) if write && !flags.contains(DescriptorFlags::WRITE) => {
                Err(ErrorCode::BadDescriptor.into())
            }
            (ino, NodeKind::File, _) => Ok(ino),
        }
    }

    fn push<T: Send + 'static, U: 'static>(&mut self, value: T) -> FsResult<Resource<U>> {
        // The table refuses only past u32::MAX entries; the open-handle quota stops a guest long before.
        let pushed = self
            .table
            .push(value)
            .map_err(|_| code(FsError::TooManyOpen))?;
        Ok(theirs(pushed))
    }

    /// A timestamp the guest asks for, in nanoseconds since the Unix epoch (`None`: leave it).
    fn timestamp(&self, requested: NewTimestamp) -> Option<u64> {
        match requested {
            NewTimestamp::NoChange => None,
            NewTimestamp::Now => Some(self.vfs.now()),
            NewTimestamp::Timestamp(t) => Some(
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(t.nanoseconds.min(999_999_999))),
            ),
        }
    }
}

impl preopens::Host for VfsCtxView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<types::Descriptor>, String)>> {
        self.vfs.charge(1, 0);
        let handle = Handle::open_unlocked(self.vfs, Tree::ROOT);
        // Out of handles: no preopen this time rather than a trap, which would read as the sandbox's fault.
        let Ok(handle) = handle else {
            return Ok(Vec::new());
        };
        let root = VfsDescriptor {
            handle,
            kind: NodeKind::Directory,
            flags: DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY,
        };
        match self.push(root) {
            Ok(fd) => Ok(vec![(fd, "/".to_string())]),
            Err(_) => Ok(Vec::new()),
        }
    }
}

impl types::Host for VfsCtxView<'_> {
    fn convert_error_code(&mut self, err: WasiFsError) -> wasmtime::Result<ErrorCode> {
        err.downcast()
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err.downcast_ref::<StreamFsError>().map(|e| e.0))
    }
}

impl types::HostDescriptor for VfsCtxView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        _offset: Filesize,
        _len: Filesize,
        _advice: Advice,
    ) -> FsResult<()> {
        self.file(&fd, false).map(|_| ())
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.get(&fd).map(|_| ())
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.get(&fd).map(|_| ())
    }

    async fn get_flags(&mut self, fd: Resource<types::Descriptor>) -> FsResult<DescriptorFlags> {
        Ok(self.get(&fd)?.2)
    }

    async fn get_type(&mut self, fd: Resource<types::Descriptor>) -> FsResult<DescriptorType> {
        Ok(descriptor_type(self.get(&fd)?.1))
    }

    async fn set_size(&mut self, fd: Resource<types::Descriptor>, size: Filesize) -> FsResult<()> {
        let ino = self.file(&fd, true)?;
        let now = self.vfs.now();
        self.vfs.lock().set_size(ino, size, now).map_err(code)
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: NewTimestamp,
        mtim: NewTimestamp,
    ) -> FsResult<()> {
        let (ino, _, _) = self.get(&fd)?;
        let (atim, mtim, now) = (self.timestamp(atim), self.timestamp(mtim), self.vfs.now());
        self.vfs
            .lock()
            .set_times(ino, atim, mtim, now)
            .map_err(code)
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: Filesize,
        offset: Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        let ino = self.file(&fd, false)?;
        let tree = self.vfs.lock();
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20);
        let data = tree.read(ino, offset, len).map_err(code)?.to_vec();
        let size = tree.stat(ino).map_err(code)?.size;
        self.vfs.charge(0, data.len() as u64);
        let end = offset.saturating_add(data.len() as u64) >= size;
        Ok((data, end))
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: Filesize,
    ) -> FsResult<Filesize> {
        let ino = self.file(&fd, true)?;
        let now = self.vfs.now();
        self.vfs.charge(0, buf.len() as u64);
        let written = self
            .vfs
            .lock()
            .write(ino, offset, &buf, now)
            .map_err(code)?;
        Ok(written as Filesize)
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        let ino = self.dir(&fd)?;
        let handle = Handle::open_unlocked(self.vfs, ino).map_err(code)?;
        self.push(VfsDirStream {
            handle,
            after: None,
        })
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let dir = self.dir(&fd)?;
        let now = self.vfs.now();
        self.vfs
            .lock()
            .create_dir(dir, &path, now)
            .map(|_| ())
            .map_err(code)
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<DescriptorStat> {
        let (ino, _, _) = self.get(&fd)?;
        let stat = self.vfs.lock().stat(ino).map_err(code)?;
        Ok(descriptor_stat(stat))
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _path_flags: PathFlags,
        path: String,
    ) -> FsResult<DescriptorStat> {
        let dir = self.dir(&fd)?;
        let tree = self.vfs.lock();
        let ino = tree.lookup(dir, &path).map_err(code)?;
        Ok(descriptor_stat(tree.stat(ino).map_err(code)?))
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _path_flags: PathFlags,
        path: String,
        atim: NewTimestamp,
        mtim: NewTimestamp,
    ) -> FsResult<()> {
        let dir = self.dir(&fd)?;
        let (atim, mtim, now) = (self.timestamp(atim), self.timestamp(mtim), self.vfs.now());
        let mut tree = self.vfs.lock();
        let ino = tree.lookup(dir, &path).map_err(code)?;
        tree.set_times(ino, atim, mtim, now).map_err(code)
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _old_path_flags: PathFlags,
        _old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        _new_path: String,
    ) -> FsResult<()> {
        self.dir(&fd)?;
        self.dir(&new_descriptor)?;
        // One name per node: no hard links (nor symbolic ones), as on some real filesystems.
        Err(ErrorCode::Unsupported.into())
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let dir = self.dir(&fd)?;
        let directory = oflags.contains(OpenFlags::DIRECTORY);
        let create = oflags.contains(OpenFlags::CREATE);
        let truncate = oflags.contains(OpenFlags::TRUNCATE);
        if directory && (create || truncate || oflags.contains(OpenFlags::EXCLUSIVE)) {
            return Err(ErrorCode::Invalid.into());
        }
        // Creating or truncating opens for writing, as wasmtime-wasi does on a host directory.
        let mut flags = flags;
        if create || truncate {
            flags |= DescriptorFlags::WRITE;
        }
        let now = self.vfs.now();
        let (handle, kind) = {
            let mut tree = self.vfs.lock();
            let ino = if create {
                tree.open_file(dir, &path, true, oflags.contains(OpenFlags::EXCLUSIVE), now)
            } else {
                tree.lookup(dir, &path)
            }
            .map_err(code)?;
            let kind = tree.stat(ino).map_err(code)?.kind;
            match kind {
                NodeKind::Directory if flags.contains(DescriptorFlags::WRITE) => {
                    return Err(code(FsError::IsDirectory));
                }
                NodeKind::File if directory => return Err(code(FsError::NotDirectory)),
                NodeKind::File if truncate => tree.set_size(ino, 0, now).map_err(code)?,
                _ => {}
            }
            (Handle::open(self.vfs, &mut tree, ino).map_err(code)?, kind)
        };
        let flags = match kind {
            NodeKind::Directory => flags | DescriptorFlags::MUTATE_DIRECTORY,
            NodeKind::File => flags & !DescriptorFlags::MUTATE_DIRECTORY,
        };
        self.push(VfsDescriptor {
            handle,
            kind,
            flags,
        })
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        // Dropping the entry releases its handle (which locks the tree: nothing here holds the lock).
        self.table.delete::<VfsDescriptor>(ours(&fd))?;
        Ok(())
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        let dir = self.dir(&fd)?;
        self.vfs.lock().lookup(dir, &path).map_err(code)?;
        // It exists and, there being no symbolic links, is not one.
        Err(ErrorCode::Invalid.into())
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let dir = self.dir(&fd)?;
        let now = self.vfs.now();
        self.vfs.lock().remove_dir(dir, &path, now).map_err(code)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let from = self.dir(&fd)?;
        let to = self.dir(&new_fd)?;
        let now = self.vfs.now();
        self.vfs
            .lock()
            .rename(from, &old_path, to, &new_path, now)
            .map_err(code)
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _src_path: String,
        _dest_path: String,
    ) -> FsResult<()> {
        self.dir(&fd)?;
        Err(ErrorCode::Unsupported.into())
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let dir = self.dir(&fd)?;
        let now = self.vfs.now();
        self.vfs.lock().unlink_file(dir, &path, now).map_err(code)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let ino = self.file(&fd, false)?;
        let handle = Handle::open_unlocked(self.vfs, ino).map_err(code)?;
        let reader: DynInputStream = Box::new(FileReader {
            handle,
            position: offset,
        });
        self.push(reader)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.writer(&fd, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.writer(&fd, None)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        match (self.get(&a), self.get(&b)) {
            (Ok(a), Ok(b)) => Ok(a.0 == b.0),
            _ => Ok(false),
        }
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<MetadataHashValue> {
        Ok(metadata_hash(self.get(&fd)?.0))
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        _path_flags: PathFlags,
        path: String,
    ) -> FsResult<MetadataHashValue> {
        let dir = self.dir(&fd)?;
        let ino = self.vfs.lock().lookup(dir, &path).map_err(code)?;
        Ok(metadata_hash(ino))
    }
}

impl VfsCtxView<'_> {
    fn writer(
        &mut self,
        fd: &Resource<types::Descriptor>,
        position: Option<u64>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let ino = self.file(fd, true)?;
        let handle = Handle::open_unlocked(self.vfs, ino).map_err(code)?;
        let writer: DynOutputStream = Box::new(FileWriter { handle, position });
        self.push(writer)
    }
}

impl types::HostDirectoryEntryStream for VfsCtxView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<DirectoryEntry>> {
        self.vfs.charge(1, 0);
        let vfs = self.vfs;
        let listing = self
            .table
            .get_mut::<VfsDirStream>(&ours(&stream))
            .map_err(|_| code(FsError::BadDescriptor))?;
        let next = vfs
            .lock()
            .next_entry(listing.handle.ino, listing.after.as_deref())
            .map_err(code)?;
        Ok(next.map(|(name, kind)| {
            listing.after = Some(name.clone());
            DirectoryEntry {
                type_: descriptor_type(kind),
                name,
            }
        }))
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.table.delete::<VfsDirStream>(ours(&stream))?;
        Ok(())
    }
}
