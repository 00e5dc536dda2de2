//! CREATE, MKDIR and SYMLINK: one transaction adds the inode, both entry
//! keys and the updated directory inode.

use rand::Rng;

use super::keys::{cookie_key, inode_key, name_key, validate_name};
use super::record::{
    encode_entry, encode_inode, encode_name, FileKind, Inode, NameEntry, Timestamp,
};
use super::txn::{commit, new_token, Attempts, Check, Txn};
use super::{apply_attrs, CreateMode, Created, Namespace, NamespaceError, SetAttrs};

/// What to create.
struct NewObject<'a> {
    kind: FileKind,
    attrs: &'a SetAttrs,
    target: &'a [u8],
    mode: CreateMode,
}

impl Namespace {
    /// Creates the regular file `name` in directory `dir` with `attrs`
    /// (NFS CREATE); an existing name is handled as `mode` says.
    pub async fn create(
        &self,
        dir: u64,
        name: &[u8],
        attrs: &SetAttrs,
        mode: CreateMode,
    ) -> Result<Created, NamespaceError> {
        let _changing = self.cache.change();
        let object = NewObject {
            kind: FileKind::Regular,
            attrs,
            target: &[],
            mode,
        };
        self.make(dir, name, object).await
    }

    /// Creates the directory `name` in `dir` (NFS MKDIR);
    /// [`NamespaceError::Exist`] if the name exists.
    pub async fn mkdir(
        &self,
        dir: u64,
        name: &[u8],
        attrs: &SetAttrs,
    ) -> Result<Inode, NamespaceError> {
        let _changing = self.cache.change();
        let object = NewObject {
            kind: FileKind::Directory,
            attrs,
            target: &[],
            mode: CreateMode::Guarded,
        };
        Ok(self.make(dir, name, object).await?.inode)
    }

    /// Creates the symlink `name` in `dir` pointing at `target` (NFS
    /// SYMLINK); [`NamespaceError::Exist`] if the name exists.
    pub async fn symlink(
        &self,
        dir: u64,
        name: &[u8],
        target: &[u8],
        attrs: &SetAttrs,
    ) -> Result<Inode, NamespaceError> {
        let _changing = self.cache.change();
        if target.is_empty() {
            return Err(NamespaceError::Inval("empty symlink target"));
        }
        if target.contains(&0) {
            return Err(NamespaceError::Inval("symlink target contains NUL"));
        }
        let object = NewObject {
            kind: FileKind::Symlink,
            attrs,
            target,
            mode: CreateMode::Guarded,
        };
        Ok(self.make(dir, name, object).await?.inode)
    }

    async fn make(
        &self,
        dir_id: u64,
        name: &[u8],
        object: NewObject<'_>,
    ) -> Result<Created, NamespaceError> {
        validate_name(name)?;
        let mut attempts = Attempts::new();
        let result = self
            .make_attempts(dir_id, name, &object, &mut attempts)
            .await;
        result.map_err(|err| attempts.explain(err))
    }

    async fn make_attempts(
        &self,
        dir_id: u64,
        name: &[u8],
        object: &NewObject<'_>,
        attempts: &mut Attempts<Created>,
    ) -> Result<Created, NamespaceError> {
        // One id for every attempt of this call: when the name points at
        // it, this call created it.
        let mut our_id: Option<u64> = None;
        loop {
            attempts.begin().await?;
            let (dir, entry) = futures::join!(self.dir(dir_id), self.read_name(dir_id, name));
            let (dir, entry) = (dir?, entry?);
            if let (Some(entry), Some(id)) = (&entry, our_id) {
                if entry.id == id && attempts.had_unknown() {
                    let inode = self.inode(id).await?;
                    return Ok(Created {
                        inode,
                        created: true,
                    });
                }
            }
            match attempts.check(dir.version, dir.change_token) {
                Check::Landed(created) => return Ok(created),
                Check::Ambiguous => return Err(attempts.give_up()),
                Check::Proceed => {}
            }
            if let Some(entry) = entry {
                return self.existing(entry, object).await;
            }
            let id = match our_id {
                Some(id) => id,
                None => {
                    let id = self.ids.next_id().await?;
                    our_id = Some(id);
                    id
                }
            };
            let now = Timestamp::now();
            let token = new_token();
            let mut child = new_inode(id, dir_id, object, now);
            child.change_token = token;
            let mut new_dir = dir.clone();
            let seq = new_dir.take_seq();
            new_dir.entry_added(object.kind == FileKind::Directory);
            new_dir.contents_changed(now, token);
            let entry = NameEntry {
                id,
                kind: object.kind,
                seq,
                version: 0,
            };
            let mut txn = Txn::default();
            txn.absent(name_key(dir_id, name))
                .version(inode_key(dir_id), dir.version)
                .absent(inode_key(id))
                .put(inode_key(id), encode_inode(&child))
                .put(name_key(dir_id, name), encode_name(&entry))
                .put(cookie_key(dir_id, seq), encode_entry(name, id, object.kind))
                .put(inode_key(dir_id), encode_inode(&new_dir));
            let outcome = commit(&self.client, txn).await?;
            let version = outcome.version();
            let result = Created {
                inode: child,
                created: true,
            };
            if let Some(mut created) = attempts.record(outcome, token, dir.version, result) {
                created.inode.version = version;
                return Ok(created);
            }
        }
    }

    /// The answer when the name exists.
    async fn existing(
        &self,
        entry: NameEntry,
        object: &NewObject<'_>,
    ) -> Result<Created, NamespaceError> {
        if object.kind != FileKind::Regular || entry.kind != FileKind::Regular {
            return Err(NamespaceError::Exist);
        }
        match object.mode {
            CreateMode::Guarded => Err(NamespaceError::Exist),
            // The file as it is: a size in the attributes is the caller's
            // to apply, with SETATTR's permission checks.
            CreateMode::Unchecked => Ok(Created {
                inode: self.inode(entry.id).await?,
                created: false,
            }),
            CreateMode::Exclusive(verifier) => {
                let inode = self.inode(entry.id).await?;
                if inode.verifier == Some(verifier) {
                    Ok(Created {
                        inode,
                        created: false,
                    })
                } else {
                    Err(NamespaceError::Exist)
                }
            }
        }
    }
}

/// A new inode for `object` in directory `parent`.
fn new_inode(id: u64, parent: u64, object: &NewObject<'_>, now: Timestamp) -> Inode {
    let (mode, nlink, size) = match object.kind {
        FileKind::Regular => (0o644, 1, 0),
        FileKind::Directory => (0o755, 2, 0),
        FileKind::Symlink => (0o777, 1, object.target.len() as u64),
    };
    let mut inode = Inode {
        id,
        kind: object.kind,
        mode,
        uid: 0,
        gid: 0,
        size,
        atime: now,
        mtime: now,
        ctime: now,
        nlink,
        symlink_target: object.target.to_vec(),
        generation: rand::rng().random(),
        parent: if object.kind == FileKind::Directory {
            parent
        } else {
            0
        },
        next_seq: if object.kind == FileKind::Directory {
            1
        } else {
            0
        },
        entries: 0,
        verifier: match object.mode {
            CreateMode::Exclusive(verifier) => Some(verifier),
            _ => None,
        },
        version: 0,
        change_token: 0,
    };
    let mut attrs = *object.attrs;
    if object.kind != FileKind::Regular {
        attrs.size = None;
    }
    apply_attrs(&mut inode, &attrs, now);
    inode
}
