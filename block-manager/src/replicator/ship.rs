//! Puts to other cores: what a put carries (the whole block, or the
//! changes since a base, see [`super::changes`]), the switch to another
//! core of the target's site when the designated one is unreachable, and the
//! whole-block fallback when a target's copy is not at the changes' base.

use geonfs_proto::domain::{BlockId, Epoch, Version};
use geonfs_proto::replication::{
    ChangedPiece as WirePiece, ReplicaJob, ReplicaPut, ReplicaPutReply,
};
use prost::Message;

use super::repair::{unreachable, CallError};
use super::{CopyChanges, LocalCopy, Shipped, Worker};

/// What a job ships: the copy's changes, or (no changes known) the whole
/// copy.
#[derive(Clone, Debug)]
pub(super) enum Shipment {
    /// The changes since the job's base.
    Changes(CopyChanges),
    /// The whole copy.
    Whole(LocalCopy),
}

impl Shipment {
    /// The version of the copy shipped.
    pub(super) fn version(&self) -> Version {
        match self {
            Shipment::Changes(changes) => changes.version,
            Shipment::Whole(copy) => copy.version,
        }
    }
}

/// What one put carries.
#[derive(Clone, Copy, Debug)]
pub(super) enum Payload<'a> {
    /// The whole copy.
    Whole(&'a LocalCopy),
    /// Changes on top of a base.
    Changes(&'a CopyChanges),
}

impl Payload<'_> {
    /// The put, and the bytes of block data it carries.
    fn request(
        self,
        origin_site: &str,
        job: Option<ReplicaJob>,
        repair: bool,
    ) -> (ReplicaPut, u64) {
        let mut put = ReplicaPut {
            origin_site: origin_site.to_string(),
            repair,
            job,
            ..Default::default()
        };
        let carried = match self {
            Payload::Whole(copy) => {
                put.version = copy.version.0;
                put.data = copy.data.clone();
                put.owner_epoch = Epoch::to_wire(copy.epoch);
                put.lost_below = Epoch::to_wire(copy.lost_below);
                copy.data.len() as u64
            }
            Payload::Changes(changes) => {
                put.version = changes.version.0;
                put.base_version = Some(changes.base.0);
                put.length = changes.length;
                put.owner_epoch = Epoch::to_wire(changes.epoch);
                put.lost_below = Epoch::to_wire(changes.lost_below);
                put.pieces = changes
                    .pieces
                    .iter()
                    .map(|piece| WirePiece {
                        offset: piece.offset,
                        data: piece.data.clone(),
                    })
                    .collect();
                changes
                    .pieces
                    .iter()
                    .map(|piece| piece.data.len() as u64)
                    .sum()
            }
        };
        (put, carried)
    }

    fn kind(self) -> &'static str {
        match self {
            Payload::Whole(_) => "whole",
            Payload::Changes(_) => "changes",
        }
    }
}

/// What a put's reply means for the job.
fn shipped(reply: &ReplicaPutReply) -> Shipped {
    if reply.superseded {
        Shipped::Superseded {
            lost_below: Epoch::from_wire(reply.lost_below).unwrap_or(Epoch::FIRST),
        }
    } else if reply.base_mismatch {
        Shipped::BaseMismatch {
            held: Some(Version(reply.stored_version)).filter(|&held| held != Version::ZERO),
        }
    } else {
        Shipped::Held
    }
}

impl Worker {
    /// Ships a job's copy to `target`'s site (see [`Worker::put_to_site`]):
    /// its changes when it has them, and the whole block to a site whose
    /// copy is not at their base.
    pub(super) async fn ship(
        &self,
        target: &str,
        block: BlockId,
        shipment: &Shipment,
    ) -> Result<Shipped, String> {
        let changes = match shipment {
            Shipment::Whole(copy) => {
                return self.put_to_site(target, block, Payload::Whole(copy)).await
            }
            Shipment::Changes(changes) => changes,
        };
        let held = match self
            .put_to_site(target, block, Payload::Changes(changes))
            .await?
        {
            Shipped::BaseMismatch { held } => held,
            other => return Ok(other),
        };
        // A site that already has some of the changes (an earlier attempt
        // reached it and not another site) gets the rest.
        if let Some(rest) = held.and_then(|held| changes.since(held)) {
            match self
                .put_to_site(target, block, Payload::Changes(&rest))
                .await?
            {
                Shipped::BaseMismatch { .. } => {}
                other => return Ok(other),
            }
        }
        // The whole copy, at the changes' version or newer (a newer write
        // may have landed since; its own job ships it again).
        let copy = match self.store.read_block(block).await {
            Ok(Some(copy)) if copy.version >= changes.version => copy,
            Ok(_) => {
                return Err(format!(
                    "{block}: the copy changed or went while shipping it whole"
                ))
            }
            Err(err) => return Err(err.to_string()),
        };
        match self
            .put_to_site(target, block, Payload::Whole(&copy))
            .await?
        {
            Shipped::BaseMismatch { .. } => Err(format!(
                "{target} refused a whole copy of {block} as a base mismatch"
            )),
            other => Ok(other),
        }
    }

    /// Ships `payload` to `target`, or, when it is unreachable, to the
    /// next core of its site in rendezvous order; `Ok` once one of them
    /// holds that version (or a newer one) durably, refused the copy as
    /// superseded, or (changes) does not hold their base.
    pub(super) async fn put_to_site(
        &self,
        target: &str,
        block: BlockId,
        payload: Payload<'_>,
    ) -> Result<Shipped, String> {
        let first = self.put(target, block, payload, None, false).await;
        let Err((err, true)) = first else {
            return first.map(|reply| shipped(&reply)).map_err(|(err, _)| err);
        };
        let Some(site) = self.placement.site_of_core(target) else {
            return Err(err);
        };
        let mut errors = vec![err];
        for other in self.ranked(block, site) {
            if other.name == target {
                continue;
            }
            match self.put(&other.name, block, payload, None, false).await {
                Ok(reply) => {
                    tracing::info!(node = %self.name, designated = %target, used = %other.name,
                        %block,
                        "designated remote core unreachable; copied to another core of its site");
                    return Ok(shipped(&reply));
                }
                Err((err, _)) => errors.push(err),
            }
        }
        Err(errors.join("; "))
    }

    /// One put of `payload` to `target`.
    pub(super) async fn put(
        &self,
        target: &str,
        block: BlockId,
        payload: Payload<'_>,
        job: Option<ReplicaJob>,
        repair: bool,
    ) -> Result<ReplicaPutReply, CallError> {
        let site = self
            .nodes
            .get(target)
            .map_or("unknown", |(_, s)| s.as_str());
        let (mut put, carried) = payload.request(&self.site, job, repair);
        put.block = Some(block.into());
        self.metrics
            .wire_bytes
            .with_label_values(&[site])
            .inc_by(put.encoded_len() as u64);
        self.metrics
            .puts
            .with_label_values(&[site, payload.kind()])
            .inc();
        match self.put_streamed(target, put).await {
            Ok(reply) => {
                if reply.applied {
                    self.metrics
                        .bytes_replicated
                        .with_label_values(&[site])
                        .inc_by(carried);
                }
                Ok(reply)
            }
            Err(status) => {
                self.metrics.failures.with_label_values(&[site]).inc();
                Err((
                    format!("put to {target}: {}: {}", status.code(), status.message()),
                    unreachable(&status),
                ))
            }
        }
    }
}
