//! [`BlockError`]: why a block operation of the [`crate::BlockClient`] failed.

use geonfs_proto::domain::BlockId;

/// Why a block write, read or flush failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Fewer than two distinct core servers of the writer's site took the
    /// write: it is NOT acknowledged (invariant 1).
    #[error(
        "block {}/{}: only {acked} of the 2 copies a write needs could be made in site {site} \
         ({live} live core server(s) of {total} configured){}",
        .block.file_id, .block.index,
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
    /// Every up-to-date copy of the block in the site failed its checksum
    /// (each one was counted and needs repair, invariant 7).
    #[error(
        "block {}/{}: all {copies} copies of version {version} in site {site} are corrupt ({})",
        .block.file_id, .block.index, .nodes.join(", ")
    )]
    AllCopiesCorrupt {
        /// The writer's site.
        site: String,
        /// The block.
        block: BlockId,
        /// The newest version seen.
        version: u64,
        /// How many copies of it were tried.
        copies: usize,
        /// The cores that hold them.
        nodes: Vec<String>,
    },
    /// A core acknowledged a DURABLE write without making it durable.
    #[error("core {node} acknowledged a durable write of block {}/{} as not durable", .block.file_id, .block.index)]
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
}
