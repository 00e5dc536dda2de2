//! Prometheus metrics of one meta member. Created unregistered: many members
//! may run in one process; call [`MetaMetrics::register`] with the node's
//! registry.

use geonfs_rpc::metric::MetricSet;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry, DEFAULT_BUCKETS};

/// The metrics of one meta member.
#[derive(Clone, Debug)]
pub struct MetaMetrics {
    /// Current Raft term.
    pub term: IntGauge,
    /// Times the known leader changed.
    pub leader_changes: IntCounter,
    /// Commit index.
    pub commit_index: IntGauge,
    /// Applied index.
    pub applied_index: IntGauge,
    /// Proposal latency (propose → applied), seconds.
    pub proposal_seconds: Histogram,
    /// Snapshots sent to followers.
    pub snapshots_sent: IntCounter,
    /// Snapshots received and applied.
    pub snapshots_received: IntCounter,
    /// Raft messages sent, per peer name.
    pub messages_sent: IntCounterVec,
    set: MetricSet,
}

impl MetaMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        MetaMetrics {
            term: set.gauge("geonfs_meta_term", "current Raft term"),
            leader_changes: set.counter("geonfs_meta_leader_changes_total", "leader changes seen"),
            commit_index: set.gauge("geonfs_meta_commit_index", "Raft commit index"),
            applied_index: set.gauge("geonfs_meta_applied_index", "Raft applied index"),
            proposal_seconds: set.histogram(
                "geonfs_meta_proposal_seconds",
                "proposal latency until applied",
                DEFAULT_BUCKETS,
            ),
            snapshots_sent: set.counter("geonfs_meta_snapshots_sent_total", "snapshots sent"),
            snapshots_received: set.counter(
                "geonfs_meta_snapshots_received_total",
                "snapshots received and applied",
            ),
            messages_sent: set.counter_vec(
                "geonfs_meta_messages_sent_total",
                "raft messages sent per peer",
                &["peer"],
            ),
            set,
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

impl Default for MetaMetrics {
    fn default() -> Self {
        Self::new()
    }
}
