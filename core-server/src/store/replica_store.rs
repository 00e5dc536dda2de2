//! The block store as the replicator sees it: [`ReplicaStore`] (the
//! block manager's trait) over [`BlockStore`]'s queue, copies and fences.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use geonfs_block_manager::replicator::{BlockPage, CopyChanges, HeldBlock, LocalCopy};
use geonfs_block_manager::{BlockError, ReplicaStore, ReplicationJob};
use geonfs_proto::domain::{BlockId, BlockRange, BlockRead, Epoch, FileId, Version};

use super::fence::FenceRaise;
use super::queue::{PutOutcome, ReplicaOffer};
use super::BlockStore;
use crate::CoreError;

fn store_error(err: CoreError) -> BlockError {
    BlockError::Store(err.to_string())
}

/// A failed read of this core's own copy: a damaged copy as `DATA_LOSS`
/// (so the replicator repairs it from another copy), anything else as a
/// store error.
fn read_error(err: CoreError) -> BlockError {
    match err {
        CoreError::CorruptChunk { .. } => BlockError::core("this core", tonic::Status::from(err)),
        other => store_error(other),
    }
}

impl ReplicaStore for BlockStore {
    fn pending_jobs(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ReplicationJob>, BlockError>> {
        Box::pin(async move {
            BlockStore::pending_jobs(self, limit)
                .await
                .map_err(store_error)
        })
    }

    fn read_block(&self, block: BlockId) -> BoxFuture<'_, Result<Option<LocalCopy>, BlockError>> {
        Box::pin(async move {
            let Some(info) = self.block_info(block).await.map_err(store_error)? else {
                return Ok(None);
            };
            // A newer write may land between the metadata and the read:
            // the read's own snapshot decides the version, and if that
            // version's length is past what was read, read again.
            let mut len = info.length;
            for _ in 0..8 {
                let read = BlockRead {
                    block,
                    range: BlockRange { offset: 0, len },
                    owner_epoch: None,
                };
                match self.read(read).await.map_err(read_error)? {
                    None => return Ok(None),
                    Some(found) if found.length > len => len = found.length,
                    Some(found) => {
                        let fence = self.file_fence(block.file_id);
                        return Ok(Some(LocalCopy {
                            version: found.version,
                            data: found.data,
                            epoch: fence.shipped_epoch(found.epoch),
                            lost_below: fence.lost_below,
                        }));
                    }
                }
            }
            Err(BlockError::Store(format!(
                "block {block} kept growing while being read for replication"
            )))
        })
    }

    fn read_changes(
        &self,
        block: BlockId,
    ) -> BoxFuture<'_, Result<Option<CopyChanges>, BlockError>> {
        Box::pin(async move {
            BlockStore::read_changes(self, block)
                .await
                .map_err(read_error)
        })
    }

    fn job_shipped(
        &self,
        block: BlockId,
        version: Version,
        trim_at_ms: Option<u64>,
    ) -> BoxFuture<'_, Result<(), BlockError>> {
        Box::pin(async move {
            BlockStore::job_shipped(self, block, version, trim_at_ms)
                .await
                .map_err(store_error)
        })
    }

    fn job_done(&self, block: BlockId, version: Version) -> BoxFuture<'_, Result<(), BlockError>> {
        Box::pin(async move {
            BlockStore::job_done(self, block, version)
                .await
                .map_err(store_error)
        })
    }

    fn reschedule(
        &self,
        block: BlockId,
        version: Version,
        attempts: u32,
        next_attempt_ms: u64,
    ) -> BoxFuture<'_, Result<(), BlockError>> {
        Box::pin(async move {
            self.reschedule_job(block, version, attempts, next_attempt_ms)
                .await
                .map_err(store_error)
        })
    }

    fn enqueued(&self) -> Arc<tokio::sync::Notify> {
        BlockStore::enqueued(self)
    }

    fn retarget(
        &self,
        block: BlockId,
        version: Version,
        primary: bool,
        peer: String,
    ) -> BoxFuture<'_, Result<bool, BlockError>> {
        Box::pin(async move {
            self.retarget_job(block, version, primary, peer)
                .await
                .map_err(store_error)
        })
    }

    fn trim_local(
        &self,
        block: BlockId,
        version: Version,
    ) -> BoxFuture<'_, Result<bool, BlockError>> {
        Box::pin(async move {
            let outcome = self.trim(block, version).await.map_err(store_error)?;
            Ok(outcome == super::DeleteOutcome::Deleted)
        })
    }

    fn repair_local(
        &self,
        block: BlockId,
        version: Version,
        data: Bytes,
        epoch: Option<Epoch>,
    ) -> BoxFuture<'_, Result<bool, BlockError>> {
        Box::pin(async move {
            let outcome = self
                .put_replica(ReplicaOffer {
                    block,
                    version,
                    data,
                    changes: None,
                    repair: true,
                    job: None,
                    epoch,
                    lost_below: None,
                })
                .await
                .map_err(store_error)?;
            Ok(matches!(
                outcome,
                PutOutcome::Applied | PutOutcome::Repaired
            ))
        })
    }

    fn set_aside(
        &self,
        file_id: FileId,
        lost_below: Epoch,
    ) -> BoxFuture<'_, Result<(), BlockError>> {
        Box::pin(async move {
            self.raise_fence(file_id, FenceRaise::learned(lost_below))
                .await
                .map(|_| ())
                .map_err(store_error)
        })
    }

    fn job_version(&self, block: BlockId) -> BoxFuture<'_, Result<Option<Version>, BlockError>> {
        Box::pin(async move {
            let job = self.job(block).await.map_err(store_error)?;
            Ok(job.map(|job| job.version))
        })
    }

    fn list_blocks(
        &self,
        after: Option<BlockId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<BlockPage, BlockError>> {
        Box::pin(async move {
            let (blocks, more) = self.list(after, limit).await.map_err(store_error)?;
            let blocks = blocks
                .into_iter()
                .map(|b| HeldBlock {
                    block: b.block,
                    version: b.version,
                })
                .collect();
            Ok(BlockPage { blocks, more })
        })
    }
}
