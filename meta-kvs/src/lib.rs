//! geonfs meta-kvs: the Raft-replicated metadata store (tikv `raft` +
//! RocksDB).
//!
//! This crate currently holds the storage layer:
//!
//! * [`storage`]: [`MetaStore`], one RocksDB database per meta node with the
//!   Raft log, hard/conf state, the key-value state machine and the applied
//!   index; it implements [`raft::Storage`] and the persistence, apply and
//!   snapshot operations the Raft driver calls;
//! * [`command`]: the commands (Put, Delete, Txn) carried in Raft entries and
//!   their binary encoding;
//! * [`error`]: the error type, [`StoreError`].

pub mod command;
pub mod error;
pub mod storage;

pub use command::Command;
pub use error::StoreError;
pub use storage::MetaStore;
