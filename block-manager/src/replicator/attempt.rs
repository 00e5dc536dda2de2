//! One attempt at a due job (see the module documentation of
//! [`super`]): a secondary's decision, what the copy ships (its changes or
//! the whole block), the puts to every target, then the shipped state and
//! the trim of the peer.

use geonfs_proto::domain::{unix_time_ms, BlockId, Epoch, Version};

use super::ship::Shipment;
use super::{millis, Attempt, ReplicationJob, Shipped, Worker};

impl Worker {
    pub(super) async fn attempt(&self, job: &ReplicationJob) -> Attempt {
        if job.shipped {
            // Quiet for the trim delay since it shipped: the primary trims
            // its peer; a secondary only drops its job (two cores must
            // never trim each other's copy).
            if !job.primary {
                return self.done(job.block, job.version).await;
            }
            return self.trim_and_finish(job, job.version).await;
        }
        let mut job = job.clone();
        let block = job.block;
        if !job.primary {
            match self.secondary_decision(&job).await {
                Ok(Some(attempt)) => return attempt,
                Ok(None) => {
                    job.primary = true;
                    job.peer.clear();
                }
                Err(err) => return Attempt::Failed(err),
            }
        }
        let shipment = match self.shipment(&job).await {
            Ok(Some(shipment)) => shipment,
            // Trimmed or deleted: nothing left to ship from here.
            Ok(None) => return self.done(block, job.version).await,
            Err(err) => return Attempt::Failed(err),
        };
        // A copy newer than its job (a newer write replaced the job
        // meanwhile, or a seed or catch-up put a newer whole copy here
        // without one) is shipped as it is: the job covers its version or
        // newer, and is done up to what was shipped. (Returning "done"
        // without shipping would leave the old job due forever.)
        let version = shipment.version();
        if version < job.version {
            tracing::warn!(node = %self.name, %block,
                job = %job.version, stored = %version, "replication job newer than its block; dropping it");
            return self.done(block, job.version).await;
        }
        job.version = version;
        let puts = job
            .targets
            .iter()
            .map(|target| self.ship(target, block, &shipment));
        let mut failed = Vec::new();
        let mut superseded = None;
        for result in futures::future::join_all(puts).await {
            match result {
                Ok(Shipped::Held) => {}
                Ok(Shipped::Superseded { lost_below }) => {
                    superseded = superseded.max(Some(lost_below));
                }
                Ok(Shipped::BaseMismatch { .. }) => failed.push(format!("{block}: base mismatch")),
                Err(err) => failed.push(err),
            }
        }
        if let Some(lost_below) = superseded {
            return self.set_aside(block, lost_below).await;
        }
        if !failed.is_empty() {
            if self.is_old(&job) {
                if let Err(err) = self.ensure_local_copy(&job).await {
                    tracing::warn!(node = %self.name, %block,
                        %err, "cannot restore the second in-site copy");
                }
            }
            return Attempt::Failed(failed.join("; "));
        }
        if !job.peer.is_empty() && !self.options.trim_delay.is_zero() {
            return self.shipped_keeping_peer(&job, version).await;
        }
        self.trim_and_finish(&job, version).await
    }

    /// Every target holds `version`: the job waits as shipped for the trim
    /// delay, and the peer learns that its copy is no longer the only
    /// fallback (else it would count as never copied out, see
    /// `core-server/src/store/quarantine.rs`, and keep watching this core).
    async fn shipped_keeping_peer(&self, job: &ReplicationJob, version: Version) -> Attempt {
        let block = job.block;
        let trim_at = unix_time_ms().saturating_add(millis(self.options.trim_delay));
        if let Err(err) = self.store.job_shipped(block, version, Some(trim_at)).await {
            return Attempt::Failed(err.to_string());
        }
        if let Err(err) = self.tell_shipped(&job.peer, block, version, trim_at).await {
            // Its job stays pending: it watches this core, as before a ship.
            tracing::debug!(node = %self.name, peer = %job.peer, %block, %err,
                "peer not told of a shipped version");
        }
        Attempt::Done
    }

    /// Every target holds `version`: trims the peer's copy up to it, then
    /// removes the job (unless a newer write replaced it).
    async fn trim_and_finish(&self, job: &ReplicationJob, version: Version) -> Attempt {
        let block = job.block;
        if !job.peer.is_empty() {
            if let Err((err, unreachable)) = self.trim(&job.peer, block, version).await {
                self.metrics.failures.with_label_values(&["local"]).inc();
                if !unreachable {
                    return Attempt::Failed(err);
                }
                // The peer deletes its copy itself when it is back (its
                // probe finds this copy with no job left).
                tracing::info!(node = %self.name, peer = %job.peer, %err,
                    "peer unreachable for the trim; it trims itself when back");
            }
        }
        match self.store.job_shipped(block, version, None).await {
            Ok(()) => Attempt::Done,
            Err(err) => Attempt::Failed(err.to_string()),
        }
    }

    /// What the job ships from this core's copy: its changes when the
    /// store has them, else the whole copy; `None` when the copy is gone.
    /// A damaged copy is repaired from another first (the next attempt
    /// ships it; else it never could).
    async fn shipment(&self, job: &ReplicationJob) -> Result<Option<Shipment>, String> {
        let block = job.block;
        let read = match self.store.read_changes(block).await {
            Ok(Some(changes)) => return Ok(Some(Shipment::Changes(changes))),
            Ok(None) => self.store.read_block(block).await,
            Err(err) => Err(err),
        };
        match read {
            Ok(copy) => Ok(copy.map(Shipment::Whole)),
            Err(err) => {
                if err.is_data_loss() {
                    if let Err(repair) = self.repair_own_copy(job).await {
                        tracing::warn!(node = %self.name, %block, %repair, "cannot repair a damaged copy to ship");
                    }
                }
                Err(err.to_string())
            }
        }
    }

    /// Whether the job has waited at least the takeover timeout.
    fn is_old(&self, job: &ReplicationJob) -> bool {
        unix_time_ms().saturating_sub(job.first_enqueued_ms)
            >= millis(self.options.takeover_timeout)
    }

    /// A target refused the copy: written under an owner declared lost at
    /// `lost_below`, never seen by that takeover. This core sets its copies
    /// of the file that are in that case aside (the job goes with them).
    async fn set_aside(&self, block: BlockId, lost_below: Epoch) -> Attempt {
        match self.store.set_aside(block.file_id, lost_below).await {
            Ok(()) => {
                tracing::warn!(node = %self.name, %block,
                    %lost_below, "copy refused as superseded by a takeover from a lost owner; set aside");
                Attempt::Done
            }
            Err(err) => Attempt::Failed(format!("cannot set aside a superseded copy: {err}")),
        }
    }

    async fn done(&self, block: BlockId, version: Version) -> Attempt {
        match self.store.job_done(block, version).await {
            Ok(()) => Attempt::Done,
            Err(err) => Attempt::Failed(err.to_string()),
        }
    }
}
