//! [`Replicator`]: the worker that ships a core's queued writes to the
//! other sites and trims the extra local copy (docs/ARCHITECTURE.md#invariant-2).
//!
//! # Queue
//!
//! A core that takes a write naming remote targets records a
//! [`ReplicationJob`] in the same storage batch as the data (the store
//! implements [`ReplicaStore`]), so an acknowledged write has a durable job. A
//! newer write of the block replaces the job (the latest version covers
//! the older ones).
//!
//! # Shipping
//!
//! The worker polls the queue (waking early when a job is enqueued, see
//! [`ReplicaStore::enqueued`]). For a due job, the **primary** of the block's
//! local pair reads what its job changed since the version the targets hold
//! ([`changes`]; the whole block when that is not known, and for a target
//! whose copy turns out not to be at that base) at the copy's current
//! version and sends it to every target on that target's `Replicate` stream (one per target core,
//! shared by all jobs, see `stream.rs`: the batching), over
//! [`Network::channel`] (so WAN emulation and faults apply). When every
//! target holds it durably, the job is kept as **shipped** until the block
//! has had no new write for [`ReplicatorOptions::trim_delay`]; then the
//! primary tells the **secondary** (the job's peer) to delete its copy up
//! to that version (the trim) and marks the job done. (A write onto a
//! trimmed copy has to seed it with the whole block first; a block being
//! written keeps both copies instead.) A failure reschedules the job with an
//! exponential backoff (up to [`ReplicatorOptions::max_backoff`]).
//!
//! # Takeover and repair
//!
//! The secondary keeps its job as a fallback (the trim removes it along with
//! the copy). Once the job is older than
//! [`ReplicatorOptions::takeover_timeout`], the secondary probes the
//! primary (a zero-length read, which also reports the primary's pending
//! job):
//! - the primary holds the job's version (or newer) and still has a job:
//!   it is alive and responsible; check again later;
//! - it holds it but has no job left: the primary finished (its trim of
//!   this copy was lost, e.g. this core was down) — the secondary deletes
//!   its own copy;
//! - otherwise (unreachable, missing or behind) the secondary **takes
//!   over**: it becomes the primary of the job with no peer (never the old
//!   primary: two cores must never trim each other).
//!
//! A primary whose shipping fails for a job older than the takeover
//! timeout checks its local redundancy (docs/ARCHITECTURE.md#invariant-1 after a core loss):
//! if its peer no longer holds the version (or it has none), it copies the
//! block, with a secondary job naming itself, to the best other live core
//! of its site and makes that core its peer. A put whose designated remote
//! core is unreachable goes to the next core of that site in rendezvous
//! order. A trim whose peer is unreachable still completes the job: that
//! copy deletes itself when it comes back (the "no job left" case).
//!
//! The periodic scan ([`ReplicatorOptions::scan_interval`], see
//! `scan.rs`) restores copies that were lost after replication finished.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use geonfs_proto::domain::{unix_time_ms, BlockId, Epoch, FileId, Version};
use geonfs_rpc::{Network, RpcChannel};
use geonfs_site_config::ClusterConfig;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{BlockError, Placement};

mod attempt;
pub mod changes;
mod metrics;
mod repair;
mod scan;
mod ship;
mod stream;

pub use changes::{ChangedRange, JobChanges};
pub use metrics::ReplicatorMetrics;

/// One pending replication job, as the queue holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationJob {
    /// The block.
    pub block: BlockId,
    /// The version to ship (or newer).
    pub version: Version,
    /// Remote target core names, one per other site.
    pub targets: Vec<String>,
    /// Whether this core ships (the primary of the pair).
    pub primary: bool,
    /// The other in-site holder of the pair.
    pub peer: String,
    /// When the oldest write this job covers was enqueued (ms since the
    /// Unix epoch); the job's age is the replication lag (RPO).
    pub first_enqueued_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (ms since the Unix epoch).
    pub next_attempt_ms: u64,
    /// The block's current length in this core's store.
    pub length: u64,
    /// What changed since the version the remote copies hold; `None`: the
    /// whole block ships.
    pub changes: Option<JobChanges>,
    /// Every target holds `version` already; only the trim of the peer's
    /// copy is left, due at `next_attempt_ms` (see
    /// [`ReplicatorOptions::trim_delay`]). Not part of the backlog.
    pub shipped: bool,
}

impl ReplicationJob {
    /// The bytes this job still has to ship to each target.
    pub fn backlog_bytes(&self) -> u64 {
        self.changes
            .as_ref()
            .map_or(self.length, |changes| changes.bytes().min(self.length))
    }
}

/// A core's whole copy of a block, as the replicator ships it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCopy {
    /// The copy's version.
    pub version: Version,
    /// The block's whole content.
    pub data: Bytes,
    /// The ownership epoch it is shipped with (`ReplicaPut.owner_epoch`).
    pub epoch: Option<Epoch>,
    /// The core's `lost_below` for the file (`ReplicaPut.lost_below`).
    pub lost_below: Option<Epoch>,
}

/// The changed ranges of a core's copy of a block on top of the job's base,
/// as the replicator ships them (see [`changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyChanges {
    /// The copy's version.
    pub version: Version,
    /// The version a remote copy must hold for these changes to apply.
    pub base: Version,
    /// The block's length at `version`.
    pub length: u64,
    /// The bytes of the changed ranges at `version`, by offset.
    pub pieces: Vec<ChangedPiece>,
    /// The ownership epoch it is shipped with (`ReplicaPut.owner_epoch`).
    pub epoch: Option<Epoch>,
    /// The core's `lost_below` for the file (`ReplicaPut.lost_below`).
    pub lost_below: Option<Epoch>,
}

/// The bytes of one changed range of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedPiece {
    /// First byte, from the start of the block.
    pub offset: u64,
    /// The newest write in the range ([`changes::ChangedRange::version`]).
    pub version: Version,
    /// The range's bytes at the copy's version.
    pub data: Bytes,
}

impl CopyChanges {
    /// The changes on top of `held`, a version between the base and this
    /// copy's (a target that already got some of them): the pieces written
    /// after it. `None` when `held` is not in that interval.
    pub fn since(&self, held: Version) -> Option<CopyChanges> {
        (self.base < held && held < self.version).then(|| CopyChanges {
            base: held,
            pieces: self
                .pieces
                .iter()
                .filter(|piece| piece.version > held)
                .cloned()
                .collect(),
            ..self.clone()
        })
    }
}

/// A block a core holds, at its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBlock {
    /// The block.
    pub block: BlockId,
    /// The version of this core's copy.
    pub version: Version,
}

/// A page of the blocks a core holds, in block order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockPage {
    /// The blocks of the page.
    pub blocks: Vec<HeldBlock>,
    /// Whether more follow.
    pub more: bool,
}

/// The replicator's view of one core's local store: its durable job queue and its
/// block copies (implemented by the core server's block store).
pub trait ReplicaStore: Send + Sync + 'static {
    /// Up to `limit` pending jobs, in block order.
    fn pending_jobs(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ReplicationJob>, BlockError>>;
    /// The block's whole copy; `None` if absent.
    fn read_block(&self, block: BlockId) -> BoxFuture<'_, Result<Option<LocalCopy>, BlockError>>;
    /// The job's changes with their bytes, read with the copy in one
    /// snapshot; `None` when the whole block ships (no copy, no job, a job
    /// without changes or not at the copy's version).
    fn read_changes(
        &self,
        block: BlockId,
    ) -> BoxFuture<'_, Result<Option<CopyChanges>, BlockError>>;
    /// Every target holds `version`: if the block's job is not newer, it
    /// is removed (`trim_at_ms` `None`) or kept as shipped, its peer's trim
    /// due at `trim_at_ms`; a newer job's changes are rebased on `version`.
    fn job_shipped(
        &self,
        block: BlockId,
        version: Version,
        trim_at_ms: Option<u64>,
    ) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Removes the block's job if its version is at most `version`.
    fn job_done(&self, block: BlockId, version: Version) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Records a failed attempt of the job at `version` (ignored if the job
    /// was replaced meanwhile).
    fn reschedule(
        &self,
        block: BlockId,
        version: Version,
        attempts: u32,
        next_attempt_ms: u64,
    ) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Notified whenever a job is enqueued.
    fn enqueued(&self) -> Arc<Notify>;
    /// Changes the role and peer of the block's job at `version`; false if
    /// the job is gone or was replaced.
    fn retarget(
        &self,
        block: BlockId,
        version: Version,
        primary: bool,
        peer: String,
    ) -> BoxFuture<'_, Result<bool, BlockError>>;
    /// Deletes this core's copy (and job) if its version is at most
    /// `version`; true if it was deleted.
    fn trim_local(
        &self,
        block: BlockId,
        version: Version,
    ) -> BoxFuture<'_, Result<bool, BlockError>>;
    /// The version of the block's pending job, if any.
    fn job_version(&self, block: BlockId) -> BoxFuture<'_, Result<Option<Version>, BlockError>>;
    /// Replaces this core's copy of `block` with `data` at `version` when
    /// that is newer, or the same version and this copy fails its
    /// checksum (never newer by older); true if the copy changed.
    fn repair_local(
        &self,
        block: BlockId,
        version: Version,
        data: Bytes,
        epoch: Option<Epoch>,
    ) -> BoxFuture<'_, Result<bool, BlockError>>;
    /// Learns that `file_id` was taken over from a lost owner at
    /// `lost_below` (a put of this core's was refused as superseded) and
    /// sets aside this core's copies of the file that takeover never saw
    /// (older, never copied out).
    fn set_aside(
        &self,
        file_id: FileId,
        lost_below: Epoch,
    ) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Up to `limit` held blocks after `after` (in block order) with their
    /// versions, and whether more follow.
    fn list_blocks(
        &self,
        after: Option<BlockId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<BlockPage, BlockError>>;
}

/// Tunables of the [`Replicator`].
#[derive(Clone, Debug)]
pub struct ReplicatorOptions {
    /// How long a secondary waits before it checks the primary and, if the
    /// primary is unreachable or behind, ships itself.
    pub takeover_timeout: Duration,
    /// Backoff after the first failure; doubles with each further one.
    pub base_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// The longest sleep between two polls of the queue.
    pub poll_interval: Duration,
    /// Jobs read per poll.
    pub batch: usize,
    /// Jobs shipped concurrently.
    pub concurrency: usize,
    /// A fresh job waits until its block has had no new write for this
    /// long, so a block being written sequentially is shipped once, not
    /// once per write.
    pub coalesce: Duration,
    /// ... but never longer than this after its oldest write (bounds the
    /// added replication lag).
    pub coalesce_max: Duration,
    /// Time between two passes of the scan that restores lost copies of
    /// already replicated blocks (`None`: no scan).
    pub scan_interval: Option<Duration>,
    /// A replication stream whose target answers none of its outstanding
    /// puts for this long is broken off and its puts fail (they are
    /// retried): a half-open connection or a lost reply never holds a job.
    /// Long enough for one block over the slowest link.
    pub stream_stall: Duration,
    /// After every target holds a block's version, the primary trims its
    /// peer's copy only once the block has had no new write for this long
    /// (zero: at once). A block being written keeps both in-site copies
    /// complete meanwhile, so its next partial write never has to re-seed
    /// a trimmed copy with the whole block.
    pub trim_delay: Duration,
}

impl Default for ReplicatorOptions {
    fn default() -> Self {
        ReplicatorOptions {
            takeover_timeout: Duration::from_secs(10),
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            batch: 10_000,
            concurrency: 16,
            coalesce: Duration::from_millis(100),
            coalesce_max: Duration::from_secs(1),
            scan_interval: Some(Duration::from_secs(3600)),
            stream_stall: Duration::from_secs(120),
            trim_delay: Duration::from_secs(60),
        }
    }
}

/// `d` in whole milliseconds, saturating (job times are ms since the Unix
/// epoch).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ReplicatorOptions {
    /// The backoff after `attempts` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_backoff
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

/// The running replication worker of one core server.
#[derive(Debug)]
pub struct Replicator {
    task: JoinHandle<()>,
    scan: Option<JoinHandle<()>>,
    metrics: ReplicatorMetrics,
}

impl Replicator {
    /// Starts the worker of core `node_name` of `config` on `store`, the core's block store.
    pub fn start(
        store: Arc<dyn ReplicaStore>,
        network: Network,
        config: &ClusterConfig,
        node_name: &str,
        options: ReplicatorOptions,
        metrics: ReplicatorMetrics,
    ) -> Result<Self, BlockError> {
        let node = config
            .node(node_name)
            .ok_or_else(|| BlockError::UnknownNode(node_name.to_string()))?;
        let nodes = config
            .nodes
            .iter()
            .filter(|n| n.roles.core)
            .map(|n| {
                let site = config.site(n.site).name.clone();
                (n.name.clone(), (n.address, site))
            })
            .collect();
        let home_id = node.site;
        let home = config.site(node.site).name.clone();
        let remote_sites = config
            .sites
            .iter()
            .filter(|s| s.name != home)
            .map(|s| s.name.clone())
            .collect();
        let worker = Worker {
            store,
            network,
            from: node.address.ip(),
            name: node.name.clone(),
            site: home,
            home: home_id,
            placement: Placement::new(config),
            remote_sites,
            nodes,
            max_message: usize::try_from(config.cluster.block_size)
                .unwrap_or(usize::MAX)
                .saturating_add(1024 * 1024),
            block_size: config.cluster.block_size,
            options,
            metrics: metrics.clone(),
            channels: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        };
        let worker = Arc::new(worker);
        let scan = worker
            .options
            .scan_interval
            .map(|every| tokio::spawn(worker.clone().scan_loop(every)));
        let task = tokio::spawn(worker.run());
        Ok(Replicator {
            task,
            scan,
            metrics,
        })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &ReplicatorMetrics {
        &self.metrics
    }

    /// Stops the worker (jobs in flight stay queued: they are durable).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(scan) = self.scan {
            scan.abort();
            let _ = scan.await;
        }
    }
}

struct Worker {
    store: Arc<dyn ReplicaStore>,
    network: Network,
    from: IpAddr,
    name: String,
    site: String,
    home: geonfs_site_config::SiteId,
    placement: Placement,
    remote_sites: Vec<String>,
    /// Core name → (address, site name).
    nodes: HashMap<String, (SocketAddr, String)>,
    max_message: usize,
    block_size: u64,
    options: ReplicatorOptions,
    metrics: ReplicatorMetrics,
    channels: Mutex<HashMap<String, RpcChannel>>,
    streams: stream::Streams,
}

/// What a put to a site came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shipped {
    /// A core of the site holds the version (or a newer one) durably.
    Held,
    /// Refused: the copy is from before a takeover from a lost owner
    /// (`lost_below`) that never saw it.
    Superseded { lost_below: Epoch },
    /// Changes refused: the site's copy is not at their base; it is
    /// complete at `held` (`None`: at no version, or not said).
    BaseMismatch { held: Option<Version> },
}

/// What one attempt at a job came to.
enum Attempt {
    /// The job is done (or was handled) — nothing to reschedule.
    Done,
    /// Failed: reschedule with backoff.
    Failed(String),
    /// The primary is alive: check again after the takeover timeout.
    Watch,
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let notify = self.store.enqueued();
        loop {
            let notified = notify.notified();
            let wait = match self.store.pending_jobs(self.options.batch).await {
                Ok(jobs) => self.round(jobs).await,
                Err(err) => {
                    tracing::warn!(node = %self.name, %err, "replication queue unreadable");
                    self.options.poll_interval
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// When the job is due. A fresh job (no failed attempt; its
    /// `next_attempt_ms` is the time of the block's latest write) waits for
    /// the block to be quiet for [`ReplicatorOptions::coalesce`], at most
    /// [`ReplicatorOptions::coalesce_max`] after its oldest write; a
    /// secondary waits for the takeover timeout.
    fn due_at(&self, job: &ReplicationJob) -> u64 {
        if job.shipped {
            return job.next_attempt_ms;
        }
        if !job.primary {
            return job.next_attempt_ms.max(
                job.first_enqueued_ms
                    .saturating_add(millis(self.options.takeover_timeout)),
            );
        }
        if job.attempts > 0 {
            return job.next_attempt_ms;
        }
        job.next_attempt_ms
            .saturating_add(millis(self.options.coalesce))
            .min(
                job.first_enqueued_ms
                    .saturating_add(millis(self.options.coalesce_max)),
            )
    }

    /// Runs the due jobs of one poll; returns how long to sleep.
    async fn round(&self, jobs: Vec<ReplicationJob>) -> Duration {
        self.update_backlog(&jobs);
        let now = unix_time_ms();
        let (due, later): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| self.due_at(j) <= now);
        let ran = !due.is_empty();
        tracing::trace!(node = %self.name, due = due.len(), later = later.len(), "replication round");
        futures::stream::iter(due)
            .for_each_concurrent(self.options.concurrency.max(1), |job| async move {
                self.attempt_and_record(job).await;
            })
            .await;
        if ran {
            return Duration::from_millis(10);
        }
        let next = later.iter().map(|j| self.due_at(j)).min();
        next.map_or(self.options.poll_interval, |at| {
            Duration::from_millis(at.saturating_sub(now))
                .clamp(Duration::from_millis(10), self.options.poll_interval)
        })
    }

    /// Sets the backlog gauges from the primary jobs (a secondary's job is
    /// a fallback for the same write: counting it too would count every
    /// write twice across the site; it counts once it is taken over).
    fn update_backlog(&self, jobs: &[ReplicationJob]) {
        let now = unix_time_ms();
        let mut per_site: BTreeMap<&str, (i64, i64, f64)> = self
            .remote_sites
            .iter()
            .map(|s| (s.as_str(), (0, 0, 0.0)))
            .collect();
        for job in jobs.iter().filter(|job| job.primary && !job.shipped) {
            for target in &job.targets {
                let Some((_, site)) = self.nodes.get(target) else {
                    continue;
                };
                let entry = per_site.entry(site.as_str()).or_default();
                entry.0 += 1;
                entry.1 = entry
                    .1
                    .saturating_add(i64::try_from(job.backlog_bytes()).unwrap_or(i64::MAX));
                let age = now.saturating_sub(job.first_enqueued_ms) as f64 / 1000.0;
                entry.2 = entry.2.max(age);
            }
        }
        for (site, (count, bytes, age)) in per_site {
            self.metrics
                .backlog_jobs
                .with_label_values(&[site])
                .set(count);
            self.metrics
                .backlog_bytes
                .with_label_values(&[site])
                .set(bytes);
            self.metrics
                .oldest_age_seconds
                .with_label_values(&[site])
                .set(age);
        }
    }

    async fn attempt_and_record(&self, job: ReplicationJob) {
        let (block, version) = (job.block, job.version);
        // Every call an attempt makes is bounded; this bounds their sum, so
        // that no job can hold the worker's round (and every other job).
        let limit = self.options.stream_stall.saturating_mul(4);
        let attempt = match tokio::time::timeout(limit, self.attempt(&job)).await {
            Ok(attempt) => attempt,
            Err(_) => {
                tracing::warn!(node = %self.name, %block,
                    %version, primary = job.primary, ?limit, "replication attempt timed out");
                Attempt::Failed(format!("the attempt took more than {limit:?}"))
            }
        };
        let next = match attempt {
            Attempt::Done => return,
            Attempt::Watch => Some((job.attempts, self.options.takeover_timeout)),
            Attempt::Failed(reason) => {
                let attempts = job.attempts.saturating_add(1);
                let backoff = self.options.backoff(attempts);
                tracing::debug!(node = %self.name, %block,
                    %version, attempts, ?backoff, %reason, "replication attempt failed");
                Some((attempts, backoff))
            }
        };
        if let Some((attempts, delay)) = next {
            tracing::trace!(node = %self.name, %block,
                %version, attempts, ?delay, "rescheduling");
            let at = unix_time_ms().saturating_add(millis(delay));
            if let Err(err) = self.store.reschedule(block, version, attempts, at).await {
                tracing::warn!(node = %self.name, %err, "cannot reschedule a replication job");
            }
        }
    }

    fn channel(&self, node: &str) -> Result<RpcChannel, String> {
        let mut channels = match self.channels.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(node) {
            return Ok(channel.clone());
        }
        let (addr, _) = self
            .nodes
            .get(node)
            .ok_or_else(|| format!("{node} is not a core server of this cluster"))?;
        let channel = self
            .network
            .channel(self.from, *addr)
            .map_err(|err| format!("no channel to {node}: {err}"))?;
        channels.insert(node.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = ReplicatorOptions::default();
        assert_eq!(options.backoff(1), Duration::from_millis(200));
        assert_eq!(options.backoff(2), Duration::from_millis(400));
        assert_eq!(options.backoff(5), Duration::from_millis(3200));
        assert_eq!(options.backoff(9), Duration::from_secs(30));
        assert_eq!(options.backoff(u32::MAX), Duration::from_secs(30));
    }
}
