//! The block store's durable geo-replication queue and whole-block replica
//! puts.
//!
//! One job per block (encoding in `job.rs`). A job is written in the same
//! `WriteBatch` as the write that creates it; a newer write replaces it
//! (keeping `first_enqueued_ms`, so the job's age stays the replication lag
//! of the oldest write it covers) and adds its range to the job's changes
//! (`geonfs_block_manager::replicator::changes`, shipped instead of the
//! whole block by `changes.rs`).
//! A delete of the block (the trim of a secondary) removes its job. A
//! replica put restores a trimmed copy (removing its marker) when it is at
//! the marker's version or newer, is stale below a marker's version, and
//! finds a block deleted at its version already held.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use geonfs_block_manager::replicator::JobChanges;
use geonfs_block_manager::ReplicationJob;
use geonfs_proto::domain::{unix_time_ms, BlockId, Epoch, Version};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions, DB};

use super::changes::OfferChanges;
use super::copy_state::complete_at;
use super::fence::FenceRaise;
use super::job::{block_of_job_key, decode_job, encode_job, job_key, QUEUE_TAG};
use super::{chunk_no, delete_chunks, BlockStore, Inner};
use crate::codec::{chunk_key, marker_key, meta_key, seal_chunk, BlockMeta, Marker, CRC_LEN};
use crate::CoreError;

/// The replication job a write asks for (from the write request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Remote target core names, one per other site.
    pub targets: Vec<String>,
    /// Whether this core is the primary of the pair (it ships).
    pub primary: bool,
    /// The other in-site holder of the pair.
    pub peer: String,
}

/// What a write enqueues: the range it wrote on a copy complete at `base`,
/// or the whole block (a replacing write, a restored copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// `len` bytes at `offset` on top of a copy complete at `base`.
    Range {
        offset: u64,
        len: u64,
        base: Version,
    },
    /// The whole block.
    Whole,
}

/// What [`Inner::update_job`] does to the block's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobUpdate {
    /// Remove it if its version is at most the given one.
    Done,
    /// Every target holds the given version: a job that is not newer is
    /// removed (`trim_at_ms` `None`) or kept as shipped until then; a
    /// newer one's changes are rebased on that version.
    Shipped { trim_at_ms: Option<u64> },
    /// A failed attempt: record it.
    Retry { attempts: u32, next_attempt_ms: u64 },
}

/// What a core makes of an offered replica before writing anything.
enum ReplicaCheck {
    /// Apply it (`repairing`: this copy holds the version but failed its
    /// checksum).
    Apply { repairing: bool },
    /// Answer this without changing anything.
    Answer(PutOutcome),
}

/// What a [`BlockStore::put_replica`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The block now holds the offered version, durably.
    Applied,
    /// The block already held exactly that version; nothing changed.
    AlreadyHeld,
    /// The block holds a newer version; nothing changed (docs/ARCHITECTURE.md#invariant-8).
    SkippedStale {
        /// The stored version.
        stored: Version,
    },
    /// A repair put: the block held that version but a chunk failed its
    /// checksum, so the copy was replaced by the offered one.
    Repaired,
    /// Refused: the copy is from an epoch before a takeover from a lost
    /// owner (`lost_below`), which never saw it (see `store::fence`). The
    /// sender sets its copy aside.
    Superseded {
        /// This core's `lost_below` for the file.
        lost_below: Epoch,
    },
    /// Offered changes refused: this copy is not complete at their base
    /// (`held`: the version it is complete at, `None` for a trimmed copy).
    /// Nothing changed; the sender ships the whole block.
    BaseMismatch {
        /// The version this copy is complete at.
        held: Option<Version>,
    },
}

/// A replica offered to [`BlockStore::put_replica`]: the whole block, or
/// the changes since a base.
#[derive(Clone, Debug)]
pub struct ReplicaOffer {
    /// The block.
    pub block: BlockId,
    /// The replica's version.
    pub version: Version,
    /// The block's whole content (empty with `changes`).
    pub data: Bytes,
    /// Instead of the whole block, the bytes written since a version this
    /// copy must be complete at.
    pub changes: Option<OfferChanges>,
    /// Check a copy of the same version and replace it if it is corrupt.
    pub repair: bool,
    /// A replication job to record with the copy (kept if one exists).
    pub job: Option<JobSpec>,
    /// The ownership epoch the copy was written under, as its sender ships
    /// it (`FileFence::shipped_epoch`); `None`: not checked (tools, tests).
    pub epoch: Option<Epoch>,
    /// The sender's `lost_below` for the file: a higher one than this
    /// core's is learned first (see `store::fence`).
    pub lost_below: Option<Epoch>,
}

/// Puts `data` into `batch` as the block's sealed chunks of `chunk_size`
/// bytes, leaving all-zero chunks out (they read back as zeros when
/// absent); the bytes stored.
fn put_sealed_chunks(
    block: BlockId,
    data: &[u8],
    chunk_size: u64,
    batch: &mut WriteBatch,
) -> Result<u64, CoreError> {
    let mut stored = 0u64;
    for (i, piece) in data.chunks(chunk_size as usize).enumerate() {
        if piece.iter().all(|&b| b == 0) {
            continue;
        }
        let mut value = Vec::with_capacity(CRC_LEN + piece.len());
        value.resize(CRC_LEN, 0);
        value.extend_from_slice(piece);
        seal_chunk(&mut value);
        batch.put(chunk_key(block, chunk_no(i as u64)?), &value);
        stored += piece.len() as u64;
    }
    Ok(stored)
}

impl Inner {
    pub(super) fn job(&self, db: &DB, block: BlockId) -> Result<Option<ReplicationJob>, CoreError> {
        match db.get_pinned(job_key(block))? {
            None => Ok(None),
            Some(value) => decode_job(block, &value).map(Some),
        }
    }

    /// Adds the job of a write at `version` to `batch` (replacing the
    /// block's older job, keeping its first enqueue time, adding `written`
    /// to its changes).
    pub(super) fn enqueue(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        block: BlockId,
        version: Version,
        spec: &JobSpec,
        written: Written,
    ) -> Result<(), CoreError> {
        if spec.targets.is_empty() {
            return Ok(());
        }
        let now = unix_time_ms();
        let old = match self.job(db, block) {
            Ok(old) => old,
            // An unreadable old job is simply replaced (shipping the whole block).
            Err(CoreError::Corrupt { .. }) => None,
            Err(err) => return Err(err),
        };
        if let Some(retried) = old.as_ref().filter(|old| old.version == version) {
            // A retry of the write that made the job: it holds its range
            // already (and may have shipped it).
            if (&retried.targets, retried.primary, &retried.peer)
                != (&spec.targets, spec.primary, &spec.peer)
            {
                let mut job = retried.clone();
                job.targets = spec.targets.clone();
                job.primary = spec.primary;
                job.peer = spec.peer.clone();
                batch.put(job_key(block), encode_job(&job));
            }
            return Ok(());
        }
        let mut changes = match (written, &old) {
            (Written::Whole, _) => None,
            (Written::Range { base, .. }, None) => Some(JobChanges::new(base)),
            // The old job's changes go on only if they end where this write
            // starts; anything else (a copy replaced without its job) ships
            // the whole block.
            (Written::Range { base, .. }, Some(old)) if old.version == base => old.changes.clone(),
            (Written::Range { .. }, Some(_)) => None,
        };
        if let (Some(changes), Written::Range { offset, len, .. }) = (&mut changes, written) {
            changes.add(offset, len, version, now);
        }
        let job = ReplicationJob {
            block,
            version,
            targets: spec.targets.clone(),
            primary: spec.primary,
            peer: spec.peer.clone(),
            // A shipped job's writes are on every site: the lag starts now.
            first_enqueued_ms: old
                .filter(|old| !old.shipped)
                .map_or(now, |old| old.first_enqueued_ms.min(now)),
            attempts: 0,
            next_attempt_ms: now,
            length: 0,
            changes,
            shipped: false,
        };
        batch.put(job_key(block), encode_job(&job));
        Ok(())
    }

    /// Adds the removal of the block's job to `batch` if the job's version
    /// is at most `up_to_version`.
    pub(super) fn unqueue(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        block: BlockId,
        up_to_version: Version,
    ) -> Result<(), CoreError> {
        match self.job(db, block) {
            Ok(Some(job)) if job.version > up_to_version => {}
            Ok(None) => {}
            Ok(Some(_)) | Err(CoreError::Corrupt { .. }) => batch.delete(job_key(block)),
            Err(err) => return Err(err),
        }
        Ok(())
    }

    fn pending_blocking(&self, limit: usize) -> Result<Vec<ReplicationJob>, CoreError> {
        let db = self.db()?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(vec![QUEUE_TAG + 1]);
        let mut iter = db.raw_iterator_opt(read_options);
        iter.seek([QUEUE_TAG]);
        let mut jobs = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if jobs.len() >= limit {
                break;
            }
            if let Some(block) = block_of_job_key(key) {
                match decode_job(block, value) {
                    Ok(mut job) => {
                        job.length = self.meta(&db, block)?.map_or(0, |m| m.length);
                        jobs.push(job);
                    }
                    Err(err) => tracing::error!(%err, "skipping an unreadable replication job"),
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok(jobs)
    }

    /// Rewrites or removes the block's job after an attempt at `version`
    /// (see [`JobUpdate`]; a retry is recorded only on the job at exactly
    /// that version).
    fn update_job(
        &self,
        block: BlockId,
        version: Version,
        update: JobUpdate,
    ) -> Result<(), CoreError> {
        let db = self.db()?;
        let Some(mut job) = self.job(&db, block)? else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        let mut sync = false;
        match update {
            JobUpdate::Shipped {
                trim_at_ms: Some(trim_at_ms),
            } if job.version <= version => {
                // Not synced either: lost in a crash, the job only ships again.
                job.version = version;
                job.changes = Some(JobChanges::new(version));
                job.shipped = true;
                job.attempts = 0;
                job.next_attempt_ms = trim_at_ms;
                batch.put(job_key(block), encode_job(&job));
            }
            JobUpdate::Done | JobUpdate::Shipped { .. } if job.version <= version => {
                batch.delete(job_key(block));
                sync = true;
            }
            JobUpdate::Shipped { .. } => {
                // Newer writes came meanwhile: what they changed ships on
                // top of what every target now holds. (Not synced: an old
                // base after a crash only ships the whole block.)
                let Some(changes) = job.changes.as_mut() else {
                    return Ok(());
                };
                changes.shipped(version);
                if let Some(oldest) = changes.oldest_ms() {
                    job.first_enqueued_ms = oldest;
                }
                batch.put(job_key(block), encode_job(&job));
            }
            JobUpdate::Retry {
                attempts,
                next_attempt_ms,
            } if job.version == version => {
                job.attempts = attempts;
                job.next_attempt_ms = next_attempt_ms;
                batch.put(job_key(block), encode_job(&job));
            }
            JobUpdate::Done | JobUpdate::Retry { .. } => return Ok(()),
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        db.write_opt(batch, &options)?;
        Ok(())
    }

    /// What this copy (`old`, `marker`) makes of a replica at `offer`'s
    /// version before anything is written.
    fn check_replica(
        &self,
        db: &DB,
        offer: &ReplicaOffer,
        old: Option<BlockMeta>,
        marker: Option<Marker>,
    ) -> Result<ReplicaCheck, CoreError> {
        let (block, version) = (offer.block, offer.version);
        // Nothing below a marker; a trimmed copy is restored by a replica
        // of its version or newer, a deleted block at its version is held.
        match marker {
            Some(m) if m.version() > version => {
                return Ok(ReplicaCheck::Answer(PutOutcome::SkippedStale {
                    stored: m.version(),
                }))
            }
            Some(Marker::Deleted(deleted)) if deleted == version => {
                return Ok(ReplicaCheck::Answer(PutOutcome::AlreadyHeld))
            }
            _ => {}
        }
        if let Some(old) = old {
            if old.version > version {
                return Ok(ReplicaCheck::Answer(PutOutcome::SkippedStale {
                    stored: old.version,
                }));
            }
            if old.version == version {
                if !offer.repair || self.chunks_intact(db, block)? {
                    self.record_missing_job(db, offer)?;
                    return Ok(ReplicaCheck::Answer(PutOutcome::AlreadyHeld));
                }
                return Ok(ReplicaCheck::Apply { repairing: true });
            }
        }
        Ok(ReplicaCheck::Apply { repairing: false })
    }

    fn put_replica_blocking(&self, offer: &ReplicaOffer) -> Result<PutOutcome, CoreError> {
        let (block, version, data) = (offer.block, offer.version, &offer.data[..]);
        let db = self.db()?;
        let old = self.meta(&db, block)?;
        if let Some(lost_below) = self.superseded(offer, old)? {
            return Ok(PutOutcome::Superseded { lost_below });
        }
        let marker = self.marker(&db, block)?;
        let repairing = match self.check_replica(&db, offer, old, marker)? {
            ReplicaCheck::Apply { repairing } => repairing,
            ReplicaCheck::Answer(outcome) => return Ok(outcome),
        };
        let old_meta = old.unwrap_or_default();
        let mut batch = WriteBatch::default();
        let (stored, length) = match &offer.changes {
            None => {
                // Every old chunk goes: the replica replaces the block atomically.
                delete_chunks(&db, block, &mut batch)?;
                let stored = put_sealed_chunks(block, data, self.chunk_size, &mut batch)?;
                (stored, data.len() as u64)
            }
            Some(changes) => {
                match self.put_offered_changes(&db, block, changes, old, marker, &mut batch)? {
                    Some(added) => (old_meta.stored + added, changes.length),
                    None => {
                        let held = complete_at(old.map(|m| m.version), marker);
                        return Ok(PutOutcome::BaseMismatch { held });
                    }
                }
            }
        };
        if marker.is_some() {
            batch.delete(marker_key(block));
        }
        let meta = BlockMeta {
            version,
            length,
            stored,
            epoch: offer.epoch,
        };
        batch.put(meta_key(block), meta.encode());
        // The copy is replaced, so is a job of an older version (this core
        // cannot ship that version any more, and the newer one has its own
        // replication): by the offered job, else removed. Left in place, a
        // secondary's job would wait forever for a trim of its version.
        match &offer.job {
            Some(spec) => self.enqueue(&db, &mut batch, block, version, spec, Written::Whole)?,
            None => self.unqueue(&db, &mut batch, block, version.prev())?,
        }
        let grow = stored.saturating_sub(old_meta.stored);
        self.check_disk(stored)?;
        self.reserve(grow)?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        if let Err(err) = db.write_opt(batch, &options) {
            self.release(grow);
            return Err(err.into());
        }
        self.release(old_meta.stored.saturating_sub(stored));
        if old.is_none() {
            self.blocks.fetch_add(1, Ordering::SeqCst);
        }
        self.durable_writes.fetch_add(1, Ordering::SeqCst);
        self.held().remove(&block);
        if offer.job.is_some() {
            self.enqueued.notify_one();
        }
        if repairing {
            self.metrics.repairs.inc();
            tracing::warn!(
                %block,
                %version,
                "corrupt copy replaced by a good replica"
            );
            return Ok(PutOutcome::Repaired);
        }
        Ok(PutOutcome::Applied)
    }

    /// The epoch of the takeover from a lost owner that `offer` is from
    /// before, if any (`old`: this core's copy): such a copy was never
    /// seen by the takeover and is refused, unless this core already holds
    /// that very version. Epoch-carrying offers wait for the fences to be
    /// current.
    fn superseded(
        &self,
        offer: &ReplicaOffer,
        old: Option<BlockMeta>,
    ) -> Result<Option<Epoch>, CoreError> {
        let Some(epoch) = offer.epoch else {
            return Ok(None);
        };
        if !self.fences_synced.load(Ordering::Acquire) {
            return Err(CoreError::FencesUnsynced);
        }
        let held = old.is_some_and(|m| m.version == offer.version);
        let superseded_by = self
            .file_fence(offer.block.file_id)
            .lost_below
            .filter(|&lost_below| epoch < lost_below && !held);
        if let Some(lost_below) = superseded_by {
            tracing::info!(
                block = %offer.block,
                version = %offer.version,
                %epoch,
                %lost_below,
                "replica from before a takeover from a lost owner refused"
            );
        }
        Ok(superseded_by)
    }

    /// Records the offer's job when the block (already held at the offered
    /// version) has none, durably.
    fn record_missing_job(&self, db: &DB, offer: &ReplicaOffer) -> Result<(), CoreError> {
        let Some(spec) = &offer.job else {
            return Ok(());
        };
        if self.job(db, offer.block)?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.enqueue(
            db,
            &mut batch,
            offer.block,
            offer.version,
            spec,
            Written::Whole,
        )?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)?;
        self.enqueued.notify_one();
        Ok(())
    }

    /// Rewrites the role and peer of the block's job if it is still the one
    /// at `version` (a secondary taking over, a restored partner).
    fn retarget_job(
        &self,
        block: BlockId,
        version: Version,
        primary: bool,
        peer: &str,
    ) -> Result<bool, CoreError> {
        let db = self.db()?;
        let Some(mut job) = self.job(&db, block)? else {
            return Ok(false);
        };
        if job.version != version {
            return Ok(false);
        }
        job.primary = primary;
        job.peer = peer.to_string();
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.put_opt(job_key(block), encode_job(&job), &options)?;
        Ok(true)
    }
}

impl BlockStore {
    /// Up to `limit` pending replication jobs, in block order, each with
    /// the block's current length.
    pub async fn pending_jobs(&self, limit: usize) -> Result<Vec<ReplicationJob>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.pending_blocking(limit)).await?
    }

    /// The block's pending replication job, if any.
    pub async fn job(&self, block: BlockId) -> Result<Option<ReplicationJob>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            inner.job(&db, block)
        })
        .await?
    }

    /// Removes the block's job if its version is at most `version`
    /// (durably).
    pub async fn job_done(&self, block: BlockId, version: Version) -> Result<(), CoreError> {
        self.update_job(block, version, JobUpdate::Done).await
    }

    /// Every target holds `version`: a job that is not newer is removed
    /// (`trim_at_ms` `None`) or kept as shipped, its peer's trim due at
    /// `trim_at_ms`; a newer job's changes are rebased on `version`.
    pub async fn job_shipped(
        &self,
        block: BlockId,
        version: Version,
        trim_at_ms: Option<u64>,
    ) -> Result<(), CoreError> {
        self.update_job(block, version, JobUpdate::Shipped { trim_at_ms })
            .await
    }

    /// Records a failed attempt of the job at `version` (nothing if the job
    /// was replaced meanwhile).
    pub async fn reschedule_job(
        &self,
        block: BlockId,
        version: Version,
        attempts: u32,
        next_attempt_ms: u64,
    ) -> Result<(), CoreError> {
        self.update_job(
            block,
            version,
            JobUpdate::Retry {
                attempts,
                next_attempt_ms,
            },
        )
        .await
    }

    async fn update_job(
        &self,
        block: BlockId,
        version: Version,
        update: JobUpdate,
    ) -> Result<(), CoreError> {
        let guard = self.inner.lock_for(block).lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            inner.update_job(block, version, update)
        })
        .await?
    }

    /// Applies a whole-block replica durably: the block's chunks (and the
    /// offered job, if any) are replaced atomically if the stored version
    /// is older, or equal but corrupt for a repair offer; otherwise nothing
    /// changes (never newer by older, docs/ARCHITECTURE.md#invariant-8).
    pub async fn put_replica(&self, offer: ReplicaOffer) -> Result<PutOutcome, CoreError> {
        let learned = offer.lost_below.filter(|&lost_below| {
            offer.epoch.is_some()
                && Some(lost_below) > self.file_fence(offer.block.file_id).lost_below
        });
        if let Some(lost_below) = learned {
            self.raise_fence(offer.block.file_id, FenceRaise::learned(lost_below))
                .await?;
        }
        let guard = self.inner.lock_for(offer.block).lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            inner.put_replica_blocking(&offer)
        })
        .await?
    }

    /// Changes the role and peer of the block's job at `version` (durably);
    /// false if the job is gone or was replaced by a newer write.
    pub async fn retarget_job(
        &self,
        block: BlockId,
        version: Version,
        primary: bool,
        peer: String,
    ) -> Result<bool, CoreError> {
        let guard = self.inner.lock_for(block).lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            inner.retarget_job(block, version, primary, &peer)
        })
        .await?
    }

    /// The notification the store sends whenever a job is enqueued.
    pub fn enqueued(&self) -> Arc<tokio::sync::Notify> {
        self.inner.enqueued.clone()
    }
}
