//! Changing a file's length: SETATTR(size) and the release of a removed
//! file's blocks.
//!
//! Both delete a **range** of block indexes (everything from the first
//! block past the new size, or the whole file), one call per core however
//! large the size was and however few blocks exist (the core server's
//! `store/delete.rs`): a SETATTR to 2^63 bytes followed by a REMOVE costs
//! what a small file does. Deletes reach this site's cores (they must
//! succeed: a copy left there would come back) and the other sites' cores
//! as well, best effort (logged): their copies of the deleted blocks are
//! replicas or catch-up sources, and a copy that survives there is older
//! than the range this site's cores keep, so it is never read back (a read
//! or a handover takes the range as the newer state).

use bytes::Bytes;
use geonfs_block_manager::BlockError;
use geonfs_proto::domain::{BlockId, DeletedRange, Durability, Epoch, FileId};
use std::time::SystemTime;

use super::{attr_block, DataError, FileData, FileState, ATTR_INDEX};

impl FileData {
    /// Sets the file's size (SETATTR size), durably: truncating deletes
    /// the blocks wholly past `new_size` and zeroes the rest of the last
    /// partial block; extending writes no data (the new range reads as
    /// zeros). Then the attribute record is written. `old_size` is the size
    /// the caller knows; the larger of it and this process's is used. This
    /// is a write: this access server becomes the file's writer first.
    pub async fn set_size(
        &self,
        file_id: FileId,
        old_size: u64,
        new_size: u64,
    ) -> Result<(), DataError> {
        self.check_range(file_id, new_size, 0)?;
        let mut fenced_at = None;
        let mut attempts = 0;
        loop {
            let epoch = self.write_epoch(file_id, fenced_at).await?;
            match self.set_size_at(file_id, old_size, new_size, epoch).await {
                Err(err) if err.is_fenced() && attempts < super::FENCED_ATTEMPTS => {
                    attempts += 1;
                    fenced_at = Some(epoch);
                    self.ownership_lost(file_id);
                }
                other => return other,
            }
        }
    }

    async fn set_size_at(
        &self,
        file_id: FileId,
        old_size: u64,
        new_size: u64,
        epoch: Epoch,
    ) -> Result<(), DataError> {
        self.ensure(file_id, epoch).await?;
        let bs = self.inner.block_size;
        let tail_block = BlockId {
            file_id,
            index: new_size / bs,
        };
        if !new_size.is_multiple_of(bs) {
            self.prepare_block(tail_block).await?;
        }
        let (old, up_to) = {
            let mut files = self.files();
            let state = files.entry(file_id).or_insert_with(FileState::absent);
            let old = state.size.max(old_size);
            state.exists = true;
            state.size = new_size;
            state.mtime = SystemTime::now();
            // Under the lock: every write issued later has newer versions,
            // so the deletes below cannot remove its data.
            (old, self.inner.clock.next_version())
        };
        let shrink = async {
            if new_size >= old {
                return Ok(());
            }
            // Every block past the new size, also past the size known here
            // (a write beyond it that was never acknowledged).
            let gone = DeletedRange {
                from: new_size.div_ceil(bs),
                until: ATTR_INDEX,
                version: up_to,
            };
            let deletes = async {
                self.client()
                    .delete_range_as(file_id, gone, Some(epoch))
                    .await?;
                self.delete_elsewhere(file_id, gone, false).await;
                Ok(())
            };
            let zero_tail = async {
                let within = new_size % bs;
                if within == 0 {
                    return Ok(());
                }
                let block_start = new_size - within;
                let tail = old.min(block_start + bs) - new_size;
                self.queue_write(
                    tail_block,
                    within,
                    Bytes::from(vec![0; tail as usize]),
                    Durability::Durable,
                    epoch,
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

    /// Deletes `range` of `file_id` (and its attribute record when
    /// `with_record`) from the other sites, best effort.
    async fn delete_elsewhere(&self, file_id: FileId, range: DeletedRange, with_record: bool) {
        let deletes = self
            .inner
            .ownership
            .remote_clients()
            .map(|client| async move {
                let deleted = async {
                    client.delete_range_as(file_id, range, None).await?;
                    if with_record {
                        client.delete(attr_block(file_id), range.version).await?;
                    }
                    Ok::<_, BlockError>(())
                };
                if let Err(err) = deleted.await {
                    tracing::warn!(%file_id, site = %client.site_name(), %err,
                    "blocks not deleted at another site (they stay as older copies)");
                }
            });
        futures::future::join_all(deletes).await;
    }

    /// Deletes every block of the file and its attribute record (REMOVE of
    /// the last link) — on this site, and on the others best effort —
    /// after fencing the owner and dropping the owner record.
    pub async fn remove(&self, file_id: FileId) -> Result<(), DataError> {
        let up_to = {
            let mut files = self.files();
            files.remove(&file_id);
            self.inner.clock.next_version()
        };
        // First the owner is fenced off and the record dropped, so that no
        // write lands after the deletes.
        self.inner.ownership.forget(file_id).await?;
        let all = DeletedRange {
            from: 0,
            until: ATTR_INDEX,
            version: up_to,
        };
        let local = self.client();
        local.delete_range_as(file_id, all, None).await?;
        local.delete(attr_block(file_id), up_to).await?;
        self.delete_elsewhere(file_id, all, true).await;
        Ok(())
    }
}
