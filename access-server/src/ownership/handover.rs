//! The handover: claim, fence, list, complete (see [`super`]), and the
//! resolution of claims whose claimant died.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geonfs_proto::domain::{unix_time_ms, Epoch, FileId, Version};

use bytes::Bytes;
use geonfs_block_manager::{FenceOrder, FileListing};
use geonfs_meta_kvs::MetaError;
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use rand::Rng;

use super::catchup::{DirtyMap, NewerCopy};
use super::record::{self, owner_key, Claim, OwnerRecord};
use super::{lock, Ownership, OwnershipError, View, WAIT_FOR_CLAIM};

/// How a takeover treats the old owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Takeover {
    /// A handover: the old owner's fence and listing are required.
    Handover,
    /// The old owner was declared lost: neither is required, and the file
    /// is revoked at its access servers first.
    OwnerLost,
    /// Like [`Takeover::OwnerLost`], the revocation already done by the
    /// caller (a failover revokes many files at once).
    OwnerLostRevoked,
}

/// What one attempt of [`Ownership::acquire`] came to.
pub(super) enum Step {
    /// This site owns the file at this epoch.
    Owned(Epoch),
    /// The record changed under us: read it again.
    Retry,
}

/// What a conditional write of the record came to.
pub(super) enum Put {
    /// Applied at this meta-kvs version.
    Applied(u64),
    /// The record had changed.
    Conflict,
    /// Unknown: read the record to learn.
    Unknown(MetaError),
}

/// A short, growing, jittered pause between attempts (a poll interval,
/// never a synchronisation point: the caller re-reads the record).
pub(super) async fn pause(attempt: u32) {
    let base = 10u64 << attempt.min(5);
    let jitter = rand::rng().random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

impl Ownership {
    /// Makes this site the owner of `file_id` and returns the epoch to
    /// write with: at once when the cached record says so, else through a
    /// handover. `fenced_at` is the epoch a request was just refused with
    /// (the cache was stale, or this site's cores were fenced above it).
    pub async fn acquire(
        &self,
        file_id: FileId,
        fenced_at: Option<Epoch>,
    ) -> Result<Epoch, OwnershipError> {
        if fenced_at.is_none() {
            if let Some(epoch) = self.owned_epoch(file_id) {
                return Ok(epoch);
            }
        }
        let gate = {
            let mut handovers = lock(&self.inner.handovers);
            handovers.entry(file_id).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        if let Some(epoch) = self.owned_epoch(file_id) {
            if fenced_at.is_none_or(|fenced| epoch > fenced) {
                return Ok(epoch);
            }
        }
        let deadline = Instant::now() + WAIT_FOR_CLAIM;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let step = match self.load(file_id).await? {
                // Fenced, and no record: removed at another site (the
                // remover fences the owner at the highest epoch).
                None if fenced_at.is_some() => return Err(OwnershipError::Removed { file_id }),
                None => self.first_owner(file_id).await?,
                Some(view) => self.step(file_id, view, fenced_at).await?,
            };
            match step {
                Step::Owned(epoch) => return Ok(epoch),
                Step::Retry if Instant::now() >= deadline => {
                    return Err(OwnershipError::Blocked {
                        file_id,
                        reason: "the owner record kept changing (another site is taking the file)"
                            .into(),
                    })
                }
                Step::Retry => pause(attempt).await,
            }
        }
    }

    /// One decision of [`Ownership::acquire`] on the stored `view`.
    async fn step(
        &self,
        file_id: FileId,
        view: View,
        fenced_at: Option<Epoch>,
    ) -> Result<Step, OwnershipError> {
        let me = self.inner.site.as_str();
        let record = &view.record;
        match &record.claim {
            None if self.is_writer(record) && fenced_at.is_none_or(|f| f < record.epoch) => {
                if !record.sources.is_empty() {
                    self.dirty_map(file_id, &view).await?;
                }
                Ok(Step::Owned(record.epoch))
            }
            None => {
                // Another site or another access server of this site
                // writes it (or this one, fenced above its epoch by a
                // claim that was resolved): claim it.
                match self.put_claim(file_id, &view).await? {
                    Some((view, claim)) => {
                        self.finish(file_id, view, claim, Takeover::Handover).await
                    }
                    None => Ok(Step::Retry),
                }
            }
            Some(claim) if claim.by == me && claim.writer == self.inner.writer => {
                // Ours (this process, or this access server before a
                // restart): carry it on.
                let claim = claim.clone();
                self.finish(file_id, view, claim, Takeover::Handover).await
            }
            Some(claim) if self.is_stale(claim) => {
                self.resolve(file_id, &view).await?;
                Ok(Step::Retry)
            }
            Some(_) => Ok(Step::Retry),
        }
    }

    /// Takes `file_id` over for this site from an owner site the operator
    /// declared lost (`geonfs relocate --owner-lost`): like a handover, but
    /// the old owner's fence is not required and its listing not used, so
    /// the file becomes readable and writable again with what the other
    /// sites hold (every one of them must be fenced and listed: their
    /// copies are adopted); writes the lost site had not copied out are
    /// lost to the file (its RPO) and set aside on its cores (the core
    /// server's `fence` module).
    /// The file is revoked at the lost site first (`lease.rs`): the
    /// takeover waits until the lost site's access servers acknowledged it
    /// or their leases ran out, so a site that is only cut off has stopped
    /// writing the file before anyone else writes it.
    pub async fn take_over_lost(&self, file_id: FileId) -> Result<Epoch, OwnershipError> {
        let deadline = Instant::now() + WAIT_FOR_CLAIM;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let step = match self.load(file_id).await? {
                None => self.first_owner(file_id).await?,
                Some(view)
                    if view.record.site == self.inner.site && view.record.claim.is_none() =>
                {
                    Step::Owned(view.record.epoch)
                }
                Some(view) => match self.put_claim(file_id, &view).await? {
                    Some((view, claim)) => {
                        self.finish(file_id, view, claim, Takeover::OwnerLost)
                            .await?
                    }
                    None => Step::Retry,
                },
            };
            match step {
                Step::Owned(epoch) => return Ok(epoch),
                Step::Retry if Instant::now() >= deadline => {
                    return Err(OwnershipError::Blocked {
                        file_id,
                        reason: "the owner record kept changing".into(),
                    })
                }
                Step::Retry => pause(attempt).await,
            }
        }
    }

    /// Records a claim by this site on `view`'s record (epoch: the
    /// highest handed out + 1); `None` when the record changed meanwhile
    /// or the outcome is unknown (the caller reads it again).
    pub(super) async fn put_claim(
        &self,
        file_id: FileId,
        view: &View,
    ) -> Result<Option<(View, Claim)>, OwnershipError> {
        let claim = Claim {
            by: self.inner.site.clone(),
            writer: self.inner.writer.clone(),
            epoch: view.record.top_epoch().next(),
            since_ms: unix_time_ms(),
            token: rand::rng().random_range(1..=u64::MAX),
        };
        let mut claimed = view.record.clone();
        claimed.claim = Some(claim.clone());
        match self.put(file_id, view.meta_version, &claimed).await? {
            Put::Applied(version) => {
                let view = View {
                    record: claimed,
                    meta_version: version,
                };
                self.remember(file_id, &view);
                Ok(Some((view, claim)))
            }
            Put::Conflict => Ok(None),
            Put::Unknown(err) => {
                tracing::debug!(%file_id, %err, "claim outcome unknown; re-reading");
                Ok(None)
            }
        }
    }

    /// Whether this process has seen `claim` unfinished for the claim
    /// timeout (its own monotonic clock, from when it first saw the
    /// claim: no two machines' clocks are compared).
    fn is_stale(&self, claim: &Claim) -> bool {
        let now = Instant::now();
        let timeout = self.inner.claim_timeout;
        let mut seen = lock(&self.inner.claims_seen);
        let first = *seen.entry(claim.token).or_insert(now);
        if seen.len() > 1024 {
            seen.retain(|_, at| now.duration_since(*at) < timeout * 4);
        }
        now.duration_since(first) >= timeout
    }

    /// The first owner of a file without a record: this site, the first
    /// epoch.
    async fn first_owner(&self, file_id: FileId) -> Result<Step, OwnershipError> {
        let record = OwnerRecord::owned(&self.inner.site, &self.inner.writer, Epoch::FIRST);
        match self.put(file_id, 0, &record).await? {
            Put::Applied(version) => {
                self.remember(
                    file_id,
                    &View {
                        record,
                        meta_version: version,
                    },
                );
                self.inner.metrics.first_owners.inc();
                Ok(Step::Owned(Epoch::FIRST))
            }
            Put::Conflict | Put::Unknown(_) => Ok(Step::Retry),
        }
    }

    /// Steps 2–4 of a handover whose claim (`claim`, in `view`) is
    /// recorded: fence, list, complete.
    pub(super) async fn finish(
        &self,
        file_id: FileId,
        view: View,
        claim: Claim,
        takeover: Takeover,
    ) -> Result<Step, OwnershipError> {
        let started = Instant::now();
        let record = &view.record;
        // This site is not lost to itself: a takeover "from a lost owner"
        // of a file this site owns (another site's claim pending) is a
        // plain one, its own copies adopted rather than set aside.
        let owner_lost = takeover != Takeover::Handover && record.site != self.inner.site;
        let order = FenceOrder {
            epoch: claim.epoch,
            lost_below: if owner_lost {
                Some(claim.epoch)
            } else {
                record.lost_below
            },
            adopt: false,
        };
        let old_fully_fenced = self.fence_sites(file_id, record, order, owner_lost).await?;
        // A core of the old owner that could not be fenced might still take
        // its writes: fence its access servers instead (`lease.rs`) — the
        // old writer's site, which is this one when it is another access
        // server of this site.
        let revoked = takeover == Takeover::OwnerLostRevoked;
        if !self.is_writer(record) && !revoked && !old_fully_fenced {
            self.revoke_and_wait(&record.site, file_id, claim.epoch)
                .await
                .inspect_err(|_| self.inner.metrics.blocked.inc())?;
        }
        let dirty = self.dirty_after_fence(file_id, record, owner_lost).await?;
        let owned = OwnerRecord {
            site: self.inner.site.clone(),
            writer: self.inner.writer.clone(),
            epoch: claim.epoch,
            sources: dirty
                .values()
                .map(|newer| newer.site.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            claim: None,
            lost_below: order.lost_below,
        };
        let Some(version) = self.complete(file_id, view.meta_version, &owned).await? else {
            return Ok(Step::Retry);
        };
        self.remember(
            file_id,
            &View {
                record: owned,
                meta_version: version,
            },
        );
        if !dirty.is_empty() {
            self.install_dirty(file_id, Arc::new(DirtyMap::new(claim.epoch, dirty)));
        }
        let metrics = &self.inner.metrics;
        metrics.handovers.inc();
        metrics
            .handover_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(%file_id, from = %record.site, from_writer = %record.writer,
            to = %self.inner.site, writer = %self.inner.writer, epoch = %claim.epoch,
            ms = started.elapsed().as_millis() as u64, "file ownership handed over");
        Ok(Step::Owned(claim.epoch))
    }

    /// Step 2: fences the old owner and this site with `order`. Taking over
    /// from a lost owner also fences every other site, adopting the copies
    /// of the surviving ones (they are listed next) and recording the
    /// takeover on all, so the lost owner's copies it never sees are set
    /// aside wherever they are (the core server's `fence` module). Fails
    /// unless all but one core of each site waited for are fenced; true
    /// when every core of the old owner is.
    async fn fence_sites(
        &self,
        file_id: FileId,
        record: &OwnerRecord,
        order: FenceOrder,
        owner_lost: bool,
    ) -> Result<bool, OwnershipError> {
        let me = &self.inner.site;
        let adopting = FenceOrder {
            adopt: true,
            ..order
        };
        let old = self.client(file_id, &record.site)?;
        let others = self
            .inner
            .clients
            .iter()
            .filter(|(site, _)| owner_lost && *site != me && **site != record.site);
        // A lost owner's cores are fenced as a courtesy (its revocation or
        // lease is what stops it; a core that does not learn of the
        // takeover now does when it is reached again): not waited for, so
        // a site cut off at the network, whose calls hang until they time
        // out, costs the takeover nothing.
        let old_fence = async {
            if owner_lost {
                let (client, site) = (old.clone(), record.site.clone());
                tokio::spawn(async move {
                    let report = client.fence_with(file_id, order).await;
                    if !report.all() {
                        tracing::info!(%file_id, owner = %site, failed = %describe(&report.failed),
                            "taken over from an owner declared lost: its cores are not all fenced");
                    }
                });
                return None;
            }
            Some(old.fence_with(file_id, order).await)
        };
        let own_order = if owner_lost { adopting } else { order };
        let (old_report, own_report, other_reports) = futures::join!(
            old_fence,
            self.local().fence_with(file_id, own_order),
            futures::future::join_all(others.map(|(site, client)| async move {
                (site, client.fence_with(file_id, adopting).await)
            }))
        );
        let reports = old_report
            .as_ref()
            .map(|report| (&record.site, report))
            .into_iter()
            .chain([(me, &own_report)])
            .chain(other_reports.iter().map(|(site, report)| (*site, report)));
        for (site, report) in reports {
            if !report.all_but_one() {
                self.inner.metrics.blocked.inc();
                return Err(OwnershipError::Blocked {
                    file_id,
                    reason: format!(
                        "only {} of the {} cores of site {site} could be fenced ({})",
                        report.fenced.len(),
                        report.total,
                        describe(&report.failed)
                    ),
                });
            }
        }
        Ok(old_report.is_some_and(|report| report.all()))
    }

    /// Step 3: lists the file's blocks everywhere and returns those whose
    /// newest version is at another site than this one. Declared lost,
    /// the old owner is not asked: what it had not copied out is lost to
    /// the file (the RPO) and set aside on its cores; everything else it
    /// wrote is at the surviving sites, which must all answer (their
    /// copies were adopted).
    async fn dirty_after_fence(
        &self,
        file_id: FileId,
        record: &OwnerRecord,
        owner_lost: bool,
    ) -> Result<BTreeMap<u64, NewerCopy>, OwnershipError> {
        let me = &self.inner.site;
        let lost_site = owner_lost.then_some(record.site.as_str());
        let required = if owner_lost {
            self.inner
                .clients
                .keys()
                .map(String::as_str)
                .filter(|site| Some(*site) != lost_site)
                .collect()
        } else {
            holders(record, me)
        };
        let listings = self
            .list_sites(file_id, |site| Some(site) != lost_site, &required)
            .await
            .inspect_err(|_| self.inner.metrics.blocked.inc())?;
        let listed = listings.iter().flat_map(|(_, listing)| {
            let deleted = listing.deleted_ranges.iter().map(|range| range.version);
            listing.versions.values().copied().chain(deleted)
        });
        if let Some(top) = listed.max() {
            self.inner.clock.observe(top);
        }
        Ok(dirty_blocks(me, &listings))
    }

    /// Step 4: replaces the record read at `meta_version` with `owned`; its
    /// new meta version, or `None` when the record changed meanwhile (the
    /// caller starts over).
    async fn complete(
        &self,
        file_id: FileId,
        meta_version: u64,
        owned: &OwnerRecord,
    ) -> Result<Option<u64>, OwnershipError> {
        match self.put(file_id, meta_version, owned).await? {
            Put::Applied(version) => Ok(Some(version)),
            Put::Conflict => Ok(None),
            Put::Unknown(err) => {
                tracing::debug!(%file_id, %err, "handover outcome unknown; re-reading");
                match self.load(file_id).await? {
                    Some(now) if now.record == *owned => Ok(Some(now.meta_version)),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Resolves a claim older than the claim timeout found in `view`: the
    /// record goes back to the old owner at the claim's epoch (which
    /// passes any fence the claimant set). Nothing if it changed meanwhile.
    async fn resolve(&self, file_id: FileId, view: &View) -> Result<(), OwnershipError> {
        let Some(claim) = &view.record.claim else {
            return Ok(());
        };
        let back = OwnerRecord {
            site: view.record.site.clone(),
            writer: view.record.writer.clone(),
            epoch: claim.epoch.max(view.record.epoch),
            sources: view.record.sources.clone(),
            claim: None,
            lost_below: view.record.lost_below,
        };
        tracing::warn!(%file_id, claimant = %claim.by, owner = %back.site,
            "handover claim timed out; the file stays with its owner");
        if let Put::Applied(version) = self.put(file_id, view.meta_version, &back).await? {
            self.inner.metrics.resolved_claims.inc();
            self.remember(
                file_id,
                &View {
                    record: back,
                    meta_version: version,
                },
            );
        }
        Ok(())
    }

    /// Resolves the file's claim if it is stale (readers use this so a
    /// dead claimant cannot keep a fenced file unreadable).
    pub(super) async fn resolve_stale_claim(&self, file_id: FileId) -> Result<(), OwnershipError> {
        if let Some(view) = self.load(file_id).await? {
            if view.record.claim.as_ref().is_some_and(|c| self.is_stale(c)) {
                self.resolve(file_id, &view).await?;
            }
        }
        Ok(())
    }

    /// Lists `file_id` on the sites `wanted` accepts, in parallel;
    /// [`OwnershipError::Blocked`] when a site of `required` has more than
    /// one core that did not answer.
    pub(super) async fn list_sites(
        &self,
        file_id: FileId,
        wanted: impl Fn(&str) -> bool,
        required: &BTreeSet<&str>,
    ) -> Result<Vec<(&String, FileListing)>, OwnershipError> {
        let listings: Vec<(&String, FileListing)> = futures::future::join_all(
            self.inner
                .clients
                .iter()
                .filter(|(site, _)| wanted(site.as_str()))
                .map(|(site, client)| async move { (site, client.list_file(file_id).await) }),
        )
        .await;
        for (site, listing) in &listings {
            if required.contains(site.as_str()) && !listing.all_but_one() {
                return Err(OwnershipError::Blocked {
                    file_id,
                    reason: format!(
                        "only {} of the {} cores of site {site} listed the file ({})",
                        listing.answered.len(),
                        listing.total,
                        describe(&listing.failed)
                    ),
                });
            }
        }
        Ok(listings)
    }

    /// Writes `record` if the stored one is at `expected` (0 = absent).
    async fn put(
        &self,
        file_id: FileId,
        expected: u64,
        record: &OwnerRecord,
    ) -> Result<Put, OwnershipError> {
        let request = conditional_put(owner_key(file_id), expected, record::encode(record));
        match self.inner.meta.txn(request).await {
            Ok(reply) if reply.succeeded => Ok(Put::Applied(reply.version)),
            Ok(_) => Ok(Put::Conflict),
            Err(err @ MetaError::OutcomeUnknown(_)) => Ok(Put::Unknown(err)),
            Err(source) => Err(OwnershipError::Meta { file_id, source }),
        }
    }

    /// Writes `record` if the stored one is at `expected`, and caches it;
    /// an error when it changed meanwhile or the outcome is unknown (the
    /// caller retries after re-reading).
    pub(super) async fn put_record(
        &self,
        file_id: FileId,
        expected: u64,
        record: OwnerRecord,
    ) -> Result<(), OwnershipError> {
        match self.put(file_id, expected, &record).await? {
            Put::Applied(version) => {
                self.remember(
                    file_id,
                    &View {
                        record,
                        meta_version: version,
                    },
                );
                Ok(())
            }
            Put::Conflict => Err(OwnershipError::Blocked {
                file_id,
                reason: "the owner record changed meanwhile".into(),
            }),
            Put::Unknown(err) => Err(OwnershipError::Meta {
                file_id,
                source: err,
            }),
        }
    }

    /// Deletes the owner record (the file was removed), after fencing the
    /// owner's cores at the highest epoch so that an owner still writing
    /// the file learns it is gone (best effort: logged).
    pub async fn forget(&self, file_id: FileId) -> Result<(), OwnershipError> {
        if let Some(view) = self.load(file_id).await? {
            let report = self
                .client(file_id, &view.record.site)?
                .fence(file_id, Epoch::LAST)
                .await;
            if !report.all() {
                tracing::warn!(%file_id, owner = %view.record.site, failed = %describe(&report.failed),
                    "removed file not fenced on every core of its owner site");
            }
        }
        self.invalidate(file_id);
        lock(&self.inner.dirty).remove(&file_id);
        lock(&self.inner.handovers).remove(&file_id);
        // The file's revocations are moot now: dropped in the background
        // (the removal does not wait for every site's record).
        let this = self.clone();
        tokio::spawn(async move {
            let sites: Vec<String> = this.inner.clients.keys().cloned().collect();
            for site in sites {
                this.drop_revocation(&site, file_id).await;
            }
        });
        self.inner
            .meta
            .delete(owner_key(file_id))
            .await
            .map(|_| ())
            .map_err(|source| OwnershipError::Meta { file_id, source })
    }
}

/// A transaction that puts `value` at `key` if the stored entry is at
/// meta-kvs version `expected` (0 = absent).
pub(super) fn conditional_put(key: Bytes, expected: u64, value: Bytes) -> TxnRequest {
    let test = if expected == 0 {
        condition::Test::Absent(true)
    } else {
        condition::Test::VersionEquals(expected)
    };
    TxnRequest {
        conditions: vec![Condition {
            key: key.clone(),
            test: Some(test),
        }],
        operations: vec![Operation {
            op: Some(operation::Op::Put(KeyValue {
                key,
                value,
                version: 0,
            })),
        }],
    }
}

/// The sites that may hold a file's newest blocks: its owner, its sources
/// and `me`.
pub(super) fn holders<'a>(record: &'a OwnerRecord, me: &'a str) -> BTreeSet<&'a str> {
    std::iter::once(record.site.as_str())
        .chain(record.sources.iter().map(String::as_str))
        .chain(std::iter::once(me))
        .collect()
}

/// The blocks whose newest version (over every listing) is not on site
/// `me`'s cores, and where it is. A block's version in a listing is its
/// newest copy, deleted marker or deleted range there, so a delete at one
/// site wins over an older copy at another, and a block deleted by a range
/// at `me` is not dirty however old a copy elsewhere is.
pub(super) fn dirty_blocks(
    me: &str,
    listings: &[(&String, FileListing)],
) -> BTreeMap<u64, NewerCopy> {
    let indexes: BTreeSet<u64> = listings
        .iter()
        .flat_map(|(_, listing)| listing.versions.keys().copied())
        .collect();
    let mut dirty = BTreeMap::new();
    for index in indexes {
        let mut newest: Option<(Version, &str)> = None;
        let mut own = None;
        for (site, listing) in listings {
            let Some(version) = listing.newest(index) else {
                continue;
            };
            if site.as_str() == me {
                own = own.max(Some(version));
            }
            if newest.is_none_or(|(top, _)| version > top) {
                newest = Some((version, site.as_str()));
            }
        }
        if let Some((version, site)) =
            newest.filter(|&(version, _)| own.is_none_or(|own| own < version))
        {
            let site = site.to_string();
            dirty.insert(index, NewerCopy { version, site });
        }
    }
    dirty
}

fn describe(failed: &[(String, String)]) -> String {
    if failed.is_empty() {
        return "no core answered".into();
    }
    failed
        .iter()
        .map(|(node, err)| format!("{node}: {err}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use geonfs_proto::domain::DeletedRange;

    use super::*;

    fn listing(copies: &[(u64, u64)], ranges: &[(u64, u64, u64)]) -> FileListing {
        FileListing {
            versions: copies.iter().map(|&(i, v)| (i, Version(v))).collect(),
            deleted_ranges: ranges
                .iter()
                .map(|&(from, until, v)| DeletedRange {
                    from,
                    until,
                    version: Version(v),
                })
                .collect(),
            ..FileListing::default()
        }
    }

    fn newer(version: u64, site: &str) -> NewerCopy {
        NewerCopy {
            version: Version(version),
            site: site.into(),
        }
    }

    /// Site a truncated the file from block 2 at version 10; site b holds
    /// older copies of blocks it missed the delete of, and a newer block 3.
    #[test]
    fn a_deleted_range_is_newer_than_the_older_copies_it_covers() {
        let (a, b) = ("a".to_string(), "b".to_string());
        let listings = vec![
            (&a, listing(&[(0, 2)], &[(2, u64::MAX, 10)])),
            (&b, listing(&[(1, 3), (2, 5), (3, 12), (7, 4)], &[])),
        ];
        assert_eq!(
            dirty_blocks("a", &listings),
            BTreeMap::from([(1, newer(3, "b")), (3, newer(12, "b"))])
        );
        assert_eq!(
            dirty_blocks("b", &listings),
            BTreeMap::from([(0, newer(2, "a")), (2, newer(10, "a")), (7, newer(10, "a"))])
        );
    }
}
