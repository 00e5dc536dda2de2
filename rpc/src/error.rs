//! Errors of the RPC layer and their one mapping to `tonic::Status`.

use std::net::SocketAddr;

/// What can go wrong in the RPC layer itself (not in a remote handler).
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The address could not be used as a gRPC endpoint.
    #[error("invalid endpoint address {addr}: {reason}")]
    BadEndpoint {
        /// The address given.
        addr: SocketAddr,
        /// What tonic said about it.
        reason: String,
    },
    /// The cluster secret cannot be sent as gRPC metadata.
    #[error("the cluster secret must be printable ASCII")]
    BadSecret,
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server failed while serving.
    #[error("server on {addr} failed: {reason}")]
    Serve {
        /// The server's address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The fault seam cut the link from `from` to `to`.
    #[error("link {from} -> {to} is cut (fault injection)")]
    LinkCut {
        /// The calling node's address.
        from: std::net::IpAddr,
        /// The called node's address.
        to: SocketAddr,
    },
    /// The fault seam dropped the request before it was sent.
    #[error("request {from} -> {to} dropped (fault injection)")]
    RequestDropped {
        /// The calling node's address.
        from: std::net::IpAddr,
        /// The called node's address.
        to: SocketAddr,
    },
    /// The fault seam dropped the reply after the server handled the request.
    #[error("reply {to} -> {from} dropped (fault injection)")]
    ReplyDropped {
        /// The calling node's address.
        from: std::net::IpAddr,
        /// The called node's address.
        to: SocketAddr,
    },
    /// A TLS file (CA, certificate, key) cannot be read, used or written.
    #[error("TLS: {path}: {reason}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up (rustls or certificate-making refused it).
    #[error("TLS: {0}")]
    TlsSetup(String),
    /// This process holds no certificate for the connection asked of it.
    #[error("TLS: {0}")]
    NoTlsIdentity(String),
}

impl From<RpcError> for tonic::Status {
    fn from(err: RpcError) -> Self {
        match err {
            RpcError::LinkCut { .. }
            | RpcError::RequestDropped { .. }
            | RpcError::ReplyDropped { .. } => tonic::Status::unavailable(err.to_string()),
            RpcError::BadEndpoint { .. }
            | RpcError::BadSecret
            | RpcError::Bind { .. }
            | RpcError::Serve { .. }
            | RpcError::TlsFile { .. }
            | RpcError::TlsSetup(_)
            | RpcError::NoTlsIdentity(_) => tonic::Status::internal(err.to_string()),
        }
    }
}
