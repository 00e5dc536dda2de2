//! The replicator's periodic scan: restores the copies of already
//! replicated blocks that were lost with a core (a new remote copy) and
//! removes duplicates inside this core's site.
//!
//! Every [`super::ReplicatorOptions::scan_interval`], each core walks the
//! blocks it holds that have no pending job (blocks with a job are the
//! queue's business). For each block at version `v`:
//!
//! 1. **In-site duplicates.** If another core of this site holds a newer
//!    version with no pending job (this copy is stale: its core was down
//!    while the newer write went to another core of the site), or a core
//!    ranked before this one for the block holds `v` with no pending job
//!    (a duplicate: a core that came back after its block was copied
//!    elsewhere), this copy is deleted. Equal copies defer to the better
//!    rank, so two cores never delete each other's copy.
//! 2. **Remote copies.** For each of the other sites the block should be
//!    in (the first n−1 other sites in rendezvous order), the site's cores
//!    are probed in rendezvous order until one holds `v` or newer. If none
//!    does but some answered, the block is put to the best one that
//!    answered (counted as a `remote_copy` repair). A site none of whose
//!    cores answers is left alone: it is down, not missing a copy.
//!
//! Puts never replace newer data (docs/ARCHITECTURE.md#invariant-8), so a scan racing a newer
//! write changes nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use geonfs_proto::domain::{BlockId, Version};
use geonfs_site_config::SiteId;

use super::repair::Probed;
use super::ship::Payload;
use super::Worker;

/// Blocks listed per page of the scan.
const PAGE: usize = 256;
/// Blocks checked concurrently by the scan.
const CONCURRENCY: usize = 4;

impl Worker {
    /// Runs a scan pass every `every`, forever.
    pub(super) async fn scan_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.scan_pass().await {
                Ok(checked) => {
                    tracing::debug!(node = %self.name, checked, "replication scan pass done")
                }
                Err(err) => tracing::warn!(node = %self.name, %err, "replication scan pass failed"),
            }
        }
    }

    /// One pass over every block this core holds; returns how many were
    /// checked.
    pub(super) async fn scan_pass(&self) -> Result<usize, String> {
        let mut after = None;
        let mut checked = 0;
        loop {
            let page = self
                .store
                .list_blocks(after, PAGE)
                .await
                .map_err(|err| err.to_string())?;
            after = page.blocks.last().map(|held| held.block);
            checked += page.blocks.len();
            futures::stream::iter(page.blocks)
                .for_each_concurrent(CONCURRENCY, |held| async move {
                    if let Err(err) = self.check_block(held.block, held.version).await {
                        tracing::warn!(node = %self.name, block = %held.block, %err,
                            "replication scan: block check failed");
                    }
                })
                .await;
            if !page.more || after.is_none() {
                return Ok(checked);
            }
        }
    }

    async fn check_block(&self, block: BlockId, version: Version) -> Result<(), String> {
        if self
            .store
            .job_version(block)
            .await
            .map_err(|err| err.to_string())?
            .is_some()
        {
            return Ok(());
        }
        if self.duplicate_in_site(block, version).await? {
            return Ok(());
        }
        let wanted = self.placement.replication_factor().saturating_sub(1);
        let mut holding = 0;
        for site in self.placement.remote_sites(block, self.home) {
            if holding >= wanted {
                break;
            }
            if self.ensure_site_copy(block, version, site).await? {
                holding += 1;
            }
        }
        Ok(())
    }

    /// Deletes this copy if another core of this site makes it redundant:
    /// one holding a newer version (this copy is stale), or a better-ranked
    /// one holding the same version (a duplicate). Only copies with no
    /// pending job count: they are geo-replicated, so durable. True if this
    /// copy was deleted.
    async fn duplicate_in_site(&self, block: BlockId, version: Version) -> Result<bool, String> {
        let mut ranked_before = true;
        for node in self.ranked(block, self.home) {
            if node.name == self.name {
                ranked_before = false;
                continue;
            }
            let Probed::Holds {
                version: theirs,
                pending_job: Version::ZERO,
            } = self.probe(&node.name, block).await
            else {
                continue;
            };
            if theirs > version || (theirs == version && ranked_before) {
                let deleted = self
                    .store
                    .trim_local(block, version)
                    .await
                    .map_err(|err| err.to_string())?;
                if deleted {
                    self.metrics.trims.inc();
                    tracing::info!(node = %self.name, kept_on = %node.name, %block, %version, %theirs, "extra in-site copy removed");
                }
                return Ok(deleted);
            }
        }
        Ok(false)
    }

    /// Whether `site` holds the version (restoring a copy there if it
    /// lost it); false if the site is unreachable.
    async fn ensure_site_copy(
        &self,
        block: BlockId,
        version: Version,
        site: SiteId,
    ) -> Result<bool, String> {
        let mut answered = Vec::new();
        for node in self.ranked(block, site) {
            match self.probe(&node.name, block).await {
                found if found.holds_at_least(version) => return Ok(true),
                Probed::Unreachable => {}
                Probed::Absent | Probed::Holds { .. } => answered.push(node.name.clone()),
            }
        }
        let Some(target) = answered.first() else {
            return Ok(false);
        };
        let Some(copy) = self
            .store
            .read_block(block)
            .await
            .map_err(|err| err.to_string())?
        else {
            return Ok(false);
        };
        if copy.version != version {
            // Changed since the listing; the next pass looks again.
            return Ok(false);
        }
        let reply = self
            .put(target, block, Payload::Whole(&copy), None, false)
            .await
            .map_err(|(err, _)| err)?;
        if reply.superseded {
            // Never seen by a takeover from a lost owner: not a copy to
            // restore anywhere (a copy with a job is set aside by its
            // shipping; one without stays here, adopted by its next fence).
            return Ok(false);
        }
        self.metrics
            .repairs
            .with_label_values(&["remote_copy"])
            .inc();
        tracing::warn!(node = %self.name, restored_on = %target, %block, %version, "lost remote copy restored");
        Ok(true)
    }
}
