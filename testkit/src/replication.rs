//! Geo replication watched from outside, as an operator's `/metrics`
//! scrape sees it: the backlog gauges of every core's Prometheus registry
//! (`geonfs_replication_oldest_pending_seconds`, the RPO, and
//! `geonfs_replication_backlog_jobs`), sampled at a fixed interval, and
//! waits until nothing is pending anywhere.
//!
//! A replicator sets its gauges at the start of each round over its
//! queue, so a sample is at most one round old; "drained" therefore means
//! [`QUIET_SAMPLES`] samples in a row without a pending job.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::Registry;

use crate::cluster::TestCluster;

/// The sampling interval.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Samples in a row without a pending job that mean "drained".
pub const QUIET_SAMPLES: usize = 3;
/// The RPO gauge (by destination site) of every core's replicator.
pub const RPO_GAUGE: &str = "geonfs_replication_oldest_pending_seconds";
/// The pending replication jobs (by destination site) of every core.
pub const JOBS_GAUGE: &str = "geonfs_replication_backlog_jobs";

/// The registries of every core of the cluster.
pub fn core_registries(cluster: &TestCluster) -> anyhow::Result<Vec<Registry>> {
    cluster
        .core_names()
        .iter()
        .map(|name| Ok(cluster.node(name)?.registry().clone()))
        .collect()
}

/// The geo-replication state over every core: the age of the oldest
/// pending write in seconds (max over cores and destination sites: the
/// RPO) and the number of pending jobs.
pub fn replication_state(registries: &[Registry]) -> (f64, f64) {
    let (mut oldest, mut jobs) = (0.0_f64, 0.0);
    for family in registries.iter().flat_map(Registry::gather) {
        let values = family
            .get_metric()
            .iter()
            .map(|m| m.get_gauge().get_value());
        match family.name() {
            RPO_GAUGE => oldest = values.fold(oldest, f64::max),
            JOBS_GAUGE => jobs += values.sum::<f64>(),
            _ => {}
        }
    }
    (oldest, jobs)
}

/// One sample of the replication gauges.
#[derive(Clone, Copy, Debug)]
pub struct RpoSample {
    /// Seconds since the sampling started.
    pub at_s: f64,
    /// The RPO gauge.
    pub rpo_s: f64,
    /// Pending jobs.
    pub jobs: f64,
    /// Whether the writes were still going on.
    pub writing: bool,
}

/// Samples the replication gauges every SAMPLE_EVERY from `start`. Once
/// `writes_end` is set, stops at the first QUIET_SAMPLES samples in a row
/// without a pending job, giving the time from the end of the writes to
/// the first of them, or after `timeout` past the end (`None`).
pub async fn sample_until_drained(
    registries: &[Registry],
    start: Instant,
    writes_end: &OnceLock<Instant>,
    timeout: Duration,
) -> (Vec<RpoSample>, Option<Duration>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    let mut quiet: Option<(Instant, usize)> = None;
    loop {
        tick.tick().await;
        let end = writes_end.get().copied();
        let (rpo_s, jobs) = replication_state(registries);
        let now = Instant::now();
        samples.push(RpoSample {
            at_s: now.duration_since(start).as_secs_f64(),
            rpo_s,
            jobs,
            writing: end.is_none(),
        });
        let Some(end) = end else { continue };
        quiet = match quiet {
            _ if jobs > 0.0 => None,
            Some((first, n)) => Some((first, n + 1)),
            None => Some((now, 1)),
        };
        if let Some((first, n)) = quiet {
            if n >= QUIET_SAMPLES {
                return (samples, Some(first.saturating_duration_since(end)));
            }
        }
        if now.saturating_duration_since(end) > timeout {
            return (samples, None);
        }
    }
}

/// From now, the time until no replication job is pending anywhere
/// (see [`sample_until_drained`]); `None` after `timeout`.
pub async fn wait_drained(registries: &[Registry], timeout: Duration) -> Option<Duration> {
    let now = Instant::now();
    let end = OnceLock::from(now);
    sample_until_drained(registries, now, &end, timeout).await.1
}
