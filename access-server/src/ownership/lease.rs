//! Ownership leases and revocations: an owner that cannot renew stops
//! writing by itself, and a handover that cannot fence every core of the
//! old owner fences the old owner's access servers instead.
//!
//! # The lease
//!
//! Every access server holds a lease, renewed through meta-kvs (a
//! majority) every tenth of its duration ([`LeaseKeeper`]). One renewal
//! covers every file its site owns. A request carrying an ownership epoch
//! leaves for the site's own cores only while the lease is valid (the
//! site's block client's [`SendGate`]); so an access server cut off from
//! the meta-kvs majority stops writing, and reading the files its site
//! owns, when its lease runs out (NFS `JUKEBOX`: clients retry), and
//! resumes by itself at its next renewal. Reads of other sites' files go
//! on (their owners' fences guard them).
//!
//! Only local monotonic clocks are compared, never two machines' clocks:
//!
//! - the holder counts its lease from the instant it *sent* the renewal
//!   ([`Instant`] before the call), so the lease ends no later than
//!   `duration` after the renewal committed;
//! - an observer that has seen a holder's lease record unchanged (same
//!   meta-kvs version) for `duration + margin` of its own clock knows the
//!   holder's lease has ended: the renewal it saw committed before the
//!   observer first saw it, and a later one would have changed the
//!   version.
//!
//! The margin ([`LeaseTiming::margin`], a tenth of the lease plus 200 ms)
//! covers the two clocks' rate difference (quartz: well under 0.1 %) and
//! the delivery of a request the holder sent just before its lease ended.
//!
//! # Revocation
//!
//! A handover fences the old owner's cores; a core it could not reach (nor
//! through a peer of its site) might still take the old owner's writes if
//! the old owner's access servers reach it. Then the claimant **revokes**
//! the file at the old owner's site: it records `(file, new epoch)` in the
//! site's revocation record in meta-kvs (raising its generation) and waits
//! until each of the site's access servers has either acknowledged the
//! generation or let its lease run out. An access server reads the record
//! at every renewal; on a new generation it installs the fences on its
//! gate (which waits for its requests in flight), forgets its cached
//! owner records of those files, and only then acknowledges with its
//! renewal. From then on it sends nothing for the file below the new
//! epoch, whatever core it reaches. `geonfs relocate --owner-lost` always
//! revokes (the lost site's cores are not fenced at all).
//!
//! ```text
//! fs/l/<site>/<node>  → LeaseRecord (prost): the holder's acknowledged generation
//! fs/r/<site>         → Revocations (prost): generation, (file, epoch) fences
//! ```
//!
//! An access server that starts has no lease until its first renewal,
//! which also installs every fence of its site's record: a restart cannot
//! forget a revocation. The record keeps one fence per file (the highest);
//! a removed file's fence is dropped when the file is forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use geonfs_block_manager::SendGate;
use geonfs_meta_kvs::{MetaClient, MetaError};
use geonfs_proto::domain::{Epoch, FileId};
use geonfs_proto::meta::KeyValue;
use prost::Message;

use super::{Ownership, OwnershipError};

/// The prefix of lease records.
const LEASE: &[u8] = b"fs/l/";
/// The prefix of revocation records.
const REVOKE: &[u8] = b"fs/r/";
/// How many times a revocation is re-posted when the record changed.
const POST_ATTEMPTS: u32 = 16;

/// The timing of ownership leases, derived from their duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a renewal keeps the lease valid.
    pub duration: Duration,
}

impl LeaseTiming {
    /// How often a holder renews: a tenth of the duration (at least 20 ms).
    pub fn renew_every(&self) -> Duration {
        (self.duration / 10).max(Duration::from_millis(20))
    }

    /// The safety margin an observer adds (see the module documentation).
    pub fn margin(&self) -> Duration {
        self.duration / 10 + Duration::from_millis(200)
    }

    /// How long an observer must see a lease record unchanged to know the
    /// lease has ended.
    pub fn expiry_wait(&self) -> Duration {
        self.duration + self.margin()
    }

    /// How often an observer looks at a site's lease records.
    pub fn poll_every(&self) -> Duration {
        (self.renew_every() / 2).max(Duration::from_millis(10))
    }

    /// The longest a claimant waits for a revocation: the expiry wait,
    /// plus a few renewals for a holder that renewed just before the
    /// revocation and acknowledges it at its next renewal.
    pub fn longest_revocation(&self) -> Duration {
        self.expiry_wait() + self.renew_every() * 5
    }
}

/// One access server's lease record.
#[derive(Clone, PartialEq, Message)]
struct LeaseRecord {
    /// The holder (access server node name).
    #[prost(string, tag = "1")]
    node: String,
    /// The revocation generation the holder has installed.
    #[prost(uint64, tag = "2")]
    acked: u64,
    /// The holder stopped and sends nothing more (graceful shutdown).
    #[prost(bool, tag = "3")]
    released: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Revocations {
    #[prost(uint64, tag = "1")]
    generation: u64,
    #[prost(message, repeated, tag = "2")]
    fences: Vec<RevokedFile>,
}

#[derive(Clone, PartialEq, Message)]
struct RevokedFile {
    #[prost(uint64, tag = "1")]
    file_id: u64,
    #[prost(uint64, tag = "2")]
    epoch: u64,
}

fn site_key(prefix: &[u8], site: &str) -> BytesMut {
    let mut key = BytesMut::with_capacity(prefix.len() + site.len() + 1);
    key.put_slice(prefix);
    key.put_slice(site.as_bytes());
    key
}

/// `fs/l/<site>/`: the prefix of a site's lease records.
fn lease_prefix(site: &str) -> Bytes {
    let mut key = site_key(LEASE, site);
    key.put_u8(b'/');
    key.freeze()
}

/// `fs/l/<site>/<node>`.
fn lease_key(site: &str, node: &str) -> Bytes {
    let mut key = BytesMut::from(&lease_prefix(site)[..]);
    key.put_slice(node.as_bytes());
    key.freeze()
}

/// `fs/r/<site>`.
fn revoke_key(site: &str) -> Bytes {
    site_key(REVOKE, site).freeze()
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            break;
        }
    }
    end.into()
}

/// Keeps one access server's lease (see the module documentation).
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    ownership: Ownership,
    gate: SendGate,
    node: String,
}

impl LeaseKeeper {
    /// The keeper of node `node`'s lease for `ownership`, whose block
    /// clients pass `gate`.
    pub fn new(ownership: Ownership, gate: SendGate, node: &str) -> Self {
        LeaseKeeper {
            ownership,
            gate,
            node: node.to_string(),
        }
    }

    /// Renews for ever, every [`LeaseTiming::renew_every`] (a failed
    /// renewal is logged and retried at the next turn).
    pub async fn run(self) {
        let timing = self.ownership.inner.lease;
        // Whether the lease was valid after the previous turn (`None`
        // before the first): only changes are logged.
        let mut was_valid: Option<bool> = None;
        loop {
            // A renewal slower than the lease would not extend it: cut it
            // short so the next one starts (e.g. right after a partition
            // heals).
            let renewal = tokio::time::timeout(timing.duration, self.renew()).await;
            let renewal = renewal.unwrap_or_else(|_| {
                Err(OwnershipError::LeaseNotRenewed(format!(
                    "no answer within {:?}",
                    timing.duration
                )))
            });
            if let Err(err) = &renewal {
                self.ownership.inner.metrics.lease_failures.inc();
                tracing::debug!(node = %self.node, %err, "lease renewal failed");
            }
            let valid = self.gate.lease_is_valid();
            match (was_valid, valid, &renewal) {
                (Some(true), false, Err(err)) => {
                    tracing::warn!(node = %self.node, %err,
                        "ownership lease ran out: no writes until it is renewed");
                }
                (Some(false), true, _) => {
                    tracing::info!(node = %self.node, "ownership lease renewed: writes resume");
                }
                _ => {}
            }
            if was_valid.is_some() || valid {
                was_valid = Some(valid);
            }
            self.ownership
                .inner
                .metrics
                .lease_valid
                .set(i64::from(valid));
            tokio::time::sleep(timing.renew_every()).await;
        }
    }

    /// One renewal: installs the site's new revocations, then records the
    /// lease; on success the lease is valid for its duration from the
    /// start of this call.
    pub async fn renew(&self) -> Result<(), OwnershipError> {
        let started = Instant::now();
        let ownership = &self.ownership;
        let site = ownership.site().to_string();
        let meta = &ownership.inner.meta;
        let not_renewed = |err: OwnershipError| OwnershipError::LeaseNotRenewed(err.to_string());
        let revocations = read_revocations(meta, &site).await.map_err(not_renewed)?.0;
        let installed = *super::lock(&ownership.inner.installed_generation);
        if revocations.generation > installed {
            // A revocation at epoch 0 revokes nothing.
            let fences: Vec<(FileId, Epoch)> = revocations
                .fences
                .iter()
                .filter_map(|f| Some((FileId(f.file_id), Epoch::from_wire(f.epoch)?)))
                .collect();
            self.gate.install_fences(fences.iter().copied()).await;
            for (file_id, _) in &fences {
                ownership.invalidate(*file_id);
            }
            let mut installed = super::lock(&ownership.inner.installed_generation);
            *installed = (*installed).max(revocations.generation);
            tracing::info!(node = %self.node, generation = revocations.generation,
                files = fences.len(), "ownership revocations installed");
        }
        let record = LeaseRecord {
            node: self.node.clone(),
            acked: revocations.generation.max(installed),
            released: false,
        };
        meta.put(lease_key(&site, &self.node), record.encode_to_vec())
            .await
            .map_err(|err| OwnershipError::LeaseNotRenewed(err.to_string()))?;
        self.gate.renewed(started + ownership.inner.lease.duration);
        ownership.inner.metrics.lease_renewals.inc();
        Ok(())
    }

    /// Gives the lease up at a graceful stop, so that no claimant waits for
    /// it to run out: the gate is closed first (nothing more is sent, and
    /// the requests in flight were answered). Best effort.
    pub async fn release(&self) {
        self.gate.close().await;
        let record = LeaseRecord {
            node: self.node.clone(),
            acked: 0,
            released: true,
        };
        let site = self.ownership.site();
        if let Err(err) = self
            .ownership
            .inner
            .meta
            .put(lease_key(site, &self.node), record.encode_to_vec())
            .await
        {
            tracing::warn!(node = %self.node, %err, "ownership lease not released");
        }
    }
}

/// The site's revocation record and its meta-kvs version (0: none).
async fn read_revocations(
    meta: &MetaClient,
    site: &str,
) -> Result<(Revocations, u64), OwnershipError> {
    let what = || format!("the revocations of site {site}");
    let found = meta
        .get(revoke_key(site))
        .await
        .map_err(|source| OwnershipError::MetaRecords {
            what: what(),
            source,
        })?;
    match found {
        None => Ok((Revocations::default(), 0)),
        Some(kv) => Revocations::decode(&kv.value[..])
            .map(|r| (r, kv.version))
            .map_err(|err| OwnershipError::CorruptRecords {
                what: what(),
                detail: err.to_string(),
            }),
    }
}

/// What [`Ownership::revoke`] does to the site's record.
enum Change<'a> {
    /// Raise each file's fence to its epoch: `(file id, epoch)`.
    Raise(&'a [(FileId, Epoch)]),
    /// Drop `file`'s fence (the file was removed).
    Drop { file_id: FileId },
}

/// One lease holder of a site, as a claimant sees it
/// ([`Ownership::look_at_leases`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Holder {
    /// The access server.
    pub(super) node: String,
    /// The revocation generation it acknowledged.
    pub(super) acked: u64,
    /// Whether its lease may still be valid.
    pub(super) state: HolderState,
}

/// Whether a holder's lease may still be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HolderState {
    /// Released, or unchanged for the expiry wait: it has run out.
    Gone,
    /// Renewed since the previous look (its wait starts again).
    Renewed,
    /// Unchanged, not yet for the expiry wait.
    Holding,
}

/// What a claimant has seen of a site's lease records (see the module
/// documentation): key → (meta-kvs version, when first seen at it). Kept
/// across the revocations of one takeover, so that a site whose leases ran
/// out is waited for once.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    seen: HashMap<Bytes, (u64, Instant)>,
}

impl Ownership {
    /// Revokes `file_id` below `epoch` at `site` and waits until every
    /// access server of the site installed the revocation or let its lease
    /// run out (see the module documentation).
    pub(super) async fn revoke_and_wait(
        &self,
        site: &str,
        file_id: FileId,
        epoch: Epoch,
    ) -> Result<(), OwnershipError> {
        let mut watch = LeaseWatch::default();
        self.revoke_many_and_wait(site, &[(file_id, epoch)], Some(&mut watch))
            .await
    }

    /// [`Ownership::revoke_and_wait`] for several `(file id, epoch)` at
    /// once (one record update, one wait), with what `watch` has already
    /// seen of the site's leases; `None`: the revocation is recorded but
    /// not waited for (the operator says the site is fenced: its access
    /// servers install it before their next lease, if they ever come back).
    pub(super) async fn revoke_many_and_wait(
        &self,
        site: &str,
        files: &[(FileId, Epoch)],
        watch: Option<&mut LeaseWatch>,
    ) -> Result<(), OwnershipError> {
        let Some(&(first, _)) = files.first() else {
            return Ok(());
        };
        let started = Instant::now();
        let generation = self.revoke(site, first, Change::Raise(files)).await?;
        tracing::info!(
            site,
            files = files.len(),
            %first,
            generation,
            "revoking files at the old owner's access servers"
        );
        let Some(watch) = watch else {
            return Ok(());
        };
        self.wait_revoked(site, first, generation, watch).await?;
        let metrics = &self.inner.metrics;
        metrics.revocations.inc();
        metrics
            .revocation_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Drops `file_id`'s fence from `site`'s record (the file is gone).
    pub(super) async fn drop_revocation(&self, site: &str, file_id: FileId) {
        if let Err(err) = self.revoke(site, file_id, Change::Drop { file_id }).await {
            tracing::debug!(%file_id, site, %err, "revocation of a removed file not dropped");
        }
    }

    /// Applies `change` to `site`'s revocation record (a conditional
    /// update, retried while the record changes; errors name `file_id`);
    /// the generation to wait for.
    async fn revoke(
        &self,
        site: &str,
        file_id: FileId,
        change: Change<'_>,
    ) -> Result<u64, OwnershipError> {
        let meta = &self.inner.meta;
        for attempt in 0..POST_ATTEMPTS {
            let (mut record, version) = read_revocations(meta, site).await?;
            let mut changed = false;
            match change {
                Change::Raise(files) => {
                    for &(file, epoch) in files {
                        match record.fences.iter_mut().find(|f| f.file_id == file.0) {
                            Some(fence) if fence.epoch >= epoch.get() => {}
                            Some(fence) => {
                                fence.epoch = epoch.get();
                                changed = true;
                            }
                            None => {
                                record.fences.push(RevokedFile {
                                    file_id: file.0,
                                    epoch: epoch.get(),
                                });
                                changed = true;
                            }
                        }
                    }
                }
                Change::Drop { file_id } => {
                    if let Some(at) = record.fences.iter().position(|f| f.file_id == file_id.0) {
                        record.fences.swap_remove(at);
                        changed = true;
                    }
                }
            }
            if !changed {
                return Ok(record.generation);
            }
            record.generation += 1;
            let request = super::handover::conditional_put(
                revoke_key(site),
                version,
                record.encode_to_vec().into(),
            );
            match meta.txn(request).await {
                Ok(reply) if reply.succeeded => return Ok(record.generation),
                // Changed meanwhile, or unknown: read it again (a raise
                // that did land is then found in place).
                Ok(_) | Err(MetaError::OutcomeUnknown(_)) => super::handover::pause(attempt).await,
                Err(source) => return Err(OwnershipError::Meta { file_id, source }),
            }
        }
        Err(OwnershipError::Blocked {
            file_id,
            reason: format!("the revocation record of site {site} kept changing"),
        })
    }

    /// Waits until every lease holder of `site` acknowledged `generation`,
    /// released its lease, or let it run out (as `watch` saw it).
    async fn wait_revoked(
        &self,
        site: &str,
        file_id: FileId,
        generation: u64,
        watch: &mut LeaseWatch,
    ) -> Result<(), OwnershipError> {
        let timing = self.inner.lease;
        let deadline = Instant::now() + timing.longest_revocation();
        loop {
            let waiting: Vec<String> = self
                .look_at_leases(site, watch)
                .await?
                .into_iter()
                .filter(|h| h.state != HolderState::Gone && h.acked < generation)
                .map(|h| h.node)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OwnershipError::Blocked {
                    file_id,
                    reason: format!(
                        "access servers {} of site {site} neither acknowledged the revocation \
                         nor let their lease run out",
                        waiting.join(", ")
                    ),
                });
            }
            tokio::time::sleep(timing.poll_every()).await;
        }
    }

    /// The lease holders of `site` as `watch` sees them now: one scan of
    /// their records, each compared with its first sighting at its
    /// version (remembered in `watch`).
    pub(super) async fn look_at_leases(
        &self,
        site: &str,
        watch: &mut LeaseWatch,
    ) -> Result<Vec<Holder>, OwnershipError> {
        let expiry = self.inner.lease.expiry_wait();
        let what = format!("the ownership leases of site {site}");
        let records = self.scan_all(&what, &lease_prefix(site)).await?;
        let now = Instant::now();
        let mut holders = Vec::with_capacity(records.len());
        for kv in records {
            let record = LeaseRecord::decode(&kv.value[..]).map_err(|err| {
                OwnershipError::CorruptRecords {
                    what: what.clone(),
                    detail: format!("lease record {:?}: {err}", kv.key),
                }
            })?;
            let first = watch
                .seen
                .entry(kv.key.clone())
                .or_insert((kv.version, now));
            let state = if record.released {
                HolderState::Gone
            } else if first.0 != kv.version {
                *first = (kv.version, now);
                HolderState::Renewed
            } else if now.duration_since(first.1) >= expiry {
                HolderState::Gone
            } else {
                HolderState::Holding
            };
            holders.push(Holder {
                node: record.node,
                acked: record.acked,
                state,
            });
        }
        Ok(holders)
    }

    /// Every entry under `prefix` (paged; errors name the records as
    /// `what`).
    pub(super) async fn scan_all(
        &self,
        what: &str,
        prefix: &Bytes,
    ) -> Result<Vec<KeyValue>, OwnershipError> {
        let end = prefix_end(prefix);
        let mut start = prefix.clone();
        let mut all = Vec::new();
        loop {
            let (page, more) = self
                .inner
                .meta
                .scan(start.clone(), end.clone(), 256)
                .await
                .map_err(|source| OwnershipError::MetaRecords {
                    what: what.to_string(),
                    source,
                })?;
            let last = page.last().map(|kv| kv.key.clone());
            all.extend(page);
            match (more, last) {
                (true, Some(last)) => {
                    let mut next = last.to_vec();
                    next.push(0);
                    start = next.into();
                }
                _ => return Ok(all),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_timing() {
        assert_eq!(&lease_key("a", "a-access-1")[..], b"fs/l/a/a-access-1");
        assert_eq!(&revoke_key("b")[..], b"fs/r/b");
        assert_eq!(&prefix_end(b"fs/l/a/")[..], b"fs/l/a0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        let timing = LeaseTiming {
            duration: Duration::from_secs(10),
        };
        assert_eq!(timing.renew_every(), Duration::from_secs(1));
        assert_eq!(timing.margin(), Duration::from_millis(1200));
        assert_eq!(timing.expiry_wait(), Duration::from_millis(11_200));
    }
}
