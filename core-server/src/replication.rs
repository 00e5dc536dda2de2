//! The `geonfs.replication.BlockReplication` gRPC service: whole-block
//! copies from other cores (geo copies, restored in-site copies, repairs),
//! applied with [`BlockStore::put_replica`] (idempotent, never over newer
//! data). `Put` takes one block; `Replicate` takes a stream of them (the
//! replication queue keeps one per target) and answers each in order, a
//! failed put answered with its error without ending the stream.

use std::pin::Pin;

use futures::stream::{Stream, StreamExt};
use geonfs_proto::domain::{Epoch, Version};
use geonfs_proto::replication as wire;
use geonfs_proto::replication::block_replication_server::BlockReplication;
use tonic::{Request, Response, Status, Streaming};

use crate::store::queue::{JobSpec, PutOutcome, ReplicaOffer};
use crate::store::BlockStore;
use crate::CoreError;

/// Puts of one `Replicate` stream applied at once (in order of reply):
/// concurrent synced writes share WAL fsyncs.
const STREAM_CONCURRENCY: usize = 8;

/// The BlockReplication service of one node.
#[derive(Clone, Debug)]
pub struct BlockReplicationService {
    store: BlockStore,
    block_size: u64,
}

impl BlockReplicationService {
    /// A service on `store` for blocks of `block_size` bytes.
    pub fn new(store: BlockStore, block_size: u64) -> Self {
        BlockReplicationService { store, block_size }
    }

    /// Validates and applies one put.
    async fn apply(&self, request: wire::ReplicaPut) -> Result<wire::ReplicaPutReply, CoreError> {
        let block = request
            .block
            .ok_or_else(|| CoreError::InvalidArgument("missing field `block`".into()))?
            .into();
        if request.version == 0 {
            return Err(CoreError::InvalidArgument("versions start at 1".into()));
        }
        if request.data.len() as u64 > self.block_size {
            return Err(CoreError::InvalidArgument(format!(
                "a replica of {} bytes is larger than the block size of {} bytes",
                request.data.len(),
                self.block_size
            )));
        }
        let job = request.job.map(|job| JobSpec {
            targets: job.targets,
            primary: job.primary,
            peer: job.peer,
        });
        let outcome = self
            .store
            .put_replica(ReplicaOffer {
                block,
                version: Version(request.version),
                data: request.data,
                repair: request.repair,
                job,
                epoch: Epoch::from_wire(request.owner_epoch),
                lost_below: Epoch::from_wire(request.lost_below),
            })
            .await?;
        tracing::debug!(%block, version = %request.version,
            origin = %request.origin_site, ?outcome, "replica put");
        let (applied, skipped_stale, stored_version) = match outcome {
            PutOutcome::Applied | PutOutcome::Repaired => (true, false, request.version),
            PutOutcome::AlreadyHeld => (false, false, request.version),
            PutOutcome::SkippedStale { stored } => (false, true, stored.0),
            PutOutcome::Superseded { .. } => (false, false, 0),
        };
        let lost_below = match outcome {
            PutOutcome::Superseded { lost_below } => Some(lost_below),
            _ => None,
        };
        Ok(wire::ReplicaPutReply {
            incarnation: self.store.incarnation(),
            applied,
            skipped_stale,
            stored_version,
            repaired: outcome == PutOutcome::Repaired,
            block: Some(block.into()),
            superseded: lost_below.is_some(),
            lost_below: Epoch::to_wire(lost_below),
            ..Default::default()
        })
    }
}

/// The reply stream of `Replicate`.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<wire::ReplicaPutReply, Status>> + Send>>;

#[tonic::async_trait]
impl BlockReplication for BlockReplicationService {
    async fn put(
        &self,
        request: Request<wire::ReplicaPut>,
    ) -> Result<Response<wire::ReplicaPutReply>, Status> {
        Ok(Response::new(self.apply(request.into_inner()).await?))
    }

    type ReplicateStream = ReplyStream;

    async fn replicate(
        &self,
        request: Request<Streaming<wire::ReplicaPut>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let service = self.clone();
        let replies = request
            .into_inner()
            .map(move |item| {
                let service = service.clone();
                async move {
                    // A broken stream (undecodable message, reset) ends it.
                    let put = item?;
                    let block = put.block;
                    Ok(match service.apply(put).await {
                        Ok(reply) => reply,
                        Err(err) => {
                            let status = Status::from(err);
                            wire::ReplicaPutReply {
                                incarnation: service.store.incarnation(),
                                block,
                                error: status.message().to_string(),
                                error_code: status.code() as i32,
                                ..Default::default()
                            }
                        }
                    })
                }
            })
            .buffered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(replies)))
    }
}
