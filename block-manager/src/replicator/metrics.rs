//! [`ReplicatorMetrics`]: the replication backlog (RPO), shipped bytes,
//! trims, takeovers and repairs of one core's replicator.

use geonfs_rpc::metric::MetricSet;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};

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
    /// Encoded bytes of every put sent (the WAN traffic of replication),
    /// by destination site.
    pub wire_bytes: IntCounterVec,
    /// Puts sent, by destination site and kind (`changes`: the bytes
    /// written since a base; `whole`: the whole block).
    pub puts: IntCounterVec,
    /// Extra local copies trimmed.
    pub trims: IntCounter,
    /// Failed puts, by destination site (site `local` for trims and probes).
    pub failures: IntCounterVec,
    /// Jobs a secondary took over because its primary was gone or behind.
    pub takeovers: IntCounter,
    /// Copies restored, by kind: `local_copy` (a second in-site copy of a
    /// write not yet geo-replicated), `remote_copy` (a site that had
    /// lost its copy) or `own_copy` (this core's damaged copy, repaired
    /// from another before shipping).
    pub repairs: IntCounterVec,
    set: MetricSet,
}

impl ReplicatorMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        let labels = &["site"];
        ReplicatorMetrics {
            backlog_bytes: set.gauge_vec(
                "geonfs_replication_backlog_bytes",
                "Bytes of blocks queued for the destination site",
                labels,
            ),
            backlog_jobs: set.gauge_vec(
                "geonfs_replication_backlog_jobs",
                "Blocks queued for the destination site",
                labels,
            ),
            oldest_age_seconds: set.float_gauge_vec(
                "geonfs_replication_oldest_pending_seconds",
                "Age of the oldest write not yet on the destination site (RPO)",
                labels,
            ),
            bytes_replicated: set.counter_vec(
                "geonfs_replication_bytes_total",
                "Bytes shipped to and applied at the destination site",
                labels,
            ),
            wire_bytes: set.counter_vec(
                "geonfs_replication_wire_bytes_total",
                "Encoded bytes of the replica puts sent to the destination site",
                labels,
            ),
            puts: set.counter_vec(
                "geonfs_replication_puts_total",
                "Replica puts sent, by destination site and kind (changes or whole)",
                &["site", "kind"],
            ),
            trims: set.counter(
                "geonfs_replication_trims_total",
                "Extra local copies trimmed after every remote copy was durable",
            ),
            failures: set.counter_vec(
                "geonfs_replication_failures_total",
                "Failed replication calls by destination site",
                labels,
            ),
            takeovers: set.counter(
                "geonfs_replication_takeovers_total",
                "Replication jobs a secondary took over from a lost or lagging primary",
            ),
            repairs: set.counter_vec(
                "geonfs_replication_repairs_total",
                "Block copies restored after a core or a copy was lost, by kind",
                &["kind"],
            ),
            set,
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

impl Default for ReplicatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
