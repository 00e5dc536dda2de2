//! Conversions between namespace records and NFS v3 XDR types, and the one
//! mapping of [`NamespaceError`] to `nfsstat3`.

use std::io::Cursor;

use nfs3_types::nfs3::{
    fattr3, ftype3, nfsstat3, nfstime3, post_op_attr, pre_op_attr, sattr3, set_atime, set_mtime,
    specdata3, wcc_data, Nfs3Option,
};
use nfs3_types::xdr_codec::{Pack, Unpack};

use crate::namespace::{FileKind, Inode, NamespaceError, SetAttrs, SetTime, Timestamp};
use crate::oncrpc::ProcResult;

/// The NFS status of a namespace error. This is the only place namespace
/// errors are mapped; it follows [`NamespaceError::nfs_status_name`].
pub fn nfs_status(err: &NamespaceError) -> nfsstat3 {
    match err.nfs_status_name() {
        "NFS3ERR_NOENT" => nfsstat3::NFS3ERR_NOENT,
        "NFS3ERR_EXIST" => nfsstat3::NFS3ERR_EXIST,
        "NFS3ERR_NOTDIR" => nfsstat3::NFS3ERR_NOTDIR,
        "NFS3ERR_ISDIR" => nfsstat3::NFS3ERR_ISDIR,
        "NFS3ERR_NOTEMPTY" => nfsstat3::NFS3ERR_NOTEMPTY,
        "NFS3ERR_NAMETOOLONG" => nfsstat3::NFS3ERR_NAMETOOLONG,
        "NFS3ERR_ACCES" => nfsstat3::NFS3ERR_ACCES,
        "NFS3ERR_STALE" => nfsstat3::NFS3ERR_STALE,
        "NFS3ERR_NOT_SYNC" => nfsstat3::NFS3ERR_NOT_SYNC,
        "NFS3ERR_INVAL" => nfsstat3::NFS3ERR_INVAL,
        "NFS3ERR_JUKEBOX" => nfsstat3::NFS3ERR_JUKEBOX,
        "NFS3ERR_IO" => nfsstat3::NFS3ERR_IO,
        other => {
            tracing::error!(status = other, %err, "namespace error without an NFS mapping");
            nfsstat3::NFS3ERR_SERVERFAULT
        }
    }
}

/// Logs `err` (at a level by how unusual it is) and maps it.
pub(crate) fn status_of(err: NamespaceError) -> nfsstat3 {
    let status = nfs_status(&err);
    match status {
        nfsstat3::NFS3ERR_IO | nfsstat3::NFS3ERR_SERVERFAULT | nfsstat3::NFS3ERR_JUKEBOX => {
            tracing::warn!(%err, %status, "namespace operation failed");
        }
        _ => tracing::debug!(%err, %status, "namespace operation refused"),
    }
    status
}

/// An NFS time from a namespace time.
pub(crate) fn nfs_time(t: Timestamp) -> nfstime3 {
    nfstime3 {
        seconds: t.seconds,
        nseconds: t.nanos,
    }
}

/// A namespace time from an NFS time (nanoseconds clamped to below 1 s).
pub(crate) fn ns_time(t: nfstime3) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanos: t.nseconds.min(999_999_999),
    }
}

/// The attributes of `inode`; `fsid` identifies the file system (the
/// cluster's handle generation, the same at every access server).
pub(crate) fn fattr(inode: &Inode, fsid: u64) -> fattr3 {
    let type_ = match inode.kind {
        FileKind::Regular => ftype3::NF3REG,
        FileKind::Directory => ftype3::NF3DIR,
        FileKind::Symlink => ftype3::NF3LNK,
    };
    fattr3 {
        type_,
        mode: inode.mode & 0o7777,
        nlink: inode.nlink,
        uid: inode.uid,
        gid: inode.gid,
        size: inode.size,
        used: inode.size,
        rdev: specdata3::default(),
        fsid,
        fileid: inode.id,
        atime: nfs_time(inode.atime),
        mtime: nfs_time(inode.mtime),
        ctime: nfs_time(inode.ctime),
    }
}

/// `post_op_attr` of an inode that may be unknown.
pub(crate) fn post_op(inode: Option<&Inode>, fsid: u64) -> post_op_attr {
    match inode {
        Some(inode) => Nfs3Option::Some(fattr(inode, fsid)),
        None => Nfs3Option::None,
    }
}

/// `wcc_data` with only post-operation attributes.
///
/// Pre-operation attributes are always omitted: the namespace changes a
/// directory in one meta-kvs transaction and does not return its
/// attributes from just before that transaction, and attributes read
/// earlier could hide a concurrent change from another client. RFC 1813
/// allows omitting them; clients then revalidate their caches.
pub(crate) fn wcc(after: Option<&Inode>, fsid: u64) -> wcc_data {
    wcc_data {
        before: pre_op_attr::None,
        after: post_op(after, fsid),
    }
}

/// The namespace attributes to set from an NFS `sattr3`.
pub(crate) fn set_attrs(attrs: &sattr3) -> SetAttrs {
    let opt = |o: &Nfs3Option<u32>| match o {
        Nfs3Option::Some(v) => Some(*v),
        Nfs3Option::None => None,
    };
    SetAttrs {
        mode: opt(&attrs.mode),
        uid: opt(&attrs.uid),
        gid: opt(&attrs.gid),
        size: match attrs.size {
            Nfs3Option::Some(size) => Some(size),
            Nfs3Option::None => None,
        },
        atime: match attrs.atime {
            set_atime::DONT_CHANGE => None,
            set_atime::SET_TO_SERVER_TIME => Some(SetTime::ServerNow),
            set_atime::SET_TO_CLIENT_TIME(t) => Some(SetTime::At(ns_time(t))),
        },
        mtime: match attrs.mtime {
            set_mtime::DONT_CHANGE => None,
            set_mtime::SET_TO_SERVER_TIME => Some(SetTime::ServerNow),
            set_mtime::SET_TO_CLIENT_TIME(t) => Some(SetTime::At(ns_time(t))),
        },
    }
}

/// Decodes procedure arguments; `None` when they are not valid XDR.
pub(crate) fn decode<T: Unpack>(args: &[u8]) -> Option<T> {
    T::unpack(&mut Cursor::new(args))
        .ok()
        .map(|(value, _)| value)
}

/// The XDR encoding of a procedure's results.
pub(crate) fn encode(results: &impl Pack) -> ProcResult {
    let mut body = Vec::with_capacity(results.packed_size());
    match results.pack(&mut body) {
        Ok(_) => ProcResult::Success(body),
        Err(error) => {
            tracing::error!(%error, "encoding NFS/MOUNT results failed");
            ProcResult::SystemErr
        }
    }
}
