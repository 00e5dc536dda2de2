//! Changing a file's length: SETATTR(size) and the release of a removed
//! file's blocks.
//!
//! Deletes reach this site's cores (they must succeed: a copy left there
//! would come back) and the other sites' cores as well,
//! best effort (logged): their copies of the deleted blocks are replicas
//! or catch-up sources, and a copy that survives there is older than
//! anything written later, so it is never read back while its site is
//! neither the owner nor a source.

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use geonfs_block_manager::BlockClient;
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId, Version};
use std::time::SystemTime;

use super::{DataError, FileData, FileState, ATTR_INDEX, DELETE_CONCURRENCY};

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
            let first_gone = new_size.div_ceil(bs);
            let gone = first_gone..old.div_ceil(bs);
            let deletes = async {
                self.delete_blocks(self.client(), file_id, gone.clone(), up_to, Some(epoch))
                    .await?;
                self.delete_elsewhere(file_id, gone, up_to).await;
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

    /// Deletes blocks `indexes` of `file_id` from `client`'s site (up to
    /// `up_to` version, with ownership `epoch`), a bounded number at a
    /// time.
    async fn delete_blocks(
        &self,
        client: &BlockClient,
        file_id: FileId,
        indexes: impl Iterator<Item = u64>,
        up_to: Version,
        epoch: Option<Epoch>,
    ) -> Result<(), DataError> {
        let mut deletes = stream::iter(indexes)
            .map(|index| client.delete_as(BlockId { file_id, index }, up_to, epoch))
            .buffer_unordered(DELETE_CONCURRENCY);
        while let Some(result) = deletes.next().await {
            result?;
        }
        Ok(())
    }

    /// Deletes blocks `indexes` from the other sites, best effort.
    async fn delete_elsewhere(
        &self,
        file_id: FileId,
        indexes: impl Iterator<Item = u64> + Clone,
        up_to: Version,
    ) {
        let deletes = self.inner.ownership.remote_clients().map(|client| {
            let indexes = indexes.clone();
            async move {
                if let Err(err) = self
                    .delete_blocks(client, file_id, indexes, up_to, None)
                    .await
                {
                    tracing::warn!(%file_id, site = %client.site_name(), %err,
                        "blocks not deleted at another site (they stay as older copies)");
                }
            }
        });
        futures::future::join_all(deletes).await;
    }

    /// Deletes the file's blocks (those covering `size` bytes, or the
    /// recorded size if larger) and its attribute record (REMOVE of the
    /// last link) — on this site, and on the others best effort — after
    /// fencing the owner and dropping the owner record.
    pub async fn remove(&self, file_id: FileId, size: u64) -> Result<(), DataError> {
        let recorded = self.attributes(file_id).await?.map_or(0, |(s, _)| s);
        let up_to = {
            let mut files = self.files();
            files.remove(&file_id);
            self.inner.clock.next_version()
        };
        let size = size.max(recorded);
        // First the owner is fenced off and the record dropped, so that no
        // write lands after the deletes.
        self.inner.ownership.forget(file_id).await?;
        let blocks = (0..size.div_ceil(self.inner.block_size)).chain([ATTR_INDEX]);
        self.delete_blocks(self.client(), file_id, blocks.clone(), up_to, None)
            .await?;
        self.delete_elsewhere(file_id, blocks, up_to).await;
        Ok(())
    }
}
