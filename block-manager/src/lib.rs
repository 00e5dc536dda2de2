//! geonfs block manager: placement of a block's copies inside a site and
//! across sites, the two-local-copies acknowledgement rule, the durable
//! asynchronous geo-replication queue, trimming and repair.
//!
//! - [`placement`]: rendezvous hashing, weighted by capacity, of a block's
//!   two in-site cores and its geo copies.
//! - [`client`]: [`BlockClient`], the client-side write/read/flush path the
//!   access server uses: writes to both in-site cores in parallel and
//!   acknowledges only when two distinct cores hold the write (docs/ARCHITECTURE.md#invariant-1);
//!   its reads, writes and deletes carry the caller's file-ownership epoch,
//!   and it fences files, lists them and puts whole-block copies for an
//!   ownership handover.
//! - [`replicator`]: [`Replicator`], the worker inside each core server that
//!   ships queued writes to the other sites and trims the extra local copy.
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

pub mod client;
mod error;
mod liveness;
mod metrics;
pub mod placement;
pub mod replicator;

pub use client::{
    BlockClient, BlockRead, BlockUpdate, CopyAck, FenceOrder, FenceReport, FileListing, FlushAck,
    GatePass, SendGate, WriteAck,
};
pub use error::BlockError;
pub use liveness::Liveness;
pub use metrics::BlockMetrics;
pub use placement::{Placement, PlacementError};
pub use replicator::{
    ReplicaStore, ReplicationJob, Replicator, ReplicatorMetrics, ReplicatorOptions,
};
