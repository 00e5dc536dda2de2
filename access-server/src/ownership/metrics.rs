//! [`OwnershipMetrics`]: handovers, their duration, catch-up after them,
//! requests refused by a fence, the ownership lease and revocations.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

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
}

fn gauge(name: &str, help: &str) -> IntGauge {
    match IntGauge::new(name, help) {
        Ok(g) => g,
        Err(err) => unreachable!("constant gauge definition {name} is valid: {err}"),
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    match IntCounter::new(name, help) {
        Ok(c) => c,
        Err(err) => unreachable!("constant metric definition {name} is valid: {err}"),
    }
}

fn histogram(name: &str, help: &str) -> Histogram {
    let buckets = vec![
        0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    match Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)) {
        Ok(h) => h,
        Err(err) => unreachable!("constant histogram definition {name} is valid: {err}"),
    }
}

impl OwnershipMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let catching_up = gauge(
            "geonfs_ownership_catching_up_files",
            "Files whose catch-up after a handover is running",
        );
        OwnershipMetrics {
            handovers: counter(
                "geonfs_ownership_handovers_total",
                "File ownership handovers completed by this access server",
            ),
            handover_seconds: histogram(
                "geonfs_ownership_handover_seconds",
                "Duration of completed handovers (claim, fence, list, complete)",
            ),
            blocked: counter(
                "geonfs_ownership_handovers_blocked_total",
                "Handovers that could not finish (the old owner out of reach)",
            ),
            first_owners: counter(
                "geonfs_ownership_first_owners_total",
                "Files that got their first owner at this site",
            ),
            resolved_claims: counter(
                "geonfs_ownership_resolved_claims_total",
                "Handover claims that timed out and were resolved back to the owner",
            ),
            fenced: counter(
                "geonfs_ownership_fenced_requests_total",
                "Block requests refused by a fence (ownership had moved)",
            ),
            catching_up,
            caught_up_bytes: counter(
                "geonfs_ownership_caught_up_bytes_total",
                "Bytes copied onto this site by catch-ups after handovers",
            ),
            catch_up_seconds: histogram(
                "geonfs_ownership_catch_up_seconds",
                "Duration of catch-ups after handovers",
            ),
            lease_valid: gauge(
                "geonfs_ownership_lease_valid",
                "1 while this access server's ownership lease is valid (it may send writes)",
            ),
            lease_renewals: counter(
                "geonfs_ownership_lease_renewals_total",
                "Successful renewals of this access server's ownership lease",
            ),
            lease_failures: counter(
                "geonfs_ownership_lease_renewal_failures_total",
                "Failed renewals of this access server's ownership lease",
            ),
            revocations: counter(
                "geonfs_ownership_revocations_total",
                "Handovers that revoked a file at the old owner's access servers",
            ),
            revocation_seconds: histogram(
                "geonfs_ownership_revocation_seconds",
                "How long a revocation waited for the old owner's access servers",
            ),
            auto_failovers: counter(
                "geonfs_ownership_auto_failovers_total",
                "Silent sites this access server failed over by itself (cluster.auto_failover_after)",
            ),
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.handovers.clone()))?;
        registry.register(Box::new(self.handover_seconds.clone()))?;
        registry.register(Box::new(self.blocked.clone()))?;
        registry.register(Box::new(self.first_owners.clone()))?;
        registry.register(Box::new(self.resolved_claims.clone()))?;
        registry.register(Box::new(self.fenced.clone()))?;
        registry.register(Box::new(self.catching_up.clone()))?;
        registry.register(Box::new(self.caught_up_bytes.clone()))?;
        registry.register(Box::new(self.catch_up_seconds.clone()))?;
        registry.register(Box::new(self.lease_valid.clone()))?;
        registry.register(Box::new(self.lease_renewals.clone()))?;
        registry.register(Box::new(self.lease_failures.clone()))?;
        registry.register(Box::new(self.revocations.clone()))?;
        registry.register(Box::new(self.auto_failovers.clone()))?;
        registry.register(Box::new(self.revocation_seconds.clone()))?;
        Ok(())
    }
}

impl Default for OwnershipMetrics {
    fn default() -> Self {
        Self::new()
    }
}
