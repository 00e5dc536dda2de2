//! The NFS v3 (RFC 1813) and MOUNT v3 programs over the [`namespace`],
//! served by the [`oncrpc`] layer.
//!
//! - [`handle`]: file handles, stable across access servers and restarts
//!   (docs/ARCHITECTURE.md#invariant-6).
//! - [`MountProgram`]: MOUNT v3 (100005) for the one configured export.
//! - `xdr_check`: every length in a call's arguments is checked against
//!   the bytes that arrived before the arguments are decoded.
//! - [`NfsProgram`]: NFS v3 (100003). Every procedure gets an RFC 1813
//!   answer (LINK and MKNOD: `NFS3ERR_NOTSUPP`); READ, WRITE, COMMIT and
//!   size changes go through [`crate::data::FileData`] (`io.rs`).
//!
//! Who may do what ([`access`]): NFS calls need AUTH_UNIX (AUTH_NONE is
//! refused with AUTH_TOOWEAK, except NULL); the caller's uid, gid and
//! supplementary gids are checked against the mode bits, with uid/gid 0
//! mapped to the anonymous ids under `root_squash` (the default) unless the
//! client is in `no_root_squash`; a read-only export answers
//! `NFS3ERR_ROFS` to changes; a client outside `allowed_clients` (empty
//! admits nobody) gets `NFS3ERR_ACCES` on every call and `MNT3ERR_ACCES`
//! at MOUNT.
//!
//! [`namespace`]: crate::namespace
//! [`oncrpc`]: crate::oncrpc

pub mod access;
mod attrs;
mod dirops;
pub mod handle;
mod io;
mod mount;
mod program;
mod readdir;
mod xdr_check;

use std::future::Future;

use futures::future::BoxFuture;

pub use access::{ExportPolicy, Identity};
pub use attrs::nfs_status;
pub use handle::{FileHandle, HandleCodec, MountRoot, HANDLE_GENERATION_KEY, HANDLE_LEN};
pub use mount::MountProgram;
pub use program::NfsProgram;

/// Where FSSTAT learns the capacity of the file system: total and free
/// bytes, or `None` when it cannot be told right now (answered
/// `NFS3ERR_IO`).
///
/// Implemented for plain closures returning `(total_bytes, free_bytes)`.
pub trait CapacityProvider: Send + Sync + 'static {
    /// The current `(total_bytes, free_bytes)`.
    fn capacity(&self) -> BoxFuture<'_, Option<(u64, u64)>>;
}

impl<F> CapacityProvider for F
where
    F: Fn() -> (u64, u64) + Send + Sync + 'static,
{
    fn capacity(&self) -> BoxFuture<'_, Option<(u64, u64)>> {
        let capacity = self();
        Box::pin(std::future::ready(Some(capacity)))
    }
}

/// A [`CapacityProvider`] from an async function.
pub struct AsyncCapacity<F>(pub F);

impl<F, Fut> CapacityProvider for AsyncCapacity<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(u64, u64)>> + Send + 'static,
{
    fn capacity(&self) -> BoxFuture<'_, Option<(u64, u64)>> {
        Box::pin((self.0)())
    }
}

/// The answer to an NFS call before the access server is connected to the
/// cluster: `NFS3ERR_JUKEBOX` (the client retries later).
pub(crate) fn not_ready(procedure: nfs3_types::nfs3::NFS_PROGRAM) -> crate::oncrpc::ProcResult {
    program::failure(procedure, nfs3_types::nfs3::nfsstat3::NFS3ERR_JUKEBOX)
}
