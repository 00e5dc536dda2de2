//! The RPC layer every geonfs role uses, client and server side.
//!
//! - [`Network`] is the process's view of the cluster network: which site
//!   each address is in, the emulated WAN between sites (off unless
//!   configured), the fault seam tests use, and the cluster secret.
//! - [`Network::channel`] gives a [`RpcChannel`] to another node: a tonic
//!   channel that binds the caller's own address, adds the cluster secret,
//!   pays the emulated WAN on cross-site links and honours injected faults.
//! - [`server`] serves a node's gRPC services behind the secret check, with
//!   graceful stop and an abrupt kill for tests.
//! - [`tls`]: mutual TLS between nodes, and making the cluster CA and the
//!   node certificates.
//! - [`warn_budget`] keeps warnings that peers cause from flooding the log.
//! - [`metric`] builds and registers every role's Prometheus metrics.

mod channel;
mod error;
mod faults;
pub mod metric;
mod network;
pub mod server;
mod stream;
pub mod tls;
mod wan;
pub mod warn_budget;

pub use channel::RpcChannel;
pub use error::RpcError;
pub use faults::{Fault, FaultTarget, Faults};
pub use network::{Network, NetworkOptions, RpcMetrics};
pub use wan::WanParams;

/// The gRPC metadata key that carries the cluster secret on every call.
pub const SECRET_HEADER: &str = "x-geonfs-cluster-secret";
