//! The MOUNT v3 program (100005, RFC 1813 appendix I) for the one export.
//!
//! MNT accepts the export path, with or without a trailing `/` (so `/` only
//! when it is the export), and the empty path libnfs sends for
//! `nfs://host/file`, answering the root handle; and a directory below the
//! export (`/geonfs/vms`, which libnfs mounts for `nfs://host/geonfs/vms/disk.img`),
//! answering that directory's handle. AUTH_UNIX is the only flavor (MNT
//! with AUTH_NONE is AUTH_TOOWEAK). Paths outside the export or missing are
//! `MNT3ERR_NOENT`, a file `MNT3ERR_NOTDIR`; a client outside
//! `allowed_clients` is `MNT3ERR_ACCES` before its arguments are decoded,
//! and its EXPORT list is empty. Mounts are not recorded: DUMP is
//! empty and UMNT/UMNTALL do nothing (the handle is what grants access,
//! and every NFS call is checked on its own).

use futures::future::BoxFuture;
use futures::FutureExt;
use nfs3_types::mount::{
    dirpath, export_node, exports, fhandle3, mountlist, mountres3, mountres3_ok, mountstat3, name,
    MNTPATHLEN, MOUNT_PROGRAM,
};
use nfs3_types::xdr_codec::{List, Opaque};

use super::access::ExportPolicy;
use super::attrs::{decode, encode};
use super::handle::{HandleCodec, MountRoot};
use super::xdr_check::mount_args_overrun as overrun;
use crate::namespace::{Inode, Namespace, NamespaceError};
use crate::oncrpc::{CallContext, CallerAuth, ProcResult, ProgramId, RpcProgram, MOUNT_ID};

/// AUTH_UNIX (AUTH_SYS), the only flavor offered.
const AUTH_UNIX: u32 = 1;

/// The MOUNT v3 program.
#[derive(Clone, Debug)]
pub struct MountProgram {
    ns: Namespace,
    handles: HandleCodec,
    policy: ExportPolicy,
}

impl MountProgram {
    /// MOUNT for `policy`'s export of `ns`, with handles from `handles`.
    pub fn new(ns: Namespace, handles: HandleCodec, policy: ExportPolicy) -> Self {
        MountProgram {
            ns,
            handles,
            policy,
        }
    }

    async fn mnt(&self, context: &CallContext, args: &[u8]) -> ProcResult {
        // Who may mount is decided before anything the caller sent is
        // decoded.
        let peer = context.caller.addr;
        if !self.policy.admits(peer.ip()) {
            tracing::info!(%peer, "MNT refused: client not allowed");
            return encode(&mountres3::Err(mountstat3::MNT3ERR_ACCES));
        }
        // A handle is only handed to AUTH_UNIX callers, the flavor every
        // NFS call needs (AUTH_NONE gets nothing it could not use anyway).
        if !matches!(context.caller.auth, CallerAuth::Unix(_)) {
            return ProcResult::AuthTooWeak;
        }
        if overrun(MOUNT_PROGRAM::MOUNTPROC3_MNT, args) {
            return ProcResult::GarbageArgs;
        }
        let Some(path) = decode::<dirpath>(args) else {
            return ProcResult::GarbageArgs;
        };
        let path = path.0.as_ref();
        let result = if path.len() > MNTPATHLEN {
            mountres3::Err(mountstat3::MNT3ERR_NAMETOOLONG)
        } else if let Some(below) = self.policy.below_export(path) {
            match self.directory(&below).await {
                Ok(dir) => mountres3::Ok(mountres3_ok {
                    fhandle: fhandle3(Opaque::owned(self.handles.encode_bytes(
                        dir.id,
                        dir.generation,
                        MountRoot::of(&dir),
                    ))),
                    auth_flavors: vec![AUTH_UNIX],
                }),
                Err(status) => {
                    tracing::info!(%peer, path = %String::from_utf8_lossy(path), ?status, "MNT refused");
                    mountres3::Err(status)
                }
            }
        } else {
            tracing::info!(%peer, path = %String::from_utf8_lossy(path), "MNT of a path outside the export");
            mountres3::Err(mountstat3::MNT3ERR_NOENT)
        };
        encode(&result)
    }

    /// The directory reached from the export's root through `names`.
    async fn directory(&self, names: &[&[u8]]) -> Result<Inode, mountstat3> {
        let mut dir = self.ns.ensure_root().await.map_err(|err| {
            tracing::warn!(%err, "MNT: cannot read the root directory");
            mountstat3::MNT3ERR_SERVERFAULT
        })?;
        for component in names {
            dir = match self.ns.lookup(dir.id, component).await {
                Ok(next) => next,
                Err(NamespaceError::NoEnt | NamespaceError::Stale(_)) => {
                    return Err(mountstat3::MNT3ERR_NOENT)
                }
                Err(NamespaceError::NameTooLong) => return Err(mountstat3::MNT3ERR_NAMETOOLONG),
                Err(NamespaceError::Inval(_) | NamespaceError::InvalidName(_)) => {
                    return Err(mountstat3::MNT3ERR_INVAL)
                }
                Err(err) => {
                    tracing::warn!(%err, "MNT: lookup failed");
                    return Err(mountstat3::MNT3ERR_SERVERFAULT);
                }
            };
        }
        if !dir.is_dir() {
            return Err(mountstat3::MNT3ERR_NOTDIR);
        }
        Ok(dir)
    }

    fn export(&self, context: &CallContext) -> ProcResult {
        if !self.policy.admits(context.caller.addr.ip()) {
            let none: exports = List(Vec::new());
            return encode(&none);
        }
        let groups = self
            .policy
            .allowed_clients
            .iter()
            .map(|net| name(Opaque::owned(net.to_string().into_bytes())))
            .collect();
        let list: exports = List(vec![export_node {
            ex_dir: dirpath(Opaque::owned(self.policy.export_path.clone().into_bytes())),
            ex_groups: List(groups),
        }]);
        encode(&list)
    }

    async fn execute(&self, context: &CallContext, procedure: u32, args: &[u8]) -> ProcResult {
        match MOUNT_PROGRAM::try_from(procedure) {
            Ok(MOUNT_PROGRAM::MOUNTPROC3_NULL) => ProcResult::Success(Vec::new()),
            Ok(MOUNT_PROGRAM::MOUNTPROC3_MNT) => self.mnt(context, args).await,
            Ok(MOUNT_PROGRAM::MOUNTPROC3_DUMP) => {
                let list: mountlist = List(Vec::new());
                encode(&list)
            }
            Ok(MOUNT_PROGRAM::MOUNTPROC3_UMNT) if overrun(MOUNT_PROGRAM::MOUNTPROC3_UMNT, args) => {
                ProcResult::GarbageArgs
            }
            Ok(MOUNT_PROGRAM::MOUNTPROC3_UMNT) => match decode::<dirpath>(args) {
                Some(_) => ProcResult::Success(Vec::new()),
                None => ProcResult::GarbageArgs,
            },
            Ok(MOUNT_PROGRAM::MOUNTPROC3_UMNTALL) => ProcResult::Success(Vec::new()),
            Ok(MOUNT_PROGRAM::MOUNTPROC3_EXPORT) => self.export(context),
            Err(_) => ProcResult::ProcUnavail,
        }
    }
}

impl RpcProgram for MountProgram {
    fn id(&self) -> ProgramId {
        MOUNT_ID
    }

    fn procedure_name(&self, _version: u32, procedure: u32) -> Option<&'static str> {
        Some(match MOUNT_PROGRAM::try_from(procedure).ok()? {
            MOUNT_PROGRAM::MOUNTPROC3_NULL => "null",
            MOUNT_PROGRAM::MOUNTPROC3_MNT => "mnt",
            MOUNT_PROGRAM::MOUNTPROC3_DUMP => "dump",
            MOUNT_PROGRAM::MOUNTPROC3_UMNT => "umnt",
            MOUNT_PROGRAM::MOUNTPROC3_UMNTALL => "umntall",
            MOUNT_PROGRAM::MOUNTPROC3_EXPORT => "export",
        })
    }

    fn call<'a>(
        &'a self,
        context: &'a CallContext,
        _version: u32,
        procedure: u32,
        args: &'a [u8],
    ) -> BoxFuture<'a, ProcResult> {
        self.execute(context, procedure, args).boxed()
    }
}
