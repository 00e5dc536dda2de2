//! The error type of the meta-kvs storage layer and its mapping to
//! `raft::Error`.

use raft::StorageError;

/// Why a storage operation failed.
///
/// [`StoreError::Corrupt`] means the on-disk state cannot be trusted (an
/// undecodable record, a log hole, state that violates a Raft invariant, or
/// RocksDB reporting corruption): the node must not take part in Raft until an
/// operator repairs or replaces its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed (I/O error, busy, …), other than corruption.
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    /// The persisted state is damaged or inconsistent.
    #[error("meta store corrupt: {what}: {detail}")]
    Corrupt {
        /// Which record or invariant (e.g. `raft_state/hard_state`).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A Raft storage error with its own meaning to raft-rs (`Compacted`,
    /// `Unavailable`, `SnapshotOutOfDate`, …), passed through unchanged.
    #[error("raft: {0}")]
    Raft(raft::Error),
    /// A record could not be encoded.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A received snapshot failed validation (truncated, garbled, wrong
    /// header); nothing was changed.
    #[error("invalid snapshot: {0}")]
    BadSnapshot(String),
    /// Something grew past a limit of the storage layer.
    #[error("{what} is {size} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The caller asked for something the store must refuse (a log gap, a
    /// compaction beyond the applied index, …); nothing was changed. This is
    /// a bug in the caller, not a problem of the data on disk.
    #[error("invalid request to the meta store: {0}")]
    Invalid(String),
    /// `bootstrap` on a store that already has Raft state.
    #[error("meta store is already initialised: {0}")]
    AlreadyBootstrapped(String),
}

impl StoreError {
    /// A [`StoreError::Corrupt`] for `what` with `detail`.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Whether this error means the on-disk state is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

impl From<rocksdb::Error> for StoreError {
    /// RocksDB's own "Corruption" status becomes [`StoreError::Corrupt`].
    fn from(err: rocksdb::Error) -> Self {
        if err.kind() == rocksdb::ErrorKind::Corruption {
            StoreError::corrupt("rocksdb", err.into_string())
        } else {
            StoreError::Rocks(err)
        }
    }
}

impl From<raft::Error> for StoreError {
    fn from(err: raft::Error) -> Self {
        StoreError::Raft(err)
    }
}

impl From<StoreError> for raft::Error {
    /// Raft's own storage errors go back unchanged (raft-rs matches on
    /// `Compacted`, `Unavailable`, …); everything else is `StorageError::Other`.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Raft(err) => err,
            other => raft::Error::Store(StorageError::Other(Box::new(other))),
        }
    }
}
