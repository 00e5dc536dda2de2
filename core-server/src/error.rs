//! The error type of the core server (store and service) and its one mapping
//! to `tonic::Status`.

use geonfs_proto::domain::{BlockId, Epoch, FileId, Version};

/// Why a core-server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The write (or delete) is older than what is stored: newer data is never
    /// overwritten by older data (docs/ARCHITECTURE.md#invariant-8). Nothing was changed.
    #[error("stale version: stored {stored}, offered {offered} (block {block})")]
    StaleVersion {
        /// The block.
        block: BlockId,
        /// The version stored.
        stored: Version,
        /// The version the caller offered.
        offered: Version,
    },
    /// A partial write names a base version this copy is not complete at
    /// (it was trimmed, missed writes, or never held the block): applying
    /// it would leave a copy that reads zeros or old bytes where the block
    /// has data. Nothing was changed; the writer seeds the copy and
    /// retries (see `store/copy_state.rs`).
    #[error(
        "base mismatch on block {block}: the write applies on version {base}, this copy holds {} \
         (marker: {})",
        .held.map_or_else(|| "no data".to_string(), |v| format!("version {v}")),
        .marker.map_or_else(|| "none".to_string(), |m| format!("{m:?}"))
    )]
    BaseMismatch {
        /// The block.
        block: BlockId,
        /// The version the write applies on.
        base: Version,
        /// The version of the copy's data, if any.
        held: Option<Version>,
        /// The copy's marker (trimmed or deleted), if any.
        marker: Option<crate::codec::Marker>,
    },
    /// The caller's ownership epoch of the file is older than the file's
    /// fence on this core: ownership moved to another site (or another
    /// epoch) and this caller may no longer read, write or delete the
    /// file's blocks here. Nothing was changed.
    #[error(
        "file {file_id} is fenced at ownership epoch {fence}; the caller's epoch {offered} is \
         older (ownership moved)"
    )]
    Fenced {
        /// The file.
        file_id: FileId,
        /// The epoch the caller offered.
        offered: Epoch,
        /// The file's fence on this core.
        fence: Epoch,
    },
    /// The write would take the store past its configured capacity. Nothing
    /// was changed.
    #[error("out of space: the write needs {needed} more bytes, {free} bytes are free")]
    OutOfSpace {
        /// The bytes the write would add.
        needed: u64,
        /// The bytes still free.
        free: u64,
    },
    /// A chunk failed its checksum (docs/ARCHITECTURE.md#invariant-7): this copy is bad and must be
    /// repaired from another one.
    #[error("corrupt chunk {chunk} of block {block}: checksum mismatch")]
    CorruptChunk {
        /// The block.
        block: BlockId,
        /// The chunk number inside the block.
        chunk: u32,
    },
    /// A record of the store cannot be decoded, or RocksDB reports corruption.
    #[error("block store corrupt: {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// RocksDB failed (I/O error, busy, …), other than corruption.
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),
    /// A file-system operation outside RocksDB failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The request is invalid (wire validation, block size, configuration).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The configuration does not allow this node to run a block store.
    #[error("configuration: {0}")]
    Config(String),
    /// The store is closed (the node is stopping).
    #[error("the block store is closed")]
    Closed,
    /// The core started and has not yet copied its site peers' fences, so
    /// it cannot tell whether a request's ownership epoch is still current
    /// (it may have missed a handover's fence while it was down).
    #[error("this core has not yet caught up with its site peers' ownership fences")]
    FencesUnsynced,
    /// A blocking task running a store operation failed (panicked).
    #[error("block store task failed: {0}")]
    Task(String),
}

impl From<rocksdb::Error> for CoreError {
    /// RocksDB's own "Corruption" status becomes [`CoreError::Corrupt`].
    fn from(err: rocksdb::Error) -> Self {
        if err.kind() == rocksdb::ErrorKind::Corruption {
            CoreError::Corrupt {
                what: "rocksdb".into(),
                detail: err.into_string(),
            }
        } else {
            CoreError::Rocks(err)
        }
    }
}

impl From<geonfs_proto::WireError> for CoreError {
    fn from(err: geonfs_proto::WireError) -> Self {
        CoreError::InvalidArgument(err.to_string())
    }
}

impl From<tokio::task::JoinError> for CoreError {
    fn from(err: tokio::task::JoinError) -> Self {
        CoreError::Task(err.to_string())
    }
}

impl From<CoreError> for tonic::Status {
    /// THE mapping of core-server errors to gRPC statuses.
    fn from(err: CoreError) -> Self {
        let msg = err.to_string();
        match err {
            CoreError::StaleVersion { .. } => tonic::Status::failed_precondition(msg),
            CoreError::BaseMismatch { .. } => tonic::Status::aborted(msg),
            CoreError::Fenced { .. } => tonic::Status::permission_denied(msg),
            CoreError::OutOfSpace { .. } => tonic::Status::resource_exhausted(msg),
            CoreError::CorruptChunk { .. } | CoreError::Corrupt { .. } => {
                tonic::Status::data_loss(msg)
            }
            CoreError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            CoreError::Closed | CoreError::FencesUnsynced => tonic::Status::unavailable(msg),
            CoreError::Rocks(_)
            | CoreError::Io { .. }
            | CoreError::Config(_)
            | CoreError::Task(_) => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let block = BlockId {
            file_id: FileId(1),
            index: 2,
        };
        let status: tonic::Status = CoreError::StaleVersion {
            block,
            stored: Version(5),
            offered: Version(3),
        }
        .into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status
            .message()
            .contains("stale version: stored 5, offered 3"));
        let status: tonic::Status = CoreError::BaseMismatch {
            block,
            base: Version(4),
            held: None,
            marker: Some(crate::codec::Marker::Trimmed(Version(4))),
        }
        .into();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(
            status
                .message()
                .contains("applies on version 4, this copy holds no data (marker: Trimmed(4))"),
            "{status}"
        );
        let status: tonic::Status = CoreError::OutOfSpace { needed: 1, free: 0 }.into();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let status: tonic::Status = CoreError::CorruptChunk { block, chunk: 3 }.into();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        let status: tonic::Status = CoreError::Fenced {
            file_id: FileId(7),
            offered: Epoch::FIRST.next().next().next(),
            fence: Epoch::FIRST.next().next().next().next(),
        }
        .into();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .contains("file 7 is fenced at ownership epoch 5; the caller's epoch 4 is older"),
            "{status}"
        );
        let status: tonic::Status = CoreError::InvalidArgument("x".into()).into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
