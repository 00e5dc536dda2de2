//! geonfs core server: the block store of one node (partial writes,
//! checksums, versions, group commit, per-file ownership fences; see
//! [`store`]) and its gRPC data service (`geonfs.core.CoreData`,
//! [`service`]). The node runtime
//! (`geonfs::node`) serves it on nodes with the `core` role through
//! [`CoreServer`], which also receives geo copies
//! (`geonfs.replication.BlockReplication`, [`replication`]) and runs the
//! block manager's [`geonfs_block_manager::Replicator`] on the store's
//! durable replication queue ([`store::queue`]).
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

mod codec;
mod error;
mod metrics;
pub mod replication;
mod server;
pub mod service;
mod site_fences;
pub mod store;

pub use error::CoreError;
/// The replication worker's tunables (re-exported for the node runtime).
pub use geonfs_block_manager::ReplicatorOptions;
pub use metrics::CoreMetrics;
pub use server::CoreServer;
pub use store::changes::OfferChanges;
pub use store::queue::{JobSpec, PutOutcome, ReplicaOffer};
pub use store::{
    BlockInfo, BlockStore, CopyRead, DeleteOutcome, ReadOutcome, StoreCounters, StoreStats,
    WriteOutcome, CHUNK_SIZE,
};
