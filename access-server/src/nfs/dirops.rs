//! Directory changes: CREATE, MKDIR, SYMLINK, REMOVE, RMDIR, RENAME.
//!
//! Each needs write and search permission on the directory (both
//! directories for RENAME) and a writable export; new objects belong to
//! the caller's (squashed) uid and gid.

use nfs3_types::nfs3::{
    createhow3, nfsstat3, CREATE3args, CREATE3resok, MKDIR3args, MKDIR3resok, Nfs3Option,
    REMOVE3args, REMOVE3resok, RENAME3args, RENAME3resok, RMDIR3args, RMDIR3resok, SYMLINK3args,
    SYMLINK3resok,
};

use super::access::{Identity, EXEC, WRITE};
use super::attrs::{post_op, set_attrs, status_of, wcc};
use super::program::{args, ok, NfsProgram, Reply};
use crate::namespace::{CreateMode, Inode, SetAttrs};

/// Fills in the owner of a new object: the caller's uid and gid unless the
/// attributes name others, which only the superuser (or a member of the
/// group, for the gid) may ask for (`NFS3ERR_PERM`).
fn new_owner(who: &Identity, attrs: &mut SetAttrs) -> Result<(), nfsstat3> {
    let uid = attrs.uid.unwrap_or(who.uid);
    let gid = attrs.gid.unwrap_or(who.gid);
    if !who.is_root() && (uid != who.uid || !who.in_group(gid)) {
        return Err(nfsstat3::NFS3ERR_PERM);
    }
    attrs.uid = Some(uid);
    attrs.gid = Some(gid);
    Ok(())
}

impl NfsProgram {
    /// The directory of a change, checked: writable export, a directory,
    /// write and search permission.
    async fn change_dir(
        &self,
        who: &Identity,
        fh: &nfs3_types::nfs3::nfs_fh3,
    ) -> Result<Inode, nfsstat3> {
        self.writable()?;
        let dir = self.resolve_dir(fh).await?;
        Self::require(who, &dir, WRITE | EXEC)?;
        Ok(dir)
    }

    /// The reply parts of a new object made in the directory `dir_fh`
    /// names (`dir`): handle, attributes, directory wcc.
    async fn made(
        &self,
        dir_fh: &nfs3_types::nfs3::nfs_fh3,
        dir: u64,
        object: &Inode,
    ) -> (
        nfs3_types::nfs3::post_op_fh3,
        nfs3_types::nfs3::post_op_attr,
        nfs3_types::nfs3::wcc_data,
    ) {
        let dir_after = self.after(dir).await;
        let handle = match self.mount_of(dir_fh) {
            Ok(mount) => Nfs3Option::Some(self.fh(object, mount)),
            Err(_) => Nfs3Option::None,
        };
        (
            handle,
            post_op(Some(object), self.fsid()),
            wcc(dir_after.as_ref(), self.fsid()),
        )
    }

    /// CREATE (UNCHECKED, GUARDED, EXCLUSIVE with its verifier). A size in
    /// the attributes of an UNCHECKED create over an existing file (e.g. 0:
    /// truncate) is applied as SETATTR applies it, with its permission
    /// check: only the file's owner or a caller who may write the file
    /// changes its size (write permission on the directory is not enough),
    /// as Linux knfsd does.
    pub(crate) async fn create(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(CREATE3args, args);
        let dir = self.change_dir(who, &args.where_.dir).await?;
        let (mut attrs, mode) = match &args.how {
            createhow3::UNCHECKED(sattr) => (set_attrs(sattr), CreateMode::Unchecked),
            createhow3::GUARDED(sattr) => (set_attrs(sattr), CreateMode::Guarded),
            createhow3::EXCLUSIVE(verf) => (SetAttrs::default(), CreateMode::Exclusive(verf.0)),
        };
        new_owner(who, &mut attrs)?;
        let created = self
            .ns
            .create(dir.id, args.where_.name.as_ref(), &attrs, mode)
            .await
            .map_err(status_of)?;
        // A new file has its attributes already (and no data to change).
        let object = match (created.created, attrs.size) {
            (true, _) => created.inode,
            (false, Some(size)) => self.resize_existing(who, created.inode, size).await?,
            (false, None) => self.current(created.inode).await?,
        };
        let (obj, obj_attributes, dir_wcc) = self.made(&args.where_.dir, dir.id, &object).await;
        ok(&CREATE3resok {
            obj,
            obj_attributes,
            dir_wcc,
        })
    }

    /// The size change of an UNCHECKED CREATE over the existing file
    /// `existing`, checked and applied as SETATTR's; the file after.
    async fn resize_existing(
        &self,
        who: &Identity,
        existing: Inode,
        size: u64,
    ) -> Result<Inode, nfsstat3> {
        self.forget_owned(existing.id);
        let before = self.current(existing).await?;
        Self::may_resize(who, &before)?;
        self.resize_data(&before, size).await?;
        let resize = SetAttrs {
            size: Some(size),
            ..SetAttrs::default()
        };
        let after = self
            .ns
            .setattr(before.id, &resize, None)
            .await
            .map_err(status_of)?;
        self.current(after).await
    }

    /// MKDIR.
    pub(crate) async fn mkdir(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(MKDIR3args, args);
        let dir = self.change_dir(who, &args.where_.dir).await?;
        let mut attrs = set_attrs(&args.attributes);
        attrs.size = None;
        new_owner(who, &mut attrs)?;
        let object = self
            .ns
            .mkdir(dir.id, args.where_.name.as_ref(), &attrs)
            .await
            .map_err(status_of)?;
        let (obj, obj_attributes, dir_wcc) = self.made(&args.where_.dir, dir.id, &object).await;
        ok(&MKDIR3resok {
            obj,
            obj_attributes,
            dir_wcc,
        })
    }

    /// SYMLINK.
    pub(crate) async fn symlink(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(SYMLINK3args, args);
        let dir = self.change_dir(who, &args.where_.dir).await?;
        let mut attrs = set_attrs(&args.symlink.symlink_attributes);
        attrs.size = None;
        new_owner(who, &mut attrs)?;
        let object = self
            .ns
            .symlink(
                dir.id,
                args.where_.name.as_ref(),
                args.symlink.symlink_data.as_ref(),
                &attrs,
            )
            .await
            .map_err(status_of)?;
        let (obj, obj_attributes, dir_wcc) = self.made(&args.where_.dir, dir.id, &object).await;
        ok(&SYMLINK3resok {
            obj,
            obj_attributes,
            dir_wcc,
        })
    }

    /// REMOVE (not of a directory: `NFS3ERR_ISDIR`).
    pub(crate) async fn remove(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(REMOVE3args, args);
        let dir = self.change_dir(who, &args.object.dir).await?;
        let removed = self
            .ns
            .remove(dir.id, args.object.name.as_ref())
            .await
            .map_err(status_of)?;
        self.release(Some(removed)).await;
        let dir_after = self.after(dir.id).await;
        ok(&REMOVE3resok {
            dir_wcc: wcc(dir_after.as_ref(), self.fsid()),
        })
    }

    /// RMDIR (`NFS3ERR_NOTEMPTY` for a directory with entries).
    pub(crate) async fn rmdir(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(RMDIR3args, args);
        let dir = self.change_dir(who, &args.object.dir).await?;
        self.ns
            .rmdir(dir.id, args.object.name.as_ref())
            .await
            .map_err(status_of)?;
        let dir_after = self.after(dir.id).await;
        ok(&RMDIR3resok {
            dir_wcc: wcc(dir_after.as_ref(), self.fsid()),
        })
    }

    /// RENAME, replacing a compatible existing target atomically.
    pub(crate) async fn rename(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(RENAME3args, args);
        let from = self.change_dir(who, &args.from.dir).await?;
        let to = self.change_dir(who, &args.to.dir).await?;
        let replaced = self
            .ns
            .rename(
                from.id,
                args.from.name.as_ref(),
                to.id,
                args.to.name.as_ref(),
            )
            .await
            .map_err(status_of)?;
        self.release(replaced).await;
        let (from_after, to_after) = futures::join!(self.after(from.id), self.after(to.id));
        ok(&RENAME3resok {
            fromdir_wcc: wcc(from_after.as_ref(), self.fsid()),
            todir_wcc: wcc(to_after.as_ref(), self.fsid()),
        })
    }
}
