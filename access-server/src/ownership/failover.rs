//! Failing a lost site over: every file it owns taken over by this site in
//! one run (`geonfs failover SITE`).
//!
//! 1. **The site must be silent.** Its lease records are watched for the
//!    expiry wait (`lease.rs`): if one is renewed meanwhile, the site is
//!    alive and connected to the meta-kvs majority, and the failover is
//!    refused (a planned move is `relocate`, one handover per file). A
//!    site its operator fenced by other means (powered off, its network
//!    cut at the switch) may be failed over at once (`site_is_fenced`).
//! 2. **Every file it owns** is found by a scan of the owner records, and
//!    taken over in chunks: a claim per file, one revocation of the whole
//!    chunk at the lost site (so an access server of it that comes back
//!    never sends the old epochs again; the wait is over at once, the
//!    leases having run out; for a site said to be fenced it is recorded
//!    and not waited for), then per file the fence, the listing of the
//!    surviving sites and the completion, a few files at a time.
//!
//! What the lost site had not copied out is lost, as with
//! `relocate --owner-lost` (docs/ARCHITECTURE.md#invariant-5). A file that could not be taken
//! over (its record changed, another site claims it) is reported; running
//! the failover again takes over what is left, and skips what moved.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use super::handover::{Step, Takeover};
use super::lease::{HolderState, LeaseWatch};
use super::record::{self, Claim};
use geonfs_proto::domain::{Epoch, FileId};

use super::{Ownership, OwnershipError, View};

/// Files claimed, revoked and taken over together.
const CHUNK: usize = 64;
/// Takeovers of one chunk run at once.
const IN_PARALLEL: usize = 8;

/// A file a failover could not take over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedFile {
    /// The file's id.
    pub file_id: FileId,
    /// Why not.
    pub why: String,
}

/// How far a failover is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailoverProgress {
    /// Files handled (taken over, skipped or failed).
    pub done: u64,
    /// Files the lost site owned when the failover started.
    pub total: u64,
    /// Files that could not be taken over so far.
    pub failed: u64,
}

/// What a failover did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverReport {
    /// Files the lost site owned when the failover started.
    pub files: u64,
    /// Files this site owns now.
    pub taken_over: u64,
    /// Files that had moved elsewhere or were removed meanwhile.
    pub skipped: u64,
    /// Files that could not be taken over, with why (run it again).
    pub failed: Vec<FailedFile>,
    /// How long the site's leases were waited for.
    pub lease_wait: Duration,
}

impl Ownership {
    /// The files whose owner record names `site` as the owner.
    pub async fn files_owned_by(&self, site: &str) -> Result<Vec<FileId>, OwnershipError> {
        let records = self
            .scan_all("the owner records", &record::owner_prefix())
            .await?;
        let mut files = Vec::new();
        for kv in records {
            let file_id =
                record::file_of_key(&kv.key).ok_or_else(|| OwnershipError::CorruptRecords {
                    what: "the owner records".into(),
                    detail: format!("owner record key {:?}", kv.key),
                })?;
            let owner = record::decode(&kv.value)
                .map_err(|detail| OwnershipError::Corrupt { file_id, detail })?;
            if owner.site == site {
                files.push(file_id);
            }
        }
        Ok(files)
    }

    /// Waits until every access server of `site` is silent: its lease
    /// record released, or unchanged for the expiry wait. Fails as soon as
    /// one is renewed (the site is alive).
    async fn wait_silent(&self, site: &str, watch: &mut LeaseWatch) -> Result<(), OwnershipError> {
        loop {
            let holders = self.look_at_leases(site, watch).await?;
            if let Some(alive) = holders.iter().find(|h| h.state == HolderState::Renewed) {
                return Err(OwnershipError::SiteAlive {
                    site: site.to_string(),
                    node: alive.node.clone(),
                });
            }
            if holders.iter().all(|h| h.state == HolderState::Gone) {
                return Ok(());
            }
            tokio::time::sleep(self.inner.lease.poll_every()).await;
        }
    }

    /// Takes over, for this site, every file that site `lost` owns (see
    /// the module documentation), reporting progress after each file.
    pub async fn fail_over(
        &self,
        lost: &str,
        site_is_fenced: bool,
        mut progress: impl FnMut(FailoverProgress),
    ) -> Result<FailoverReport, OwnershipError> {
        if lost == self.site() {
            return Err(OwnershipError::FailoverRefused(format!(
                "site {lost} cannot take its own files over"
            )));
        }
        if !self.inner.clients.contains_key(lost) {
            return Err(OwnershipError::FailoverRefused(format!(
                "the configuration has no site {lost:?}"
            )));
        }
        let mut watch = LeaseWatch::default();
        let started = Instant::now();
        if !site_is_fenced {
            self.wait_silent(lost, &mut watch).await?;
        }
        let mut report = FailoverReport {
            lease_wait: started.elapsed(),
            ..FailoverReport::default()
        };
        let files = self.files_owned_by(lost).await?;
        report.files = files.len() as u64;
        let mut state = FailoverProgress {
            total: report.files,
            ..FailoverProgress::default()
        };
        progress(state);
        for chunk in files.chunks(CHUNK) {
            let mut claimed: Vec<(FileId, View, Claim)> = Vec::new();
            for &file_id in chunk {
                match self.claim_from(file_id, lost).await {
                    Ok(Some((view, claim))) => claimed.push((file_id, view, claim)),
                    Ok(None) => {
                        report.skipped += 1;
                        state.done += 1;
                        progress(state);
                    }
                    Err(err) => {
                        report.failed.push(FailedFile {
                            file_id,
                            why: err.to_string(),
                        });
                        state.done += 1;
                        state.failed += 1;
                        progress(state);
                    }
                }
            }
            let revoked: Vec<(FileId, Epoch)> =
                claimed.iter().map(|(f, _, c)| (*f, c.epoch)).collect();
            // Recorded even for a site said to be fenced: if it comes back,
            // its access servers install it before they write again.
            let wait = (!site_is_fenced).then_some(&mut watch);
            self.revoke_many_and_wait(lost, &revoked, wait).await?;
            let mut finishing = stream::iter(claimed)
                .map(|(file_id, view, claim)| async move {
                    let done = self
                        .finish(file_id, view, claim, Takeover::OwnerLostRevoked)
                        .await;
                    (file_id, done)
                })
                .buffer_unordered(IN_PARALLEL);
            while let Some((file_id, done)) = finishing.next().await {
                state.done += 1;
                match done {
                    Ok(Step::Owned(_)) => report.taken_over += 1,
                    Ok(Step::Retry) => {
                        state.failed += 1;
                        report.failed.push(FailedFile {
                            file_id,
                            why: "the owner record changed meanwhile".into(),
                        });
                    }
                    Err(err) => {
                        state.failed += 1;
                        report.failed.push(FailedFile {
                            file_id,
                            why: err.to_string(),
                        });
                    }
                }
                progress(state);
            }
        }
        tracing::info!(lost, to = %self.site(), files = report.files,
            taken_over = report.taken_over, skipped = report.skipped,
            failed = report.failed.len(), lease_wait_ms = report.lease_wait.as_millis() as u64,
            ms = started.elapsed().as_millis() as u64, "failover done");
        Ok(report)
    }

    /// The claim to take `file_id` over from `lost` with: a new one, or
    /// this site's own from an earlier run; `None` when the file moved to
    /// another site or was removed meanwhile.
    async fn claim_from(
        &self,
        file_id: FileId,
        lost: &str,
    ) -> Result<Option<(View, Claim)>, OwnershipError> {
        let Some(view) = self.load(file_id).await? else {
            return Ok(None);
        };
        if view.record.site != lost {
            return Ok(None);
        }
        match &view.record.claim {
            Some(claim) if claim.by == self.site() => {
                let claim = claim.clone();
                Ok(Some((view, claim)))
            }
            Some(claim) => Err(OwnershipError::Blocked {
                file_id,
                reason: format!("site {} is taking it over", claim.by),
            }),
            None => match self.put_claim(file_id, &view).await? {
                Some(claimed) => Ok(Some(claimed)),
                None => Err(OwnershipError::Blocked {
                    file_id,
                    reason: "the owner record changed meanwhile".into(),
                }),
            },
        }
    }
}
