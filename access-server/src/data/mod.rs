//! [`FileData`]: a file's bytes in blocks on the site's core servers — the
//! path the NFS READ, WRITE, COMMIT, SETATTR(size) and REMOVE procedures
//! call.
//!
//! # Blocks
//!
//! Block `i` of a file covers bytes `[i * block_size, (i + 1) * block_size)`.
//! A write is split at block boundaries and its pieces go to their blocks
//! **in parallel** through the [`BlockClient`], which puts each on two cores
//! of this site. Never-written ranges (absent blocks, holes inside a block)
//! read as zeros and take no space, so extending a file writes nothing but
//! its attribute record.
//!
//! # The attribute record (size and mtime without cross-site round trips)
//!
//! A WRITE that grows a file or changes its mtime must be durable when it is
//! acknowledged (docs/ARCHITECTURE.md#invariant-1), yet a cross-site Raft commit per WRITE would
//! put the WAN on the write path (docs/ARCHITECTURE.md#invariant-3: hot per-write state stays
//! off the Raft path). So each file's size and mtime
//! live in an **attribute record**: a 20-byte block
//! `BlockId { file_id, index: ATTR_INDEX }` (`ATTR_INDEX = u64::MAX`; size
//! u64 BE, mtime seconds u64 BE, nanoseconds u32 BE), written by every WRITE
//! **in parallel with its data and with the same durability** (HELD for
//! UNSTABLE, DURABLE for FILE_SYNC/DATA_SYNC). The record therefore sits on
//! two in-site cores exactly when the data does, and is flushed by the same
//! COMMIT. Folding the record into the inode in meta-kvs lazily (so that
//! other sites see the size without reading the record) is a later step;
//! until then the record is the authority for size and mtime.
//!
//! **The recorded size never shrinks under concurrent writes.** The
//! in-memory per-file (size, mtime) is updated when a write is *issued*,
//! under one lock: the new size is `max(size, offset + len)` (a SETATTR
//! sets it). A file's record writes go out one at a time (`batch.rs`): each
//! carries the state at the moment it is sent, with a version taken from
//! the process clock under the same lock, so record versions are ordered
//! like the states they carry and every writer waiting for a record is
//! answered by one that covers its own state. A core keeps only the newest
//! version of a block (older writes are refused as stale, docs/ARCHITECTURE.md#invariant-8), so
//! the record a core keeps is the newest state sent. A stale refusal
//! means another process wrote a newer record: the clock moves past it
//! and the current state is sent again.
//!
//! # Versions
//!
//! Every block write takes a fresh version from one process-wide hybrid
//! clock ([`next_version`]: `max(now in µs, last + 1)`) when it is issued;
//! see [`clock`] for the assumption across restarts (the wall clock moves
//! forward) and how versions seen on the cores push the clock past them.
//! The writes of one block are sent one batch at a time, merged where
//! their ranges touch (`batch.rs`), so they do not race each other to the
//! cores. A write refused as stale all the same (another process wrote
//! the block) is retried with a fresh version.
//!
//! # Ownership
//!
//! Each file has an owning site and, in it, one writing access server
//! ([`crate::ownership`]): a write first makes this access server the
//! writer (a handover when another site or another access server of this
//! site writes the file) and carries the
//! owner epoch to the cores; a write refused by a fence (the file moved
//! meanwhile) takes the file back and is sent again. Reads, and the
//! attribute record behind size and mtime, go through
//! [`Ownership::read_block`], so they return the newest bytes wherever
//! they are. The per-file size and mtime kept here are trusted only while
//! this access server is the file's writer at the epoch they were loaded
//! at.
//!
//! # Verifier (RFC 1813 WRITE/COMMIT)
//!
//! UNSTABLE writes are acknowledged once two cores hold them (HELD, not yet
//! fsync'd). For each file, the (core, incarnation) pairs of its unstable
//! writes (data and record) since the last COMMIT are kept. [`FileData::commit`]
//! flushes those cores and compares incarnations: if any core restarted (or
//! could not be flushed) the server's verifier is replaced by a new
//! random value ([`clock::Verifier::rotate`]) and returned, so the client
//! sees it differ from its WRITE replies' and resends. The verifier is
//! also new at every start of an access server. Stable writes are durable on two when they
//! return and carry the current verifier.

pub mod attr;
mod batch;
pub mod clock;
mod read;
mod resize;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use geonfs_block_manager::{BlockClient, BlockError, BlockRead, BlockUpdate, WriteAck};
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId};
use tonic::Code;

pub use attr::{attr_block, ATTR_INDEX, ATTR_LEN};

use crate::ownership::{Ownership, OwnershipError};
pub use clock::{next_version, observe, VersionClock};

/// How many times a block write refused as stale (a concurrent newer write
/// got there first) is retried with a fresh version.
const STALE_ATTEMPTS: u32 = 16;

/// The largest size a file may have (FSINFO's `maxfilesize`): the
/// largest signed 64-bit offset, as clients' `off_t` can reach. Larger
/// sizes and writes past it are refused ([`DataError::Range`]).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// How many times a write refused by a fence (ownership moved) is retried
/// after taking the file back.
const FENCED_ATTEMPTS: u32 = 8;

/// Why a file-data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A block operation failed (not enough cores, a core refused, …).
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The attribute record read back is not a valid record.
    #[error("file {file_id}: attribute record is corrupt ({len} bytes)")]
    BadRecord {
        /// The file.
        file_id: FileId,
        /// The length read.
        len: usize,
    },
    /// The range runs past the largest offset a file can have.
    #[error("file {file_id}: {len} bytes at offset {offset} run past the largest file size")]
    Range {
        /// The file.
        file_id: FileId,
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
    },
    /// The batch that carried this write failed (the error is shared by
    /// every write of the batch).
    #[error(transparent)]
    Shared(Arc<DataError>),
    /// The batch that would have carried this write was abandoned (the
    /// process is stopping).
    #[error("the write was abandoned before it was sent")]
    Abandoned,
    /// The file's ownership moved while the write was on its way (the
    /// caller takes the file back and writes again).
    #[error("file {file_id}: ownership moved during the write")]
    OwnershipMoved {
        /// The file.
        file_id: FileId,
    },
    /// File ownership (record, handover, routing) failed.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// A block write kept being overtaken by newer writes.
    #[error("block {block}: refused as stale {attempts} times (overtaken by newer writes)")]
    Contended {
        /// The block.
        block: BlockId,
        /// How many attempts were made.
        attempts: u32,
    },
}

impl DataError {
    /// The error itself, seen through [`DataError::Shared`].
    pub fn root(&self) -> &DataError {
        match self {
            DataError::Shared(shared) => shared.root(),
            other => other,
        }
    }

    /// The block error at the root of this one, if any (directly or
    /// through ownership).
    pub fn block_error(&self) -> Option<&BlockError> {
        match self.root() {
            DataError::Block(err) | DataError::Ownership(OwnershipError::Block(err)) => Some(err),
            _ => None,
        }
    }

    /// Whether a core refused the request because the file's ownership
    /// moved to a newer epoch (the caller refreshes and retries).
    pub fn is_fenced(&self) -> bool {
        match self.root() {
            DataError::OwnershipMoved { .. } => true,
            DataError::Block(err) => err.is_fenced(),
            DataError::Ownership(OwnershipError::Block(err)) => err.is_fenced(),
            _ => false,
        }
    }
}

/// What [`FileData::write`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// Whether the data (and the attribute record) are on stable storage
    /// on two cores (a stable write); false for an unstable one, which
    /// becomes durable at [`FileData::commit`].
    pub durable: bool,
    /// The write verifier to return to the client.
    pub verifier: [u8; 8],
    /// The file's size once this write is applied (and every write issued
    /// before it).
    pub size: u64,
    /// The file's mtime set by this write.
    pub mtime: SystemTime,
}

/// The data path of the site's files. Cheap to clone; clones share the
/// per-file state.
#[derive(Clone, Debug)]
pub struct FileData {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The version clock (the ownership's, so handovers move it too).
    clock: Arc<VersionClock>,
    /// File ownership across sites.
    ownership: Ownership,
    block_size: u64,
    files: Mutex<HashMap<FileId, FileState>>,
    /// Data writes waiting for their block (`batch.rs`).
    writes: batch::Queues<BlockId, batch::QueuedWrite>,
    /// Writers waiting for their file's attribute record (`batch.rs`).
    records: batch::Queues<FileId, batch::QueuedRecord>,
    /// This access server's write verifier.
    verifier: clock::Verifier,
}

/// The part of a byte range of a file that falls in one block.
#[derive(Clone, Copy, Debug)]
struct Piece {
    block: BlockId,
    /// Where the piece starts in the block.
    within: u64,
    /// Its length in bytes.
    len: u64,
    /// Where it starts in the range.
    at: u64,
}

/// What this process knows about one file.
#[derive(Debug)]
struct FileState {
    /// Whether the file has an attribute record (read back or written).
    exists: bool,
    /// The size as of every write issued.
    size: u64,
    /// The mtime as of every write issued.
    mtime: SystemTime,
    /// (core, incarnation) of the unstable writes since the last commit.
    unstable: HashSet<(String, u64)>,
    /// The ownership epoch `size` and `mtime` were loaded or written at;
    /// another epoch means they must be read again (`None`: never).
    epoch: Option<Epoch>,
    /// Set when ownership moved away: size and mtime are unknown until
    /// loaded again, and a record write waiting must not be skipped.
    lost: bool,
}

impl FileState {
    fn absent() -> Self {
        FileState {
            exists: false,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            unstable: HashSet::new(),
            epoch: None,
            lost: false,
        }
    }
}

fn is_stale(err: &BlockError) -> bool {
    matches!(err, BlockError::Core { status, .. } if status.code() == Code::FailedPrecondition)
}

fn durability(stable: bool) -> Durability {
    if stable {
        Durability::Durable
    } else {
        Durability::Held
    }
}

impl FileData {
    /// The data path of this site's access server, for blocks of
    /// `block_size` bytes (the cluster's `block_size`): every file has an
    /// owning site ([`Ownership`]); writes go through it, reads find the
    /// newest bytes wherever they are.
    ///
    /// # Panics
    ///
    /// If `block_size` is 0.
    pub fn new(ownership: Ownership, block_size: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        FileData {
            inner: Arc::new(Inner {
                clock: ownership.clock().clone(),
                ownership,
                block_size,
                files: Mutex::new(HashMap::new()),
                writes: batch::Queues::new(),
                records: batch::Queues::new(),
                verifier: clock::Verifier::default(),
            }),
        }
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// File ownership across sites.
    pub fn ownership(&self) -> &Ownership {
        &self.inner.ownership
    }

    /// This site's block client.
    fn client(&self) -> &BlockClient {
        self.inner.ownership.local()
    }

    /// The epoch to write `file_id` with: this site's ownership epoch
    /// (taking the file over if needed; `fenced_at` after a refusal).
    async fn write_epoch(
        &self,
        file_id: FileId,
        fenced_at: Option<Epoch>,
    ) -> Result<Epoch, DataError> {
        Ok(self.inner.ownership.acquire(file_id, fenced_at).await?)
    }

    /// Whether size and mtime loaded at `epoch` are still this access
    /// server's to trust (it is the file's writer at that epoch).
    fn state_is_current(&self, file_id: FileId, epoch: Epoch) -> bool {
        self.inner.ownership.owned_epoch(file_id) == Some(epoch)
    }

    /// The newest bytes of a block range, wherever they are.
    async fn read_piece(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, DataError> {
        Ok(self.inner.ownership.read_block(block, offset, len).await?)
    }

    /// Forgets what this process knew about a file whose ownership moved
    /// (its size and mtime; the unstable writes stay to be committed).
    fn ownership_lost(&self, file_id: FileId) {
        self.inner.ownership.invalidate(file_id);
        if let Some(state) = self.files().get_mut(&file_id) {
            state.lost = true;
        }
    }

    /// Before a partial write into `block`: brings the block current on
    /// this site when its newest version is elsewhere (after a handover).
    async fn prepare_block(&self, block: BlockId) -> Result<(), DataError> {
        Ok(self
            .inner
            .ownership
            .prepare_write(block.file_id, block.index)
            .await?)
    }

    /// The current write verifier (this access server's).
    pub fn verifier(&self) -> [u8; 8] {
        self.inner.verifier.current()
    }

    fn files(&self) -> MutexGuard<'_, HashMap<FileId, FileState>> {
        match self.inner.files.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The pieces of `[offset, end)`, one per block it touches.
    fn pieces(&self, file_id: FileId, offset: u64, end: u64) -> Vec<Piece> {
        let bs = self.inner.block_size;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let within = pos % bs;
            let take = (bs - within).min(end - pos);
            out.push(Piece {
                block: BlockId { file_id, index },
                within,
                len: take,
                at: pos - offset,
            });
            pos += take;
        }
        out
    }

    fn check_range(&self, file_id: FileId, offset: u64, len: u64) -> Result<u64, DataError> {
        offset
            .checked_add(len)
            .filter(|&end| end <= MAX_FILE_SIZE && end.div_ceil(self.inner.block_size) < ATTR_INDEX)
            .ok_or(DataError::Range {
                file_id,
                offset,
                len,
            })
    }

    /// Writes `data` at `offset` of `file_id`: the pieces to their blocks
    /// and the attribute record, in parallel, each on two cores of the site
    /// (durably if `stable`, else held until [`FileData::commit`]). With
    /// ownership, the site first owns the file (a handover if another site
    /// did), and a write refused by a fence takes the file back and is
    /// sent again.
    pub async fn write(
        &self,
        file_id: FileId,
        offset: u64,
        data: Bytes,
        stable: bool,
    ) -> Result<WriteResult, DataError> {
        let end = self.check_range(file_id, offset, data.len() as u64)?;
        let mut fenced_at = None;
        let mut attempts = 0;
        loop {
            let epoch = self.write_epoch(file_id, fenced_at).await?;
            match self
                .write_at(file_id, offset, end, data.clone(), stable, epoch)
                .await
            {
                Err(err) if err.is_fenced() && attempts < FENCED_ATTEMPTS => {
                    tracing::debug!(
                        %file_id,
                        %epoch,
                        "write fenced: ownership moved; taking the file back"
                    );
                    attempts += 1;
                    fenced_at = Some(epoch);
                    self.ownership_lost(file_id);
                }
                other => return other,
            }
        }
    }

    /// [`FileData::write`] at ownership `epoch`.
    async fn write_at(
        &self,
        file_id: FileId,
        offset: u64,
        end: u64,
        data: Bytes,
        stable: bool,
        epoch: Epoch,
    ) -> Result<WriteResult, DataError> {
        self.ensure(file_id, epoch).await?;
        let durability = durability(stable);
        let pieces = self.pieces(file_id, offset, end);
        let bs = self.inner.block_size;
        futures::future::try_join_all(
            pieces
                .iter()
                .filter(|piece| piece.len < bs)
                .map(|piece| self.prepare_block(piece.block)),
        )
        .await?;
        let (size, mtime) = {
            let mut files = self.files();
            let state = files.entry(file_id).or_insert_with(FileState::absent);
            state.exists = true;
            state.size = state.size.max(end);
            state.mtime = SystemTime::now();
            (state.size, state.mtime)
        };
        let writes = pieces.into_iter().map(|piece| {
            let bytes = data.slice(piece.at as usize..(piece.at + piece.len) as usize);
            self.queue_write(piece.block, piece.within, bytes, durability, epoch)
        });
        let (acks, ()) = futures::future::try_join(
            futures::future::try_join_all(writes),
            self.queue_record(file_id, durability),
        )
        .await?;
        if !stable {
            self.remember_unstable(file_id, &acks);
        }
        Ok(WriteResult {
            durable: stable,
            verifier: self.inner.verifier.current(),
            size,
            mtime,
        })
    }

    fn remember_unstable(&self, file_id: FileId, acks: &[WriteAck]) {
        let mut files = self.files();
        let state = files.entry(file_id).or_insert_with(FileState::absent);
        for ack in acks {
            for copy in &ack.copies {
                state.unstable.insert((copy.node.clone(), copy.incarnation));
            }
        }
    }

    /// One block write at `version`, retried with a fresh version while a
    /// newer write of the same block (from another process: this one sends
    /// a block's writes one batch at a time) got to a core first.
    async fn write_block(&self, mut update: BlockUpdate) -> Result<WriteAck, DataError> {
        let block = update.block;
        for _ in 0..STALE_ATTEMPTS {
            match self.client().write_as(update.clone()).await {
                Ok(ack) => return Ok(ack),
                Err(err) if is_stale(&err) => {
                    tracing::debug!(%block, version = %update.version, "block write overtaken; retrying");
                    self.observe_block(block).await;
                    update.version = self.inner.clock.next_version();
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(DataError::Contended {
            block,
            attempts: STALE_ATTEMPTS,
        })
    }

    /// Moves the clock past `block`'s newest version in the site.
    async fn observe_block(&self, block: BlockId) {
        if let Ok(Some(read)) = self.client().read(block, 0, 0).await {
            self.inner.clock.observe(read.version);
        }
    }

    /// Writes the attribute record with the file's state now (its version
    /// taken with the state, under the lock); nothing when the file was
    /// removed meanwhile. Called by one batch at a time per file
    /// (`batch.rs`), so a stale refusal means another process wrote a newer
    /// record: the clock moves past it and the current state is written
    /// again.
    async fn write_record(&self, file_id: FileId, durability: Durability) -> Result<(), DataError> {
        let block = attr_block(file_id);
        for _ in 0..STALE_ATTEMPTS {
            let Some((size, mtime, version, epoch)) = ({
                let files = self.files();
                match files.get(&file_id) {
                    Some(state) if state.lost => {
                        return Err(DataError::OwnershipMoved { file_id });
                    }
                    Some(state) if state.exists => Some((
                        state.size,
                        state.mtime,
                        self.inner.clock.next_version(),
                        state.epoch,
                    )),
                    _ => None,
                }
            }) else {
                return Ok(());
            };
            let update = BlockUpdate {
                block,
                offset: 0,
                data: Bytes::copy_from_slice(&attr::encode(size, mtime)),
                version,
                durability,
                owner_epoch: epoch,
            };
            match self.client().replace_as(update).await {
                Ok(ack) => {
                    if durability == Durability::Held {
                        self.remember_unstable(file_id, std::slice::from_ref(&ack));
                    }
                    return Ok(());
                }
                Err(err) if is_stale(&err) => {
                    tracing::debug!(%file_id, %version, "attribute record overtaken");
                    self.observe_block(block).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(DataError::Contended {
            block,
            attempts: STALE_ATTEMPTS,
        })
    }

    /// Loads the file's state (its attribute record) unless known for
    /// ownership `epoch`.
    async fn ensure(&self, file_id: FileId, epoch: Epoch) -> Result<(), DataError> {
        if self
            .files()
            .get(&file_id)
            .is_some_and(|state| state.epoch == Some(epoch) && !state.lost)
        {
            return Ok(());
        }
        let record = self.read_record(file_id).await?;
        let mut files = self.files();
        let state = files.entry(file_id).or_insert_with(FileState::absent);
        if state.epoch != Some(epoch) || state.lost {
            state.epoch = Some(epoch);
            state.lost = false;
            state.exists = record.is_some();
            if let Some((size, mtime)) = record {
                state.size = size;
                state.mtime = mtime;
            }
        }
        Ok(())
    }

    /// The attribute record's (size, mtime) at its newest version.
    async fn read_record(&self, file_id: FileId) -> Result<Option<(u64, SystemTime)>, DataError> {
        let Some(read) = self
            .read_piece(attr_block(file_id), 0, ATTR_LEN as u32)
            .await?
            .filter(|read| !read.deleted)
        else {
            return Ok(None);
        };
        self.inner.clock.observe(read.version);
        attr::decode(&read.data)
            .ok_or(DataError::BadRecord {
                file_id,
                len: read.data.len(),
            })
            .map(Some)
    }

    /// The file's size and mtime: as of the writes issued by this process
    /// while it is the file's writer, else from the newest attribute record
    /// (at the owner's site when another site owns the file). `None` if
    /// the file has no record (never written, or removed).
    ///
    /// The record is read every time, with the epoch: at
    /// the owner that is one in-site round trip, and it is how an owner
    /// whose file was taken over learns it (the fence refuses the read)
    /// instead of answering with the size it remembers.
    pub async fn attributes(
        &self,
        file_id: FileId,
    ) -> Result<Option<(u64, SystemTime)>, DataError> {
        let record = self.read_record(file_id).await?;
        if let Some((size, mtime, _)) = self.remembered(file_id) {
            return Ok(Some((size, mtime)));
        }
        let Some((size, mtime)) = record else {
            return Ok(None);
        };
        let Some(epoch) = self.inner.ownership.owned_epoch(file_id) else {
            // Another site writes the file: nothing here to keep.
            return Ok(Some((size, mtime)));
        };
        let mut files = self.files();
        let state = files.entry(file_id).or_insert_with(FileState::absent);
        if !state.exists || state.epoch != Some(epoch) || state.lost {
            state.lost = false;
            state.exists = true;
            state.size = size;
            state.mtime = mtime;
            state.epoch = Some(epoch);
        }
        Ok(Some((state.size, state.mtime)))
    }

    /// The size and mtime of the writes this process issued to `file_id`,
    /// and the epoch they belong to, while it is the file's writer at that
    /// epoch (else `None`: they must be read from the attribute record).
    fn remembered(&self, file_id: FileId) -> Option<(u64, SystemTime, Epoch)> {
        self.files()
            .get(&file_id)
            .filter(|s| s.exists && !s.lost)
            .and_then(|s| {
                let epoch = s.epoch.filter(|&e| self.state_is_current(file_id, e))?;
                Some((s.size, s.mtime, epoch))
            })
    }

    /// Flushes the cores holding `file_id`'s unstable writes and returns
    /// the verifier: a new one if any of them restarted (or could not be
    /// flushed) since it took a write, so the client resends.
    pub async fn commit(&self, file_id: FileId) -> Result<[u8; 8], DataError> {
        let pending: Vec<(String, u64)> = match self.files().get(&file_id) {
            Some(state) => state.unstable.iter().cloned().collect(),
            None => Vec::new(),
        };
        if pending.is_empty() {
            return Ok(self.inner.verifier.current());
        }
        let nodes: BTreeSet<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
        // One flush per core, so that one unreachable core does not hide
        // the others' incarnations.
        let flushes = nodes
            .iter()
            .map(|node| async move { (*node, self.client().flush(&[*node]).await) });
        let mut lost = false;
        for (node, result) in futures::future::join_all(flushes).await {
            match result {
                Ok(ack) => {
                    let now = ack.incarnation(node);
                    if pending
                        .iter()
                        .any(|(n, incarnation)| n == node && now != Some(*incarnation))
                    {
                        tracing::warn!(%file_id, node, "core restarted before COMMIT; new verifier");
                        lost = true;
                    }
                }
                Err(err) => {
                    tracing::warn!(%file_id, node, %err, "flush failed at COMMIT; new verifier");
                    lost = true;
                }
            }
        }
        if let Some(state) = self.files().get_mut(&file_id) {
            for entry in &pending {
                state.unstable.remove(entry);
            }
        }
        Ok(if lost {
            self.inner.verifier.rotate()
        } else {
            self.inner.verifier.current()
        })
    }
}
