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

/// The header carrying the address of the current leader on a NotLeader
/// reply.
pub const LEADER_HEADER: &str = "x-geonfs-leader";
/// The header set (to `unknown`) when a write's outcome is unknown.
pub const OUTCOME_HEADER: &str = "x-geonfs-outcome";

/// Why a meta-kvs operation (driver, service, client) failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Raft refused the operation.
    #[error("raft: {0}")]
    Raft(raft::Error),
    /// This member is not the leader; the operation was NOT applied.
    #[error("not the meta leader{}", leader_hint(.leader))]
    NotLeader {
        /// The leader's address when known.
        leader: Option<std::net::SocketAddr>,
    },
    /// The write was proposed but leadership changed before its result was
    /// known: it may or may not have been applied. Do not blindly retry a
    /// non-idempotent operation.
    #[error("outcome unknown: leadership changed while the write was pending ({0}); it may or may not have been applied")]
    OutcomeUnknown(String),
    /// The request is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The member is stopping or stopped.
    #[error("the meta member is shutting down")]
    ShuttingDown,
    /// A client call failed (client side).
    #[error("meta call failed: {0}")]
    Rpc(tonic::Status),
    /// The driver's thread or its runtime could not be started.
    #[error("cannot start the meta driver thread: {0}")]
    Thread(std::io::Error),
}

fn leader_hint(leader: &Option<std::net::SocketAddr>) -> String {
    match leader {
        Some(addr) => format!(" (leader: {addr})"),
        None => " (leader unknown)".to_string(),
    }
}

impl From<raft::Error> for MetaError {
    fn from(err: raft::Error) -> Self {
        MetaError::Raft(err)
    }
}

impl From<geonfs_proto::WireError> for MetaError {
    fn from(err: geonfs_proto::WireError) -> Self {
        MetaError::InvalidArgument(err.to_string())
    }
}

impl From<MetaError> for tonic::Status {
    /// THE mapping of meta-kvs errors to gRPC statuses.
    fn from(err: MetaError) -> Self {
        let msg = err.to_string();
        match err {
            MetaError::NotLeader { leader } => {
                let mut status = tonic::Status::failed_precondition(msg);
                if let Some(addr) = leader {
                    if let Ok(value) = addr.to_string().parse() {
                        status.metadata_mut().insert(LEADER_HEADER, value);
                    }
                }
                status
            }
            MetaError::OutcomeUnknown(_) => {
                let mut status = tonic::Status::unavailable(msg);
                status.metadata_mut().insert(
                    OUTCOME_HEADER,
                    tonic::metadata::MetadataValue::from_static("unknown"),
                );
                status
            }
            MetaError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            MetaError::Timeout(_) => tonic::Status::deadline_exceeded(msg),
            MetaError::ShuttingDown => tonic::Status::unavailable(msg),
            MetaError::Raft(raft::Error::ProposalDropped) => tonic::Status::unavailable(msg),
            MetaError::Store(_) | MetaError::Raft(_) | MetaError::Thread(_) => {
                tonic::Status::internal(msg)
            }
            MetaError::Rpc(status) => status,
        }
    }
}
