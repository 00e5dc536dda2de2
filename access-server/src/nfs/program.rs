//! The NFS v3 program (100003): dispatch, the export policy checks shared
//! by every procedure, and the attribute, lookup and file-system
//! procedures. Directory changes are in `dirops.rs`, listings in
//! `readdir.rs`.
//!
//! File data (READ, WRITE, COMMIT, a regular file's size and mtime) goes
//! through [`FileData`] in `io.rs`; a SETATTR or CREATE that sets a size
//! truncates or extends through it, and REMOVE or RENAME over a file
//! releases the file's blocks.

use geonfs_proto::domain::FileId;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use nfs3_types::nfs3::{
    nfs_fh3, nfsstat3, ACCESS3args, ACCESS3resok, FSINFO3args, FSINFO3resok, FSSTAT3args,
    FSSTAT3resok, GETATTR3args, GETATTR3resok, LOOKUP3args, LOOKUP3resok, Nfs3Option,
    PATHCONF3args, PATHCONF3resok, READLINK3args, READLINK3resok, SETATTR3args, SETATTR3resok,
    FSF3_CANSETTIME, FSF3_HOMOGENEOUS, FSF3_SYMLINK, NFS_PROGRAM,
};
use nfs3_types::nfs3::{nfspath3, nfstime3};
use nfs3_types::xdr_codec::{Opaque, Pack};

use super::access::{ExportPolicy, Identity, EXEC, WRITE};
use super::attrs::{fattr, ns_time, post_op, set_attrs, status_of, wcc};
use super::handle::{HandleCodec, MountRoot};
use super::CapacityProvider;
use crate::data::FileData;
use crate::namespace::{FileKind, Inode, Namespace, SetTime, MAX_NAME_LEN, ROOT_ID};
use crate::oncrpc::{CallContext, ProcResult, ProgramId, RpcProgram, NFS_ID};

/// The largest READ and WRITE offered (and preferred): 1 MiB.
pub const MAX_IO: u32 = 1 << 20;
/// The preferred READDIR reply size: 64 KiB.
pub const DIR_PREF: u32 = 64 << 10;
/// The largest file size announced (the data layer refuses larger).
pub use crate::data::MAX_FILE_SIZE;

/// What a procedure handler returns: an encoded reply (or GARBAGE_ARGS),
/// or an NFS error status (encoded with empty failure attributes).
pub(crate) type Reply = Result<ProcResult, nfsstat3>;

/// The NFS v3 program over the namespace and the site's file data.
pub struct NfsProgram {
    pub(crate) ns: Namespace,
    pub(crate) data: FileData,
    pub(crate) handles: HandleCodec,
    pub(crate) policy: ExportPolicy,
    capacity: Arc<dyn CapacityProvider>,
    /// Inodes of files this access server writes, as last resolved here (see
    /// [`NfsProgram::owned_inode`]).
    owned: Arc<std::sync::Mutex<std::collections::HashMap<u64, OwnedInode>>>,
}

/// The shortest interval between two background re-reads of an owned
/// inode (bounds the meta-kvs reads when the attribute cache is off).
const MIN_OWNED_REFRESH: Duration = Duration::from_millis(100);

/// How many directories `..` walks up at most to find the mount root (a
/// deeper tree answers SERVERFAULT to `..` rather than walk on).
const MAX_DEPTH: usize = 4096;

/// An inode of a file this access server writes, and when it was read.
#[derive(Clone, Debug)]
struct OwnedInode {
    inode: Inode,
    read_at: Instant,
    /// A re-read from meta-kvs is under way.
    refreshing: bool,
}

impl std::fmt::Debug for NfsProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsProgram")
            .field("handles", &self.handles)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The owned inodes, locked (a poisoned lock is taken over: the map stays
/// consistent, each update is one insert or remove).
fn lock_owned(
    owned: &std::sync::Mutex<std::collections::HashMap<u64, OwnedInode>>,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, OwnedInode>> {
    match owned.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The success encoding: `NFS3_OK` then `body`.
pub(crate) fn ok(body: &impl Pack) -> Reply {
    let mut out = Vec::with_capacity(4 + body.packed_size());
    match nfsstat3::NFS3_OK
        .pack(&mut out)
        .and_then(|_| body.pack(&mut out))
    {
        Ok(_) => Ok(ProcResult::Success(out)),
        Err(error) => {
            tracing::error!(%error, "encoding NFS results failed");
            Ok(ProcResult::SystemErr)
        }
    }
}

/// Decodes `args` as `T`, or returns GARBAGE_ARGS from the handler.
macro_rules! args {
    ($t:ty, $args:expr) => {
        match $crate::nfs::attrs::decode::<$t>($args) {
            Some(args) => args,
            None => return Ok($crate::oncrpc::ProcResult::GarbageArgs),
        }
    };
}
pub(crate) use args;

/// The failure encoding of `procedure`: the status, then its failure
/// body with every attribute omitted (each `post_op_attr`/`pre_op_attr`
/// is a single zero word, so a body is a number of zero words).
pub(crate) fn failure(procedure: NFS_PROGRAM, status: nfsstat3) -> ProcResult {
    use NFS_PROGRAM::*;
    let words = match procedure {
        NFSPROC3_NULL | NFSPROC3_GETATTR => 0,
        NFSPROC3_LOOKUP | NFSPROC3_ACCESS | NFSPROC3_READLINK | NFSPROC3_READ
        | NFSPROC3_READDIR | NFSPROC3_READDIRPLUS | NFSPROC3_FSSTAT | NFSPROC3_FSINFO
        | NFSPROC3_PATHCONF => 1,
        NFSPROC3_SETATTR | NFSPROC3_WRITE | NFSPROC3_CREATE | NFSPROC3_MKDIR | NFSPROC3_SYMLINK
        | NFSPROC3_MKNOD | NFSPROC3_REMOVE | NFSPROC3_RMDIR | NFSPROC3_COMMIT => 2,
        NFSPROC3_LINK => 3,
        NFSPROC3_RENAME => 4,
    };
    let mut out = (status as u32).to_be_bytes().to_vec();
    out.resize(4 + 4 * words, 0);
    ProcResult::Success(out)
}

impl NfsProgram {
    /// The NFS program for `policy` over `ns` and `data`, with handles
    /// from `handles` and FSSTAT answered from `capacity`.
    pub fn new(
        ns: Namespace,
        data: FileData,
        handles: HandleCodec,
        policy: ExportPolicy,
        capacity: Arc<dyn CapacityProvider>,
    ) -> Self {
        NfsProgram {
            ns,
            data,
            handles,
            policy,
            capacity,
            owned: Arc::default(),
        }
    }

    fn owned_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, OwnedInode>> {
        lock_owned(&self.owned)
    }

    /// The inode `fh` names when this access server writes the file, as last resolved
    /// here, without waiting for a meta-kvs read: a WRITE at the owner crosses no WAN
    /// (docs/ARCHITECTURE.md#invariant-3), even when the inode cache has expired. Its size and
    /// mtime come from the data path; what it adds is the mode and owner
    /// for the permission check. Once it is older than the attribute cache
    /// (`[nfs] attribute_cache`, at least [`MIN_OWNED_REFRESH`]) it is read
    /// again in the background, so a chmod or chown made at another site
    /// binds writes here within about twice that time (it may have come
    /// from the inode cache) and one meta-kvs read. A file
    /// removed elsewhere is fenced at the highest epoch by the remover, so
    /// a write here fails with STALE instead of landing.
    pub(crate) fn owned_inode(&self, fh: &nfs_fh3) -> Option<Inode> {
        let handle = self.handles.decode(fh.data.as_ref()).ok()?;
        self.data.ownership().owned_epoch(FileId(handle.id))?;
        let refresh_after = self.ns.attribute_ttl().max(MIN_OWNED_REFRESH);
        let mut owned = self.owned_map();
        let entry = owned
            .get_mut(&handle.id)
            .filter(|entry| entry.inode.generation == handle.generation)?;
        if !entry.refreshing && entry.read_at.elapsed() >= refresh_after {
            entry.refreshing = true;
            self.refresh_owned(handle.id);
        }
        Some(entry.inode.clone())
    }

    /// Re-reads owned inode `id` from meta-kvs in the background (see
    /// [`NfsProgram::owned_inode`]); a file gone is forgotten.
    fn refresh_owned(&self, id: u64) {
        let ns = self.ns.clone();
        let owned = self.owned.clone();
        tokio::spawn(async move {
            let read = ns.getattr_fresh(id).await;
            let mut owned = lock_owned(&owned);
            match read {
                Ok(inode) => {
                    if let Some(entry) = owned.get_mut(&id) {
                        // Not over a newer one remembered meanwhile.
                        if inode.version >= entry.inode.version {
                            entry.inode = inode;
                            entry.read_at = Instant::now();
                        }
                        entry.refreshing = false;
                    }
                }
                Err(crate::namespace::NamespaceError::Stale(_)) => {
                    owned.remove(&id);
                }
                Err(err) => {
                    tracing::debug!(id, %err, "owned inode not re-read; kept until the next try");
                    if let Some(entry) = owned.get_mut(&id) {
                        entry.refreshing = false;
                    }
                }
            }
        });
    }

    /// Keeps `inode` for [`NfsProgram::owned_inode`] if this access server
    /// writes it, unless what is kept is as new (a WRITE hands back the
    /// inode it was given: that must not make it look freshly read).
    pub(crate) fn remember_owned(&self, inode: &Inode) {
        if self.data.ownership().owned_epoch(inode.file_id()).is_none() {
            return;
        }
        let mut owned = self.owned_map();
        let kept = owned.get(&inode.id).is_some_and(|entry| {
            entry.inode.generation == inode.generation && entry.inode.version >= inode.version
        });
        if !kept {
            let entry = OwnedInode {
                inode: inode.clone(),
                read_at: Instant::now(),
                refreshing: false,
            };
            owned.insert(inode.id, entry);
        }
    }

    /// Drops `id` from the owned inodes (it changed or went away).
    pub(crate) fn forget_owned(&self, id: u64) {
        self.owned_map().remove(&id);
    }

    /// The file system id in attributes: the cluster's handle generation.
    pub(crate) fn fsid(&self) -> u64 {
        self.handles.handle_generation()
    }

    /// The handle of `inode` for the client that mounted `mount`.
    pub(crate) fn fh(&self, inode: &Inode, mount: MountRoot) -> nfs_fh3 {
        self.handles.encode(inode, mount)
    }

    /// The directory the client holding `fh` mounted (BADHANDLE or STALE
    /// as [`HandleCodec::decode`] says).
    pub(crate) fn mount_of(&self, fh: &nfs_fh3) -> Result<MountRoot, nfsstat3> {
        Ok(self.handles.decode(fh.data.as_ref())?.mount)
    }

    /// `..` of directory `dir` for a client that mounted `mount`: `dir`
    /// itself at the mount's root (as at the export's root), else its
    /// parent, which must be at or below the mount's root: a directory
    /// moved out from under it (by a client that mounted higher), or one
    /// whose mount root is gone, is `NFS3ERR_ACCES` rather than a way up;
    /// a mount root whose inode generation is not the real one (a forged
    /// handle) is `NFS3ERR_STALE`.
    pub(crate) async fn parent_within(
        &self,
        dir: &Inode,
        mount: MountRoot,
    ) -> Result<Inode, nfsstat3> {
        if dir.id == mount.id && dir.generation == mount.generation {
            return Ok(dir.clone());
        }
        let parent = self.ns.getattr(dir.parent).await.map_err(status_of)?;
        // A mount of the export's root (the usual one) holds every
        // directory: only its generation needs checking, not the path up.
        let mut at = if mount.id == ROOT_ID && parent.id != ROOT_ID {
            self.ns.getattr(ROOT_ID).await.map_err(status_of)?
        } else {
            parent.clone()
        };
        for _ in 0..MAX_DEPTH {
            if at.id == mount.id {
                return if at.generation == mount.generation {
                    Ok(parent)
                } else {
                    Err(nfsstat3::NFS3ERR_STALE)
                };
            }
            if at.parent == at.id {
                // The export's root, and the mount root was not met.
                tracing::info!(
                    dir = dir.id,
                    mount = mount.id,
                    "`..` refused: not below the mount"
                );
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            at = self.ns.getattr(at.parent).await.map_err(status_of)?;
        }
        Err(nfsstat3::NFS3ERR_SERVERFAULT)
    }

    /// The inode `fh` refers to: BADHANDLE, STALE (another cluster, a
    /// removed file or a reused id), or the inode with its current
    /// attributes ([`NfsProgram::current`]); for a file this access server writes,
    /// without reading meta-kvs ([`NfsProgram::owned_inode`]).
    pub(crate) async fn resolve(&self, fh: &nfs_fh3) -> Result<Inode, nfsstat3> {
        if let Some(inode) = self.owned_inode(fh) {
            return self.current(inode).await;
        }
        self.current(self.resolve_stored(fh).await?).await
    }

    /// Like [`resolve`](Self::resolve), with the attributes as the
    /// namespace stores them.
    pub(crate) async fn resolve_stored(&self, fh: &nfs_fh3) -> Result<Inode, nfsstat3> {
        let handle = self.handles.decode(fh.data.as_ref())?;
        let inode = self.ns.getattr(handle.id).await.map_err(status_of)?;
        if inode.generation != handle.generation {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        Ok(inode)
    }

    /// Like [`resolve`](Self::resolve), for a directory (NOTDIR otherwise).
    pub(crate) async fn resolve_dir(&self, fh: &nfs_fh3) -> Result<Inode, nfsstat3> {
        let inode = self.resolve(fh).await?;
        if !inode.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        Ok(inode)
    }

    /// `NFS3ERR_ROFS` when the export is read-only.
    pub(crate) fn writable(&self) -> Result<(), nfsstat3> {
        if self.policy.read_only {
            return Err(nfsstat3::NFS3ERR_ROFS);
        }
        Ok(())
    }

    /// `NFS3ERR_ACCES` unless `who` has `bits` on `inode`.
    pub(crate) fn require(who: &Identity, inode: &Inode, bits: u32) -> Result<(), nfsstat3> {
        if who.may(inode, bits) {
            Ok(())
        } else {
            Err(nfsstat3::NFS3ERR_ACCES)
        }
    }

    /// The current attributes of `id` after a change, if readable.
    pub(crate) async fn after(&self, id: u64) -> Option<Inode> {
        self.current(self.ns.getattr(id).await.ok()?).await.ok()
    }

    async fn getattr(&self, args: &[u8]) -> Reply {
        let args = args!(GETATTR3args, args);
        let inode = self.resolve(&args.object).await?;
        ok(&GETATTR3resok {
            obj_attributes: fattr(&inode, self.fsid()),
        })
    }

    /// SETATTR: mode, owner, group and times (with the ctime guard); a
    /// size change of a regular file truncates or extends its data first.
    /// Whether `who` may change `inode`'s size (SETATTR size, CREATE
    /// UNCHECKED with a size over an existing file): a regular file, and
    /// its owner or a caller with write permission.
    pub(super) fn may_resize(who: &Identity, inode: &Inode) -> Result<(), nfsstat3> {
        if inode.kind != FileKind::Regular {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        if !who.owns(inode) {
            Self::require(who, inode, WRITE)?;
        }
        Ok(())
    }

    /// Changes the data of regular file `inode` (with its current size) to
    /// `size` bytes, if that differs: the first half of a size change, the
    /// namespace's record being the second.
    pub(super) async fn resize_data(&self, inode: &Inode, size: u64) -> Result<(), nfsstat3> {
        if inode.size == size {
            return Ok(());
        }
        self.data
            .set_size(inode.file_id(), inode.size, size)
            .await
            .map_err(|err| super::io::data_status(inode.file_id(), &err))
    }

    async fn setattr(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(SETATTR3args, args);
        self.writable()?;
        let stored = self.resolve_stored(&args.object).await?;
        self.forget_owned(stored.id);
        let inode = self.current(stored.clone()).await?;
        let attrs = set_attrs(&args.new_attributes);
        let owner_or_root = who.is_root() || who.owns(&inode);
        if attrs.size.is_some() {
            Self::may_resize(who, &inode)?;
        }
        if attrs.mode.is_some() && !owner_or_root {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        if attrs.uid.is_some_and(|uid| uid != inode.uid) && !who.is_root() {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        if attrs.gid.is_some_and(|gid| gid != inode.gid)
            && !(who.is_root() || (who.owns(&inode) && attrs.gid.is_some_and(|g| who.in_group(g))))
        {
            return Err(nfsstat3::NFS3ERR_PERM);
        }
        for time in [attrs.atime, attrs.mtime].into_iter().flatten() {
            match time {
                SetTime::At(_) if !owner_or_root => return Err(nfsstat3::NFS3ERR_PERM),
                SetTime::ServerNow if !owner_or_root => Self::require(who, &inode, WRITE)?,
                _ => {}
            }
        }
        // The client's guard is the ctime it was shown (with the attribute
        // record's mtime folded in); the namespace checks its own stored
        // ctime, atomically with the change.
        let guard = match args.guard {
            Nfs3Option::Some(ctime) if ns_time(ctime) != inode.ctime => {
                return Err(nfsstat3::NFS3ERR_NOT_SYNC);
            }
            Nfs3Option::Some(_) => Some(stored.ctime),
            Nfs3Option::None => None,
        };
        if let Some(size) = attrs.size {
            self.resize_data(&inode, size).await?;
        }
        let updated = self
            .ns
            .setattr(inode.id, &attrs, guard)
            .await
            .map_err(status_of)?;
        let updated = self.current(updated).await?;
        ok(&SETATTR3resok {
            obj_wcc: wcc(Some(&updated), self.fsid()),
        })
    }

    async fn lookup(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(LOOKUP3args, args);
        let dir = self.resolve_dir(&args.what.dir).await?;
        Self::require(who, &dir, EXEC)?;
        let mount = self.mount_of(&args.what.dir)?;
        let name = args.what.name.as_ref();
        let object = if name == b".." {
            self.parent_within(&dir, mount).await?
        } else {
            self.ns.lookup(dir.id, name).await.map_err(status_of)?
        };
        let object = self.current(object).await?;
        ok(&LOOKUP3resok {
            object: self.fh(&object, mount),
            obj_attributes: post_op(Some(&object), self.fsid()),
            dir_attributes: post_op(Some(&dir), self.fsid()),
        })
    }

    async fn access(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(ACCESS3args, args);
        let inode = self.resolve(&args.object).await?;
        ok(&ACCESS3resok {
            obj_attributes: post_op(Some(&inode), self.fsid()),
            access: who.access_bits(&inode, args.access, self.policy.read_only),
        })
    }

    async fn readlink(&self, args: &[u8]) -> Reply {
        let args = args!(READLINK3args, args);
        let inode = self.resolve(&args.symlink).await?;
        if inode.kind != FileKind::Symlink {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        ok(&READLINK3resok {
            symlink_attributes: post_op(Some(&inode), self.fsid()),
            data: nfspath3(Opaque::owned(inode.symlink_target.clone())),
        })
    }

    async fn fsstat(&self, args: &[u8]) -> Reply {
        let args = args!(FSSTAT3args, args);
        let inode = self.resolve(&args.fsroot).await?;
        let Some((total, free)) = self.capacity.capacity().await else {
            return Err(nfsstat3::NFS3ERR_IO);
        };
        // File ids are 64-bit and never run out in practice.
        let files = 1u64 << 40;
        ok(&FSSTAT3resok {
            obj_attributes: post_op(Some(&inode), self.fsid()),
            tbytes: total,
            fbytes: free.min(total),
            abytes: free.min(total),
            tfiles: files,
            ffiles: files,
            afiles: files,
            invarsec: 0,
        })
    }

    async fn fsinfo(&self, args: &[u8]) -> Reply {
        let args = args!(FSINFO3args, args);
        let inode = self.resolve(&args.fsroot).await?;
        ok(&FSINFO3resok {
            obj_attributes: post_op(Some(&inode), self.fsid()),
            rtmax: MAX_IO,
            rtpref: MAX_IO,
            rtmult: 4096,
            wtmax: MAX_IO,
            wtpref: MAX_IO,
            wtmult: 4096,
            dtpref: DIR_PREF,
            maxfilesize: MAX_FILE_SIZE,
            time_delta: nfstime3 {
                seconds: 0,
                nseconds: 1,
            },
            // No FSF3_LINK: LINK answers NOTSUPP.
            properties: FSF3_HOMOGENEOUS | FSF3_CANSETTIME | FSF3_SYMLINK,
        })
    }

    async fn pathconf(&self, args: &[u8]) -> Reply {
        let args = args!(PATHCONF3args, args);
        let inode = self.resolve(&args.object).await?;
        ok(&PATHCONF3resok {
            obj_attributes: post_op(Some(&inode), self.fsid()),
            // Files never get a second link (LINK is NOTSUPP); directories
            // may have any number of subdirectories.
            linkmax: u32::MAX,
            name_max: MAX_NAME_LEN as u32,
            no_trunc: true,
            chown_restricted: true,
            case_insensitive: false,
            case_preserving: true,
        })
    }

    async fn dispatch(&self, who: &Identity, procedure: NFS_PROGRAM, args: &[u8]) -> Reply {
        use NFS_PROGRAM::*;
        match procedure {
            NFSPROC3_NULL => Ok(ProcResult::Success(Vec::new())),
            NFSPROC3_GETATTR => self.getattr(args).await,
            NFSPROC3_SETATTR => self.setattr(who, args).await,
            NFSPROC3_LOOKUP => self.lookup(who, args).await,
            NFSPROC3_ACCESS => self.access(who, args).await,
            NFSPROC3_READLINK => self.readlink(args).await,
            NFSPROC3_READ => self.read(who, args).await,
            NFSPROC3_WRITE => self.write(who, args).await,
            NFSPROC3_COMMIT => self.commit(who, args).await,
            NFSPROC3_CREATE => self.create(who, args).await,
            NFSPROC3_MKDIR => self.mkdir(who, args).await,
            NFSPROC3_SYMLINK => self.symlink(who, args).await,
            // Only regular files, directories and symlinks exist, and no
            // file has a second name.
            NFSPROC3_MKNOD | NFSPROC3_LINK => Err(nfsstat3::NFS3ERR_NOTSUPP),
            NFSPROC3_REMOVE => self.remove(who, args).await,
            NFSPROC3_RMDIR => self.rmdir(who, args).await,
            NFSPROC3_RENAME => self.rename(who, args).await,
            NFSPROC3_READDIR => self.readdir(who, args).await,
            NFSPROC3_READDIRPLUS => self.readdirplus(who, args).await,
            NFSPROC3_FSSTAT => self.fsstat(args).await,
            NFSPROC3_FSINFO => self.fsinfo(args).await,
            NFSPROC3_PATHCONF => self.pathconf(args).await,
        }
    }

    async fn execute(&self, context: &CallContext, procedure: u32, args: &[u8]) -> ProcResult {
        let Ok(procedure) = NFS_PROGRAM::try_from(procedure) else {
            return ProcResult::ProcUnavail;
        };
        if procedure == NFS_PROGRAM::NFSPROC3_NULL {
            return ProcResult::Success(Vec::new());
        }
        // A client outside the export's networks gets an NFS status on
        // every call rather than an RPC authentication error: AUTH_TOOWEAK
        // would tell it to retry with a stronger flavor, which cannot help,
        // while NFS3ERR_ACCES surfaces as EACCES on the client.
        if !self.policy.admits(context.caller.addr.ip()) {
            tracing::info!(peer = %context.caller.addr, ?procedure, "client not allowed");
            return failure(procedure, nfsstat3::NFS3ERR_ACCES);
        }
        if super::xdr_check::nfs_args_overrun(procedure, args) {
            return ProcResult::GarbageArgs;
        }
        let Some(who) = self
            .policy
            .identity(&context.caller.auth, context.caller.addr.ip())
        else {
            return ProcResult::AuthTooWeak;
        };
        match self.dispatch(&who, procedure, args).await {
            Ok(result) => result,
            Err(status) => failure(procedure, status),
        }
    }
}

impl RpcProgram for NfsProgram {
    fn id(&self) -> ProgramId {
        NFS_ID
    }

    fn procedure_name(&self, _version: u32, procedure: u32) -> Option<&'static str> {
        use NFS_PROGRAM::*;
        Some(match NFS_PROGRAM::try_from(procedure).ok()? {
            NFSPROC3_NULL => "null",
            NFSPROC3_GETATTR => "getattr",
            NFSPROC3_SETATTR => "setattr",
            NFSPROC3_LOOKUP => "lookup",
            NFSPROC3_ACCESS => "access",
            NFSPROC3_READLINK => "readlink",
            NFSPROC3_READ => "read",
            NFSPROC3_WRITE => "write",
            NFSPROC3_CREATE => "create",
            NFSPROC3_MKDIR => "mkdir",
            NFSPROC3_SYMLINK => "symlink",
            NFSPROC3_MKNOD => "mknod",
            NFSPROC3_REMOVE => "remove",
            NFSPROC3_RMDIR => "rmdir",
            NFSPROC3_RENAME => "rename",
            NFSPROC3_LINK => "link",
            NFSPROC3_READDIR => "readdir",
            NFSPROC3_READDIRPLUS => "readdirplus",
            NFSPROC3_FSSTAT => "fsstat",
            NFSPROC3_FSINFO => "fsinfo",
            NFSPROC3_PATHCONF => "pathconf",
            NFSPROC3_COMMIT => "commit",
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
