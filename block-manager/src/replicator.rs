//! [`Replicator`]: the worker that ships a core's queued writes to the
//! other sites and trims the extra local copy (invariant 2).
//!
//! # Queue
//!
//! A core that takes a write naming remote targets records a
//! [`ReplicationJob`] in the same storage batch as the data (the store
//! implements [`JobQueue`]), so an acknowledged write has a durable job. A
//! newer write of the block replaces the job (the latest version covers
//! the older ones).
//!
//! # Shipping
//!
//! The worker polls the queue (waking early when a job is enqueued, see
//! [`JobQueue::enqueued`]). For a due job, the **primary** of the block's
//! local pair reads the whole block at its current version and `Put`s it to
//! every target over [`Network::channel`] (so WAN emulation and faults
//! apply). When every target holds it durably, the primary tells the
//! **secondary** (the job's peer) to delete its copy up to that version
//! (the trim) and marks the job done. A failure reschedules the job with an
//! exponential backoff (up to [`ReplicatorOptions::max_backoff`]).
//!
//! The secondary keeps its job as a fallback (the trim removes it along with
//! the copy). Once the job is older than
//! [`ReplicatorOptions::takeover_timeout`], the secondary asks the primary
//! for the block's version: if the primary answers with the job's version
//! (or newer) it is alive and responsible, and the secondary checks again
//! later; otherwise the secondary ships itself and, when done, does **not**
//! trim (its copy may be the last local one). If the primary comes back
//! later, its own job runs as usual (the puts find the data already there)
//! and it trims the secondary.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::StreamExt;
use geonfs_proto::core as wire;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::domain::BlockId;
use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
use geonfs_proto::replication::ReplicaPut;
use geonfs_rpc::{Network, RpcChannel};
use geonfs_site_config::ClusterConfig;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::BlockError;

/// One pending replication job, as the queue holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationJob {
    /// The block.
    pub block: BlockId,
    /// The version to ship (or newer).
    pub version: u64,
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
    /// The block's current length in this core's store (backlog bytes).
    pub length: u64,
}

/// The durable queue and block data of one core, as the replicator needs
/// them (implemented by the core server's block store).
pub trait JobQueue: Send + Sync + 'static {
    /// Up to `limit` pending jobs, in block order.
    fn pending_jobs(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ReplicationJob>, BlockError>>;
    /// The block's whole content and its version; `None` if absent.
    fn read_block(&self, block: BlockId)
        -> BoxFuture<'_, Result<Option<(u64, Bytes)>, BlockError>>;
    /// Removes the block's job if its version is at most `version`.
    fn job_done(&self, block: BlockId, version: u64) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Records a failed attempt of the job at `version` (ignored if the job
    /// was replaced meanwhile).
    fn reschedule(
        &self,
        block: BlockId,
        version: u64,
        attempts: u32,
        next_attempt_ms: u64,
    ) -> BoxFuture<'_, Result<(), BlockError>>;
    /// Notified whenever a job is enqueued.
    fn enqueued(&self) -> Arc<Notify>;
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
        }
    }
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

/// Metrics of a [`Replicator`], labelled by destination site.
#[derive(Clone, Debug)]
pub struct ReplicatorMetrics {
    /// Bytes of the blocks still to ship, by destination site.
    pub backlog_bytes: IntGaugeVec,
    /// Jobs still to ship, by destination site.
    pub backlog_jobs: IntGaugeVec,
    /// Age of the oldest pending job in seconds (the RPO), by site.
    pub oldest_age_seconds: GaugeVec,
    /// Bytes shipped and applied, by destination site.
    pub bytes_replicated: IntCounterVec,
    /// Extra local copies trimmed.
    pub trims: IntCounter,
    /// Failed puts, by destination site (site `local` for trims and probes).
    pub failures: IntCounterVec,
}

impl ReplicatorMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let labels = &["site"];
        let gauge = |name: &str, help: &str| match IntGaugeVec::new(Opts::new(name, help), labels) {
            Ok(g) => g,
            Err(err) => unreachable!("constant metric definition {name} is valid: {err}"),
        };
        let counter =
            |name: &str, help: &str| match IntCounterVec::new(Opts::new(name, help), labels) {
                Ok(c) => c,
                Err(err) => unreachable!("constant metric definition {name} is valid: {err}"),
            };
        let age = match GaugeVec::new(
            Opts::new(
                "geonfs_replication_oldest_pending_seconds",
                "Age of the oldest write not yet on the destination site (RPO)",
            ),
            labels,
        ) {
            Ok(g) => g,
            Err(err) => unreachable!("constant metric definition is valid: {err}"),
        };
        let trims = match IntCounter::new(
            "geonfs_replication_trims_total",
            "Extra local copies trimmed after every remote copy was durable",
        ) {
            Ok(c) => c,
            Err(err) => unreachable!("constant metric definition is valid: {err}"),
        };
        ReplicatorMetrics {
            backlog_bytes: gauge(
                "geonfs_replication_backlog_bytes",
                "Bytes of blocks queued for the destination site",
            ),
            backlog_jobs: gauge(
                "geonfs_replication_backlog_jobs",
                "Blocks queued for the destination site",
            ),
            oldest_age_seconds: age,
            bytes_replicated: counter(
                "geonfs_replication_bytes_total",
                "Bytes shipped to and applied at the destination site",
            ),
            trims,
            failures: counter(
                "geonfs_replication_failures_total",
                "Failed replication calls by destination site",
            ),
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.backlog_bytes.clone()))?;
        registry.register(Box::new(self.backlog_jobs.clone()))?;
        registry.register(Box::new(self.oldest_age_seconds.clone()))?;
        registry.register(Box::new(self.bytes_replicated.clone()))?;
        registry.register(Box::new(self.trims.clone()))?;
        registry.register(Box::new(self.failures.clone()))?;
        Ok(())
    }
}

impl Default for ReplicatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The running replication worker of one core server.
#[derive(Debug)]
pub struct Replicator {
    task: JoinHandle<()>,
    metrics: ReplicatorMetrics,
}

impl Replicator {
    /// Starts the worker of core `node_name` of `config` on `queue`.
    pub fn start(
        queue: Arc<dyn JobQueue>,
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
        let home = config.site(node.site).name.clone();
        let remote_sites = config
            .sites
            .iter()
            .filter(|s| s.name != home)
            .map(|s| s.name.clone())
            .collect();
        let worker = Worker {
            queue,
            network,
            from: node.address.ip(),
            name: node.name.clone(),
            site: home,
            remote_sites,
            nodes,
            max_message: usize::try_from(config.cluster.block_size)
                .unwrap_or(usize::MAX)
                .saturating_add(1024 * 1024),
            options,
            metrics: metrics.clone(),
            channels: Mutex::new(HashMap::new()),
        };
        let task = tokio::spawn(Arc::new(worker).run());
        Ok(Replicator { task, metrics })
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &ReplicatorMetrics {
        &self.metrics
    }

    /// Stops the worker (jobs in flight stay queued: they are durable).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct Worker {
    queue: Arc<dyn JobQueue>,
    network: Network,
    from: IpAddr,
    name: String,
    site: String,
    remote_sites: Vec<String>,
    /// Core name → (address, site name).
    nodes: HashMap<String, (SocketAddr, String)>,
    max_message: usize,
    options: ReplicatorOptions,
    metrics: ReplicatorMetrics,
    channels: Mutex<HashMap<String, RpcChannel>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        let notify = self.queue.enqueued();
        loop {
            let notified = notify.notified();
            let wait = match self.queue.pending_jobs(self.options.batch).await {
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

    /// When the job is due: the secondary waits for the takeover timeout.
    fn due_at(&self, job: &ReplicationJob) -> u64 {
        let takeover = u64::try_from(self.options.takeover_timeout.as_millis()).unwrap_or(u64::MAX);
        if job.primary {
            job.next_attempt_ms
        } else {
            job.next_attempt_ms
                .max(job.first_enqueued_ms.saturating_add(takeover))
        }
    }

    /// Runs the due jobs of one poll; returns how long to sleep.
    async fn round(&self, jobs: Vec<ReplicationJob>) -> Duration {
        self.update_backlog(&jobs);
        let now = now_ms();
        let (due, later): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| self.due_at(j) <= now);
        let ran = !due.is_empty();
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

    fn update_backlog(&self, jobs: &[ReplicationJob]) {
        let now = now_ms();
        let mut per_site: BTreeMap<&str, (i64, i64, f64)> = self
            .remote_sites
            .iter()
            .map(|s| (s.as_str(), (0, 0, 0.0)))
            .collect();
        for job in jobs {
            for target in &job.targets {
                let Some((_, site)) = self.nodes.get(target) else {
                    continue;
                };
                let entry = per_site.entry(site.as_str()).or_default();
                entry.0 += 1;
                entry.1 = entry
                    .1
                    .saturating_add(i64::try_from(job.length).unwrap_or(i64::MAX));
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
        let next = match self.attempt(&job).await {
            Attempt::Done => return,
            Attempt::Watch => Some((job.attempts, self.options.takeover_timeout)),
            Attempt::Failed(reason) => {
                let attempts = job.attempts.saturating_add(1);
                let backoff = self.options.backoff(attempts);
                tracing::debug!(node = %self.name, file_id = block.file_id, index = block.index,
                    version, attempts, ?backoff, %reason, "replication attempt failed");
                Some((attempts, backoff))
            }
        };
        if let Some((attempts, delay)) = next {
            let at = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            if let Err(err) = self.queue.reschedule(block, version, attempts, at).await {
                tracing::warn!(node = %self.name, %err, "cannot reschedule a replication job");
            }
        }
    }

    async fn attempt(&self, job: &ReplicationJob) -> Attempt {
        let block = job.block;
        if !job.primary && self.primary_holds(job).await {
            return Attempt::Watch;
        }
        let (version, data) = match self.queue.read_block(block).await {
            Ok(Some(found)) => found,
            // Trimmed or deleted: nothing left to ship from here.
            Ok(None) => return self.done(block, job.version).await,
            Err(err) => return Attempt::Failed(err.to_string()),
        };
        if version > job.version {
            // A newer write replaced the job meanwhile; the next poll ships it.
            return Attempt::Done;
        }
        if version < job.version {
            tracing::warn!(node = %self.name, file_id = block.file_id, index = block.index,
                job = job.version, stored = version, "replication job newer than its block; dropping it");
            return self.done(block, job.version).await;
        }
        let puts = job
            .targets
            .iter()
            .map(|target| self.put(target, block, version, data.clone()));
        let failed: Vec<String> = futures::future::join_all(puts)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !failed.is_empty() {
            return Attempt::Failed(failed.join("; "));
        }
        if job.primary && !job.peer.is_empty() {
            if let Err(err) = self.trim(&job.peer, block, version).await {
                self.metrics.failures.with_label_values(&["local"]).inc();
                return Attempt::Failed(err);
            }
        }
        self.done(block, version).await
    }

    async fn done(&self, block: BlockId, version: u64) -> Attempt {
        match self.queue.job_done(block, version).await {
            Ok(()) => Attempt::Done,
            Err(err) => Attempt::Failed(err.to_string()),
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

    /// Ships the block to `target`; `Ok` once it holds that version (or a
    /// newer one) durably.
    async fn put(
        &self,
        target: &str,
        block: BlockId,
        version: u64,
        data: Bytes,
    ) -> Result<(), String> {
        let site = self
            .nodes
            .get(target)
            .map_or("unknown", |(_, s)| s.as_str());
        let len = data.len() as u64;
        let result = async {
            let mut client = BlockReplicationClient::new(self.channel(target)?)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message);
            client
                .put(ReplicaPut {
                    block: Some(block.into()),
                    version,
                    data,
                    origin_site: self.site.clone(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| {
                    format!("put to {target}: {}: {}", status.code(), status.message())
                })
        }
        .await;
        match result {
            Ok(reply) => {
                if reply.applied {
                    self.metrics
                        .bytes_replicated
                        .with_label_values(&[site])
                        .inc_by(len);
                }
                Ok(())
            }
            Err(err) => {
                self.metrics.failures.with_label_values(&[site]).inc();
                Err(err)
            }
        }
    }

    /// Deletes the secondary's copy up to `version`.
    async fn trim(&self, peer: &str, block: BlockId, version: u64) -> Result<(), String> {
        let mut client = CoreDataClient::new(self.channel(peer)?);
        let reply = client
            .delete(wire::DeleteRequest {
                block: Some(block.into()),
                up_to_version: version,
            })
            .await
            .map_err(|status| format!("trim on {peer}: {}: {}", status.code(), status.message()))?
            .into_inner();
        if reply.deleted {
            self.metrics.trims.inc();
        }
        Ok(())
    }

    /// Whether the primary (the secondary's peer) answers with the job's
    /// version or a newer one: then it is alive and responsible.
    async fn primary_holds(&self, job: &ReplicationJob) -> bool {
        if job.peer.is_empty() {
            return false;
        }
        let Ok(channel) = self.channel(&job.peer) else {
            return false;
        };
        let reply = CoreDataClient::new(channel)
            .read(wire::ReadRequest {
                block: Some(job.block.into()),
                offset: 0,
                length: 0,
            })
            .await;
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                reply.found && reply.version >= job.version
            }
            Err(_) => {
                self.metrics.failures.with_label_values(&["local"]).inc();
                false
            }
        }
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
