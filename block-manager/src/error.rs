//! [`BlockError`]: why a block operation of the [`crate::BlockClient`] failed.

use geonfs_proto::domain::{BlockId, FileId, Version};

/// Why a block write, read or flush failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Fewer than two distinct core servers of the writer's site took the
    /// write: it is NOT acknowledged (docs/ARCHITECTURE.md#invariant-1).
    #[error(
        "block {block}: only {acked} of the 2 copies a write needs could be made in site {site} \
         ({live} live core server(s) of {total} configured){}",
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    NotEnoughCores {
        /// The writer's site.
        site: String,
        /// The block.
        block: BlockId,
        /// How many cores acknowledged the write (0 or 1).
        acked: usize,
        /// How many of the site's cores were believed live (or tried).
        live: usize,
        /// How many core servers the site has in the configuration.
        total: usize,
        /// The last failure that made a core unusable, if any.
        last_error: Option<String>,
        /// Whether a core refused a copy for lack of space: the site
        /// cannot place the write until space is freed (NFS3ERR_NOSPC).
        out_of_space: bool,
    },
    /// A whole-block copy could not be put on as many cores of the site as
    /// asked ([`crate::BlockClient::put_whole`]).
    #[error(
        "block {block}: only {placed} of the {wanted} whole-block copies asked could be placed in \
         site {site} ({total} core server(s) configured){}",
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    CopiesNotPlaced {
        /// The site.
        site: String,
        /// The block.
        block: BlockId,
        /// How many cores hold the copy's version (or newer) now.
        placed: usize,
        /// How many copies were asked for.
        wanted: usize,
        /// How many core servers the site has in the configuration.
        total: usize,
        /// The last failure that made a core unusable, if any.
        last_error: Option<String>,
    },
    /// A core refused the request because the file's ownership fence there
    /// is newer than the caller's ownership epoch: ownership of the file
    /// moved, and this caller may no longer read or write it. Never
    /// retried on another core.
    #[error("core {node} refused access to file {file_id}: fenced ({message})")]
    Fenced {
        /// The core server that refused.
        node: String,
        /// The file.
        file_id: FileId,
        /// The core's explanation (its fence and the epoch offered).
        message: String,
    },
    /// A core server refused or failed the request in a way another core
    /// would not fix (stale version, invalid argument, …).
    #[error("core {node}: {}: {}", .status.code(), .status.message())]
    Core {
        /// The core server's name.
        node: String,
        /// Its reply.
        status: Box<tonic::Status>,
    },
    /// The copy a read was about to serve went between the probe and the
    /// read (trimmed or replaced meanwhile), at every holder tried; a new
    /// probe finds where the block is now.
    #[error("block {block}: version {version} is no longer on {node}")]
    CopyGone {
        /// The last core tried.
        node: String,
        /// The block.
        block: BlockId,
        /// The version the probe found.
        version: Version,
    },
    /// Every up-to-date copy of the block in the site failed its checksum
    /// (each one was counted and needs repair, docs/ARCHITECTURE.md#invariant-7).
    #[error(
        "block {block}: all {copies} copies of version {version} in site {site} are corrupt ({})", .nodes.join(", ")
    )]
    AllCopiesCorrupt {
        /// The writer's site.
        site: String,
        /// The block.
        block: BlockId,
        /// The newest version seen.
        version: Version,
        /// How many copies of it were tried.
        copies: usize,
        /// The cores that hold them.
        nodes: Vec<String>,
    },
    /// A copy that a partial write needs could not be made complete at
    /// the block's current version first (no complete copy of that
    /// version answered, in the site or at another site, or another
    /// writer changed the block meanwhile). The write is not acknowledged.
    #[error(
        "block {block}: core {node} cannot be brought to version {version} before a partial \
         write: {reason}"
    )]
    Unseeded {
        /// The core whose copy is not complete at `version`.
        node: String,
        /// The block.
        block: BlockId,
        /// The version the write applies on.
        version: Version,
        /// Why.
        reason: String,
    },
    /// The newest version of a block cannot be established now: cores of
    /// the site did not answer, and either two or more of them (the two
    /// copies of a version not yet shipped may be the silent ones) or one
    /// and another whole site, whose copies would have told. Serving or
    /// extending the copies that answered could give back older bytes than
    /// were acknowledged; the caller retries once the cores or the site
    /// are back.
    #[error("block {block}: its newest version is unknown now: {why}")]
    NewestUnknown {
        /// The block.
        block: BlockId,
        /// Which cores and sites did not answer.
        why: String,
    },
    /// This access server's ownership lease is not valid: it sends no
    /// request carrying an ownership epoch until it renews (the client
    /// retries later). See `client/gate.rs`.
    #[error("file {file_id}: not sent: {why}")]
    LeaseExpired {
        /// The file.
        file_id: FileId,
        /// Since when, or why there is none.
        why: String,
    },
    /// A core acknowledged a DURABLE write without making it durable.
    #[error("core {node} acknowledged a durable write of block {block} as not durable")]
    NotDurable {
        /// The core server's name.
        node: String,
        /// The block.
        block: BlockId,
    },
    /// The node name is not a core server of this cluster.
    #[error("{0} is not a core server of this cluster")]
    UnknownNode(String),
    /// The site id is not a site of this cluster.
    #[error("{0} is not a site of this cluster")]
    UnknownSite(geonfs_site_config::SiteId),
    /// The RPC layer could not make a channel to the node.
    #[error("no channel to core {node}: {source}")]
    Rpc {
        /// The core server's name.
        node: String,
        /// What the RPC layer said.
        source: geonfs_rpc::RpcError,
    },
    /// The local block store (the replication queue) failed.
    #[error("block store: {0}")]
    Store(String),
    /// The request itself is invalid (e.g. a range past the block size).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl BlockError {
    /// A [`BlockError::Core`] for `node`.
    pub fn core(node: &str, status: tonic::Status) -> Self {
        BlockError::Core {
            node: node.to_string(),
            status: Box::new(status),
        }
    }

    /// `node`'s failure of a request about a block of `file_id`: a
    /// `PERMISSION_DENIED` (the core's fence refused the caller's epoch)
    /// becomes [`BlockError::Fenced`], anything else [`BlockError::Core`].
    pub fn from_status(node: &str, file_id: FileId, status: tonic::Status) -> Self {
        if status.code() == tonic::Code::PermissionDenied {
            BlockError::Fenced {
                node: node.to_string(),
                file_id,
                message: status.message().to_string(),
            }
        } else {
            BlockError::core(node, status)
        }
    }

    /// Whether a core refused a write for lack of space
    /// (`RESOURCE_EXHAUSTED`: its block store is at its capacity).
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, BlockError::Core { status, .. } if status.code() == tonic::Code::ResourceExhausted)
    }

    /// Whether a copy failed its checksum (`DATA_LOSS` from a core).
    pub fn is_data_loss(&self) -> bool {
        matches!(self, BlockError::Core { status, .. } if status.code() == tonic::Code::DataLoss)
    }

    /// Whether a core refused the request because the file's ownership
    /// moved past the caller's epoch ([`BlockError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, BlockError::Fenced { .. })
    }
}
