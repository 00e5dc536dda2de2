//! Deletes: one block (truncate of a tail, the geo-replication trim) and
//! deleted ranges (truncate, remove).
//!
//! # Deleted ranges
//!
//! A truncate or remove deletes every block of a file from one index on,
//! up to the version of the change. Sent index by index, that costs one
//! call per block index of the old size to every core of every site,
//! whether the block exists or not: a sparse 1 TiB disk image is 262 144
//! indexes, and a size of 2^63 (a SETATTR any client may send) never ends.
//! A **deleted range** is one call per core, whatever the size, and its
//! work is the blocks the core actually holds.
//!
//! A core keeps a file's deleted ranges under key `r | file_id` (a list of
//! [`DeletedRange`]). For a block index inside a range, the range acts as
//! a deleted marker at its version ([`super::copy_state`]): nothing at or
//! below it is written (a late write, an older replica, a seed), reads
//! report the block deleted (so it wins over an older copy at another
//! site), and listings report the range (so a handover never copies an
//! older copy back). A range that a newer, wider one includes is dropped
//! when that one is recorded.
//!
//! A range delete first deletes the blocks the core holds in the range one
//! by one, each as a plain delete (each under its block lock; not synced),
//! then takes every block lock — so that no write is between its check and
//! its batch — deletes any block written into the range meanwhile and
//! records the range, in one synced batch (which makes the earlier deletes
//! durable too). Once the range is recorded no copy in it is at or below
//! its version. A crash in between leaves the blocks already deleted with
//! their per-block deleted markers and no answer to the caller, who
//! retries.

use std::sync::atomic::Ordering;

use geonfs_proto::domain::{BlockId, DeletedRange, Epoch, FileId, Version};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions, DB};

use super::{delete_chunks, BlockStore, DeleteOutcome, Inner, Marker};
use crate::codec::{
    block_of_meta_key, decode_ranges, encode_ranges, marker_key, meta_key, ranges_key, BlockMeta,
};
use crate::CoreError;

/// Blocks listed at a time by the first pass of a range delete.
const RANGE_PAGE: usize = 1024;

impl BlockStore {
    /// Deletes a block if its stored version is at most `up_to_version`.
    /// The delete is durable when this returns. Unchecked against fences
    /// ([`BlockStore::delete_as`] without an epoch).
    pub async fn delete(
        &self,
        block: BlockId,
        up_to_version: Version,
    ) -> Result<DeleteOutcome, CoreError> {
        self.delete_as(block, up_to_version, None).await
    }

    /// [`BlockStore::delete`] by a caller at ownership epoch `owner_epoch`
    /// of the block's file: refused with [`CoreError::Fenced`] when it is
    /// older than the file's fence (`None`: not checked).
    pub async fn delete_as(
        &self,
        block: BlockId,
        up_to_version: Version,
        owner_epoch: Option<Epoch>,
    ) -> Result<DeleteOutcome, CoreError> {
        self.inner.metrics.deletes.inc();
        self.remove(block, up_to_version, owner_epoch, false, true)
            .await
    }

    /// The geo-replication trim of this copy: deletes it if its stored
    /// version is at most `up_to_version`, leaving a trim marker of that
    /// version ([`super::copy_state`]). Durable when this returns.
    pub async fn trim(
        &self,
        block: BlockId,
        up_to_version: Version,
    ) -> Result<DeleteOutcome, CoreError> {
        self.remove(block, up_to_version, None, true, true).await
    }

    /// Deletes blocks `from..until` of `file_id` up to `up_to_version` and
    /// records the range (see the module documentation): blocks stored
    /// here are removed unless newer, and no copy at or below the version
    /// is ever written into the range afterwards. Durable when this
    /// returns; returns how many stored blocks it removed. Checked against
    /// the file's fence like [`BlockStore::delete_as`].
    pub async fn delete_range_as(
        &self,
        file_id: FileId,
        from: u64,
        until: u64,
        up_to_version: Version,
        owner_epoch: Option<Epoch>,
    ) -> Result<u64, CoreError> {
        if from >= until {
            return Err(CoreError::InvalidArgument(format!(
                "empty block range {from}..{until}"
            )));
        }
        self.inner.metrics.deletes.inc();
        let mut deleted = 0;
        let mut start = from;
        loop {
            let inner = self.inner.clone();
            let (indexes, more) = tokio::task::spawn_blocking(move || {
                inner.stored_in_range(file_id, start, until, RANGE_PAGE)
            })
            .await??;
            for &index in &indexes {
                let block = BlockId { file_id, index };
                let outcome = self
                    .remove(block, up_to_version, owner_epoch, false, false)
                    .await?;
                deleted += u64::from(outcome == DeleteOutcome::Deleted);
            }
            match indexes.last() {
                Some(&last) if more => start = last + 1,
                _ => break,
            }
        }
        let mut guards = Vec::with_capacity(self.inner.locks.len());
        for lock in &self.inner.locks {
            guards.push(lock.clone().lock_owned().await);
        }
        let inner = self.inner.clone();
        let range = DeletedRange {
            from,
            until,
            version: up_to_version,
        };
        let late = tokio::task::spawn_blocking(move || {
            let _guards = guards;
            // Held across the check and the batch: a fence waits for it.
            let _fence = inner.admit(file_id, owner_epoch)?;
            inner.record_range_blocking(file_id, range)
        })
        .await??;
        Ok(deleted + late)
    }

    /// The deleted ranges this core keeps for `file_id` (see the module
    /// documentation), in order of their first index.
    pub async fn deleted_ranges(&self, file_id: FileId) -> Result<Vec<DeletedRange>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            ranges_of(&db, file_id)
        })
        .await?
    }

    async fn remove(
        &self,
        block: BlockId,
        up_to_version: Version,
        owner_epoch: Option<Epoch>,
        trim: bool,
        sync: bool,
    ) -> Result<DeleteOutcome, CoreError> {
        let guard = self.inner.lock_for(block).lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // Held across the check and the batch: a fence waits for it.
            let _fence = inner.admit(block.file_id, owner_epoch)?;
            inner.delete_blocking(block, up_to_version, trim, sync)
        })
        .await?
    }
}

/// The deleted ranges of `file_id` in the value of its ranges key.
fn ranges_in(file_id: FileId, value: Option<&[u8]>) -> Result<Vec<DeletedRange>, CoreError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    decode_ranges(value).ok_or_else(|| CoreError::Corrupt {
        what: format!("deleted ranges of file {file_id}"),
        detail: format!("{} bytes do not decode", value.len()),
    })
}

/// The deleted ranges of `file_id` in `db`.
fn ranges_of(db: &DB, file_id: FileId) -> Result<Vec<DeletedRange>, CoreError> {
    let value = db.get_pinned(ranges_key(file_id))?;
    ranges_in(file_id, value.as_deref())
}

/// The version up to which `block` is deleted by the ranges in `value`
/// (its file's ranges key), if a range covers it.
pub(super) fn range_cover(
    block: BlockId,
    value: Option<&[u8]>,
) -> Result<Option<Version>, CoreError> {
    Ok(ranges_in(block.file_id, value)?
        .iter()
        .filter(|range| range.covers(block.index))
        .map(|range| range.version)
        .max())
}

/// The marker that counts for a block: its own, or the deleted range
/// covering it (`deleted_to`) when that is at least as new.
pub(super) fn strongest(own: Option<Marker>, deleted_to: Option<Version>) -> Option<Marker> {
    match (own, deleted_to) {
        (own, None) => own,
        (Some(own), Some(deleted)) if own.version() > deleted => Some(own),
        (_, Some(deleted)) => Some(Marker::Deleted(deleted)),
    }
}

/// What deleting one block puts into a batch.
enum Planned {
    /// Nothing: the outcome already.
    Skip(DeleteOutcome),
    /// The block's marker is set and its copy (if any: its metadata) removed.
    Remove(Option<BlockMeta>),
}

impl Inner {
    /// Deletes the block up to `up_to_version`. A `trim` removes this
    /// core's copy and leaves a trimmed marker of its version; a plain
    /// delete (truncate, remove) leaves a deleted marker at
    /// `up_to_version`, data or not, so nothing older comes back. Nothing
    /// changes when the block's data or marker is newer. Durable when
    /// `sync` (else at the next synced write or flush).
    fn delete_blocking(
        &self,
        block: BlockId,
        up_to_version: Version,
        trim: bool,
        sync: bool,
    ) -> Result<DeleteOutcome, CoreError> {
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        let meta = match self.plan_delete(&db, &mut batch, block, up_to_version, trim)? {
            Planned::Skip(outcome) => return Ok(outcome),
            Planned::Remove(meta) => meta,
        };
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        db.write_opt(batch, &options)?;
        Ok(self.removed(block, meta))
    }

    /// Adds the delete of `block` (see [`Inner::delete_blocking`]) to
    /// `batch`.
    fn plan_delete(
        &self,
        db: &DB,
        batch: &mut WriteBatch,
        block: BlockId,
        up_to_version: Version,
        trim: bool,
    ) -> Result<Planned, CoreError> {
        let meta = self.meta(db, block)?;
        let marker = self.marker(db, block)?;
        let newest = meta
            .map_or(Version::ZERO, |m| m.version)
            .max(marker.map_or(Version::ZERO, Marker::version));
        if newest > up_to_version {
            return Ok(Planned::Skip(DeleteOutcome::Newer { stored: newest }));
        }
        let marker = match (trim, meta) {
            (true, Some(meta)) => Marker::Trimmed(meta.version),
            (true, None) => return Ok(Planned::Skip(DeleteOutcome::Absent)),
            (false, _) => Marker::Deleted(up_to_version),
        };
        batch.put(marker_key(block), marker.encode());
        if meta.is_some() {
            delete_chunks(db, block, batch)?;
            batch.delete(meta_key(block));
        }
        // The copy's replication job goes with it (a trimmed secondary's
        // fallback job), unless it covers a newer version.
        self.unqueue(db, batch, block, up_to_version)?;
        Ok(Planned::Remove(meta))
    }

    /// Accounts for a written delete of `block` whose copy had `meta`.
    fn removed(&self, block: BlockId, meta: Option<BlockMeta>) -> DeleteOutcome {
        let Some(meta) = meta else {
            return DeleteOutcome::Absent;
        };
        self.release(meta.stored);
        self.blocks.fetch_sub(1, Ordering::SeqCst);
        self.held().remove(&block);
        self.metrics.deleted_blocks.inc();
        DeleteOutcome::Deleted
    }

    /// Up to `limit` indexes of blocks of `file_id` stored here in
    /// `from..until`, in order, and whether more may follow.
    fn stored_in_range(
        &self,
        file_id: FileId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), CoreError> {
        let db = self.db()?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(meta_key(BlockId {
            file_id,
            index: until,
        }));
        let mut iter = db.raw_iterator_opt(read_options);
        iter.seek(meta_key(BlockId {
            file_id,
            index: from,
        }));
        let mut indexes = Vec::new();
        while let Some(key) = iter.key() {
            if indexes.len() >= limit {
                return Ok((indexes, true));
            }
            let block = block_of_meta_key(key).ok_or_else(|| CoreError::Corrupt {
                what: "block metadata key".into(),
                detail: format!("{key:?} is not a metadata key"),
            })?;
            indexes.push(block.index);
            iter.next();
        }
        iter.status()?;
        Ok((indexes, false))
    }

    /// The second pass of a range delete, with every block lock held:
    /// deletes the blocks written into `range` since the first pass and
    /// records the range, in one synced batch; returns how many blocks it
    /// removed.
    fn record_range_blocking(
        &self,
        file_id: FileId,
        range: DeletedRange,
    ) -> Result<u64, CoreError> {
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        let mut planned = Vec::new();
        let (mut start, mut more) = (range.from, true);
        while more {
            let (indexes, next) = self.stored_in_range(file_id, start, range.until, RANGE_PAGE)?;
            for &index in &indexes {
                let block = BlockId { file_id, index };
                if let Planned::Remove(meta) =
                    self.plan_delete(&db, &mut batch, block, range.version, false)?
                {
                    planned.push((block, meta));
                }
            }
            more = next;
            start = indexes.last().map_or(range.until, |last| last + 1);
        }
        let mut ranges = ranges_of(&db, file_id)?;
        if !ranges.iter().any(|kept| kept.includes(&range)) {
            ranges.retain(|kept| !range.includes(kept));
            ranges.push(range);
            ranges.sort_by_key(|kept| (kept.from, kept.until, kept.version));
            batch.put(ranges_key(file_id), encode_ranges(&ranges));
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)?;
        let removed = planned
            .into_iter()
            .filter(|&(block, meta)| self.removed(block, meta) == DeleteOutcome::Deleted)
            .count();
        Ok(removed as u64)
    }
}
