//! geonfs wire protocol: the tonic/prost code generated from `proto/geonfs/*.proto`
//! (into OUT_DIR at build time) and the validated domain types a receiver
//! builds from wire messages before acting on them.
//!
//! Every receiver converts a wire request into a domain type with `TryFrom`;
//! a failed conversion is a [`WireError`], which maps to `tonic::Status` in
//! exactly one place ([`WireError`]'s `From` impl).

pub mod domain;
mod error;

pub use error::WireError;

/// Liveness and identity of a node (`geonfs.node`).
#[allow(missing_docs)]
pub mod node {
    tonic::include_proto!("geonfs.node");
}

/// The data service of a core server (`geonfs.core`).
#[allow(missing_docs)]
pub mod core {
    tonic::include_proto!("geonfs.core");
}

/// Block replication between core servers (`geonfs.replication`).
#[allow(missing_docs)]
pub mod replication {
    tonic::include_proto!("geonfs.replication");
}

/// The meta-kvs client and admin API (`geonfs.meta`).
#[allow(missing_docs)]
pub mod meta {
    tonic::include_proto!("geonfs.meta");
}

/// The Raft transport between meta-kvs voters (`geonfs.raft`).
#[allow(missing_docs)]
pub mod raft {
    tonic::include_proto!("geonfs.raft");
}
