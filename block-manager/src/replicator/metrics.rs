//! [`ReplicatorMetrics`]: the replication backlog (RPO), shipped bytes,
//! trims, takeovers and repairs of one core's replicator.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// Jobs a secondary took over because its primary was gone or behind.
    pub takeovers: IntCounter,
    /// Copies restored, by kind: `local_copy` (a second in-site copy of a
    /// write not yet geo-replicated), `remote_copy` (a site that had
    /// lost its copy) or `own_copy` (this core's damaged copy, repaired
    /// from another before shipping).
    pub repairs: IntCounterVec,
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
        let takeovers = match IntCounter::new(
            "geonfs_replication_takeovers_total",
            "Replication jobs a secondary took over from a lost or lagging primary",
        ) {
            Ok(c) => c,
            Err(err) => unreachable!("constant metric definition is valid: {err}"),
        };
        let repairs = match IntCounterVec::new(
            Opts::new(
                "geonfs_replication_repairs_total",
                "Block copies restored after a core or a copy was lost, by kind",
            ),
            &["kind"],
        ) {
            Ok(c) => c,
            Err(err) => unreachable!("constant metric definition is valid: {err}"),
        };
        ReplicatorMetrics {
            takeovers,
            repairs,
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
        registry.register(Box::new(self.takeovers.clone()))?;
        registry.register(Box::new(self.repairs.clone()))?;
        Ok(())
    }
}

impl Default for ReplicatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
