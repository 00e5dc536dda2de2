//! The replicator's calls to other cores — puts (with the switch to
//! another core of the target's site), trims and probes — and the
//! decisions built on them: a secondary's takeover and the restoring of a
//! second in-site copy (see the module documentation of
//! [`crate::replicator`]).

use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::domain::{BlockId, Epoch, Version};
use geonfs_proto::replication::ReplicaJob;
use geonfs_site_config::{Node, SiteId};
use tonic::Code;

use super::ship::Payload;
use super::{Attempt, ReplicationJob, Worker};

/// A failed call: the message, and whether the core looked unreachable
/// (so another core may be tried).
pub(super) type CallError = (String, bool);

/// Whether a status means the callee could not be reached.
pub(super) fn unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// What a probe of one core found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probed {
    /// The core holds the block at `version`; `pending_job` is the version
    /// of its replication job (0: none).
    Holds {
        version: Version,
        pending_job: Version,
    },
    /// The core answered that it does not hold the block.
    Absent,
    /// The core did not answer.
    Unreachable,
}

impl Probed {
    /// Whether the core holds `version` or a newer one.
    pub(super) fn holds_at_least(self, version: Version) -> bool {
        matches!(self, Probed::Holds { version: v, .. } if v >= version)
    }
}

impl Worker {
    /// The cores of `site` ranked for `block` (every configured core).
    pub(super) fn ranked(&self, block: BlockId, site: SiteId) -> Vec<&Node> {
        self.placement.in_site(block, site, &|_| true)
    }

    /// Trims `peer`'s copy up to `version` (it keeps a trim marker).
    pub(super) async fn trim(
        &self,
        peer: &str,
        block: BlockId,
        version: Version,
    ) -> Result<(), CallError> {
        let mut client = CoreDataClient::new(self.channel(peer).map_err(|err| (err, true))?);
        let reply = client
            .delete(wire::DeleteRequest {
                block: Some(block.into()),
                up_to_version: version.0,
                owner_epoch: 0,
                trim: true,
            })
            .await
            .map_err(|status| {
                (
                    format!("trim on {peer}: {}: {}", status.code(), status.message()),
                    unreachable(&status),
                )
            })?
            .into_inner();
        if reply.deleted {
            self.metrics.trims.inc();
        }
        Ok(())
    }

    /// Tells `peer` that every remote site holds `version` of `block`, so
    /// that its job is no longer pending (it keeps its copy until the trim
    /// at `trim_at_ms`).
    pub(super) async fn tell_shipped(
        &self,
        peer: &str,
        block: BlockId,
        version: Version,
        trim_at_ms: u64,
    ) -> Result<(), String> {
        let mut client = CoreDataClient::new(self.channel(peer)?);
        client
            .shipped(wire::ShippedRequest {
                block: Some(block.into()),
                version: version.0,
                trim_at_ms,
            })
            .await
            .map_err(|status| {
                format!("shipped to {peer}: {}: {}", status.code(), status.message())
            })?;
        Ok(())
    }

    /// Repairs this core's damaged copy of the job's block from another
    /// copy of the job's version or newer: the job's peer (it keeps its
    /// copy until the trim), else the remote targets (a put may have
    /// reached them).
    pub(super) async fn repair_own_copy(&self, job: &ReplicationJob) -> Result<(), String> {
        let block = job.block;
        let sources = std::iter::once(&job.peer)
            .filter(|peer| !peer.is_empty())
            .chain(&job.targets);
        let mut errors = Vec::new();
        for source in sources {
            let Ok(channel) = self.channel(source) else {
                continue;
            };
            let reply = CoreDataClient::new(channel)
                .max_decoding_message_size(self.max_message)
                .read(wire::ReadRequest {
                    block: Some(block.into()),
                    offset: 0,
                    length: u32::try_from(self.block_size).unwrap_or(u32::MAX),
                    with_pending_job: false,
                    owner_epoch: 0,
                })
                .await;
            match reply.map(tonic::Response::into_inner) {
                Ok(copy) if copy.found && Version(copy.version) >= job.version => {
                    let used = copy.data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    let changed = self
                        .store
                        .repair_local(
                            block,
                            Version(copy.version),
                            copy.data.slice(..used),
                            Epoch::from_wire(copy.copy_epoch),
                        )
                        .await
                        .map_err(|err| err.to_string())?;
                    if changed {
                        self.metrics.repairs.with_label_values(&["own_copy"]).inc();
                        tracing::warn!(node = %self.name, from = %source, %block, version = %copy.version,
                            "damaged copy repaired before shipping");
                    }
                    return Ok(());
                }
                Ok(_) => errors.push(format!("{source} holds no copy of version {}", job.version)),
                Err(status) => errors.push(format!("{source}: {}", status.message())),
            }
        }
        Err(if errors.is_empty() {
            "no other copy to repair from".to_string()
        } else {
            errors.join("; ")
        })
    }

    /// What `node` holds of `block` (a zero-length read).
    pub(super) async fn probe(&self, node: &str, block: BlockId) -> Probed {
        let Ok(channel) = self.channel(node) else {
            return Probed::Unreachable;
        };
        let reply = CoreDataClient::new(channel)
            .read(wire::ReadRequest {
                block: Some(block.into()),
                offset: 0,
                length: 0,
                with_pending_job: true,
                owner_epoch: 0,
            })
            .await;
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.found {
                    Probed::Holds {
                        version: Version(reply.version),
                        pending_job: Version(reply.pending_job_version),
                    }
                } else {
                    Probed::Absent
                }
            }
            Err(_) => {
                self.metrics.failures.with_label_values(&["local"]).inc();
                Probed::Unreachable
            }
        }
    }

    /// A secondary's due job: `Ok(Some(_))` when it is settled here (the
    /// primary is responsible, or finished and this copy was trimmed),
    /// `Ok(None)` when this core took the job over (it is now its primary,
    /// with no peer).
    pub(super) async fn secondary_decision(
        &self,
        job: &ReplicationJob,
    ) -> Result<Option<Attempt>, String> {
        let block = job.block;
        let primary = if job.peer.is_empty() {
            Probed::Absent
        } else {
            self.probe(&job.peer, block).await
        };
        match primary {
            Probed::Holds { pending_job, .. } if primary.holds_at_least(job.version) => {
                if pending_job != Version::ZERO {
                    return Ok(Some(Attempt::Watch));
                }
                // The primary finished: the remote copies are durable and
                // its trim of this copy was lost. Trim ourselves.
                let deleted = self
                    .store
                    .trim_local(block, job.version)
                    .await
                    .map_err(|err| err.to_string())?;
                if deleted {
                    self.metrics.trims.inc();
                }
                tracing::info!(node = %self.name, %block,
                    version = %job.version, "primary finished replication; extra copy removed");
                Ok(Some(Attempt::Done))
            }
            _ => {
                // Never keep the old primary as peer: two cores must not
                // trim each other's copy.
                let moved = self
                    .store
                    .retarget(block, job.version, true, String::new())
                    .await
                    .map_err(|err| err.to_string())?;
                if !moved {
                    // Replaced by a newer write or gone: the next poll sees it.
                    return Ok(Some(Attempt::Done));
                }
                self.metrics.takeovers.inc();
                tracing::warn!(node = %self.name, primary = %job.peer, ?primary,
                    %block, version = %job.version,
                    "primary lost or behind; taking over geo replication");
                Ok(None)
            }
        }
    }

    /// Makes sure a second core of this site holds the job's version: if
    /// the peer does not (unreachable, absent, behind, or no peer), copies
    /// the block to the best other core of the site with a secondary job
    /// naming this core, and makes it the job's peer.
    pub(super) async fn ensure_local_copy(&self, job: &ReplicationJob) -> Result<(), String> {
        let block = job.block;
        if !job.peer.is_empty()
            && self
                .probe(&job.peer, block)
                .await
                .holds_at_least(job.version)
        {
            return Ok(());
        }
        let copy = match self.store.read_block(block).await {
            Ok(Some(copy)) if copy.version == job.version => copy,
            // Gone or replaced by a newer write: the next attempt looks again.
            Ok(_) => return Ok(()),
            Err(err) => return Err(err.to_string()),
        };
        let spec = ReplicaJob {
            targets: job.targets.clone(),
            primary: false,
            peer: self.name.clone(),
        };
        let mut errors = Vec::new();
        for candidate in self.ranked(block, self.home) {
            if candidate.name == self.name || candidate.name == job.peer {
                continue;
            }
            let put = self
                .put(
                    &candidate.name,
                    block,
                    Payload::Whole(&copy),
                    Some(spec.clone()),
                    false,
                )
                .await;
            match put {
                Ok(reply) if reply.skipped_stale => {
                    // A newer write exists there: this job is superseded.
                    return Ok(());
                }
                Ok(_) => {
                    self.store
                        .retarget(block, job.version, true, candidate.name.clone())
                        .await
                        .map_err(|err| err.to_string())?;
                    self.metrics
                        .repairs
                        .with_label_values(&["local_copy"])
                        .inc();
                    tracing::warn!(node = %self.name, lost = %job.peer, restored_on = %candidate.name,
                        %block, version = %job.version,
                        "second in-site copy restored");
                    return Ok(());
                }
                Err((err, _)) => errors.push(err),
            }
        }
        Err(if errors.is_empty() {
            "no other core in this site".to_string()
        } else {
            errors.join("; ")
        })
    }
}
