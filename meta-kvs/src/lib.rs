//! geonfs meta-kvs: the Raft-replicated metadata store (tikv `raft` +
//! RocksDB).
//!
//! * [`storage`]: [`MetaStore`], the RocksDB-backed Raft log, state and
//!   state machine ([`raft::Storage`]);
//! * [`command`]: the commands carried in Raft entries;
//! * [`driver`]: the Raft task of a member (Ready handling, proposals by id,
//!   ReadIndex reads, compaction);
//! * [`transport`]: per-peer streaming senders and the `RaftTransport`
//!   service;
//! * [`service`]: the `MetaKv` and `MetaAdmin` services;
//! * [`member`]: [`MetaMember`], a running member;
//! * [`client`]: [`MetaClient`], a leader-following client;
//! * [`error`]: [`StoreError`] and [`MetaError`] (mapped to `tonic::Status`
//!   in one place).
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

pub mod client;
pub mod command;
pub mod driver;
pub mod error;
pub mod ids;
mod logger;
pub mod member;
pub mod metrics;
pub mod service;
pub mod storage;
pub mod transport;

pub use client::MetaClient;
pub use command::Command;
pub use error::{MetaError, StoreError};
pub use ids::raft_id;
pub use member::{MetaMember, MetaOptions};
pub use metrics::MetaMetrics;
pub use storage::MetaStore;
