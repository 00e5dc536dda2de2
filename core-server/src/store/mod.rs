//! The block store of one core server.
//!
//! # Layout
//!
//! One RocksDB database in `<data_dir>/blocks`:
//!
//! - **Chunks.** A block's data is cut into chunks of the store's chunk
//!   size ([`CHUNK_SIZE`], 4 KiB, in stores made now; 64 KiB in stores
//!   made before the format record, see [`format`]):
//!   key `c | file_id BE | index BE | chunk BE u32`, value
//!   `[crc32c BE u32][data]`. A chunk's data runs from the chunk's start to
//!   the highest byte ever written in it (shorter at a block's tail);
//!   chunks never written, or written all zeros by a whole-block put, are
//!   absent and read as zeros (sparse blocks). A partial write
//!   read-modify-writes only the chunks it touches: an aligned 4 KiB write
//!   reads back and puts one 4 KiB chunk (the old one is read for its
//!   length, which the space accounting needs, and verified).
//! - **Format.** Key `v`: the store's chunk size ([`format`]).
//! - **Block metadata.** Key `m | file_id BE | index BE`, value
//!   `version | length | stored | epoch` (u64 BE each): the version of the
//!   last write, the highest byte written + 1, the sum of the stored chunk
//!   lengths (so that opening and deleting never read chunk data), and the
//!   ownership epoch the copy was written under ([`fence`]).
//!
//! Chunk values go to BlobDB blob files (`min_blob_size` 4 KiB, no
//! compression: VM images compress poorly and the CPU is better spent
//! elsewhere) so that large values are not rewritten by every LSM
//! compaction; only keys and small metadata live in the LSM tree.
//!
//! - **Trim markers.** Key `t | file_id BE | index BE`, value the version
//!   of a copy removed by the geo-replication trim (see [`copy_state`]):
//!   the block exists at that version on other sites, so this core's copy
//!   is complete at no version and partial writes are refused until it is
//!   seeded.
//!   The same key holds **deleted markers** (a truncate or remove
//!   deleted the block up to that version).
//! - **Deleted ranges.** Key `r | file_id BE`, value the ranges of block
//!   indexes a truncate or remove deleted, each up to a version
//!   ([`delete`]): a deleted marker for every index inside, stored or not.
//! - **Replication queue.** Key `q | file_id BE | index BE`, value a
//!   [`geonfs_block_manager::ReplicationJob`] (see [`queue`]): the block's
//!   pending geo-replication job, written in the same batch as the write
//!   that creates it.
//! - **Fences.** Key `f | file_id BE`, value the file's ownership fence
//!   (epochs, u64 BE), written synced (see [`fence`]): reads, writes and
//!   deletes carrying an older owner epoch (other than 0) are refused with
//!   [`CoreError::Fenced`]. Loaded into memory at open.
//! - **Quarantine.** Key `x | file_id BE | index BE | version BE`: copies
//!   set aside because a takeover from a lost owner never saw them (see
//!   [`quarantine`]).
//!
//! # Why RocksDB and not files (measured)
//!
//! `bench/src/bin/store_choice.rs` against a file-per-block store (pwrite
//! of data + chunk CRCs, fdatasync per write), 16 writers, 2026-11-22: 4 KiB
//! random writes 0.17×, 1 MiB sequential 0.07×, 4 KiB reads 0.30× the
//! files' rate (fdatasync is ≈ 0.15 ms here; RocksDB writes data twice,
//! re-puts a 64 KiB chunk per 4 KiB write and groups ≤ 1 MiB per fsync).
//! RocksDB stays because files are not crash-atomic: one `WriteBatch`
//! makes data, checksums, version and the replication job durable together;
//! files would need a journal (one more write + fsync). Next measured step:
//! data out of place in files, checksums and location in one RocksDB batch.
//!
//! # Atomicity and durability
//!
//! Every write is ONE RocksDB `WriteBatch` (its chunks and its metadata), so
//! a crash (kill -9) leaves only complete writes. [`Durability::Durable`]
//! writes use `sync = true`: RocksDB's write thread groups concurrent synced
//! writers into one WAL append and ONE fsync (group commit), which is what
//! lets many writers share the ≈ 3 ms fsync of these disks.
//! [`Durability::Held`] writes use `sync = false`: they are in the OS page
//! cache when acknowledged (they survive a process crash, not a power loss)
//! and become durable at the next [`BlockStore::flush`] (`flush_wal(true)`)
//! or the next synced write. The blocks that were written held and not yet
//! flushed are tracked in memory so that [`BlockStore::list`] can report
//! `durable`. Each start picks a random [`BlockStore::incarnation`]: a caller
//! that sees it change knows that held data may have been lost.
//!
//! # Versions and checksums
//!
//! A write carries a version; a write older than the stored version (or a
//! trim marker's) is refused with [`CoreError::StaleVersion`] (newer data
//! is never overwritten by older data, docs/ARCHITECTURE.md#invariant-8); an equal version is an
//! idempotent retry. A partial write also names its base version and
//! applies only on a copy complete at it ([`copy_state`]: the rule that
//! keeps a trimmed, lagging or missing copy from being patched into a
//! sparse or stale "newest" copy). A
//! delete removes the block only if the stored version is not newer than
//! the caller's `up_to_version`. Every chunk carries a CRC-32C of its data,
//! verified on every read (and before a read-modify-write): a mismatch is
//! [`CoreError::CorruptChunk`] and counts in
//! [`crate::CoreMetrics::checksum_failures`] (docs/ARCHITECTURE.md#invariant-7); the block
//! manager repairs the copy from another one.
//!
//! # Concurrency
//!
//! Writes and deletes of one block are serialised by one of
//! [`LOCK_STRIPES`] striped async mutexes (chosen by a hash of the block id),
//! so concurrent partial writes to one chunk never lose an update. The lock
//! guard moves into the blocking task, so a cancelled caller cannot release
//! it while its write is still running. Writes and deletes checked against
//! a file's fence also hold a read guard of the fences from their check
//! until their batch is applied, so a fence waits for them ([`fence`]).
//! Reads take no lock: they read the metadata and the chunks from one
//! RocksDB snapshot. Every RocksDB call runs in `spawn_blocking` (fsyncs
//! block).
//!
//! # Capacity
//!
//! Used bytes are the sum of the stored chunk lengths, kept in memory
//! (recomputed at open from the block metadata) and reserved atomically
//! before each write; a write that would exceed the configured capacity,
//! or leave the data directory's file system less than
//! [`DISK_HEADROOM`] free, fails with [`CoreError::OutOfSpace`] and changes
//! nothing. Writing resumes by itself once space returns.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geonfs_proto::domain::{BlockId, BlockRead, BlockWrite, Durability, Epoch, Version};
use rocksdb::{DBCompressionType, Options, ReadOptions, DB};

pub use crate::codec::CHUNK_SIZE;
use crate::codec::{
    block_of_meta_key, marker_key, meta_key, meta_lower, meta_upper, open_chunk, ranges_key,
    BlockMeta,
};
use crate::{CoreError, CoreMetrics};

pub mod changes;
mod chunks;
pub mod copy_state;
mod delete;
pub mod fence;
mod format;
mod job;
pub mod quarantine;
pub mod queue;
mod replica_store;
mod space;
mod write;

use chunks::delete_chunks;
use copy_state::decode_marker;
pub use copy_state::Marker;
use fence::{load_fences, FenceMap};
use queue::JobSpec;
pub use space::DISK_HEADROOM;
use space::{clamp_i64, scan_usage};

#[cfg(test)]
mod tests;

/// Number of striped per-block write locks.
pub const LOCK_STRIPES: usize = 1024;

/// How long [`BlockStore::close`] waits for operations in flight.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The block's version after the write.
    pub version: Version,
    /// Whether the write is on stable storage.
    pub durable: bool,
}

/// The bytes a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The block's version.
    pub version: Version,
    /// The block's length (highest byte written + 1).
    pub length: u64,
    /// The ownership epoch the copy was written under (see [`fence`]).
    pub epoch: Option<Epoch>,
    /// Exactly the requested length; zeros where nothing was written.
    pub data: Bytes,
}

/// What a read found: the copy, or what is known of a block without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRead {
    /// The bytes, when this core holds the block.
    pub found: Option<ReadOutcome>,
    /// Without a copy: the block's marker (trimmed here, or deleted), if
    /// it has one.
    pub marker: Option<Marker>,
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The block was removed.
    Deleted,
    /// No such block.
    Absent,
    /// The stored version is newer than `up_to_version`; nothing was changed.
    Newer {
        /// The stored version.
        stored: Version,
    },
}

/// One stored block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// The block.
    pub block: BlockId,
    /// The version of its last write.
    pub version: Version,
    /// Highest byte written + 1.
    pub length: u64,
    /// Bytes it takes in the store.
    pub stored: u64,
    /// False while a held write to it has not been flushed.
    pub durable: bool,
}

/// Totals of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Configured capacity in bytes.
    pub capacity: u64,
    /// Bytes stored.
    pub used: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Internal counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Chunk records written.
    pub chunk_puts: u64,
    /// Bytes of chunk data written (including read-modify-write overhead).
    pub chunk_bytes_written: u64,
    /// Synced (durable) write batches issued.
    pub durable_writes: u64,
    /// WAL fsyncs RocksDB performed (its `rocksdb.wal.synced` ticker).
    pub wal_syncs: u64,
}

/// The block store. Cheap to clone (clones share one store).
#[derive(Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("path", &self.inner.path)
            .field("incarnation", &self.inner.incarnation)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    /// `None` once closed.
    db: RwLock<Option<Arc<DB>>>,
    /// Kept for its statistics object (the WAL sync ticker).
    options: Options,
    incarnation: u64,
    /// The size of this store's chunks (`format.rs`).
    chunk_size: u64,
    capacity: u64,
    /// The data directory's real free space (writes leave headroom).
    disk: space::DiskSpace,
    used: AtomicU64,
    blocks: AtomicU64,
    /// Blocks written held and not flushed since.
    held: Mutex<HashSet<BlockId>>,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    metrics: CoreMetrics,
    chunk_puts: AtomicU64,
    chunk_bytes: AtomicU64,
    durable_writes: AtomicU64,
    /// Notified whenever a replication job is enqueued.
    enqueued: Arc<tokio::sync::Notify>,
    /// Each fenced file's ownership fence (see [`fence`]).
    fences: RwLock<FenceMap>,
    /// Whether the fences are known to be current: false from
    /// [`BlockStore::require_fence_sync`] until
    /// [`BlockStore::mark_fences_synced`] (see [`fence`]).
    fences_synced: AtomicBool,
}

impl BlockStore {
    /// Opens (creating if needed) the store in `<data_dir>/blocks` with
    /// `capacity` bytes. Blocking (recovery, a scan of the metadata).
    pub fn open(data_dir: &Path, capacity: u64, metrics: CoreMetrics) -> Result<Self, CoreError> {
        let path = data_dir.join("blocks");
        std::fs::create_dir_all(&path).map_err(|source| CoreError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::Lz4);
        options.set_enable_blob_files(true);
        options.set_min_blob_size(4096);
        options.set_blob_compression_type(DBCompressionType::None);
        // Overwritten chunks leave garbage in blob files; reclaim it.
        options.set_enable_blob_gc(true);
        options.set_max_background_jobs(2);
        options.enable_statistics();
        let db = DB::open(&options, &path)?;
        // Whatever the WAL recovered (held writes of a previous incarnation
        // still in the page cache) becomes durable now, so the held set can
        // honestly start empty.
        db.flush_wal(true)?;
        let chunk_size = format::chunk_size(&db)?;
        let (used, blocks) = scan_usage(&db)?;
        let fences = load_fences(&db)?;
        let (quarantined, quarantined_bytes) = quarantine::scan_quarantine(&db)?;
        metrics.quarantined_blocks.set(clamp_i64(quarantined));
        metrics.quarantined_bytes.set(clamp_i64(quarantined_bytes));
        metrics.capacity_bytes.set(clamp_i64(capacity));
        metrics.used_bytes.set(clamp_i64(used));
        let inner = Inner {
            path: path.clone(),
            db: RwLock::new(Some(Arc::new(db))),
            options,
            incarnation: rand::random(),
            chunk_size,
            capacity,
            disk: space::DiskSpace::new(path.clone()),
            used: AtomicU64::new(used),
            blocks: AtomicU64::new(blocks),
            held: Mutex::new(HashSet::new()),
            locks: (0..LOCK_STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            metrics,
            chunk_puts: AtomicU64::new(0),
            chunk_bytes: AtomicU64::new(0),
            durable_writes: AtomicU64::new(0),
            enqueued: Arc::new(tokio::sync::Notify::new()),
            fences: RwLock::new(fences),
            fences_synced: AtomicBool::new(true),
        };
        let fenced = inner.fences.read().map_or(0, |f| f.len());
        tracing::info!(path = %inner.path.display(), used, blocks, capacity, fenced, chunk_size, "block store opened");
        Ok(BlockStore {
            inner: Arc::new(inner),
        })
    }

    /// The size of this store's chunks (`format.rs`): the unit of
    /// read-modify-write and of checksums.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size
    }

    /// The random id of this start of the store.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The store's metrics.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.inner.metrics
    }

    /// Capacity, used bytes and block count.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            capacity: self.inner.capacity,
            used: self.inner.used.load(Ordering::SeqCst),
            blocks: self.inner.blocks.load(Ordering::SeqCst),
        }
    }

    /// Internal counters (chunk puts, synced writes, WAL fsyncs).
    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            chunk_puts: self.inner.chunk_puts.load(Ordering::SeqCst),
            chunk_bytes_written: self.inner.chunk_bytes.load(Ordering::SeqCst),
            durable_writes: self.inner.durable_writes.load(Ordering::SeqCst),
            wal_syncs: self
                .inner
                .options
                .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced),
        }
    }

    /// Applies `write` (see the module documentation for versions,
    /// durability and capacity).
    pub async fn write(&self, write: BlockWrite) -> Result<WriteOutcome, CoreError> {
        self.write_with_job(write, None).await
    }

    /// [`BlockStore::write`] that also records (or replaces) the block's
    /// replication job in the same batch when `job` is given, so the job
    /// is exactly as durable as the write. A write whose
    /// [`BlockWrite::owner_epoch`] is older than the file's fence is refused
    /// with [`CoreError::Fenced`] (`None`: not checked).
    pub async fn write_with_job(
        &self,
        write: BlockWrite,
        job: Option<JobSpec>,
    ) -> Result<WriteOutcome, CoreError> {
        let started = Instant::now();
        let durable = write.durability == Durability::Durable;
        let len = write.data.len() as u64;
        let guard = self.inner.lock_for(write.block).lock_owned().await;
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // Held across the check and the batch: a fence waits for it.
            let _fence = inner.admit(write.block.file_id, write.owner_epoch)?;
            inner.write_blocking(&write, job.as_ref())
        })
        .await??;
        let metrics = &self.inner.metrics;
        metrics.writes.inc();
        metrics.write_bytes.inc_by(len);
        metrics
            .write_latency(durable)
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Reads `read.range` of a block; `None` if the block is absent. Bytes
    /// never written (or past the block's length) read as zeros. A read
    /// whose [`BlockRead::owner_epoch`] is older than the file's fence is
    /// refused with [`CoreError::Fenced`] (`None`: not checked).
    pub async fn read(&self, read: BlockRead) -> Result<Option<ReadOutcome>, CoreError> {
        Ok(self.read_copy(read).await?.found)
    }

    /// [`BlockStore::read`] that also reports the block's trim marker when
    /// this core holds no copy.
    pub async fn read_copy(&self, read: BlockRead) -> Result<CopyRead, CoreError> {
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || inner.read_blocking(&read)).await??;
        if let Some(found) = &outcome.found {
            self.inner.metrics.reads.inc();
            self.inner
                .metrics
                .read_bytes
                .inc_by(found.data.len() as u64);
        }
        Ok(outcome)
    }

    /// Makes every held write durable (one WAL fsync covers them all).
    pub async fn flush(&self) -> Result<(), CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush_blocking()).await??;
        self.inner.metrics.flushes.inc();
        Ok(())
    }

    /// The metadata of one block, `None` if absent.
    pub async fn block_info(&self, block: BlockId) -> Result<Option<BlockInfo>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            let meta = inner.meta(&db, block)?;
            Ok(meta.map(|meta| inner.info(block, meta)))
        })
        .await?
    }

    /// Up to `limit` blocks strictly after `start_after` (all from the start
    /// if `None`), in (file_id, index) order, and whether more follow.
    pub async fn list(
        &self,
        start_after: Option<BlockId>,
        limit: usize,
    ) -> Result<(Vec<BlockInfo>, bool), CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.list_blocking(start_after, limit)).await?
    }

    /// Closes the store: waits (at most 10 s) for operations in flight, then,
    /// if `flush`, syncs the WAL, and closes RocksDB (releasing its lock, so
    /// the store can be opened again). Later operations fail with
    /// [`CoreError::Closed`]. Without `flush` it behaves like a process kill:
    /// held writes stay in the page cache, not synced.
    pub async fn close(&self, flush: bool) -> Result<(), CoreError> {
        let taken = match self.inner.db.write() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(db) = taken else {
            return Ok(());
        };
        let deadline = Instant::now() + CLOSE_WAIT;
        while Arc::strong_count(&db) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lingering = Arc::strong_count(&db) > 1;
        if lingering {
            tracing::warn!(path = %self.inner.path.display(), "block store operations still running at close");
        }
        let result = tokio::task::spawn_blocking(move || {
            let result = if flush {
                db.flush_wal(true).map_err(CoreError::from)
            } else {
                Ok(())
            };
            // An operation still holding the database keeps it open past
            // this close, maybe past the process's exit: stop RocksDB's
            // background jobs now, so none runs while the process tears
            // down the statics they use (an abort, "pthread lock: Invalid
            // argument", seen once in a test run).
            if lingering {
                db.cancel_all_background_work(true);
            }
            drop(db);
            result
        })
        .await?;
        tracing::info!(path = %self.inner.path.display(), flush, "block store closed");
        result
    }

    /// The raw database, for tests that damage it on purpose.
    #[cfg(test)]
    pub(crate) fn raw_db(&self) -> Result<Arc<DB>, CoreError> {
        self.inner.db()
    }
}

impl Inner {
    fn db(&self) -> Result<Arc<DB>, CoreError> {
        let slot = match self.db.read() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.clone().ok_or(CoreError::Closed)
    }

    fn lock_for(&self, block: BlockId) -> Arc<tokio::sync::Mutex<()>> {
        let hash = block
            .file_id
            .0
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
            ^ block.index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        self.locks[(hash % LOCK_STRIPES as u64) as usize].clone()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<BlockId>> {
        match self.held.lock() {
            Ok(held) => held,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn info(&self, block: BlockId, meta: BlockMeta) -> BlockInfo {
        BlockInfo {
            block,
            version: meta.version,
            length: meta.length,
            stored: meta.stored,
            durable: !self.held().contains(&block),
        }
    }

    fn meta(&self, db: &DB, block: BlockId) -> Result<Option<BlockMeta>, CoreError> {
        match db.get_pinned(meta_key(block))? {
            None => Ok(None),
            Some(value) => decode_meta(block, &value).map(Some),
        }
    }

    /// The data of a chunk value, counting and reporting a bad checksum.
    fn verify<'v>(
        &self,
        block: BlockId,
        chunk: u32,
        value: &'v [u8],
    ) -> Result<&'v [u8], CoreError> {
        open_chunk(value, self.chunk_size).ok_or_else(|| {
            self.metrics.checksum_failures.inc();
            tracing::error!(
                %block,
                chunk,
                "chunk checksum mismatch"
            );
            CoreError::CorruptChunk { block, chunk }
        })
    }

    fn read_blocking(&self, read: &BlockRead) -> Result<CopyRead, CoreError> {
        let db = self.db()?;
        let block = read.block;
        let snapshot = db.snapshot();
        // Checked after the snapshot: a read that passes reads data from
        // before any fence that refuses it.
        self.check_read(block.file_id, read.owner_epoch)?;
        let Some(meta) = snapshot.get_pinned(meta_key(block))? else {
            let own = match snapshot.get_pinned(marker_key(block))? {
                Some(value) => Some(decode_marker(block, &value)?),
                None => None,
            };
            let ranges = snapshot.get_pinned(ranges_key(block.file_id))?;
            let marker = delete::strongest(own, delete::range_cover(block, ranges.as_deref())?);
            return Ok(CopyRead {
                found: None,
                marker,
            });
        };
        let meta = decode_meta(block, &meta)?;
        let out = self.copy_bytes(&snapshot, block, read.range.offset, read.range.len)?;
        Ok(CopyRead {
            found: Some(ReadOutcome {
                version: meta.version,
                length: meta.length,
                epoch: meta.epoch,
                data: Bytes::from(out),
            }),
            marker: None,
        })
    }

    fn flush_blocking(&self) -> Result<(), CoreError> {
        let db = self.db()?;
        // Only blocks whose held write is already in the WAL (inserted before
        // this point) are marked durable by this flush.
        let flushed = std::mem::take(&mut *self.held());
        if let Err(err) = db.flush_wal(true) {
            self.held().extend(flushed);
            return Err(err.into());
        }
        Ok(())
    }

    fn list_blocking(
        &self,
        start_after: Option<BlockId>,
        limit: usize,
    ) -> Result<(Vec<BlockInfo>, bool), CoreError> {
        let db = self.db()?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(meta_upper());
        let mut iter = db.raw_iterator_opt(read_options);
        match start_after {
            Some(block) => {
                let key = meta_key(block);
                iter.seek(key);
                if iter.key() == Some(&key[..]) {
                    iter.next();
                }
            }
            None => iter.seek(meta_lower()),
        }
        let mut blocks = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if blocks.len() >= limit {
                return Ok((blocks, true));
            }
            let block = block_of_meta_key(key).ok_or_else(|| CoreError::Corrupt {
                what: "block metadata key".into(),
                detail: format!("{key:?} is not a metadata key"),
            })?;
            let meta = decode_meta(block, value)?;
            blocks.push(self.info(block, meta));
            iter.next();
        }
        iter.status()?;
        Ok((blocks, false))
    }
}

fn decode_meta(block: BlockId, value: &[u8]) -> Result<BlockMeta, CoreError> {
    BlockMeta::decode(value).ok_or_else(|| CoreError::Corrupt {
        what: format!("metadata of block {block}"),
        detail: format!("{} bytes, expected 24 or 32", value.len()),
    })
}

fn chunk_no(chunk: u64) -> Result<u32, CoreError> {
    u32::try_from(chunk)
        .map_err(|_| CoreError::InvalidArgument(format!("chunk number {chunk} is too large")))
}
