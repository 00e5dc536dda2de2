//! [`BlockMetrics`]: counters of the block client's write/read path.

use geonfs_rpc::metric::MetricSet;
use prometheus::{Histogram, IntCounter, Registry};

/// Metrics of a [`crate::BlockClient`]; created unregistered, add them to a
/// node's registry with [`BlockMetrics::register`].
#[derive(Clone, Debug)]
pub struct BlockMetrics {
    /// Acknowledged block writes (each on two in-site cores).
    pub writes: IntCounter,
    /// Bytes of acknowledged block writes (counted once, not per copy).
    pub write_bytes: IntCounter,
    /// Latency of acknowledged block writes, seconds.
    pub write_latency: Histogram,
    /// Copies retried on another core after a core failed.
    pub retries: IntCounter,
    /// Times a core was marked suspect (unreachable).
    pub suspect_marks: IntCounter,
    /// Copies seeded with the block's complete data before a partial write
    /// (trimmed, lagging or replacement copies; see `client/base.rs`).
    pub seeds: IntCounter,
    /// Block reads served.
    pub reads: IntCounter,
    /// Copies that failed their checksum on read (each needs repair).
    pub corrupt_copies: IntCounter,
    /// Corrupt copies replaced by a good copy after a read found them.
    pub repairs: IntCounter,
    /// Probes of the other sites because cores of this site did not
    /// answer (the newest version may be on them only; `client/read.rs`).
    pub remote_checks: IntCounter,
    set: MetricSet,
}

impl BlockMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        let write_latency = set.histogram(
            "geonfs_block_write_seconds",
            "Latency of acknowledged block writes (both in-site copies)",
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        );
        BlockMetrics {
            writes: set.counter(
                "geonfs_block_writes_total",
                "Block writes acknowledged on two in-site cores",
            ),
            write_bytes: set.counter(
                "geonfs_block_write_bytes_total",
                "Bytes of acknowledged block writes",
            ),
            write_latency,
            retries: set.counter(
                "geonfs_block_write_retries_total",
                "Block copies retried on another core after a failure",
            ),
            suspect_marks: set.counter(
                "geonfs_block_suspect_marks_total",
                "Core servers marked suspect after a failed call",
            ),
            seeds: set.counter(
                "geonfs_block_seeds_total",
                "Copies seeded with the block's complete data before a partial write (trimmed, lagging or replacement copies)",
            ),
            reads: set.counter("geonfs_block_reads_total", "Block reads served"),
            corrupt_copies: set.counter(
                "geonfs_block_read_corrupt_copies_total",
                "Block copies that failed their checksum on read",
            ),
            repairs: set.counter(
                "geonfs_block_read_repairs_total",
                "Corrupt block copies replaced by a good copy after a read",
            ),
            remote_checks: set.counter(
                "geonfs_block_remote_version_checks_total",
                "Probes of the other sites for a block's newest version because cores of this site did not answer",
            ),
            set,
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

impl Default for BlockMetrics {
    fn default() -> Self {
        Self::new()
    }
}
