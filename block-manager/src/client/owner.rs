//! The file-ownership handover calls of [`BlockClient`]: fencing a file on
//! the site's cores, listing a file's blocks there, and putting a whole
//! block copy (another site's newer one) on a block's cores.
//!
//! A site taking a file over at epoch E fences the file at E on the old
//! owner's cores and its own ([`BlockClient::fence`]): from then on they
//! refuse the old owner's reads, writes and deletes. It then learns which
//! blocks exist where ([`BlockClient::list_file`]) and catches its own
//! site up with newer copies ([`BlockClient::put_whole`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use geonfs_proto::core as wire;
use geonfs_proto::domain::{BlockId, DeletedRange, Epoch, FileId, Version};
use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
use geonfs_proto::replication::{ReplicaPut, ReplicaPutReply};
use geonfs_rpc::RpcChannel;
use geonfs_site_config::Node;

use super::{classify, BlockClient, CopyError};
use crate::BlockError;

/// Blocks asked for per List page by [`BlockClient::list_file`].
const LIST_PAGE: u32 = 1000;

/// What a fence asks of a site's cores ([`BlockClient::fence_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceOrder {
    /// The new owner's epoch.
    pub epoch: Epoch,
    /// The epoch of the file's latest takeover from a lost owner, if any.
    pub lost_below: Option<Epoch>,
    /// The caller is that takeover and lists these cores next: their
    /// copies are adopted (otherwise the copies it never saw are set
    /// aside).
    pub adopt: bool,
}

/// What [`BlockClient::fence`] achieved on the cores of the site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FenceReport {
    /// The cores that raised (or already had) the fence.
    pub fenced: Vec<String>,
    /// The cores that could not be fenced, with the error.
    pub failed: Vec<(String, String)>,
    /// How many cores the site has.
    pub total: usize,
    /// The highest fence a core reported after the call: above the epoch
    /// asked, the file's ownership has already moved on again.
    pub highest: Option<Epoch>,
}

impl FenceReport {
    /// Whether every core of the site but at most one is fenced (the site
    /// has at least one core).
    pub fn all_but_one(&self) -> bool {
        self.total > 0 && self.fenced.len() + 1 >= self.total
    }

    /// Whether every core of the site is fenced (the site has at least
    /// one core).
    pub fn all(&self) -> bool {
        self.total > 0 && self.fenced.len() >= self.total
    }
}

/// The blocks of one file on the cores of the site
/// ([`BlockClient::list_file`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileListing {
    /// Block index → the newest version among the site's cores that
    /// answered (the attribute record block, index `u64::MAX`, included).
    pub versions: BTreeMap<u64, Version>,
    /// The ranges of block indexes the site's cores that answered deleted
    /// (each index inside is deleted at the range's version, listed above
    /// or not), as each core keeps them.
    pub deleted_ranges: Vec<DeletedRange>,
    /// The cores that answered.
    pub answered: Vec<String>,
    /// The cores that could not be listed, with the error.
    pub failed: Vec<(String, String)>,
    /// How many cores the site has.
    pub total: usize,
}

impl FileListing {
    /// Whether every core of the site but at most one answered (the site
    /// has at least one core): no block held on two cores was missed.
    pub fn all_but_one(&self) -> bool {
        self.total > 0 && self.answered.len() + 1 >= self.total
    }

    /// The version up to which a deleted range of this listing deletes
    /// block `index`, if one covers it.
    pub fn deleted_to(&self, index: u64) -> Option<Version> {
        self.deleted_ranges
            .iter()
            .filter(|range| range.covers(index))
            .map(|range| range.version)
            .max()
    }

    /// The newest version this listing knows of block `index`: a copy, a
    /// deleted marker or a deleted range covering it.
    pub fn newest(&self, index: u64) -> Option<Version> {
        self.versions
            .get(&index)
            .copied()
            .max(self.deleted_to(index))
    }
}

impl BlockClient {
    /// Raises the ownership fence of `file_id` to `epoch` on every core of
    /// this client's site, in parallel. A core that answers has made the
    /// fence durable and has no write or delete of the file admitted under
    /// a lower fence in flight; from then on it refuses reads, writes and
    /// deletes of the file with an older epoch. The cores
    /// that did not answer are then fenced through one that did (it relays
    /// the fence to them inside the site), so a core cut off from this
    /// client but not from its site is fenced too (the core server's
    /// `fence` module has why every core that may hold the file is).
    pub async fn fence(&self, file_id: FileId, epoch: Epoch) -> FenceReport {
        let order = FenceOrder {
            epoch,
            lost_below: None,
            adopt: false,
        };
        self.fence_with(file_id, order).await
    }

    /// [`BlockClient::fence`] that also records a takeover from a lost
    /// owner on the cores (`order.lost_below`, and whether the caller is
    /// that takeover and adopts their copies; the core server's `fence`
    /// module has why).
    pub async fn fence_with(&self, file_id: FileId, order: FenceOrder) -> FenceReport {
        let epoch = order.epoch;
        let cores = self.inner.placement.cores(self.inner.site);
        let calls = cores.iter().map(|node| async move {
            let result = async {
                let mut client = self.client(node).map_err(|err| err.to_string())?;
                let request = wire::FenceRequest {
                    file_id: file_id.0,
                    epoch: epoch.get(),
                    relay_to: Vec::new(),
                    lost_below: Epoch::to_wire(order.lost_below),
                    adopt: order.adopt,
                };
                match client.fence(request).await {
                    Ok(reply) => Ok(Epoch::from_wire(reply.into_inner().epoch)),
                    Err(status) => {
                        let text = format!("{}: {}", status.code(), status.message());
                        self.failed(&node.name, is_suspect(&node.name, status));
                        Err(text)
                    }
                }
            }
            .await;
            (node, result)
        });
        let mut report = FenceReport {
            total: cores.len(),
            ..FenceReport::default()
        };
        for (node, result) in futures::future::join_all(calls).await {
            match result {
                Ok(fence) => {
                    self.inner.liveness.alive(&node.name);
                    report.highest = report.highest.max(fence);
                    report.fenced.push(node.name.clone());
                }
                Err(err) => {
                    tracing::warn!(node = %node.name, %file_id, %epoch, %err, "fence failed");
                    report.failed.push((node.name.clone(), err));
                }
            }
        }
        self.relay_fence(file_id, order, &mut report).await;
        report
    }

    /// Asks the first fenced core of `report` to fence the cores that
    /// failed; those it reached move to the fenced ones.
    async fn relay_fence(&self, file_id: FileId, order: FenceOrder, report: &mut FenceReport) {
        let epoch = order.epoch;
        if report.failed.is_empty() {
            return;
        }
        let Some(relay) = report
            .fenced
            .first()
            .and_then(|name| self.all_cores().find(|n| &n.name == name))
        else {
            return;
        };
        let request = wire::FenceRequest {
            file_id: file_id.0,
            epoch: epoch.get(),
            relay_to: report.failed.iter().map(|(name, _)| name.clone()).collect(),
            lost_below: Epoch::to_wire(order.lost_below),
            adopt: order.adopt,
        };
        let relayed = match self.client(relay) {
            Ok(mut client) => match client.fence(request).await {
                Ok(reply) => reply.into_inner().relayed,
                Err(status) => {
                    tracing::warn!(node = %relay.name, %file_id, %epoch,
                        "fence relay failed: {}", status.message());
                    return;
                }
            },
            Err(err) => {
                tracing::warn!(node = %relay.name, %file_id, %epoch, %err, "fence relay failed");
                return;
            }
        };
        for name in relayed {
            if let Some(at) = report.failed.iter().position(|(n, _)| *n == name) {
                report.failed.remove(at);
                tracing::info!(node = %name, via = %relay.name, %file_id, %epoch,
                    "fence raised through a peer of the core's site");
                report.fenced.push(name);
            }
        }
    }

    /// The blocks of `file_id` on every core of this client's site (asked
    /// in parallel, each paging through its List from the file's first
    /// block and stopping at the next file), with the newest version of
    /// each index among the cores that answered.
    pub async fn list_file(&self, file_id: FileId) -> FileListing {
        let cores = self.inner.placement.cores(self.inner.site);
        let calls = cores.iter().map(|node| async move {
            let result = self.list_file_on(node, file_id).await;
            if let Err((_, suspect)) = &result {
                self.failed(&node.name, *suspect);
            }
            (node, result)
        });
        let mut listing = FileListing {
            total: cores.len(),
            ..FileListing::default()
        };
        for (node, result) in futures::future::join_all(calls).await {
            match result {
                Ok((blocks, ranges)) => {
                    self.inner.liveness.alive(&node.name);
                    for (index, version) in blocks {
                        let newest = listing.versions.entry(index).or_insert(version);
                        *newest = (*newest).max(version);
                    }
                    for range in ranges {
                        if !listing.deleted_ranges.contains(&range) {
                            listing.deleted_ranges.push(range);
                        }
                    }
                    listing.answered.push(node.name.clone());
                }
                Err((err, _)) => listing.failed.push((node.name.clone(), err)),
            }
        }
        listing
    }

    /// `(index, version)` of every block of `file_id` on `node`, blocks
    /// deleted there included (at the delete's version: a tombstone is
    /// newer than any older copy elsewhere), and the file's deleted ranges
    /// there; on failure the error text and whether the core looked
    /// unreachable.
    async fn list_file_on(
        &self,
        node: &Node,
        file_id: FileId,
    ) -> Result<(Vec<(u64, Version)>, Vec<DeletedRange>), (String, bool)> {
        let ranges = async {
            let mut client = self.client(node).map_err(|err| (err.to_string(), false))?;
            let reply = client
                .list_deleted_ranges(wire::ListDeletedRangesRequest { file_id: file_id.0 })
                .await
                .map_err(|status| {
                    let text = format!("{}: {}", status.code(), status.message());
                    (text, is_suspect(&node.name, status))
                })?;
            Ok(reply
                .into_inner()
                .ranges
                .into_iter()
                .map(Into::into)
                .collect())
        };
        // In parallel: over the WAN, one round trip (per page) for all three.
        let (mut blocks, deleted, ranges) = futures::future::try_join3(
            self.list_file_part(node, file_id, false),
            self.list_file_part(node, file_id, true),
            ranges,
        )
        .await?;
        blocks.extend(deleted);
        Ok((blocks, ranges))
    }

    /// One of the two listings of [`BlockClient::list_file_on`]: the
    /// stored blocks, or the deleted ones.
    async fn list_file_part(
        &self,
        node: &Node,
        file_id: FileId,
        deleted: bool,
    ) -> Result<Vec<(u64, Version)>, (String, bool)> {
        let mut client = self.client(node).map_err(|err| (err.to_string(), false))?;
        // Strictly after the previous file's last possible block.
        let mut start_after = file_id.0.checked_sub(1).map(|previous| wire::BlockId {
            file_id: previous,
            index: u64::MAX,
        });
        let mut blocks = Vec::new();
        loop {
            let page = client
                .list(wire::ListRequest {
                    start_after,
                    limit: LIST_PAGE,
                    deleted,
                })
                .await
                .map_err(|status| {
                    let text = format!("{}: {}", status.code(), status.message());
                    (text, is_suspect(&node.name, status))
                })?
                .into_inner();
            let mut last = None;
            for info in page.blocks {
                let Some(block) = info.block else {
                    return Err((format!("{} listed a block without an id", node.name), false));
                };
                if block.file_id != file_id.0 {
                    return Ok(blocks);
                }
                blocks.push((block.index, Version(info.version)));
                last = Some(block);
            }
            match last {
                Some(block) if page.more => start_after = Some(block),
                _ => return Ok(blocks),
            }
        }
    }

    /// Puts a whole-block copy of `block` at `version` (`data` from the
    /// block's start; trailing zeros are not sent, they read back as zeros)
    /// on the first `copies` cores of this client's site in the block's
    /// placement order (believed-live ones first), durably, trying the next
    /// core when one fails. A core that already holds `version` or newer
    /// keeps its copy and counts as holding it (never newer by older,
    /// docs/ARCHITECTURE.md#invariant-8). Returns how many cores hold `version` or newer; fails
    /// with [`BlockError::CopiesNotPlaced`] when fewer than `copies`.
    ///
    /// Used to catch a site up with another site's newer copy of a block;
    /// `epoch` is the caller's ownership epoch (the copy becomes part of
    /// the file at it; `None`: not checked).
    pub async fn put_whole(
        &self,
        block: BlockId,
        version: Version,
        data: Bytes,
        copies: usize,
        epoch: Option<Epoch>,
    ) -> Result<usize, BlockError> {
        if version == Version::ZERO {
            return Err(BlockError::Invalid("versions start at 1".into()));
        }
        self.check_range(0, data.len() as u64)?;
        self.forget_version(block);
        let used = data
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        let data = data.slice(..used);
        let (order, _) = self.order(block);
        let mut pending: FuturesUnordered<_> = order
            .iter()
            .take(copies)
            .map(|node| self.put_one(node, block, version, data.clone(), epoch))
            .collect();
        let mut next = copies.min(order.len());
        let mut placed = 0;
        let mut last_error = None;
        while let Some((node, result)) = pending.next().await {
            match result {
                Ok(()) => {
                    self.inner.liveness.alive(&node.name);
                    placed += 1;
                }
                Err(CopyError::Fatal(err)) => return Err(err),
                Err(CopyError::Mismatch) => {}
                Err(CopyError::Retry { err, suspect }) => {
                    tracing::warn!(node = %node.name, %err, "whole-block put failed; trying another core");
                    self.failed(&node.name, suspect);
                    last_error = Some(err.to_string());
                    if let Some(replacement) = order.get(next) {
                        next += 1;
                        pending.push(self.put_one(
                            replacement,
                            block,
                            version,
                            data.clone(),
                            epoch,
                        ));
                    }
                }
            }
        }
        if placed < copies {
            return Err(BlockError::CopiesNotPlaced {
                site: self.inner.site_name.clone(),
                block,
                placed,
                wanted: copies,
                total: order.len(),
                last_error,
            });
        }
        Ok(placed)
    }

    /// One whole-block put of [`BlockClient::put_whole`] on `node`: `Ok`
    /// when the core holds `version` or newer after it (applied, already
    /// held, or skipped as stale).
    async fn put_one<'n>(
        &self,
        node: &'n Node,
        block: BlockId,
        version: Version,
        data: Bytes,
        epoch: Option<Epoch>,
    ) -> (&'n Node, Result<(), CopyError>) {
        let result = match self.replica_put(node, block, version, data, epoch).await {
            Ok(_) => Ok(()),
            Err(Ok(status)) => Err(classify(&node.name, status)),
            Err(Err(err)) => Err(CopyError::Fatal(err)),
        };
        (node, result)
    }

    /// A whole-block replica of `block` at `version` put on `node` (no
    /// replication job) by an owner at `epoch` (`None`: not checked); the
    /// core's answer, else its refusal (`Ok`) or why it could not be asked
    /// (`Err`).
    pub(super) async fn replica_put(
        &self,
        node: &Node,
        block: BlockId,
        version: Version,
        data: Bytes,
        epoch: Option<Epoch>,
    ) -> Result<ReplicaPutReply, Result<tonic::Status, BlockError>> {
        let mut client = self.replica_client(node).map_err(Err)?;
        let request = ReplicaPut {
            block: Some(block.into()),
            version: version.0,
            data,
            origin_site: self.inner.site_name.clone(),
            repair: false,
            job: None,
            owner_epoch: Epoch::to_wire(epoch),
            lost_below: 0,
            ..Default::default()
        };
        client
            .put(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(Ok)
    }

    /// A BlockReplication client to `node` (whole-block puts of up to a
    /// block).
    pub(super) fn replica_client(
        &self,
        node: &Node,
    ) -> Result<BlockReplicationClient<RpcChannel>, BlockError> {
        let (channel, max) = self.channel_to(node)?;
        Ok(BlockReplicationClient::new(channel)
            .max_encoding_message_size(max)
            .max_decoding_message_size(max))
    }
}

/// Whether `status` means `node` looked unreachable.
fn is_suspect(node: &str, status: tonic::Status) -> bool {
    matches!(
        classify(node, status),
        CopyError::Retry { suspect: true, .. }
    )
}
