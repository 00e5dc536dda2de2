//! The `geonfs.replication.BlockReplication` gRPC service: whole-block
//! geo copies from a core of another site, applied with
//! [`BlockStore::put_replica`] (idempotent, never over newer data).

use geonfs_proto::replication as wire;
use geonfs_proto::replication::block_replication_server::BlockReplication;
use tonic::{Request, Response, Status};

use crate::store::queue::{JobSpec, PutOutcome, ReplicaOffer};
use crate::store::BlockStore;
use crate::CoreError;

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
}

#[tonic::async_trait]
impl BlockReplication for BlockReplicationService {
    async fn put(
        &self,
        request: Request<wire::ReplicaPut>,
    ) -> Result<Response<wire::ReplicaPutReply>, Status> {
        let request = request.into_inner();
        let block = request
            .block
            .ok_or_else(|| CoreError::InvalidArgument("missing field `block`".into()))?
            .into();
        if request.version == 0 {
            return Err(CoreError::InvalidArgument("versions start at 1".into()).into());
        }
        if request.data.len() as u64 > self.block_size {
            return Err(CoreError::InvalidArgument(format!(
                "a replica of {} bytes is larger than the block size of {} bytes",
                request.data.len(),
                self.block_size
            ))
            .into());
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
                version: request.version,
                data: request.data,
                repair: request.repair,
                job,
            })
            .await?;
        tracing::debug!(file_id = block.file_id, index = block.index, version = request.version,
            origin = %request.origin_site, ?outcome, "replica put");
        let (applied, skipped_stale, stored_version) = match outcome {
            PutOutcome::Applied | PutOutcome::Repaired => (true, false, request.version),
            PutOutcome::AlreadyHeld => (false, false, request.version),
            PutOutcome::SkippedStale { stored } => (false, true, stored),
        };
        let repaired = outcome == PutOutcome::Repaired;
        Ok(Response::new(wire::ReplicaPutReply {
            incarnation: self.store.incarnation(),
            applied,
            skipped_stale,
            stored_version,
            repaired,
        }))
    }
}
