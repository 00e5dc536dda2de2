//! geonfs core server: the block store of one node (partial writes,
//! checksums, versions, group commit; see [`store`]) and its gRPC data
//! service (`geonfs.core.CoreData`, [`service`]). The node runtime
//! (`geonfs::node`) serves it on nodes with the `core` role through
//! [`CoreServer`]. It will host the block manager.

#![warn(missing_docs)]

mod codec;
mod error;
mod metrics;
mod server;
pub mod service;
pub mod store;

#[cfg(test)]
mod store_tests;

pub use error::CoreError;
pub use metrics::CoreMetrics;
pub use server::CoreServer;
pub use store::{
    BlockInfo, BlockStore, DeleteOutcome, ReadOutcome, StoreCounters, StoreStats, WriteOutcome,
    CHUNK_SIZE,
};
