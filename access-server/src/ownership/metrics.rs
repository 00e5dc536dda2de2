//! [`OwnershipMetrics`]: handovers, their duration, catch-up after them,
//! requests refused by a fence, the ownership lease and revocations.

use geonfs_rpc::metric::MetricSet;
use prometheus::{Histogram, IntCounter, IntGauge, Registry};

/// The ownership metrics of one access server.
#[derive(Clone, Debug)]
pub struct OwnershipMetrics {
    /// Handovers this access server completed.
    pub handovers: IntCounter,
    /// Duration of completed handovers (claim to completion), seconds.
    pub handover_seconds: Histogram,
    /// Handovers that could not finish (old owner out of reach).
    pub blocked: IntCounter,
    /// Files that got their first owner here.
    pub first_owners: IntCounter,
    /// Stale claims resolved back to their owner.
    pub resolved_claims: IntCounter,
    /// Requests refused by a fence (ownership had moved).
    pub fenced: IntCounter,
    /// Files whose catch-up is running.
    pub catching_up: IntGauge,
    /// Bytes copied onto this site by catch-ups.
    pub caught_up_bytes: IntCounter,
    /// Duration of completed catch-ups, seconds.
    pub catch_up_seconds: Histogram,
    /// 1 while this access server's ownership lease is valid, else 0.
    pub lease_valid: IntGauge,
    /// Successful lease renewals.
    pub lease_renewals: IntCounter,
    /// Failed lease renewals.
    pub lease_failures: IntCounter,
    /// Revocations this access server waited out as a claimant.
    pub revocations: IntCounter,
    /// Duration of those waits, seconds.
    pub revocation_seconds: Histogram,
    /// Silent sites this access server failed over by itself
    /// (`cluster.auto_failover_after`).
    pub auto_failovers: IntCounter,
    set: MetricSet,
}

/// Bucket bounds of the ownership histograms, seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl OwnershipMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        let catching_up = set.gauge(
            "geonfs_ownership_catching_up_files",
            "Files whose catch-up after a handover is running",
        );
        OwnershipMetrics {
            handovers: set.counter(
                "geonfs_ownership_handovers_total",
                "File ownership handovers completed by this access server",
            ),
            handover_seconds: set.histogram(
                "geonfs_ownership_handover_seconds",
                "Duration of completed handovers (claim, fence, list, complete)",
                &BUCKETS,
            ),
            blocked: set.counter(
                "geonfs_ownership_handovers_blocked_total",
                "Handovers that could not finish (the old owner out of reach)",
            ),
            first_owners: set.counter(
                "geonfs_ownership_first_owners_total",
                "Files that got their first owner at this site",
            ),
            resolved_claims: set.counter(
                "geonfs_ownership_resolved_claims_total",
                "Handover claims that timed out and were resolved back to the owner",
            ),
            fenced: set.counter(
                "geonfs_ownership_fenced_requests_total",
                "Block requests refused by a fence (ownership had moved)",
            ),
            catching_up,
            caught_up_bytes: set.counter(
                "geonfs_ownership_caught_up_bytes_total",
                "Bytes copied onto this site by catch-ups after handovers",
            ),
            catch_up_seconds: set.histogram(
                "geonfs_ownership_catch_up_seconds",
                "Duration of catch-ups after handovers",
                &BUCKETS,
            ),
            lease_valid: set.gauge(
                "geonfs_ownership_lease_valid",
                "1 while this access server's ownership lease is valid (it may send writes)",
            ),
            lease_renewals: set.counter(
                "geonfs_ownership_lease_renewals_total",
                "Successful renewals of this access server's ownership lease",
            ),
            lease_failures: set.counter(
                "geonfs_ownership_lease_renewal_failures_total",
                "Failed renewals of this access server's ownership lease",
            ),
            revocations: set.counter(
                "geonfs_ownership_revocations_total",
                "Handovers that revoked a file at the old owner's access servers",
            ),
            revocation_seconds: set.histogram(
                "geonfs_ownership_revocation_seconds",
                "How long a revocation waited for the old owner's access servers",
                &BUCKETS,
            ),
            auto_failovers: set.counter(
                "geonfs_ownership_auto_failovers_total",
                "Silent sites this access server failed over by itself (cluster.auto_failover_after)",
            ),
            set,
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

impl Default for OwnershipMetrics {
    fn default() -> Self {
        Self::new()
    }
}
