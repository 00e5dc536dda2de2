//! The NFS namespace — directories, inodes, names — stored in meta-kvs.
//!
//! * File ids are `u64`, never reused, handed out by an [`IdAllocator`]; the
//!   root directory is [`ROOT_ID`], created by [`Namespace::ensure_root`].
//! * Keys and records: see [`keys`] and [`record`]. A directory's entries
//!   are stored twice: by name (`fs/n/…`, for LOOKUP) and by readdir cookie
//!   (`fs/c/…`, for READDIR). The cookie is a per-directory sequence number
//!   handed out by the directory inode (`next_seq`), so cookies stay valid
//!   across inserts and removals and a listing is a ranged scan.
//! * Every change is one meta-kvs transaction conditioned on the versions of
//!   what it read (the name keys and the directory inode at least), retried
//!   a bounded number of times when a condition fails; concurrent creators
//!   of one name get exactly one winner. Ambiguous meta-kvs failures are
//!   resolved by re-reading (see `txn.rs`): success is never reported for a
//!   change that did not happen.
//!
//! Ctime-based SETATTR guards, EXCLUSIVE create verifiers, RENAME over an
//! existing file and directory mtimes follow RFC 1813.

mod alloc;
mod cache;
mod create;
mod error;
pub mod keys;
mod ops;
pub mod record;
mod rename;
mod txn;

use std::sync::Arc;

use geonfs_meta_kvs::MetaClient;

pub use alloc::{IdAllocator, DEFAULT_RANGE};
pub use cache::InodeCache;
pub use error::NamespaceError;
pub use keys::{validate_name, MAX_NAME_LEN};
pub use record::{DirEntry, FileKind, Inode, Timestamp};
pub use txn::MAX_ATTEMPTS;

use keys::{inode_key, name_key};
use record::{decode_inode, decode_name, NameEntry};

/// The file id of the root directory.
pub const ROOT_ID: u64 = 1;

/// A time to set with SETATTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The server's current time (`SET_TO_SERVER_TIME`).
    ServerNow,
    /// This time (`SET_TO_CLIENT_TIME`).
    At(Timestamp),
}

/// Attributes to set (NFS `sattr3`); `None` leaves one unchanged (or, at
/// creation, takes the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrs {
    /// Permission bits (masked to `0o7777`).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (regular files only).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<SetTime>,
    /// Modification time.
    pub mtime: Option<SetTime>,
}

/// How CREATE treats an existing name (NFS `createmode3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// An existing regular file is returned as it is, its attributes
    /// untouched (a size asked for is the caller's to apply, checked as a
    /// SETATTR); anything else existing is [`NamespaceError::Exist`].
    Unchecked,
    /// An existing name is [`NamespaceError::Exist`].
    Guarded,
    /// Idempotent exclusive create: an existing regular file created with
    /// the same verifier is returned (a retransmission); anything else is
    /// [`NamespaceError::Exist`].
    Exclusive([u8; 8]),
}

/// What CREATE, MKDIR and SYMLINK return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    /// The object (new, or the existing one an UNCHECKED or EXCLUSIVE
    /// create returned).
    pub inode: Inode,
    /// Whether this call created it.
    pub created: bool,
}

/// One page of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadDir {
    /// Entries in cookie order (without `.` and `..`).
    pub entries: Vec<DirEntry>,
    /// Whether the listing reached the end of the directory.
    pub eof: bool,
}

/// The namespace, stored in meta-kvs. Cheap to clone; clones share the id
/// allocator and the inode cache.
#[derive(Clone, Debug)]
pub struct Namespace {
    client: MetaClient,
    ids: Arc<IdAllocator>,
    cache: Arc<InodeCache>,
}

impl Namespace {
    /// A namespace over `client`, reserving [`DEFAULT_RANGE`] ids at a
    /// time, caching no inodes.
    pub fn new(client: MetaClient) -> Self {
        Self::with_id_range(client, DEFAULT_RANGE)
    }

    /// A namespace over `client`, reserving `range` ids at a time, caching
    /// no inodes.
    pub fn with_id_range(client: MetaClient, range: u64) -> Self {
        Namespace {
            ids: Arc::new(IdAllocator::new(client.clone(), range)),
            client,
            cache: Arc::new(InodeCache::new(std::time::Duration::ZERO)),
        }
    }

    /// This namespace with GETATTR and LOOKUP results kept for `ttl` (see
    /// [`InodeCache`] for what a cached inode may miss).
    pub fn with_inode_cache(mut self, ttl: std::time::Duration) -> Self {
        self.cache = Arc::new(InodeCache::new(ttl));
        self
    }

    /// The meta-kvs client.
    pub fn client(&self) -> &MetaClient {
        &self.client
    }

    /// Inode `id`, or `None`.
    async fn read_inode(&self, id: u64) -> Result<Option<Inode>, NamespaceError> {
        match self.client.get(inode_key(id)).await? {
            Some(kv) => Ok(Some(decode_inode(id, kv.version, &kv.value)?)),
            None => Ok(None),
        }
    }

    /// Inode `id`; [`NamespaceError::Stale`] when there is none.
    async fn inode(&self, id: u64) -> Result<Inode, NamespaceError> {
        self.read_inode(id).await?.ok_or(NamespaceError::Stale(id))
    }

    /// Directory `id`: [`NamespaceError::Stale`] or
    /// [`NamespaceError::NotDir`] when it is not one.
    async fn dir(&self, id: u64) -> Result<Inode, NamespaceError> {
        let inode = self.inode(id).await?;
        if !inode.is_dir() {
            return Err(NamespaceError::NotDir);
        }
        Ok(inode)
    }

    /// The entry `name` of `dir`, or `None`.
    async fn read_name(&self, dir: u64, name: &[u8]) -> Result<Option<NameEntry>, NamespaceError> {
        match self.client.get(name_key(dir, name)).await? {
            Some(kv) => Ok(Some(decode_name(dir, name, kv.version, &kv.value)?)),
            None => Ok(None),
        }
    }
}

impl Namespace {
    /// The inode `entry` (the entry `name` of `dir`) refers to; `None` when
    /// it is gone because the entry changed meanwhile (read again),
    /// [`NamespaceError::Corrupt`] when the entry is still the same: entries
    /// and their inodes are only ever removed together.
    async fn child(
        &self,
        dir: u64,
        name: &[u8],
        entry: &NameEntry,
    ) -> Result<Option<Inode>, NamespaceError> {
        if let Some(inode) = self.read_inode(entry.id).await? {
            return Ok(Some(inode));
        }
        match self.read_name(dir, name).await? {
            Some(again) if again.version == entry.version => Err(NamespaceError::corrupt(
                format!(
                    "entry {:?} of directory {dir}",
                    String::from_utf8_lossy(name)
                ),
                format!("refers to missing inode {}", entry.id),
            )),
            _ => Ok(None),
        }
    }
}

/// Applies `attrs` to `inode` at `now` (not ctime, not size checks).
fn apply_attrs(inode: &mut Inode, attrs: &SetAttrs, now: Timestamp) {
    if let Some(mode) = attrs.mode {
        inode.mode = mode & 0o7777;
    }
    if let Some(uid) = attrs.uid {
        inode.uid = uid;
    }
    if let Some(gid) = attrs.gid {
        inode.gid = gid;
    }
    if let Some(size) = attrs.size {
        inode.size = size;
    }
    let time = |t: SetTime| match t {
        SetTime::ServerNow => now,
        SetTime::At(t) => t,
    };
    if let Some(t) = attrs.atime {
        inode.atime = time(t);
    }
    if let Some(t) = attrs.mtime {
        inode.mtime = time(t);
    }
}
