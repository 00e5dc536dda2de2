//! The quarantine: copies set aside because a takeover from a lost owner never
//! saw them (why and when in [`crate::store::fence`]).
//!
//! A copy set aside leaves the store's blocks (its chunks, metadata and
//! replication job go, in one synced batch with the quarantine record), so
//! it is never read, listed, shipped or repaired from again, and the
//! block's geo copy is restored here from the new owner's data by the
//! replicator's scan. Its bytes are kept under key
//! `x | file_id BE | index BE | version BE`, value
//! `epoch | set_aside_ms | length (u64 BE each) | crc32c (u32 BE) | data`,
//! until an operator reads them back (`geonfs quarantine get`) and drops
//! them (`geonfs quarantine drop`). They do not count against the store's
//! capacity (`geonfs_core_quarantined_bytes` shows them).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use geonfs_proto::domain::{BlockId, BlockRange, BlockRead, Epoch, FileId, Version};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions, DB};

use super::{delete_chunks, BlockStore, Inner};
use crate::codec::meta_key;
use crate::CoreError;
use geonfs_proto::domain::unix_time_ms;

/// Key prefix of quarantine records.
const QUARANTINE_TAG: u8 = b'x';
/// Bytes of a quarantine record's header.
const HEADER_LEN: usize = 28;

/// One copy in the quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantinedCopy {
    /// The block.
    pub block: BlockId,
    /// The copy's version.
    pub version: Version,
    /// The ownership epoch the copy was written under.
    pub epoch: Option<Epoch>,
    /// When it was set aside (ms since the Unix epoch).
    pub set_aside_ms: u64,
    /// The block's length in that copy.
    pub length: u64,
}

fn record_key(block: BlockId, version: Version) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = QUARANTINE_TAG;
    key[1..9].copy_from_slice(&block.file_id.0.to_be_bytes());
    key[9..17].copy_from_slice(&block.index.to_be_bytes());
    key[17..25].copy_from_slice(&version.0.to_be_bytes());
    key
}

fn word(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The copy a record describes, and its data if the checksum matches.
fn decode_record(key: &[u8], value: &[u8]) -> Option<(QuarantinedCopy, Option<Bytes>)> {
    if key.len() != 25 || key[0] != QUARANTINE_TAG || value.len() < HEADER_LEN {
        return None;
    }
    let copy = QuarantinedCopy {
        block: BlockId {
            file_id: FileId(word(key, 1)?),
            index: word(key, 9)?,
        },
        version: Version(word(key, 17)?),
        epoch: Epoch::from_wire(word(value, 0)?),
        set_aside_ms: word(value, 8)?,
        length: word(value, 16)?,
    };
    let crc = u32::from_be_bytes(value.get(24..28)?.try_into().ok()?);
    let data = &value[HEADER_LEN..];
    let data = (crc32c::crc32c(data) == crc).then(|| Bytes::copy_from_slice(data));
    Some((copy, data))
}

/// The number and bytes of the quarantine records in `db`.
pub(super) fn scan_quarantine(db: &DB) -> Result<(u64, u64), CoreError> {
    let mut read_options = ReadOptions::default();
    read_options.set_iterate_upper_bound(vec![QUARANTINE_TAG + 1]);
    let mut iter = db.raw_iterator_opt(read_options);
    iter.seek([QUARANTINE_TAG]);
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(value) = iter.value() {
        count += 1;
        bytes += value.len().saturating_sub(HEADER_LEN) as u64;
        iter.next();
    }
    iter.status()?;
    Ok((count, bytes))
}

impl Inner {
    /// Sets aside one block's copy if it is older than `lost_below` and
    /// still has a pending replication job; the caller holds the block's
    /// lock. Returns whether it did.
    fn set_aside_block(
        &self,
        db: &DB,
        block: BlockId,
        lost_below: Epoch,
    ) -> Result<bool, CoreError> {
        // Only a copy never copied out: with a job that has not shipped.
        if self.job(db, block)?.is_none_or(|job| job.shipped) {
            return Ok(false);
        }
        let Some(meta) = self.meta(db, block)? else {
            return Ok(false);
        };
        if meta.epoch >= Some(lost_below) {
            return Ok(false);
        }
        let read = BlockRead {
            block,
            range: BlockRange {
                offset: 0,
                len: meta.length,
            },
            owner_epoch: None,
        };
        let mut batch = WriteBatch::default();
        let kept = match self.read_blocking(&read).map(|copy| copy.found) {
            Ok(Some(found)) => {
                let mut value = Vec::with_capacity(HEADER_LEN + found.data.len());
                value.extend_from_slice(&Epoch::to_wire(meta.epoch).to_be_bytes());
                value.extend_from_slice(&unix_time_ms().to_be_bytes());
                value.extend_from_slice(&found.length.to_be_bytes());
                value.extend_from_slice(&crc32c::crc32c(&found.data).to_be_bytes());
                value.extend_from_slice(&found.data);
                batch.put(record_key(block, found.version), &value);
                Some(found.data.len() as u64)
            }
            Ok(None) => return Ok(false),
            // A damaged copy of a write nobody else saw cannot be kept;
            // it goes all the same (it must not be shipped).
            Err(err) => {
                tracing::error!(%block, %err,
                    "a copy to set aside is unreadable; dropped");
                None
            }
        };
        delete_chunks(db, block, &mut batch)?;
        batch.delete(meta_key(block));
        self.unqueue(db, &mut batch, block, Version::MAX)?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)?;
        self.release(meta.stored);
        self.blocks.fetch_sub(1, Ordering::SeqCst);
        self.held().remove(&block);
        self.metrics.set_aside.inc();
        if let Some(bytes) = kept {
            self.metrics.quarantined_blocks.inc();
            self.metrics
                .quarantined_bytes
                .add(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        tracing::warn!(
            %block,
            version = %meta.version,
            epoch = ?meta.epoch,
            %lost_below,
            "copy set aside: written under an owner declared lost, never copied out"
        );
        Ok(true)
    }

    /// The blocks of `file_id` with a replication job (`set_aside_block`
    /// passes over shipped ones: their copy is on every site).
    fn jobs_of_file(&self, db: &DB, file_id: FileId) -> Result<Vec<BlockId>, CoreError> {
        let lower = super::job::job_key(BlockId { file_id, index: 0 });
        let upper = super::job::job_key(BlockId {
            file_id: FileId(file_id.0.saturating_add(1)),
            index: 0,
        });
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(upper.to_vec());
        let mut iter = db.raw_iterator_opt(read_options);
        iter.seek(lower);
        let mut blocks = Vec::new();
        while let Some(key) = iter.key() {
            blocks.extend(super::job::block_of_job_key(key).filter(|b| b.file_id == file_id));
            iter.next();
        }
        iter.status()?;
        Ok(blocks)
    }

    fn list_quarantine_blocking(
        &self,
        after: Option<(BlockId, Version)>,
        limit: usize,
    ) -> Result<(Vec<QuarantinedCopy>, bool), CoreError> {
        let db = self.db()?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(vec![QUARANTINE_TAG + 1]);
        let mut iter = db.raw_iterator_opt(read_options);
        match after {
            Some((block, version)) => {
                let key = record_key(block, version);
                iter.seek(key);
                if iter.key() == Some(&key[..]) {
                    iter.next();
                }
            }
            None => iter.seek([QUARANTINE_TAG]),
        }
        let mut copies = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if copies.len() >= limit {
                return Ok((copies, true));
            }
            let (copy, _) = decode_record(key, value).ok_or_else(|| CoreError::Corrupt {
                what: "quarantine record".into(),
                detail: format!("key {key:?} with a value of {} bytes", value.len()),
            })?;
            copies.push(copy);
            iter.next();
        }
        iter.status()?;
        Ok((copies, false))
    }
}

impl BlockStore {
    /// Sets aside every copy of `file_id` older than `lost_below` that has
    /// a pending replication job, then records the rest as adopted (see
    /// [`crate::store::fence`]). Returns how many were set aside.
    pub(super) async fn set_aside_old_copies(
        &self,
        file_id: FileId,
        lost_below: Epoch,
    ) -> Result<usize, CoreError> {
        let inner = self.inner.clone();
        let blocks = tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            inner.jobs_of_file(&db, file_id)
        })
        .await??;
        let mut set_aside = 0;
        for block in blocks {
            let guard = self.inner.lock_for(block).lock_owned().await;
            let inner = self.inner.clone();
            let done = tokio::task::spawn_blocking(move || {
                let _guard = guard;
                let db = inner.db()?;
                inner.set_aside_block(&db, block, lost_below)
            })
            .await??;
            set_aside += usize::from(done);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.settle_fence(file_id, lost_below)).await??;
        if set_aside > 0 {
            tracing::warn!(
                %file_id,
                %lost_below,
                set_aside,
                "copies set aside into the quarantine"
            );
        }
        Ok(set_aside)
    }

    /// Finishes the set-asides a crash cut short (called once at start,
    /// before the store serves requests carrying an epoch).
    pub async fn resume_set_asides(&self) -> Result<(), CoreError> {
        for (file_id, lost_below) in self.inner.unsettled_files() {
            self.set_aside_old_copies(file_id, lost_below).await?;
        }
        Ok(())
    }

    /// Up to `limit` quarantined copies after `after` (block, version), in
    /// block order, and whether more follow.
    pub async fn list_quarantine(
        &self,
        after: Option<(BlockId, Version)>,
        limit: usize,
    ) -> Result<(Vec<QuarantinedCopy>, bool), CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.list_quarantine_blocking(after, limit)).await?
    }

    /// A quarantined copy and its data; `None` if there is no such copy.
    pub async fn read_quarantined(
        &self,
        block: BlockId,
        version: Version,
    ) -> Result<Option<(QuarantinedCopy, Bytes)>, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            let key = record_key(block, version);
            let Some(value) = db.get_pinned(key)? else {
                return Ok(None);
            };
            match decode_record(&key, &value) {
                Some((copy, Some(data))) => Ok(Some((copy, data))),
                _ => Err(CoreError::Corrupt {
                    what: format!("quarantined copy {block} at version {version}"),
                    detail: "its checksum does not match".into(),
                }),
            }
        })
        .await?
    }

    /// Deletes a quarantined copy (durably); false if there was none.
    pub async fn drop_quarantined(
        &self,
        block: BlockId,
        version: Version,
    ) -> Result<bool, CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let db = inner.db()?;
            let key = record_key(block, version);
            let Some(value) = db.get(key)? else {
                return Ok(false);
            };
            let mut options = WriteOptions::default();
            options.set_sync(true);
            db.delete_opt(key, &options)?;
            inner.metrics.quarantined_blocks.dec();
            inner
                .metrics
                .quarantined_bytes
                .sub(i64::try_from(value.len().saturating_sub(HEADER_LEN)).unwrap_or(i64::MAX));
            tracing::info!(
                %block,
                %version,
                "quarantined copy dropped"
            );
            Ok(true)
        })
        .await?
    }
}
