//! The access server's error type.

use std::net::SocketAddr;

/// Errors of the access server.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A listening socket could not be bound (or its address read back).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped but some connections were still busy at the
    /// deadline; they were aborted.
    #[error("{0} connection(s) still busy at the shutdown deadline were aborted")]
    ShutdownDeadline(usize),
    /// The configuration does not allow this access server (unknown node,
    /// no cores in its site, …).
    #[error("configuration: {0}")]
    Config(String),
    /// A metric could not be registered (a duplicate name).
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}
