//! The ONC RPC layer (RFC 5531) the NFS, MOUNT and PORTMAP programs are
//! served on.
//!
//! geonfs owns this layer instead of using `nfs3_server`'s dispatcher so
//! that programs see the caller's address and AUTH_UNIX credentials, client
//! addresses can be refused, and every procedure gets a proper answer.
//!
//! - [`record`]: record marking over TCP.
//! - [`message`]: call header decoding (credentials) and reply encoding.
//! - [`RpcProgram`]: what a program implements; [`RpcServer`] serves a set
//!   of programs on one TCP listener.
//! - [`PortmapProgram`]: PORTMAP v2 answering for this server's NFS and
//!   MOUNT ports.

mod dispatch;
pub mod message;
mod metrics;
mod portmap;
mod program;
pub mod record;
mod server;

pub use message::{CallerAuth, UnixCredentials};
pub use metrics::RpcMetrics;
pub use portmap::{PortmapProgram, MOUNT_PROGRAM, MOUNT_VERSION, NFS_PROGRAM, NFS_VERSION};
pub use program::{CallContext, Caller, ProcResult, RpcProgram};
pub use record::DEFAULT_MAX_RECORD_SIZE;
pub use server::{
    allow_networks, ClientFilter, RpcServer, ServerOptions, DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
};
