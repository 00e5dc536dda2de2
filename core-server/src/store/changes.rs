//! Replication of what changed (see `geonfs_block_manager::replicator::changes`):
//! the primary reads its job's changed ranges with the copy in one
//! snapshot, and a receiver applies offered changes only on a copy complete
//! at their base, in the same batch as the new version.

use bytes::Bytes;
use geonfs_block_manager::replicator::{ChangedPiece, CopyChanges};
use geonfs_proto::domain::{BlockId, Version};
use rocksdb::WriteBatch;

use super::copy_state::{complete_at, Marker};
use super::job::{decode_job, job_key};
use super::{decode_meta, BlockStore, Inner};
use crate::codec::{meta_key, BlockMeta};
use crate::CoreError;

/// The changes a replica put carries instead of the whole block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferChanges {
    /// The version the receiving copy must be complete at.
    pub base: Version,
    /// The block's length at the offered version.
    pub length: u64,
    /// Every byte written after `base`, by offset.
    pub pieces: Vec<(u64, Bytes)>,
}

impl Inner {
    fn read_changes_blocking(&self, block: BlockId) -> Result<Option<CopyChanges>, CoreError> {
        let db = self.db()?;
        let snapshot = db.snapshot();
        let Some(meta) = snapshot.get_pinned(meta_key(block))? else {
            return Ok(None);
        };
        let meta = decode_meta(block, &meta)?;
        let Some(job) = snapshot.get_pinned(job_key(block))? else {
            return Ok(None);
        };
        let job = decode_job(block, &job)?;
        // Changes describe the copy only when the job is at its version.
        let Some(changes) = job.changes.filter(|_| job.version == meta.version) else {
            return Ok(None);
        };
        let mut pieces = Vec::with_capacity(changes.ranges.len());
        for range in &changes.ranges {
            let end = range.end().min(meta.length);
            if range.offset < end {
                let bytes = self.copy_bytes(&snapshot, block, range.offset, end - range.offset)?;
                pieces.push(ChangedPiece {
                    offset: range.offset,
                    version: range.version,
                    data: Bytes::from(bytes),
                });
            }
        }
        let fence = self.file_fence(block.file_id);
        Ok(Some(CopyChanges {
            version: meta.version,
            base: changes.base,
            length: meta.length,
            pieces,
            epoch: fence.shipped_epoch(meta.epoch),
            lost_below: fence.lost_below,
        }))
    }

    /// Puts offered `changes` into `batch` when this copy (`old`, `marker`)
    /// is complete at their base: the bytes its stored size grows by;
    /// `None` (nothing put) on a base mismatch, or when a chunk they touch
    /// fails its checksum (the sender then ships the whole block, which
    /// replaces the damaged copy).
    pub(super) fn put_offered_changes(
        &self,
        db: &rocksdb::DB,
        block: BlockId,
        changes: &OfferChanges,
        old: Option<BlockMeta>,
        marker: Option<Marker>,
        batch: &mut WriteBatch,
    ) -> Result<Option<u64>, CoreError> {
        let complete = complete_at(old.map(|m| m.version), marker);
        if complete != Some(changes.base) || old.is_some_and(|m| m.length > changes.length) {
            return Ok(None);
        }
        let pieces: Vec<(u64, &[u8])> = changes
            .pieces
            .iter()
            .map(|(offset, data)| (*offset, &data[..]))
            .collect();
        match self.put_chunks(db, block, &pieces, false, batch) {
            Ok(put) => Ok(Some(put.added)),
            Err(CoreError::CorruptChunk { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl BlockStore {
    /// The block's pending job's changes with their bytes, read with the
    /// copy in one snapshot; `None` when the whole block must ship (no
    /// copy, no job, a job without changes or not at the copy's version).
    pub async fn read_changes(&self, block: BlockId) -> Result<Option<CopyChanges>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read_changes_blocking(block)).await?
    }
}
