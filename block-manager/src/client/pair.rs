//! One attempt of a write on the block's pair (part of [`BlockClient`]):
//! the two copies in parallel, a replacement core for a copy whose core
//! fails, and the cores that refused the write's base reported back to be
//! seeded (`base.rs`).

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use geonfs_proto::core as wire;
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId, Version};
use geonfs_site_config::Node;
use tonic::Code;

use super::{classify_file, BlockClient, CopyAck, CopyError, WriteAck};
use crate::BlockError;

/// One write of a block's bytes ([`BlockClient::write_as`],
/// [`BlockClient::replace_as`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockUpdate {
    /// The block written.
    pub block: BlockId,
    /// Where in the block the bytes go.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// The version the write creates (versions start at 1).
    pub version: Version,
    /// When the cores must have it on stable storage.
    pub durability: Durability,
    /// The writer's ownership epoch of the block's file; `None`: not
    /// checked against the cores' fences.
    pub owner_epoch: Option<Epoch>,
}

/// Why one attempt of a write did not get two copies.
pub(super) enum PairError<'a> {
    /// These cores answered that their copy is not complete at the
    /// write's base; `acked`: another core took the write.
    Mismatch {
        /// The cores.
        nodes: Vec<&'a Node>,
        /// Whether another core took the write.
        acked: bool,
    },
    /// Anything else.
    Block(BlockError),
}

impl BlockClient {
    /// One attempt of a write on two distinct cores of the site, in
    /// parallel, with a replacement for a core that fails. `base`: the
    /// version a partial write applies on (`None`: it replaces the whole
    /// block). Cores that refuse the base are not replaced: they are
    /// reported to be seeded.
    pub(super) async fn write_pair(
        &self,
        update: BlockUpdate,
        base: Option<Version>,
    ) -> Result<WriteAck, PairError<'_>> {
        let BlockUpdate {
            block,
            offset,
            data,
            version,
            durability,
            owner_epoch,
        } = update;
        let (order, believed) = self.order(block);
        let not_enough = |acked: usize, last_error: Option<String>, out_of_space: bool| {
            BlockError::NotEnoughCores {
                site: self.inner.site_name.clone(),
                block,
                acked,
                live: believed,
                total: order.len(),
                last_error,
                out_of_space,
            }
        };
        if order.len() < 2 {
            return Err(PairError::Block(not_enough(0, None, false)));
        }
        let request = wire::WriteRequest {
            block: Some(block.into()),
            offset,
            data,
            version: version.0,
            durability: match durability {
                Durability::Durable => wire::Durability::Durable,
                Durability::Held => wire::Durability::Held,
            } as i32,
            replicate_to: self.remote_targets(block),
            primary: false,
            peer: String::new(),
            owner_epoch: Epoch::to_wire(owner_epoch),
            base_version: base.map(|base| base.0),
            replace: base.is_none(),
        };
        // The first of the pair ships the geo copies; each member names
        // the other (the primary trims it, the secondary watches it).
        let role = |primary: bool, peer: &Node| {
            let mut request = request.clone();
            request.primary = primary;
            request.peer = peer.name.clone();
            request
        };
        let mut pending = FuturesUnordered::new();
        pending.push(self.copy(order[0], role(true, order[1])));
        pending.push(self.copy(order[1], role(false, order[0])));
        let mut next = 2;
        let mut acks: Vec<CopyAck> = Vec::with_capacity(2);
        let mut mismatched: Vec<&Node> = Vec::new();
        let mut last_error = None;
        let mut out_of_space = false;
        while let Some((node, result)) = pending.next().await {
            match result {
                Ok(reply) => {
                    if durability == Durability::Durable && !reply.durable {
                        return Err(PairError::Block(BlockError::NotDurable {
                            node: node.name.clone(),
                            block,
                        }));
                    }
                    acks.push(CopyAck {
                        node: node.name.clone(),
                        incarnation: reply.incarnation,
                    });
                    if acks.len() == 2 {
                        break;
                    }
                }
                Err(CopyError::Mismatch) => mismatched.push(node),
                Err(CopyError::Fatal(err)) => return Err(PairError::Block(err)),
                Err(CopyError::Retry { err, suspect }) => {
                    tracing::warn!(node = %node.name, %err, "block copy failed; trying another core");
                    self.failed(&node.name, suspect);
                    out_of_space |= err.is_out_of_space();
                    last_error = Some(err.to_string());
                    if let Some(replacement) = order.get(next) {
                        next += 1;
                        self.inner.metrics.retries.inc();
                        // The replacement takes over the failed member's role.
                        let was_primary = node.name == order[0].name;
                        let peer = if was_primary { order[1] } else { order[0] };
                        pending.push(self.copy(replacement, role(was_primary, peer)));
                    }
                }
            }
        }
        match <[CopyAck; 2]>::try_from(acks) {
            Ok(copies) => Ok(WriteAck {
                block,
                version,
                durable: durability == Durability::Durable,
                copies,
            }),
            Err(acks) if !mismatched.is_empty() => Err(PairError::Mismatch {
                nodes: mismatched,
                acked: !acks.is_empty(),
            }),
            Err(acks) => Err(PairError::Block(not_enough(
                acks.len(),
                last_error,
                out_of_space,
            ))),
        }
    }

    /// One copy of a write on `node`.
    async fn copy<'a>(
        &self,
        node: &'a Node,
        request: wire::WriteRequest,
    ) -> (&'a Node, Result<wire::WriteReply, CopyError>) {
        let file_id = FileId(request.block.map_or(0, |b| b.file_id));
        let result = async {
            // Held until the core answered (`gate.rs`).
            let _pass = self
                .admit(file_id, Epoch::from_wire(request.owner_epoch))
                .await
                .map_err(CopyError::Fatal)?;
            let mut client = self.client(node).map_err(CopyError::Fatal)?;
            match client.write(request).await {
                Ok(reply) => {
                    self.inner.liveness.alive(&node.name);
                    Ok(reply.into_inner())
                }
                Err(status) if status.code() == Code::Aborted => {
                    // It answered: its copy is not complete at the base.
                    self.inner.liveness.alive(&node.name);
                    tracing::debug!(node = %node.name, "{}", status.message());
                    Err(CopyError::Mismatch)
                }
                Err(status) => Err(classify_file(&node.name, file_id, status)),
            }
        }
        .await;
        (node, result)
    }
}
