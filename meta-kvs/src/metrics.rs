//! Prometheus metrics of one meta member. Created unregistered: many members
//! may run in one process; call [`MetaMetrics::register`] with the node's
//! registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
}

impl MetaMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let g = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let c = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        MetaMetrics {
            term: g("geonfs_meta_term", "current Raft term"),
            leader_changes: c("geonfs_meta_leader_changes_total", "leader changes seen"),
            commit_index: g("geonfs_meta_commit_index", "Raft commit index"),
            applied_index: g("geonfs_meta_applied_index", "Raft applied index"),
            proposal_seconds: Histogram::with_opts(HistogramOpts::new(
                "geonfs_meta_proposal_seconds",
                "proposal latency until applied",
            ))
            .expect("valid metric"),
            snapshots_sent: c("geonfs_meta_snapshots_sent_total", "snapshots sent"),
            snapshots_received: c(
                "geonfs_meta_snapshots_received_total",
                "snapshots received and applied",
            ),
            messages_sent: IntCounterVec::new(
                Opts::new(
                    "geonfs_meta_messages_sent_total",
                    "raft messages sent per peer",
                ),
                &["peer"],
            )
            .expect("valid metric"),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.term.clone()))?;
        registry.register(Box::new(self.leader_changes.clone()))?;
        registry.register(Box::new(self.commit_index.clone()))?;
        registry.register(Box::new(self.applied_index.clone()))?;
        registry.register(Box::new(self.proposal_seconds.clone()))?;
        registry.register(Box::new(self.snapshots_sent.clone()))?;
        registry.register(Box::new(self.snapshots_received.clone()))?;
        registry.register(Box::new(self.messages_sent.clone()))?;
        Ok(())
    }
}

impl Default for MetaMetrics {
    fn default() -> Self {
        Self::new()
    }
}
