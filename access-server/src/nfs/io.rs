//! File data over NFS: READ, WRITE, COMMIT, and a regular file's current
//! size and mtime, through [`crate::data::FileData`].
//!
//! A file's size and mtime are kept by its attribute record next to its
//! data on the site's cores (see [`crate::data`]): every attribute this
//! program returns for a regular file is the namespace's inode with the
//! record's size, and the later of the two mtimes ([`NfsProgram::current`]).
//!
//! WRITE replies UNSTABLE when the client asked for it (the data is held on
//! both in-site cores), FILE_SYNC otherwise (durable on both before the
//! reply). COMMIT makes the file's held writes durable and answers with
//! the write verifier, which changes when a core that held them restarted,
//! so the client resends (RFC 1813).

use geonfs_proto::domain::FileId;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use geonfs_block_manager::BlockError;
use nfs3_types::nfs3::{
    nfsstat3, stable_how, writeverf3, COMMIT3args, COMMIT3resok, READ3args, READ3resok, WRITE3args,
    WRITE3resok,
};
use nfs3_types::xdr_codec::Opaque;

use super::access::{Identity, READ, WRITE};
use super::attrs::{post_op, wcc};
use super::program::{args, ok, Reply, MAX_IO};
use super::NfsProgram;
use crate::data::DataError;
use crate::namespace::{FileKind, Inode, Timestamp};

/// The NFS status of a file-data failure, logged here once: a client's
/// mistake (INVAL, FBIG) at debug level, a retry or a full site (JUKEBOX,
/// NOSPC) at info, anything else as a warning.
pub(crate) fn data_status(file_id: FileId, err: &DataError) -> nfsstat3 {
    let status = status_of_data_error(err);
    match status {
        nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_FBIG => {
            tracing::debug!(%file_id, %err, ?status, "file data operation refused");
        }
        nfsstat3::NFS3ERR_JUKEBOX | nfsstat3::NFS3ERR_NOSPC => {
            tracing::info!(%file_id, %err, ?status, "file data operation failed");
        }
        _ => tracing::warn!(%file_id, %err, ?status, "file data operation failed"),
    }
    status
}

/// The NFS status of a file-data failure.
fn status_of_data_error(err: &DataError) -> nfsstat3 {
    match err.block_error() {
        Some(BlockError::Invalid(_)) => return nfsstat3::NFS3ERR_INVAL,
        // The site cannot place two copies for lack of space: a hypervisor
        // pauses the VM (QEMU's werror=enospc) instead of failing its I/O.
        Some(BlockError::NotEnoughCores {
            out_of_space: true, ..
        }) => return nfsstat3::NFS3ERR_NOSPC,
        // No complete copy to build a partial write on could be reached
        // now (the write is not applied), the block's newest version
        // cannot be established, this access server's ownership lease
        // is not valid, or the block kept moving while read: the client
        // retries later.
        Some(
            BlockError::Unseeded { .. }
            | BlockError::NewestUnknown { .. }
            | BlockError::LeaseExpired { .. }
            | BlockError::CopyGone { .. },
        ) => return nfsstat3::NFS3ERR_JUKEBOX,
        _ => {}
    }
    match err.root() {
        DataError::Range { .. } => nfsstat3::NFS3ERR_FBIG,
        // A handover that cannot finish now, or meta-kvs out of reach (as
        // for namespace operations): the client retries later.
        // Removed at another site while this site wrote it.
        DataError::Ownership(crate::ownership::OwnershipError::Removed { .. }) => {
            nfsstat3::NFS3ERR_STALE
        }
        DataError::Ownership(
            crate::ownership::OwnershipError::Blocked { .. }
            | crate::ownership::OwnershipError::Meta { .. }
            | crate::ownership::OwnershipError::MetaRecords { .. },
        ) => nfsstat3::NFS3ERR_JUKEBOX,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

/// A `SystemTime` as an NFS timestamp (clamped to the u32 seconds range).
fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
        nanos: since.subsec_nanos(),
    }
}

/// `inode` with the size and mtime of its attribute record (the later of
/// the two mtimes; ctime never behind mtime).
fn with_record(mut inode: Inode, size: u64, mtime: SystemTime) -> Inode {
    inode.size = size;
    let mtime = timestamp(mtime);
    if mtime > inode.mtime {
        inode.mtime = mtime;
        inode.ctime = inode.ctime.max(mtime);
    }
    inode
}

impl NfsProgram {
    /// `inode` with a regular file's size and mtime from its attribute
    /// record (if it has one). A record that cannot be read (its site out
    /// of reach) is an error: the namespace's size may be stale, and a
    /// client must never be shown a stale size (docs/ARCHITECTURE.md#invariant-4).
    pub(crate) async fn current(&self, inode: Inode) -> Result<Inode, nfsstat3> {
        if inode.kind != FileKind::Regular {
            return Ok(inode);
        }
        match self.data.attributes(inode.file_id()).await {
            Ok(Some((size, mtime))) => Ok(with_record(inode, size, mtime)),
            Ok(None) => Ok(inode),
            Err(err) => Err(data_status(inode.file_id(), &err)),
        }
    }

    /// The regular file `fh` names, with its current attributes when
    /// `current` (else the namespace's), if `who` may use it for `bits`
    /// (the owner always may: NFS has no open, and an owner's own writes
    /// to a file it made read-only must go through).
    async fn regular_file(
        &self,
        who: &Identity,
        fh: &nfs3_types::nfs3::nfs_fh3,
        bits: u32,
        current: bool,
    ) -> Result<Inode, nfsstat3> {
        let inode = match self.owned_inode(fh) {
            // Owned here: no meta-kvs read.
            Some(inode) if !current => inode,
            _ if current => self.resolve(fh).await?,
            _ => self.resolve_stored(fh).await?,
        };
        Self::check_regular(who, &inode, bits)?;
        Ok(inode)
    }

    /// NFS3ERR_ISDIR/INVAL unless `inode` is a regular file, ACCES unless
    /// `who` may use it for `bits` (its owner always may).
    fn check_regular(who: &Identity, inode: &Inode, bits: u32) -> Result<(), nfsstat3> {
        match inode.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(nfsstat3::NFS3ERR_ISDIR),
            FileKind::Symlink => return Err(nfsstat3::NFS3ERR_INVAL),
        }
        if !who.owns(inode) {
            Self::require(who, inode, bits)?;
        }
        Ok(())
    }

    pub(crate) async fn read(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(READ3args, args);
        let count = args.count.min(MAX_IO);
        if let Some(reply) = self.read_at_owner(who, &args, count).await {
            return reply;
        }
        let inode = self.regular_file(who, &args.file, READ, true).await?;
        let (data, eof) = self
            .data
            .read(inode.file_id(), args.offset, count, inode.size)
            .await
            .map_err(|err| data_status(inode.file_id(), &err))?;
        ok(&READ3resok {
            file_attributes: post_op(Some(&inode), self.fsid()),
            count: u32::try_from(data.len()).unwrap_or(u32::MAX),
            eof,
            data: Opaque::borrowed(&data),
        })
    }

    /// READ at the owning site with the size and mtime known in memory:
    /// one in-site round trip, the data read checking ownership
    /// ([`crate::data::FileData::read_owned`]). `None` when that does not
    /// apply (the caller goes the long way: attribute record, then data).
    async fn read_at_owner(&self, who: &Identity, args: &READ3args, count: u32) -> Option<Reply> {
        let inode = self.owned_inode(&args.file)?;
        if let Err(status) = Self::check_regular(who, &inode, READ) {
            return Some(Err(status));
        }
        let read = match self
            .data
            .read_owned(inode.file_id(), args.offset, count)
            .await
        {
            Ok(read) => read?,
            Err(err) => return Some(Err(data_status(inode.file_id(), &err))),
        };
        let inode = with_record(inode, read.size, read.mtime);
        Some(ok(&READ3resok {
            file_attributes: post_op(Some(&inode), self.fsid()),
            count: u32::try_from(read.data.len()).unwrap_or(u32::MAX),
            eof: read.eof,
            data: Opaque::borrowed(&read.data),
        }))
    }

    pub(crate) async fn write(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(WRITE3args, args);
        self.writable()?;
        // The namespace's attributes suffice: the write sets size and mtime
        // (at a non-owner the owner's record is not needed before the handover).
        let inode = self.regular_file(who, &args.file, WRITE, false).await?;
        let given = args.data.as_ref();
        let count = usize::try_from(args.count).unwrap_or(usize::MAX);
        if count > given.len() || args.count > MAX_IO {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let stable = args.stable != stable_how::UNSTABLE;
        let written = self
            .data
            .write(
                inode.file_id(),
                args.offset,
                Bytes::copy_from_slice(&given[..count]),
                stable,
            )
            .await
            .map_err(|err| {
                self.forget_owned(inode.id);
                data_status(inode.file_id(), &err)
            })?;
        self.remember_owned(&inode);
        let mut after = inode;
        after.size = written.size;
        after.mtime = timestamp(written.mtime);
        after.ctime = after.ctime.max(after.mtime);
        ok(&WRITE3resok {
            file_wcc: wcc(Some(&after), self.fsid()),
            count: args.count,
            committed: if written.durable {
                stable_how::FILE_SYNC
            } else {
                stable_how::UNSTABLE
            },
            verf: writeverf3(written.verifier),
        })
    }

    pub(crate) async fn commit(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(COMMIT3args, args);
        let inode = self.regular_file(who, &args.file, WRITE, true).await?;
        let verifier = self
            .data
            .commit(inode.file_id())
            .await
            .map_err(|err| data_status(inode.file_id(), &err))?;
        ok(&COMMIT3resok {
            file_wcc: wcc(Some(&inode), self.fsid()),
            verf: writeverf3(verifier),
        })
    }

    /// Releases the blocks of a file the namespace no longer names
    /// (REMOVE, RENAME over it). A failure leaves orphan blocks behind
    /// (logged); the name is gone either way.
    pub(crate) async fn release(&self, inode: Option<Inode>) {
        let Some(inode) = inode.filter(|i| i.kind == FileKind::Regular) else {
            return;
        };
        self.forget_owned(inode.id);
        if let Err(err) = self.data.remove(inode.file_id()).await {
            tracing::warn!(file_id = inode.id, %err, "blocks of a removed file not released");
        }
    }
}
