//! Prometheus metrics of a core server's block store.

use geonfs_rpc::metric::MetricSet;
use prometheus::{Histogram, HistogramVec, IntCounter, IntGauge, Registry};

/// The metrics of one block store, created unregistered (a node registers
/// them into its own registry with [`CoreMetrics::register`]). Clones share
/// the same underlying metrics.
#[derive(Clone, Debug)]
pub struct CoreMetrics {
    /// Block writes applied.
    pub writes: IntCounter,
    /// Bytes written by callers (not counting read-modify-write overhead).
    pub write_bytes: IntCounter,
    /// Block reads served.
    pub reads: IntCounter,
    /// Bytes returned by reads.
    pub read_bytes: IntCounter,
    /// Write latency in seconds, by durability (`durable`, `held`).
    pub write_seconds: HistogramVec,
    /// Flushes (WAL syncs on request).
    pub flushes: IntCounter,
    /// Chunks that failed their checksum on read.
    pub checksum_failures: IntCounter,
    /// Corrupt copies replaced by a good replica (repairs applied here).
    pub repairs: IntCounter,
    /// Reads, writes and deletes refused because the caller's ownership
    /// epoch is older than the file's fence.
    pub fenced_requests: IntCounter,
    /// Copies set aside: written under an owner declared lost and never
    /// copied out (see `store::fence`).
    pub set_aside: IntCounter,
    /// Copies in the quarantine now.
    pub quarantined_blocks: IntGauge,
    /// Bytes of the copies in the quarantine now.
    pub quarantined_bytes: IntGauge,
    /// Bytes stored (sum of stored chunk lengths).
    pub used_bytes: IntGauge,
    /// Configured capacity in bytes.
    pub capacity_bytes: IntGauge,
    /// Bytes the data directory's file system has available, as last read
    /// before a write.
    pub disk_available_bytes: IntGauge,
    /// Delete requests served (one block, or a deleted range).
    pub deletes: IntCounter,
    /// Blocks whose copy a delete removed.
    pub deleted_blocks: IntCounter,
    set: MetricSet,
}

impl CoreMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        let buckets = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0,
        ];
        CoreMetrics {
            writes: set.counter("geonfs_core_writes_total", "block writes applied"),
            write_bytes: set.counter("geonfs_core_write_bytes_total", "bytes written by callers"),
            reads: set.counter("geonfs_core_reads_total", "block reads served"),
            read_bytes: set.counter("geonfs_core_read_bytes_total", "bytes returned by reads"),
            write_seconds: set.histogram_vec(
                "geonfs_core_write_seconds",
                "block write latency",
                &["durability"],
                &buckets,
            ),
            flushes: set.counter("geonfs_core_flushes_total", "WAL flushes on request"),
            checksum_failures: set.counter(
                "geonfs_core_checksum_failures_total",
                "chunks that failed their checksum on read",
            ),
            repairs: set.counter(
                "geonfs_core_repairs_total",
                "corrupt block copies replaced by a good replica",
            ),
            fenced_requests: set.counter(
                "geonfs_core_fenced_requests_total",
                "reads, writes and deletes refused: the caller's ownership epoch is older than the file's fence",
            ),
            set_aside: set.counter(
                "geonfs_core_set_aside_total",
                "copies set aside into the quarantine: written under an owner declared lost, never copied out",
            ),
            quarantined_blocks: set.gauge(
                "geonfs_core_quarantined_blocks",
                "copies in the quarantine (geonfs quarantine list)",
            ),
            quarantined_bytes: set.gauge(
                "geonfs_core_quarantined_bytes",
                "bytes of the copies in the quarantine",
            ),
            used_bytes: set.gauge("geonfs_core_used_bytes", "bytes stored in blocks"),
            capacity_bytes: set.gauge(
                "geonfs_core_capacity_bytes",
                "configured block store capacity",
            ),
            disk_available_bytes: set.gauge(
                "geonfs_core_disk_available_bytes",
                "bytes available on the data directory's file system (writes stop 256 MiB short of full)",
            ),
            deletes: set.counter(
                "geonfs_core_deletes_total",
                "delete requests served (one block, or a deleted range of a truncate or remove)",
            ),
            deleted_blocks: set.counter(
                "geonfs_core_deleted_blocks_total",
                "blocks whose copy a delete removed",
            ),
            set,
        }
    }

    /// The write latency histogram of one durability mode.
    pub fn write_latency(&self, durable: bool) -> Histogram {
        self.write_seconds
            .with_label_values(&[if durable { "durable" } else { "held" }])
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}
