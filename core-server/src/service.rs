//! The `geonfs.core.CoreData` gRPC service: validates requests (wire rules
//! and the configured block size) and runs them on the [`BlockStore`],
//! including the per-file ownership fences (`Fence`, and the `owner_epoch`
//! of reads, writes and deletes).

use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_server::CoreData;
use geonfs_proto::domain::{
    BlockRange, BlockRead, BlockWrite, Epoch, FileId, Version, MAX_SCAN_LIMIT,
};
use tonic::{Request, Response, Status};

use crate::site_fences::SitePeers;
use crate::store::fence::FenceRaise;
use crate::store::quarantine::QuarantinedCopy;
use crate::store::queue::JobSpec;
use crate::store::{BlockInfo, BlockStore, DeleteOutcome, Marker};
use crate::CoreError;

/// How many blocks one List returns when the request asks for 0.
pub const DEFAULT_LIST_LIMIT: u32 = 1000;

/// Fences listed per `ListFences` page at most (and when 0 is asked).
const MAX_FENCE_PAGE: u32 = 10_000;

/// Quarantined copies listed per `ListQuarantine` page at most (and when 0
/// is asked).
const MAX_QUARANTINE_PAGE: u32 = 1_000;

/// The CoreData service of one node.
#[derive(Clone, Debug)]
pub struct CoreDataService {
    store: BlockStore,
    block_size: u64,
    /// The other cores of the site, to relay fences to; `None` when alone.
    peers: Option<SitePeers>,
}

impl CoreDataService {
    /// A service on `store` for blocks of `block_size` bytes; it relays
    /// fences to `peers`.
    pub(crate) fn new(store: BlockStore, block_size: u64, peers: Option<SitePeers>) -> Self {
        CoreDataService {
            store,
            block_size,
            peers,
        }
    }

    /// Checks that `range` lies inside one block of the configured size.
    fn check_range(&self, range: BlockRange) -> Result<(), CoreError> {
        let end = range.offset.saturating_add(range.len);
        if end > self.block_size {
            return Err(CoreError::InvalidArgument(format!(
                "offset {} + length {} = {end} is past the block size of {} bytes",
                range.offset, range.len, self.block_size
            )));
        }
        Ok(())
    }
}

fn quarantined_to_wire(copy: QuarantinedCopy) -> wire::QuarantinedCopy {
    wire::QuarantinedCopy {
        block: Some(copy.block.into()),
        version: copy.version.0,
        epoch: Epoch::to_wire(copy.epoch),
        set_aside_ms: copy.set_aside_ms,
        length: copy.length,
    }
}

fn block_of(block: Option<wire::BlockId>) -> Result<geonfs_proto::domain::BlockId, CoreError> {
    block
        .map(Into::into)
        .ok_or_else(|| CoreError::InvalidArgument("missing field `block`".into()))
}

fn info_to_wire(info: BlockInfo) -> wire::BlockInfo {
    wire::BlockInfo {
        block: Some(info.block.into()),
        version: info.version.0,
        length: info.length,
        durable: info.durable,
    }
}

#[tonic::async_trait]
impl CoreData for CoreDataService {
    async fn write(
        &self,
        request: Request<wire::WriteRequest>,
    ) -> Result<Response<wire::WriteReply>, Status> {
        let mut request = request.into_inner();
        let job = (!request.replicate_to.is_empty()).then(|| JobSpec {
            targets: std::mem::take(&mut request.replicate_to),
            primary: request.primary,
            peer: std::mem::take(&mut request.peer),
        });
        let write = BlockWrite::try_from(request).map_err(CoreError::from)?;
        self.check_range(write.range)?;
        let outcome = self.store.write_with_job(write, job).await?;
        Ok(Response::new(wire::WriteReply {
            incarnation: self.store.incarnation(),
            version: outcome.version.0,
            durable: outcome.durable,
        }))
    }

    async fn read(
        &self,
        request: Request<wire::ReadRequest>,
    ) -> Result<Response<wire::ReadReply>, Status> {
        let request = request.into_inner();
        let with_job = request.with_pending_job && request.length == 0;
        let read = BlockRead::try_from(request).map_err(CoreError::from)?;
        self.check_range(read.range)?;
        let block = read.block;
        let copy = self.store.read_copy(read).await?;
        let mut reply = match copy.found {
            Some(found) => wire::ReadReply {
                incarnation: self.store.incarnation(),
                found: true,
                version: found.version.0,
                copy_epoch: Epoch::to_wire(
                    self.store
                        .file_fence(block.file_id)
                        .shipped_epoch(found.epoch),
                ),
                data: found.data,
                ..Default::default()
            },
            None => wire::ReadReply {
                incarnation: self.store.incarnation(),
                found: false,
                trimmed_version: match copy.marker {
                    Some(Marker::Trimmed(version)) => version.0,
                    _ => 0,
                },
                deleted_version: match copy.marker {
                    Some(Marker::Deleted(version)) => version.0,
                    _ => 0,
                },
                ..Default::default()
            },
        };
        // The replicator's probes also learn whether this copy still has
        // geo replication to do (a secondary deciding about takeover).
        if with_job && reply.found {
            reply.pending_job_version = self.store.job(block).await?.map_or(0, |job| job.version.0);
        }
        Ok(Response::new(reply))
    }

    /// One WAL sync makes every held write durable, so the listed blocks
    /// (if any) need no separate treatment.
    async fn flush(
        &self,
        _request: Request<wire::FlushRequest>,
    ) -> Result<Response<wire::FlushReply>, Status> {
        self.store.flush().await?;
        Ok(Response::new(wire::FlushReply {
            incarnation: self.store.incarnation(),
        }))
    }

    async fn delete(
        &self,
        request: Request<wire::DeleteRequest>,
    ) -> Result<Response<wire::DeleteReply>, Status> {
        let request = request.into_inner();
        let block = request
            .block
            .ok_or_else(|| CoreError::InvalidArgument("missing field `block`".into()))?
            .into();
        // A trim is replication's (no epoch, unchecked).
        let outcome = if request.trim {
            self.store
                .trim(block, Version(request.up_to_version))
                .await?
        } else {
            self.store
                .delete_as(
                    block,
                    Version(request.up_to_version),
                    Epoch::from_wire(request.owner_epoch),
                )
                .await?
        };
        Ok(Response::new(wire::DeleteReply {
            incarnation: self.store.incarnation(),
            deleted: outcome == DeleteOutcome::Deleted,
        }))
    }

    async fn delete_range(
        &self,
        request: Request<wire::DeleteRangeRequest>,
    ) -> Result<Response<wire::DeleteRangeReply>, Status> {
        let request = request.into_inner();
        let deleted = self
            .store
            .delete_range_as(
                FileId(request.file_id),
                request.from_index,
                request.until_index,
                Version(request.up_to_version),
                Epoch::from_wire(request.owner_epoch),
            )
            .await?;
        Ok(Response::new(wire::DeleteRangeReply {
            incarnation: self.store.incarnation(),
            deleted,
        }))
    }

    async fn list_deleted_ranges(
        &self,
        request: Request<wire::ListDeletedRangesRequest>,
    ) -> Result<Response<wire::ListDeletedRangesReply>, Status> {
        let file_id = FileId(request.into_inner().file_id);
        let ranges = self.store.deleted_ranges(file_id).await?;
        Ok(Response::new(wire::ListDeletedRangesReply {
            incarnation: self.store.incarnation(),
            ranges: ranges.into_iter().map(Into::into).collect(),
        }))
    }

    async fn shipped(
        &self,
        request: Request<wire::ShippedRequest>,
    ) -> Result<Response<wire::ShippedReply>, Status> {
        let request = request.into_inner();
        let block = request
            .block
            .ok_or_else(|| CoreError::InvalidArgument("missing field `block`".into()))?
            .into();
        self.store
            .job_shipped(block, Version(request.version), Some(request.trim_at_ms))
            .await?;
        Ok(Response::new(wire::ShippedReply {
            incarnation: self.store.incarnation(),
        }))
    }

    async fn stat(
        &self,
        _request: Request<wire::StatRequest>,
    ) -> Result<Response<wire::StatReply>, Status> {
        let stats = self.store.stats();
        let metrics = self.store.metrics();
        Ok(Response::new(wire::StatReply {
            incarnation: self.store.incarnation(),
            capacity_bytes: stats.capacity,
            used_bytes: stats.used,
            blocks: stats.blocks,
            quarantined_blocks: u64::try_from(metrics.quarantined_blocks.get()).unwrap_or(0),
            quarantined_bytes: u64::try_from(metrics.quarantined_bytes.get()).unwrap_or(0),
        }))
    }

    async fn list(
        &self,
        request: Request<wire::ListRequest>,
    ) -> Result<Response<wire::ListReply>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIST_LIMIT,
            limit if limit > MAX_SCAN_LIMIT => {
                return Err(CoreError::InvalidArgument(format!(
                    "limit {limit} is more than the maximum of {MAX_SCAN_LIMIT}"
                ))
                .into())
            }
            limit => limit,
        };
        let start_after = request.start_after.map(Into::into);
        let (blocks, more) = if request.deleted {
            let (deleted, more) = self.store.list_deleted(start_after, limit as usize).await?;
            let tombstones = deleted
                .into_iter()
                .map(|(block, version)| BlockInfo {
                    block,
                    version,
                    length: 0,
                    stored: 0,
                    durable: true,
                })
                .collect();
            (tombstones, more)
        } else {
            self.store.list(start_after, limit as usize).await?
        };
        Ok(Response::new(wire::ListReply {
            incarnation: self.store.incarnation(),
            blocks: blocks.into_iter().map(info_to_wire).collect(),
            more,
        }))
    }

    /// Durable, and no write or delete admitted under a lower fence is
    /// still in flight, when answered (see [`BlockStore::fence`]).
    async fn fence(
        &self,
        request: Request<wire::FenceRequest>,
    ) -> Result<Response<wire::FenceReply>, Status> {
        let request = request.into_inner();
        let raise = FenceRaise {
            epoch: Epoch::from_wire(request.epoch),
            lost_below: Epoch::from_wire(request.lost_below),
            adopt: request.adopt,
        };
        let file_id = FileId(request.file_id);
        let fence = self.store.raise_fence(file_id, raise).await?;
        let relayed = match &self.peers {
            Some(peers) if !request.relay_to.is_empty() && raise.epoch.is_some() => {
                peers.relay(&request.relay_to, file_id, raise).await
            }
            _ => Vec::new(),
        };
        Ok(Response::new(wire::FenceReply {
            incarnation: self.store.incarnation(),
            epoch: Epoch::to_wire(fence.epoch),
            relayed,
            lost_below: Epoch::to_wire(fence.lost_below),
        }))
    }

    /// A page of this core's fences, in file order (answered before the
    /// core's own fences are caught up: its durable fences are what a
    /// peer catching up needs).
    async fn list_fences(
        &self,
        request: Request<wire::ListFencesRequest>,
    ) -> Result<Response<wire::ListFencesReply>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => MAX_FENCE_PAGE,
            n => n.min(MAX_FENCE_PAGE),
        };
        let (fences, more) = self
            .store
            .list_fences(request.after_file_id.map(FileId), limit as usize);
        Ok(Response::new(wire::ListFencesReply {
            fences: fences
                .into_iter()
                .map(|(file_id, fence)| wire::FileFence {
                    file_id: file_id.0,
                    epoch: Epoch::to_wire(fence.epoch),
                    lost_below: Epoch::to_wire(fence.lost_below),
                })
                .collect(),
            more,
        }))
    }

    async fn list_quarantine(
        &self,
        request: Request<wire::ListQuarantineRequest>,
    ) -> Result<Response<wire::ListQuarantineReply>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => MAX_QUARANTINE_PAGE,
            n => n.min(MAX_QUARANTINE_PAGE),
        };
        let after = request
            .after_block
            .map(|block| (block.into(), Version(request.after_version)));
        let (copies, more) = self.store.list_quarantine(after, limit as usize).await?;
        Ok(Response::new(wire::ListQuarantineReply {
            copies: copies.into_iter().map(quarantined_to_wire).collect(),
            more,
        }))
    }

    async fn read_quarantine(
        &self,
        request: Request<wire::QuarantineRequest>,
    ) -> Result<Response<wire::ReadQuarantineReply>, Status> {
        let request = request.into_inner();
        let block = block_of(request.block)?;
        let Some((copy, data)) = self
            .store
            .read_quarantined(block, Version(request.version))
            .await?
        else {
            return Err(Status::not_found(format!(
                "no quarantined copy of block {block} at version {}",
                request.version
            )));
        };
        Ok(Response::new(wire::ReadQuarantineReply {
            copy: Some(quarantined_to_wire(copy)),
            data,
        }))
    }

    async fn drop_quarantine(
        &self,
        request: Request<wire::QuarantineRequest>,
    ) -> Result<Response<wire::DropQuarantineReply>, Status> {
        let request = request.into_inner();
        let block = block_of(request.block)?;
        let dropped = self
            .store
            .drop_quarantined(block, Version(request.version))
            .await?;
        Ok(Response::new(wire::DropQuarantineReply { dropped }))
    }
}
