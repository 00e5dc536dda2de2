//! Prometheus metrics of the ONC RPC server.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The metrics of one or more RPC servers, created unregistered (register
/// them with [`RpcMetrics::register`]). Clones share the same metrics, so
/// the NFS and PORTMAP listeners of one node can share one set.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    /// Calls received, by `program` and `procedure` name.
    pub calls: IntCounterVec,
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
}

impl RpcMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        Self {
            calls: counter_vec(
                "geonfs_onc_rpc_calls_total",
                "ONC RPC calls received, by program and procedure",
                &["program", "procedure"],
            ),
            errors: counter_vec(
                "geonfs_onc_rpc_errors_total",
                "ONC RPC calls not answered with SUCCESS, and undecodable records",
                &["program", "kind"],
            ),
            connections: counter(
                "geonfs_onc_rpc_connections_total",
                "ONC RPC connections accepted",
            ),
            open_connections: IntGauge::with_opts(Opts::new(
                "geonfs_onc_rpc_open_connections",
                "ONC RPC connections currently open",
            ))
            .expect("valid metric"),
            refused_connections: counter(
                "geonfs_onc_rpc_refused_connections_total",
                "ONC RPC connections refused by the client address filter",
            ),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.calls.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.open_connections.clone()))?;
        registry.register(Box::new(self.refused_connections.clone()))?;
        Ok(())
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
