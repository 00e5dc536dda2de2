//! [`Ownership`]: which site — and which of its access servers — writes
//! each file, the handover when another one starts writing, and where a
//! READ finds the newest bytes
//! (`docs/ARCHITECTURE.md#ownership`, invariants 3, 4, 5 and 8).
//!
//! # The owner record and epochs
//!
//! Each regular file has an owner record in meta-kvs (`record.rs`): the
//! owning **site**, the access server of that site that is the file's
//! **writer**, its **epoch**, the **sources** (sites that may still
//! hold newer blocks than the owner's, until its catch-up completes) and a
//! **claim** while a handover is in progress. Every block request an
//! access server sends for a file carries the epoch it believes in, and a
//! core server refuses (`PERMISSION_DENIED`, "fenced") a request whose
//! epoch is older than the file's fence on that core. Fences only grow.
//!
//! # One writer: an access server, not a site
//!
//! The writer keeps what it wrote in memory — the file's size and mtime,
//! the version of each block it wrote last (the base of its next partial
//! write) — and trusts it for as long as it writes at its epoch. Two
//! access servers of one site writing the same file at one epoch would
//! each build on their own memory and lose the other's writes (a size
//! shrunk back, a partial write applied on a copy that missed the other's
//! write while its core was down). So another access server of the owning
//! site takes the file over exactly as another site does (claim, fence,
//! list, complete; the fence and the epoch make the old writer's memory
//! worthless before the new one writes), and **reads** stay site-wide:
//! any access server of the owning site reads the site's cores with the
//! owner's epoch, the attribute record giving the size. An NFS client
//! that moves to another access server of the site (its server died, a
//! VM migrated between hosts) costs one handover, with no WAN data
//! transfer: the blocks are already on the site's cores.
//!
//! # Writes at the owner: no WAN (docs/ARCHITECTURE.md#invariant-3)
//!
//! An access server caches the record. While it is the file's writer, a
//! WRITE goes to the site's two cores with the cached epoch and nothing
//! else: no meta-kvs call, no other site. If ownership has moved, the new
//! owner has fenced this site's cores, so the write is refused instead of
//! acknowledged, and the cache is refreshed.
//!
//! Every request carrying an epoch leaves the access server only under its
//! **ownership lease** (`lease.rs`), renewed through meta-kvs in the
//! background (one renewal covers all files): an owner cut off from the
//! meta-kvs majority stops by itself when the lease runs out, and resumes
//! when it renews.
//!
//! # Handover (`handover.rs`)
//!
//! The first write at a site that does not own the file, or at an access
//! server of the owning site that is not its writer, takes it over:
//!
//! 1. **claim** — a conditional meta-kvs transaction records
//!    `claim = {by: this site and access server, epoch: top + 1}`; the record's owner is
//!    unchanged, so everyone still reads the old owner's data;
//! 2. **fence** — the old owner's cores and this site's cores are fenced
//!    at the new epoch. All but at most one core of the old owner must
//!    answer (so no write can find two cores that accept the old epoch);
//!    when it returns no write of the old epoch is in flight there. If a
//!    core of the old owner could not be fenced (directly or through a
//!    peer), the file is **revoked** at the old owner's access servers
//!    instead: the handover waits until each installed the revocation or
//!    its lease ran out (`lease.rs`), so none sends the old epoch to any
//!    core again;
//! 3. **list** — every site's cores list the file's blocks and versions
//!    (the old owner, the sources and this site must answer; the others
//!    are asked too). The blocks whose newest version is not on this
//!    site's cores form the **dirty map**; the clock moves past every
//!    version seen (so this site's writes are newer than all of them);
//! 4. **complete** — a second conditional transaction makes this site the
//!    owner at the new epoch, with the sites of the dirty map as sources.
//!
//! Only then is the write sent (a partial write into a dirty block first
//! copies the block's newest version onto the local pair). Every write the
//! old owner acknowledged is on its cores before the fence returns, so it
//! is in the listing, hence readable here before the first write here is
//! acknowledged.
//!
//! **One owner at a time.** Claims are serialised by the record's
//! version; writes of the old epoch are refused once the fence is in
//! place, and the claimant writes nothing before it completes. Two sites
//! writing one file at once therefore take turns: each switch is one
//! handover (two meta-kvs commits, a fence and a listing: a few WAN round
//! trips), the writes of each turn are applied whole, and a write refused
//! by a fence is retried after its site took the file back. NFS clients
//! see slower writes, never a torn or lost one.
//!
//! **A handover that cannot finish** (the old owner is unreachable, or too
//! few of its cores answer) fails with [`OwnershipError::Blocked`] (NFS
//! `JUKEBOX`: the client retries); the claim stays and the old owner keeps
//! owning the file. A claim seen unfinished for the claim timeout (the
//! longest revocation wait plus 5 s, on the observer's own monotonic
//! clock from when it first saw the claim) may be resolved by anyone who
//! meets it: the record goes back to the old owner at the claim's epoch
//! (which passes any fence the claimant set), so a claimant that died
//! mid-handover cannot wedge a file.
//!
//! # Reads: never stale (docs/ARCHITECTURE.md#invariant-4)
//!
//! - **At the owner, current**: the site's own cores (one in-site round
//!   trip), with the epoch, so a fence (ownership moved) is noticed.
//! - **At the owner, catching up**: a block of the dirty map is read from
//!   the site that holds its newest version; the others locally. An
//!   access server of the owner site that did not make the map lists it
//!   once (`catchup.rs`).
//! - **Elsewhere**: up to 64 KiB, the bytes are read from the owner site
//!   (and the sources) with the owner's epoch, newest wins: one WAN round
//!   trip. Larger reads read the local copy while the owner (and the
//!   sources) are probed for the newest version; the local bytes are
//!   returned when they are that version, else the newest copy is read
//!   (one or two WAN round trips, the WAN carrying bytes only when the
//!   local copy is behind).
//!   During a handover the old owner's data is read; if it is already
//!   fenced, the read waits for the handover to complete.
//!
//! # Catch-up: local speed after a move (`catchup.rs`)
//!
//! After a handover the dirty blocks are copied onto this site's cores in
//! the background, a few at a time; then the sources are cleared from the
//! record and every read is local. How long it takes depends on the bytes
//! that were newer elsewhere — the old owner's replication backlog at the
//! handover (its RPO), or the whole file when this site held no replica
//! (n below the number of sites) — divided by the WAN bandwidth, plus a
//! round trip per block and per meta-kvs commit. `geonfs relocate` runs
//! the handover and the catch-up ahead of a planned migration.

mod auto_failover;
mod catchup;
mod failover;
mod handover;
pub mod lease;
pub mod metrics;
pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use geonfs_block_manager::{BlockClient, BlockError, BlockRead};
use geonfs_meta_kvs::{MetaClient, MetaError};
use geonfs_proto::domain::{BlockId, Epoch, FileId, Version};
use geonfs_rpc::Network;
use geonfs_site_config::ClusterConfig;

use crate::data::VersionClock;

pub use auto_failover::AutoFailover;
pub use catchup::CatchUpProgress;
pub use failover::{FailedFile, FailoverProgress, FailoverReport};
pub use lease::{LeaseKeeper, LeaseTiming};
pub use metrics::OwnershipMetrics;
pub use record::{Claim, OwnerRecord};

/// How long a claim may stay unfinished, beyond the longest revocation
/// wait of its claimant, before anyone who meets it may resolve it (its
/// claimant is presumed dead). Measured on the observer's monotonic clock
/// from when it first saw the claim.
pub const CLAIM_TIMEOUT_PAST_REVOCATION: Duration = Duration::from_secs(5);

/// How long a read or write waits for a handover by another site to
/// complete before giving up with [`OwnershipError::Blocked`].
const WAIT_FOR_CLAIM: Duration = Duration::from_secs(15);

/// Reads at a non-owner up to this many bytes take the bytes from the
/// owner directly (one WAN round trip) instead of checking the local copy
/// first (which saves WAN bandwidth on large reads of replicated data).
const DIRECT_READ_MAX: u32 = 64 * 1024;

/// How long a read that failed through the cached owner waits for the
/// owner record to be read again.
const RELOAD_WAIT: Duration = Duration::from_secs(2);

/// How many times a read or write re-reads the record after being fenced.
const REFRESH_ATTEMPTS: u32 = 8;

/// Why an ownership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// A block operation failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// meta-kvs failed.
    #[error("owner record of file {file_id}: {source}")]
    Meta {
        /// The file.
        file_id: FileId,
        /// The error.
        source: MetaError,
    },
    /// meta-kvs failed while reading records that concern no single file
    /// (every owner record, a site's leases or revocations).
    #[error("{what}: {source}")]
    MetaRecords {
        /// The records read.
        what: String,
        /// The error.
        source: MetaError,
    },
    /// Records that concern no single file cannot be decoded.
    #[error("{what}: corrupt: {detail}")]
    CorruptRecords {
        /// The records read.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A failover asked of the wrong site (its own, or one the
    /// configuration does not have).
    #[error("failover refused: {0}")]
    FailoverRefused(String),
    /// The stored owner record cannot be decoded.
    #[error("owner record of file {file_id} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        file_id: FileId,
        /// What is wrong.
        detail: String,
    },
    /// A handover cannot finish now (the old owner or its data is out of
    /// reach, or another site's handover is in progress); retry later.
    #[error("file {file_id}: handover blocked: {reason}")]
    Blocked {
        /// The file.
        file_id: FileId,
        /// Why.
        reason: String,
    },
    /// The file was removed (its owner record is gone and a fence said so).
    #[error("file {file_id} was removed")]
    Removed {
        /// The file.
        file_id: FileId,
    },
    /// A site asked to be failed over is alive: one of its access servers
    /// renewed its lease.
    #[error(
        "site {site} is not lost: its access server {node} renewed its ownership lease; \
             fail over only a site that is down or cut off from the metadata majority"
    )]
    SiteAlive {
        /// The site.
        site: String,
        /// The access server that renewed.
        node: String,
    },
    /// This access server's ownership lease could not be renewed.
    #[error("ownership lease not renewed: {0}")]
    LeaseNotRenewed(String),
    /// The record names a site this configuration does not have.
    #[error("file {file_id}: owner record names unknown site {site:?}")]
    UnknownSite {
        /// The file.
        file_id: FileId,
        /// The site named.
        site: String,
    },
}

/// What a reader needs of a file's ownership (from the cached record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The record.
    pub record: OwnerRecord,
    /// Its meta-kvs version.
    pub meta_version: u64,
}

/// File ownership for one access server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ownership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meta: MetaClient,
    site: String,
    /// This access server's name as a writer in owner records: its address.
    writer: String,
    block_size: u64,
    /// A block client per site (by name), all calling from this node.
    clients: BTreeMap<String, BlockClient>,
    /// Cached records by file.
    views: Mutex<HashMap<FileId, View>>,
    /// Dirty maps of files this site owns and is catching up.
    dirty: Mutex<HashMap<FileId, Arc<catchup::DirtyMap>>>,
    /// One handover at a time per file in this process.
    handovers: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    claim_timeout: Duration,
    /// Claim token → when this process first saw the claim.
    claims_seen: Mutex<HashMap<u64, Instant>>,
    /// The ownership lease's timing (`lease.rs`).
    lease: LeaseTiming,
    /// The highest revocation generation of this site installed here.
    installed_generation: Mutex<u64>,
    metrics: OwnershipMetrics,
    /// This access server's block version clock.
    clock: Arc<VersionClock>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Ownership {
    /// Ownership for an access server at `from_ip` in the site of `local`
    /// (its block client), reaching every other site's cores over
    /// `network`. Only `local` may carry a gate (`lease.rs`): the other
    /// sites' clients send nothing but reads, fences and listings with
    /// their owners' epochs, which the lease of this site does not govern.
    pub fn new(
        meta: MetaClient,
        config: &ClusterConfig,
        network: Network,
        from_ip: IpAddr,
        local: BlockClient,
    ) -> Result<Self, OwnershipError> {
        let site = local.site_name().to_string();
        let lease = LeaseTiming {
            duration: config.cluster.ownership_lease,
        };
        let mut clients = BTreeMap::new();
        let mut clock = VersionClock::default();
        for (index, other) in config.sites.iter().enumerate() {
            if other.name == site {
                let id = geonfs_site_config::SiteId(u16::try_from(index).unwrap_or(u16::MAX));
                clock = VersionClock::new(network.faults().clock_skew(id));
            }
            if other.name == site {
                continue;
            }
            let id = geonfs_site_config::SiteId(u16::try_from(index).unwrap_or(u16::MAX));
            let client = BlockClient::new(network.clone(), config, from_ip, id)?;
            clients.insert(other.name.clone(), client);
        }
        clients.insert(site.clone(), local);
        Ok(Ownership {
            inner: Arc::new(Inner {
                meta,
                site,
                writer: from_ip.to_string(),
                block_size: config.cluster.block_size,
                clients,
                views: Mutex::new(HashMap::new()),
                dirty: Mutex::new(HashMap::new()),
                handovers: Mutex::new(HashMap::new()),
                claim_timeout: lease.longest_revocation() + CLAIM_TIMEOUT_PAST_REVOCATION,
                claims_seen: Mutex::new(HashMap::new()),
                lease,
                installed_generation: Mutex::new(0),
                metrics: OwnershipMetrics::new(),
                clock: Arc::new(clock),
            }),
        })
    }

    /// This access server's block version clock.
    pub fn clock(&self) -> &Arc<VersionClock> {
        &self.inner.clock
    }

    /// This access server's site.
    pub fn site(&self) -> &str {
        &self.inner.site
    }

    /// Whether `record` names this access server as the file's writer.
    fn is_writer(&self, record: &OwnerRecord) -> bool {
        record.site == self.inner.site && record.writer == self.inner.writer
    }

    /// The metrics (unregistered until [`OwnershipMetrics::register`]).
    pub fn metrics(&self) -> &OwnershipMetrics {
        &self.inner.metrics
    }

    /// The block client of `site`.
    fn client(&self, file_id: FileId, site: &str) -> Result<&BlockClient, OwnershipError> {
        self.inner
            .clients
            .get(site)
            .ok_or_else(|| OwnershipError::UnknownSite {
                file_id,
                site: site.to_string(),
            })
    }

    /// This site's block client.
    pub fn local(&self) -> &BlockClient {
        // The constructor always inserts the local site.
        &self.inner.clients[&self.inner.site]
    }

    /// The block clients of the other sites (best-effort cleanup).
    pub fn remote_clients(&self) -> impl Iterator<Item = &BlockClient> {
        self.inner
            .clients
            .iter()
            .filter(|(name, _)| **name != self.inner.site)
            .map(|(_, client)| client)
    }

    /// The cached view of `file_id`, if any.
    fn cached(&self, file_id: FileId) -> Option<View> {
        lock(&self.inner.views).get(&file_id).cloned()
    }

    /// Forgets the cached record (after a fence refused a request).
    pub fn invalidate(&self, file_id: FileId) {
        lock(&self.inner.views).remove(&file_id);
    }

    fn remember(&self, file_id: FileId, view: &View) {
        let mut views = lock(&self.inner.views);
        match views.get(&file_id) {
            Some(old) if old.meta_version > view.meta_version => {}
            _ => {
                views.insert(file_id, view.clone());
            }
        }
    }

    /// Reads the record from meta-kvs (linearizable) and caches it.
    /// `None`: the file has no owner record (never written since it was
    /// created, or created before ownership existed).
    pub async fn load(&self, file_id: FileId) -> Result<Option<View>, OwnershipError> {
        let found = self
            .inner
            .meta
            .get(record::owner_key(file_id))
            .await
            .map_err(|source| OwnershipError::Meta { file_id, source })?;
        let Some(kv) = found else {
            self.invalidate(file_id);
            return Ok(None);
        };
        let record = record::decode(&kv.value)
            .map_err(|detail| OwnershipError::Corrupt { file_id, detail })?;
        let view = View {
            record,
            meta_version: kv.version,
        };
        self.remember(file_id, &view);
        Ok(Some(view))
    }

    /// The cached view, else the stored one.
    pub async fn view(&self, file_id: FileId) -> Result<Option<View>, OwnershipError> {
        match self.cached(file_id) {
            Some(view) => Ok(Some(view)),
            None => self.load(file_id).await,
        }
    }

    /// The epoch this access server writes `file_id` at, as cached (no
    /// claim on it); `None` if the cache does not say it is the writer.
    pub fn owned_epoch(&self, file_id: FileId) -> Option<Epoch> {
        self.cached(file_id)
            .filter(|v| self.is_writer(&v.record) && v.record.claim.is_none())
            .map(|v| v.record.epoch)
    }

    /// Reads `len` bytes at `offset` of `block` at their newest version
    /// anywhere (see the module documentation): `None` when the file's
    /// data has no such block.
    pub async fn read_block(
        &self,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let file_id = block.file_id;
        let deadline = Instant::now() + WAIT_FOR_CLAIM;
        let mut refreshes = 0;
        let mut reloaded = false;
        loop {
            let view = match self.view(file_id).await? {
                Some(view) => view,
                // No owner: the file was never written under ownership;
                // its data, if any, is where this site's cores have it.
                None => return Ok(self.local().read(block, offset, len).await?),
            };
            match self.read_with(&view, block, offset, len).await {
                // The cached owner did not serve the read (out of reach):
                // the file may have moved without this process hearing of
                // it (a failover or `relocate` run elsewhere). Read the
                // record again, once; retry if it changed.
                Err(OwnershipError::Block(err))
                    if !reloaded
                        && !err.is_fenced()
                        && !matches!(err, BlockError::LeaseExpired { .. }) =>
                {
                    reloaded = true;
                    let fresh = tokio::time::timeout(RELOAD_WAIT, self.load(file_id)).await;
                    let moved = match fresh {
                        Ok(Ok(fresh)) => {
                            fresh.as_ref().map(|v| v.meta_version) != Some(view.meta_version)
                        }
                        // meta-kvs out of reach too: the read's own error
                        // says more.
                        Ok(Err(_)) | Err(_) => false,
                    };
                    if !moved {
                        return Err(OwnershipError::Block(err));
                    }
                    tracing::debug!(
                        %file_id,
                        "owner record changed after a failed read; retrying"
                    );
                }
                Err(OwnershipError::Block(err)) if err.is_fenced() => {
                    refreshes += 1;
                    self.inner.metrics.fenced.inc();
                    let fresh = self.load(file_id).await?;
                    let claim_pending = fresh.as_ref().is_some_and(|v| v.record.claim.is_some());
                    if claim_pending {
                        // The old owner is fenced, the claimant not done.
                        self.resolve_stale_claim(file_id).await?;
                        if Instant::now() >= deadline {
                            return Err(OwnershipError::Blocked {
                                file_id,
                                reason: "a handover by another site has not completed".into(),
                            });
                        }
                        handover::pause(refreshes).await;
                    } else if refreshes > REFRESH_ATTEMPTS {
                        return Err(OwnershipError::Block(err));
                    }
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Ownership::read_block`] with `view`, by one of
    /// three strategies: at the owner, its own copy (or a source's newer
    /// one); elsewhere, a small read straight from the owner and sources,
    /// a large one from the local copy unless a probe finds it behind.
    async fn read_with(
        &self,
        view: &View,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let record = &view.record;
        if record.site == self.inner.site && record.claim.is_none() {
            self.read_as_owner(view, block, offset, len).await
        } else if len <= DIRECT_READ_MAX && record.site != self.inner.site {
            self.read_direct(record, block, offset, len).await
        } else {
            self.read_local_unless_behind(record, block, offset, len)
                .await
        }
    }

    /// At the owner (no handover in progress): its own copy, checked with
    /// its epoch, or for a block still dirty after a handover the newer
    /// copy of the source site holding it.
    async fn read_as_owner(
        &self,
        view: &View,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let file_id = block.file_id;
        let epoch = Some(view.record.epoch);
        let owner = self.local();
        if view.record.sources.is_empty() {
            return Ok(owner.read_as(block, offset, len, epoch).await?);
        }
        let dirty = self.dirty_map(file_id, view).await?;
        match dirty.get(block.index) {
            None => Ok(owner.read_as(block, offset, len, epoch).await?),
            Some(newer) => {
                // The owner's copy with the epoch (fence check), the
                // newer copy from the site that holds it.
                let source = self.client(file_id, &newer.site)?;
                let (own, newer) = futures::join!(
                    owner.read_as(block, offset, len, epoch),
                    source.read_as(block, offset, len, None)
                );
                Ok(newest(own?, newer?))
            }
        }
    }

    /// The sites other than this one that may hold the newest copy: the
    /// owner and the sources of its last handover.
    fn remote_holders<'a>(&self, record: &'a OwnerRecord) -> Vec<&'a str> {
        std::iter::once(record.site.as_str())
            .chain(record.sources.iter().map(String::as_str))
            .filter(|s| *s != self.inner.site)
            .collect()
    }

    /// Reads `block` at `site`: at the owner with its epoch (checked
    /// against the file's fence), at a source unchecked.
    async fn read_at(
        &self,
        record: &OwnerRecord,
        site: &str,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let epoch = (site == record.site).then_some(record.epoch);
        let client = self.client(block.file_id, site)?;
        Ok(client.read_as(block, offset, len, epoch).await?)
    }

    /// Not the owner, a small read: the bytes straight from the owner (and
    /// the sources), one WAN round trip; the newest wins, this site's own
    /// copy included when it is a source.
    async fn read_direct(
        &self,
        record: &OwnerRecord,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let reads = self
            .remote_holders(record)
            .into_iter()
            .map(|site| self.read_at(record, site, block, offset, len));
        let own_newer = async {
            // This site may itself hold newer blocks (a source).
            if record.sources.iter().any(|s| *s == self.inner.site) {
                self.local().read(block, offset, len).await
            } else {
                Ok(None)
            }
        };
        let (reads, own) = futures::join!(futures::future::join_all(reads), own_newer);
        let mut best = own?;
        for read in reads {
            best = newest(best, read?);
        }
        Ok(best)
    }

    /// Not the owner and a large read, or a handover in progress: the local
    /// copy while the owner (and sources) are asked for their version; the
    /// WAN carries the bytes only when the local copy is behind.
    async fn read_local_unless_behind(
        &self,
        record: &OwnerRecord,
        block: BlockId,
        offset: u64,
        len: u32,
    ) -> Result<Option<BlockRead>, OwnershipError> {
        let local = self.local();
        let local_read = async {
            if record.site == self.inner.site {
                local.read_as(block, offset, len, Some(record.epoch)).await
            } else {
                local.read(block, offset, len).await
            }
        };
        let probes = self
            .remote_holders(record)
            .into_iter()
            .map(|site| async move {
                let found = self.read_at(record, site, block, 0, 0).await?;
                Ok::<_, OwnershipError>((site, found))
            });
        let (local_result, probed) = futures::join!(local_read, futures::future::join_all(probes));
        let mut best: Option<(&str, Version)> = None;
        for result in probed {
            let (site, found) = result?;
            if let Some(found) = found {
                if best.is_none_or(|(_, v)| found.version > v) {
                    best = Some((site, found.version));
                }
            }
        }
        let local_found = local_result?;
        let Some((site, version)) = best else {
            // No remote copy: the local one counts when this site is the
            // owner or a source; otherwise the owner's "absent" stands.
            let counts = record.site == self.inner.site
                || record.sources.iter().any(|s| *s == self.inner.site);
            return Ok(if counts { local_found } else { None });
        };
        if let Some(found) = local_found.filter(|f| f.version >= version) {
            return Ok(Some(found));
        }
        self.read_at(record, site, block, offset, len).await
    }
}

/// The newer of two reads (the first on a tie).
fn newest(a: Option<BlockRead>, b: Option<BlockRead>) -> Option<BlockRead> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.version > a.version { b } else { a }),
        (a, b) => a.or(b),
    }
}
