//! [`OwnershipMetrics`]: handovers, their duration, catch-up after them,
//! and requests refused by a fence.

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
        let catching_up = match IntGauge::new(
            "geonfs_ownership_catching_up_files",
            "Files whose catch-up after a handover is running",
        ) {
            Ok(g) => g,
            Err(err) => unreachable!("constant gauge definition is valid: {err}"),
        };
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
        Ok(())
    }
}

impl Default for OwnershipMetrics {
    fn default() -> Self {
        Self::new()
    }
}
