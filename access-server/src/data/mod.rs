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
//! acknowledged (invariant 1), yet a cross-site Raft commit per WRITE would
//! put the WAN on the write path (invariant 3, and DESIGN "Metadata": keep
//! hot per-write state off the Raft path). So each file's size and mtime
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
//! version of a block (older writes are refused as stale, invariant 8), so
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
//! # Verifier (RFC 1813 WRITE/COMMIT)
//!
//! UNSTABLE writes are acknowledged once two cores hold them (HELD, not yet
//! fsync'd). For each file, the (core, incarnation) pairs of its unstable
//! writes (data and record) since the last COMMIT are kept. [`FileData::commit`]
//! flushes those cores and compares incarnations: if any core restarted (or
//! could not be flushed) the process-wide verifier is replaced by a new
//! random value ([`clock::rotate`]) and returned, so the client sees it
//! differ from its WRITE replies' and resends. The verifier is also new at
//! every start of the process. Stable writes are durable on two when they
//! return and carry the current verifier.

pub mod attr;
mod batch;
pub mod clock;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt};
use geonfs_block_manager::{BlockClient, BlockError, WriteAck};
use geonfs_proto::domain::{BlockId, Durability};
use tonic::Code;

pub use attr::{attr_block, ATTR_INDEX, ATTR_LEN};
pub use clock::{next_version, observe};

/// How many times a block write refused as stale (a concurrent newer write
/// got there first) is retried with a fresh version.
const STALE_ATTEMPTS: u32 = 16;

/// How many block deletes of one truncate or remove run at once.
const DELETE_CONCURRENCY: usize = 32;

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
        file_id: u64,
        /// The length read.
        len: usize,
    },
    /// The range runs past the largest offset a file can have.
    #[error("file {file_id}: {len} bytes at offset {offset} run past the largest file size")]
    Range {
        /// The file.
        file_id: u64,
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
    /// A block write kept being overtaken by newer writes.
    #[error("block {}/{}: refused as stale {attempts} times (overtaken by newer writes)", .block.file_id, .block.index)]
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
    client: BlockClient,
    block_size: u64,
    files: Mutex<HashMap<u64, FileState>>,
    /// Data writes waiting for their block (`batch.rs`).
    writes: batch::Queues<BlockId, batch::QueuedWrite>,
    /// Writers waiting for their file's attribute record (`batch.rs`).
    records: batch::Queues<u64, batch::QueuedRecord>,
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
}

impl FileState {
    fn absent() -> Self {
        FileState {
            exists: false,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            unstable: HashSet::new(),
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
    /// The data path over `client`, for blocks of `block_size` bytes (the
    /// cluster's `block_size`).
    ///
    /// # Panics
    ///
    /// If `block_size` is 0.
    pub fn new(client: BlockClient, block_size: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        FileData {
            inner: Arc::new(Inner {
                client,
                block_size,
                files: Mutex::new(HashMap::new()),
                writes: batch::Queues::new(),
                records: batch::Queues::new(),
            }),
        }
    }

    /// The block size.
    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// The current write verifier (process-wide).
    pub fn verifier(&self) -> [u8; 8] {
        clock::verifier()
    }

    fn files(&self) -> MutexGuard<'_, HashMap<u64, FileState>> {
        match self.inner.files.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The pieces of `[offset, end)`: (block, offset in block, length,
    /// offset in the range).
    fn pieces(&self, file_id: u64, offset: u64, end: u64) -> Vec<(BlockId, u64, u64, u64)> {
        let bs = self.inner.block_size;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let within = pos % bs;
            let take = (bs - within).min(end - pos);
            out.push((BlockId { file_id, index }, within, take, pos - offset));
            pos += take;
        }
        out
    }

    fn check_range(&self, file_id: u64, offset: u64, len: u64) -> Result<u64, DataError> {
        offset
            .checked_add(len)
            .filter(|end| end.div_ceil(self.inner.block_size) < ATTR_INDEX)
            .ok_or(DataError::Range {
                file_id,
                offset,
                len,
            })
    }

    /// Writes `data` at `offset` of `file_id`: the pieces to their blocks
    /// and the attribute record, in parallel, each on two cores of the site
    /// (durably if `stable`, else held until [`FileData::commit`]).
    pub async fn write(
        &self,
        file_id: u64,
        offset: u64,
        data: Bytes,
        stable: bool,
    ) -> Result<WriteResult, DataError> {
        let end = self.check_range(file_id, offset, data.len() as u64)?;
        self.ensure(file_id).await?;
        let durability = durability(stable);
        let (size, mtime) = {
            let mut files = self.files();
            let state = files.entry(file_id).or_insert_with(FileState::absent);
            state.exists = true;
            state.size = state.size.max(end);
            state.mtime = SystemTime::now();
            (state.size, state.mtime)
        };
        let writes =
            self.pieces(file_id, offset, end)
                .into_iter()
                .map(|(block, within, take, at)| {
                    let piece = data.slice(at as usize..(at + take) as usize);
                    self.queue_write(block, within, piece, durability)
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
            verifier: clock::verifier(),
            size,
            mtime,
        })
    }

    fn remember_unstable(&self, file_id: u64, acks: &[WriteAck]) {
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
    async fn write_block(
        &self,
        block: BlockId,
        offset: u64,
        data: Bytes,
        mut version: u64,
        durability: Durability,
    ) -> Result<WriteAck, DataError> {
        for _ in 0..STALE_ATTEMPTS {
            match self
                .inner
                .client
                .write(block, offset, data.clone(), version, durability)
                .await
            {
                Ok(ack) => return Ok(ack),
                Err(err) if is_stale(&err) => {
                    tracing::debug!(?block, version, "block write overtaken; retrying");
                    self.observe_block(block).await;
                    version = next_version();
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
        if let Ok(Some(read)) = self.inner.client.read(block, 0, 0).await {
            observe(read.version);
        }
    }

    /// Writes the attribute record with the file's state now (its version
    /// taken with the state, under the lock); nothing when the file was
    /// removed meanwhile. Called by one batch at a time per file
    /// (`batch.rs`), so a stale refusal means another process wrote a newer
    /// record: the clock moves past it and the current state is written
    /// again.
    async fn write_record(&self, file_id: u64, durability: Durability) -> Result<(), DataError> {
        let block = attr_block(file_id);
        for _ in 0..STALE_ATTEMPTS {
            let Some((size, mtime, version)) = self
                .files()
                .get(&file_id)
                .filter(|state| state.exists)
                .map(|state| (state.size, state.mtime, next_version()))
            else {
                return Ok(());
            };
            let bytes = Bytes::copy_from_slice(&attr::encode(size, mtime));
            match self
                .inner
                .client
                .write(block, 0, bytes, version, durability)
                .await
            {
                Ok(ack) => {
                    if durability == Durability::Held {
                        self.remember_unstable(file_id, std::slice::from_ref(&ack));
                    }
                    return Ok(());
                }
                Err(err) if is_stale(&err) => {
                    tracing::debug!(file_id, version, "attribute record overtaken");
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

    /// Loads the file's state (its attribute record) unless known.
    async fn ensure(&self, file_id: u64) -> Result<(), DataError> {
        if self.files().contains_key(&file_id) {
            return Ok(());
        }
        if self.attributes(file_id).await?.is_none() {
            self.files()
                .entry(file_id)
                .or_insert_with(FileState::absent);
        }
        Ok(())
    }

    /// The file's size and mtime: as of the writes issued by this process,
    /// else from the attribute record on the cores. `None` if the file has
    /// no record (never written, or removed).
    pub async fn attributes(&self, file_id: u64) -> Result<Option<(u64, SystemTime)>, DataError> {
        if let Some(state) = self.files().get(&file_id) {
            if state.exists {
                return Ok(Some((state.size, state.mtime)));
            }
        }
        let Some(read) = self
            .inner
            .client
            .read(attr_block(file_id), 0, ATTR_LEN as u32)
            .await?
        else {
            return Ok(None);
        };
        observe(read.version);
        let (size, mtime) = attr::decode(&read.data).ok_or(DataError::BadRecord {
            file_id,
            len: read.data.len(),
        })?;
        let mut files = self.files();
        let state = files.entry(file_id).or_insert_with(FileState::absent);
        if !state.exists {
            state.exists = true;
            state.size = size;
            state.mtime = mtime;
        }
        Ok(Some((state.size, state.mtime)))
    }

    /// Flushes the cores holding `file_id`'s unstable writes and returns
    /// the verifier: a new one if any of them restarted (or could not be
    /// flushed) since it took a write, so the client resends.
    pub async fn commit(&self, file_id: u64) -> Result<[u8; 8], DataError> {
        let pending: Vec<(String, u64)> = match self.files().get(&file_id) {
            Some(state) => state.unstable.iter().cloned().collect(),
            None => Vec::new(),
        };
        if pending.is_empty() {
            return Ok(clock::verifier());
        }
        let nodes: BTreeSet<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
        // One flush per core, so that one unreachable core does not hide
        // the others' incarnations.
        let flushes = nodes
            .iter()
            .map(|node| async move { (*node, self.inner.client.flush(&[*node]).await) });
        let mut lost = false;
        for (node, result) in futures::future::join_all(flushes).await {
            match result {
                Ok(ack) => {
                    let now = ack.incarnation(node);
                    if pending
                        .iter()
                        .any(|(n, incarnation)| n == node && now != Some(*incarnation))
                    {
                        tracing::warn!(file_id, node, "core restarted before COMMIT; new verifier");
                        lost = true;
                    }
                }
                Err(err) => {
                    tracing::warn!(file_id, node, %err, "flush failed at COMMIT; new verifier");
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
            clock::rotate()
        } else {
            clock::verifier()
        })
    }

    /// Reads up to `count` bytes at `offset` of a file of `file_size`
    /// bytes (the range is clamped to it): the blocks in parallel, absent
    /// blocks and never-written ranges as zeros. Returns the bytes and
    /// whether they reach the end of the file.
    pub async fn read(
        &self,
        file_id: u64,
        offset: u64,
        count: u32,
        file_size: u64,
    ) -> Result<(Bytes, bool), DataError> {
        if offset >= file_size {
            return Ok((Bytes::new(), true));
        }
        let end = offset.saturating_add(u64::from(count)).min(file_size);
        let reads = self.pieces(file_id, offset, end).into_iter().map(
            |(block, within, take, _)| async move {
                let len = take as usize;
                let data = match self.inner.client.read(block, within, take as u32).await? {
                    Some(read) if read.data.len() == len => read.data,
                    Some(read) => {
                        let mut padded = BytesMut::zeroed(len);
                        let n = read.data.len().min(len);
                        padded[..n].copy_from_slice(&read.data[..n]);
                        padded.freeze()
                    }
                    None => Bytes::from(vec![0; len]),
                };
                Ok::<_, DataError>(data)
            },
        );
        let mut parts = futures::future::try_join_all(reads).await?;
        let data = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            let mut out = BytesMut::with_capacity((end - offset) as usize);
            for part in parts {
                out.extend_from_slice(&part);
            }
            out.freeze()
        };
        Ok((data, end == file_size))
    }

    /// Sets the file's size (SETATTR size), durably: truncating deletes
    /// the blocks wholly past `new_size` and zeroes the rest of the last
    /// partial block; extending writes no data (the new range reads as
    /// zeros). Then the attribute record is written. `old_size` is the size
    /// the caller knows; the larger of it and this process's is used.
    pub async fn set_size(
        &self,
        file_id: u64,
        old_size: u64,
        new_size: u64,
    ) -> Result<(), DataError> {
        self.check_range(file_id, new_size, 0)?;
        self.ensure(file_id).await?;
        let (old, up_to) = {
            let mut files = self.files();
            let state = files.entry(file_id).or_insert_with(FileState::absent);
            let old = state.size.max(old_size);
            state.exists = true;
            state.size = new_size;
            state.mtime = SystemTime::now();
            // Under the lock: every write issued later has newer versions,
            // so the deletes below cannot remove its data.
            (old, next_version())
        };
        let bs = self.inner.block_size;
        let shrink = async {
            if new_size >= old {
                return Ok(());
            }
            let first_gone = new_size.div_ceil(bs);
            let deletes = self.delete_blocks(file_id, first_gone..old.div_ceil(bs), up_to);
            let zero_tail = async {
                let within = new_size % bs;
                if within == 0 {
                    return Ok(());
                }
                let block_start = new_size - within;
                let tail = old.min(block_start + bs) - new_size;
                let block = BlockId {
                    file_id,
                    index: new_size / bs,
                };
                self.queue_write(
                    block,
                    within,
                    Bytes::from(vec![0; tail as usize]),
                    Durability::Durable,
                )
                .await
                .map(|_| ())
            };
            futures::future::try_join(deletes, zero_tail)
                .await
                .map(|_| ())
        };
        futures::future::try_join(shrink, self.queue_record(file_id, Durability::Durable)).await?;
        Ok(())
    }

    /// Deletes blocks `indexes` of `file_id` from the site's cores (up to
    /// `up_to` version), a bounded number at a time.
    async fn delete_blocks(
        &self,
        file_id: u64,
        indexes: impl Iterator<Item = u64>,
        up_to: u64,
    ) -> Result<(), DataError> {
        let client = &self.inner.client;
        let mut deletes = stream::iter(indexes)
            .map(|index| client.delete(BlockId { file_id, index }, up_to))
            .buffer_unordered(DELETE_CONCURRENCY);
        while let Some(result) = deletes.next().await {
            result?;
        }
        Ok(())
    }

    /// Deletes the file's blocks (those covering `size` bytes, or the
    /// recorded size if larger) and its attribute record (REMOVE of the
    /// last link).
    pub async fn remove(&self, file_id: u64, size: u64) -> Result<(), DataError> {
        let recorded = self.attributes(file_id).await?.map_or(0, |(s, _)| s);
        let up_to = {
            let mut files = self.files();
            files.remove(&file_id);
            next_version()
        };
        let size = size.max(recorded);
        let blocks = (0..size.div_ceil(self.inner.block_size)).chain([ATTR_INDEX]);
        self.delete_blocks(file_id, blocks, up_to).await
    }
}
