//! [`NamespaceError`]: why a namespace operation failed.

use geonfs_meta_kvs::MetaError;

/// Why a namespace operation failed. Each variant corresponds to one NFSv3
/// status (see [`NamespaceError::nfs_status_name`]); the NFS layer maps them
/// in one place.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The name does not exist in the directory (`NFS3ERR_NOENT`).
    #[error("no such file or directory")]
    NoEnt,
    /// The name already exists (`NFS3ERR_EXIST`).
    #[error("file exists")]
    Exist,
    /// A directory was required but the object is not one (`NFS3ERR_NOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// The object is a directory where a non-directory was required
    /// (`NFS3ERR_ISDIR`).
    #[error("is a directory")]
    IsDir,
    /// The directory is not empty (`NFS3ERR_NOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// The name is longer than [`super::MAX_NAME_LEN`] bytes
    /// (`NFS3ERR_NAMETOOLONG`).
    #[error("name longer than {} bytes", super::MAX_NAME_LEN)]
    NameTooLong,
    /// The name cannot name a directory entry: empty, `.`, `..`, or it
    /// contains `/` or NUL (`NFS3ERR_ACCES`, as knfsd answers for such
    /// names).
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// No file has this id (any more): it was removed, or never existed
    /// (`NFS3ERR_STALE`).
    #[error("stale file id {0}")]
    Stale(u64),
    /// The SETATTR guard did not match the object's ctime
    /// (`NFS3ERR_NOT_SYNC`).
    #[error("ctime guard does not match")]
    NotSync,
    /// The request is invalid for this object, e.g. READLINK of a file or a
    /// directory moved into its own subtree (`NFS3ERR_INVAL`).
    #[error("invalid argument: {0}")]
    Inval(&'static str),
    /// The operation kept losing races with concurrent changes of the same
    /// directory or file and gave up after a bounded number of attempts;
    /// nothing was changed (`NFS3ERR_JUKEBOX`: the client retries later).
    #[error("too much contention, nothing changed; retry later")]
    Busy,
    /// meta-kvs failed. [`MetaError::OutcomeUnknown`] here means the change
    /// may or may not have been applied and re-reading could not tell
    /// (`NFS3ERR_IO` / `NFS3ERR_JUKEBOX`).
    #[error("meta-kvs: {0}")]
    Meta(#[from] MetaError),
    /// A record read from meta-kvs cannot be decoded or breaks an invariant
    /// of the namespace (`NFS3ERR_IO`).
    #[error("namespace record corrupt: {what}: {detail}")]
    Corrupt {
        /// Which record (e.g. `inode 17`).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl NamespaceError {
    /// A [`NamespaceError::Corrupt`] for `what` with `detail`.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        NamespaceError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// The name of the NFSv3 status this error maps to (e.g.
    /// `"NFS3ERR_NOENT"`), for the NFS layer and for logs.
    pub fn nfs_status_name(&self) -> &'static str {
        match self {
            NamespaceError::NoEnt => "NFS3ERR_NOENT",
            NamespaceError::Exist => "NFS3ERR_EXIST",
            NamespaceError::NotDir => "NFS3ERR_NOTDIR",
            NamespaceError::IsDir => "NFS3ERR_ISDIR",
            NamespaceError::NotEmpty => "NFS3ERR_NOTEMPTY",
            NamespaceError::NameTooLong => "NFS3ERR_NAMETOOLONG",
            NamespaceError::InvalidName(_) => "NFS3ERR_ACCES",
            NamespaceError::Stale(_) => "NFS3ERR_STALE",
            NamespaceError::NotSync => "NFS3ERR_NOT_SYNC",
            NamespaceError::Inval(_) => "NFS3ERR_INVAL",
            NamespaceError::Busy => "NFS3ERR_JUKEBOX",
            NamespaceError::Meta(MetaError::OutcomeUnknown(_))
            | NamespaceError::Meta(MetaError::Timeout(_))
            | NamespaceError::Meta(MetaError::NotLeader { .. })
            | NamespaceError::Meta(MetaError::ShuttingDown) => "NFS3ERR_JUKEBOX",
            NamespaceError::Meta(_) | NamespaceError::Corrupt { .. } => "NFS3ERR_IO",
        }
    }
}
