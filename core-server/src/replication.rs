//! The `geonfs.replication.BlockReplication` gRPC service: copies (whole
//! blocks, or the changes since a base) from other cores (geo copies, restored in-site copies, repairs),
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

use crate::store::changes::OfferChanges;
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
        let changes = self.offered_changes(&request)?;
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
                changes,
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
            PutOutcome::BaseMismatch { held } => (false, false, held.unwrap_or(Version::ZERO).0),
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
            base_mismatch: matches!(outcome, PutOutcome::BaseMismatch { .. }),
            ..Default::default()
        })
    }

    /// The changes a put carries instead of the whole block, validated:
    /// a base not newer than the version, no data beside them, every piece
    /// within the length and the length within the block.
    fn offered_changes(
        &self,
        request: &wire::ReplicaPut,
    ) -> Result<Option<OfferChanges>, CoreError> {
        let Some(base) = request.base_version else {
            if !request.pieces.is_empty() {
                return Err(CoreError::InvalidArgument(
                    "changed pieces without a base version".into(),
                ));
            }
            return Ok(None);
        };
        let invalid = |why: String| Err(CoreError::InvalidArgument(why));
        // Equal: a job re-created by a retry of a write already shipped;
        // a copy at the version holds it, any other is off the base.
        if base > request.version {
            return invalid(format!(
                "base version {base} is newer than version {}",
                request.version
            ));
        }
        if !request.data.is_empty() || request.repair || request.job.is_some() {
            return invalid("changes come without data, repair or job".into());
        }
        if request.length > self.block_size {
            return invalid(format!(
                "length {} is past the block size of {} bytes",
                request.length, self.block_size
            ));
        }
        for piece in &request.pieces {
            let end = piece.offset.checked_add(piece.data.len() as u64);
            if end.is_none_or(|end| end > request.length) {
                return invalid(format!(
                    "a piece of {} bytes at {} is past the length {}",
                    piece.data.len(),
                    piece.offset,
                    request.length
                ));
            }
        }
        Ok(Some(OfferChanges {
            base: Version(base),
            length: request.length,
            pieces: request
                .pieces
                .iter()
                .map(|piece| (piece.offset, piece.data.clone()))
                .collect(),
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (tempfile::TempDir, BlockReplicationService) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path(), 1 << 30, crate::CoreMetrics::new()).unwrap();
        (dir, BlockReplicationService::new(store, 1 << 20))
    }

    fn put(
        version: u64,
        base: Option<u64>,
        length: u64,
        pieces: &[(u64, usize)],
    ) -> wire::ReplicaPut {
        wire::ReplicaPut {
            version,
            base_version: base,
            length,
            pieces: pieces
                .iter()
                .map(|&(offset, len)| wire::ChangedPiece {
                    offset,
                    data: vec![1; len].into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn offered_changes_are_checked_before_anything_is_stored() {
        let (_dir, service) = service();
        // A job re-created by a retry ships its own version as the base.
        for ok in [put(5, Some(4), 100, &[(0, 100)]), put(5, Some(5), 100, &[])] {
            assert!(service.offered_changes(&ok).unwrap().is_some());
        }
        assert!(service
            .offered_changes(&put(5, None, 0, &[]))
            .unwrap()
            .is_none());
        let mut with_data = put(5, Some(4), 100, &[]);
        with_data.data = vec![1; 10].into();
        for bad in [
            put(5, Some(6), 100, &[]),
            put(5, None, 100, &[(0, 10)]),
            put(5, Some(4), 100, &[(95, 10)]),
            put(5, Some(4), 2 << 20, &[]),
            put(5, Some(4), 100, &[(u64::MAX - 2, 10)]),
            with_data,
        ] {
            assert!(
                matches!(
                    service.offered_changes(&bad),
                    Err(CoreError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }
}
