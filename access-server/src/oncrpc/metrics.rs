//! Prometheus metrics of the ONC RPC server.

use geonfs_rpc::metric::MetricSet;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

/// The metrics of one or more RPC servers, created unregistered (register
/// them with [`RpcMetrics::register`]). Clones share the same metrics, so
/// the NFS and PORTMAP listeners of one node can share one set.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    /// Calls received, by `program` and `procedure` name.
    pub calls: IntCounterVec,
    /// Time from a call's arrival (whole) to its reply being ready, in
    /// seconds, by `program` and `procedure` (calls that reached their
    /// program; answers given at the RPC header are not timed).
    pub call_seconds: HistogramVec,
    /// Calls not answered with SUCCESS and records that closed a
    /// connection, by `program` and `kind` (e.g. `prog_unavail`,
    /// `garbage_args`, `auth_error`, `bad_record`).
    pub errors: IntCounterVec,
    /// Connections accepted.
    pub connections: IntCounter,
    /// Connections currently open.
    pub open_connections: IntGauge,
    /// Connections refused by the client address filter.
    pub refused_connections: IntCounter,
    set: MetricSet,
}

impl RpcMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let mut set = MetricSet::default();
        Self {
            calls: set.counter_vec(
                "geonfs_onc_rpc_calls_total",
                "ONC RPC calls received, by program and procedure",
                &["program", "procedure"],
            ),
            call_seconds: set.histogram_vec(
                "geonfs_onc_rpc_call_seconds",
                "time to execute an ONC RPC call, by program and procedure",
                &["program", "procedure"],
                &[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ],
            ),
            errors: set.counter_vec(
                "geonfs_onc_rpc_errors_total",
                "ONC RPC calls not answered with SUCCESS, and undecodable records",
                &["program", "kind"],
            ),
            connections: set.counter(
                "geonfs_onc_rpc_connections_total",
                "ONC RPC connections accepted",
            ),
            open_connections: set.gauge(
                "geonfs_onc_rpc_open_connections",
                "ONC RPC connections currently open",
            ),
            refused_connections: set.counter(
                "geonfs_onc_rpc_refused_connections_total",
                "ONC RPC connections refused by the client address filter",
            ),
            set,
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        self.set.register(registry)
    }

    /// Counts one error of `kind` for `program`.
    pub(crate) fn error(&self, program: &str, kind: &str) {
        self.errors.with_label_values(&[program, kind]).inc();
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}
