//! [`BlockMetrics`]: counters of the block client's write/read path.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

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
    /// (trimmed, lagging or replacement copies; see `writer/base.rs`).
    pub seeds: IntCounter,
    /// Block reads served.
    pub reads: IntCounter,
    /// Copies that failed their checksum on read (each needs repair).
    pub corrupt_copies: IntCounter,
    /// Corrupt copies replaced by a good copy after a read found them.
    pub repairs: IntCounter,
    /// Probes of the other sites because cores of this site did not
    /// answer (the newest version may be on them only; `writer/read.rs`).
    pub remote_checks: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    match IntCounter::new(name, help) {
        Ok(c) => c,
        Err(err) => unreachable!("constant metric definition {name} is valid: {err}"),
    }
}

impl BlockMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Self {
        let buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let write_latency = match Histogram::with_opts(
            HistogramOpts::new(
                "geonfs_block_write_seconds",
                "Latency of acknowledged block writes (both in-site copies)",
            )
            .buckets(buckets),
        ) {
            Ok(h) => h,
            Err(err) => unreachable!("constant histogram definition is valid: {err}"),
        };
        BlockMetrics {
            writes: counter(
                "geonfs_block_writes_total",
                "Block writes acknowledged on two in-site cores",
            ),
            write_bytes: counter(
                "geonfs_block_write_bytes_total",
                "Bytes of acknowledged block writes",
            ),
            write_latency,
            retries: counter(
                "geonfs_block_write_retries_total",
                "Block copies retried on another core after a failure",
            ),
            suspect_marks: counter(
                "geonfs_block_suspect_marks_total",
                "Core servers marked suspect after a failed call",
            ),
            seeds: counter(
                "geonfs_block_seeds_total",
                "Copies seeded with the block's complete data before a partial write (trimmed, lagging or replacement copies)",
            ),
            reads: counter("geonfs_block_reads_total", "Block reads served"),
            corrupt_copies: counter(
                "geonfs_block_read_corrupt_copies_total",
                "Block copies that failed their checksum on read",
            ),
            repairs: counter(
                "geonfs_block_read_repairs_total",
                "Corrupt block copies replaced by a good copy after a read",
            ),
            remote_checks: counter(
                "geonfs_block_remote_version_checks_total",
                "Probes of the other sites for a block's newest version because cores of this site did not answer",
            ),
        }
    }

    /// Registers every metric into `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.writes.clone()))?;
        registry.register(Box::new(self.write_bytes.clone()))?;
        registry.register(Box::new(self.write_latency.clone()))?;
        registry.register(Box::new(self.retries.clone()))?;
        registry.register(Box::new(self.suspect_marks.clone()))?;
        registry.register(Box::new(self.seeds.clone()))?;
        registry.register(Box::new(self.reads.clone()))?;
        registry.register(Box::new(self.corrupt_copies.clone()))?;
        registry.register(Box::new(self.repairs.clone()))?;
        registry.register(Box::new(self.remote_checks.clone()))?;
        Ok(())
    }
}

impl Default for BlockMetrics {
    fn default() -> Self {
        Self::new()
    }
}
