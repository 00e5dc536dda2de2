//! The root, GETATTR, LOOKUP, READLINK, READDIR, SETATTR, REMOVE and RMDIR.

use geonfs_proto::domain::MAX_SCAN_LIMIT;
use rand::Rng;

use super::keys::{cookie_end, cookie_key, inode_key, name_key, parse_cookie_key, validate_name};
use super::record::{decode_entry, decode_inode, encode_inode, FileKind, Inode, Timestamp};
use super::txn::{commit, new_token, Attempts, Check, Txn};
use super::{apply_attrs, Namespace, NamespaceError, ReadDir, SetAttrs, ROOT_ID};

impl Namespace {
    /// The root directory ([`ROOT_ID`]), created if it does not exist yet.
    /// Idempotent, safe to call concurrently from every access server.
    pub async fn ensure_root(&self) -> Result<Inode, NamespaceError> {
        let mut attempts: Attempts<()> = Attempts::new();
        loop {
            attempts.begin().await?;
            if let Some(kv) = self.client.get(inode_key(ROOT_ID)).await? {
                let root = decode_inode(ROOT_ID, kv.version, &kv.value)?;
                if !root.is_dir() {
                    return Err(NamespaceError::corrupt("root", "not a directory"));
                }
                return Ok(root);
            }
            let now = Timestamp::now();
            let root = Inode {
                id: ROOT_ID,
                kind: FileKind::Directory,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                nlink: 2,
                symlink_target: Vec::new(),
                generation: rand::rng().random(),
                parent: ROOT_ID,
                next_seq: 1,
                entries: 0,
                verifier: None,
                version: 0,
                change_token: new_token(),
            };
            let mut txn = Txn::default();
            txn.absent(inode_key(ROOT_ID))
                .put(inode_key(ROOT_ID), encode_inode(&root));
            // Whatever happened, the next round reads the root that won.
            commit(&self.client, txn).await?;
        }
    }

    /// The attributes of `id` (NFS GETATTR); [`NamespaceError::Stale`] for
    /// an unknown id. Served from the [`InodeCache`](super::InodeCache)
    /// when it holds `id` (see there for what that may miss).
    pub async fn getattr(&self, id: u64) -> Result<Inode, NamespaceError> {
        if let Some(inode) = self.cache.get(id) {
            return Ok(inode);
        }
        let ticket = self.cache.begin();
        let inode = self.inode(id).await?;
        self.cache.insert(ticket, &inode);
        Ok(inode)
    }

    /// The attributes of `id` read from meta-kvs, never from the
    /// [`InodeCache`](super::InodeCache) (which they refresh).
    pub async fn getattr_fresh(&self, id: u64) -> Result<Inode, NamespaceError> {
        let ticket = self.cache.begin();
        let inode = self.inode(id).await?;
        self.cache.insert(ticket, &inode);
        Ok(inode)
    }

    /// How long a GETATTR or LOOKUP result is trusted (`[nfs]
    /// attribute_cache`; zero when nothing is cached).
    pub fn attribute_ttl(&self) -> std::time::Duration {
        self.cache.ttl()
    }

    /// The object `name` in directory `dir` (NFS LOOKUP); `.` is the
    /// directory, `..` its parent (the root's parent is the root).
    pub async fn lookup(&self, dir: u64, name: &[u8]) -> Result<Inode, NamespaceError> {
        if name == b"." {
            return self.dir(dir).await;
        }
        if name == b".." {
            let dir = self.dir(dir).await?;
            return self.inode(dir.parent).await;
        }
        validate_name(name)?;
        let ticket = self.cache.begin();
        // A file id is never reused and never changes kind: a cached
        // directory is still one (or gone, and the name with it).
        let (d, entry) = futures::join!(self.getattr(dir), self.read_name(dir, name));
        if !d?.is_dir() {
            return Err(NamespaceError::NotDir);
        }
        let entry = entry?.ok_or(NamespaceError::NoEnt)?;
        // Removed between the two reads: the name is gone too.
        let inode = self
            .read_inode(entry.id)
            .await?
            .ok_or(NamespaceError::NoEnt)?;
        self.cache.insert(ticket, &inode);
        Ok(inode)
    }

    /// The target of symlink `id` (NFS READLINK); [`NamespaceError::Inval`]
    /// when it is not a symlink.
    pub async fn readlink(&self, id: u64) -> Result<Vec<u8>, NamespaceError> {
        let inode = self.inode(id).await?;
        if inode.kind != FileKind::Symlink {
            return Err(NamespaceError::Inval("not a symlink"));
        }
        Ok(inode.symlink_target)
    }

    /// Up to `max_entries` entries of `dir` after `cookie` (0 = from the
    /// start), in cookie order (NFS READDIR). Cookies stay valid across
    /// changes of the directory: an entry present during the whole listing
    /// is listed exactly once; `.` and `..` are not listed.
    pub async fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        max_entries: u32,
    ) -> Result<ReadDir, NamespaceError> {
        self.dir(dir).await?;
        let Some(from) = cookie.checked_add(1) else {
            return Ok(ReadDir {
                entries: Vec::new(),
                eof: true,
            });
        };
        let limit = max_entries.clamp(1, MAX_SCAN_LIMIT);
        let (kvs, more) = self
            .client
            .scan(cookie_key(dir, from), cookie_end(dir), limit)
            .await?;
        let mut entries = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let seq = parse_cookie_key(dir, &kv.key).ok_or_else(|| {
                NamespaceError::corrupt(format!("directory {dir}"), "bad cookie key")
            })?;
            entries.push(decode_entry(dir, seq, &kv.value)?);
        }
        Ok(ReadDir {
            entries,
            eof: !more,
        })
    }

    /// Sets attributes of `id` (NFS SETATTR) and its ctime; with
    /// `guard_ctime`, only if the ctime is still that
    /// ([`NamespaceError::NotSync`] otherwise). Setting the size changes the
    /// mtime too unless `attrs` sets it. The new attributes.
    pub async fn setattr(
        &self,
        id: u64,
        attrs: &SetAttrs,
        guard_ctime: Option<Timestamp>,
    ) -> Result<Inode, NamespaceError> {
        let _changing = self.cache.change();
        let mut attempts = Attempts::new();
        let result = self
            .setattr_attempts(id, attrs, guard_ctime, &mut attempts)
            .await;
        result.map_err(|err| attempts.explain(err))
    }

    async fn setattr_attempts(
        &self,
        id: u64,
        attrs: &SetAttrs,
        guard_ctime: Option<Timestamp>,
        attempts: &mut Attempts<Inode>,
    ) -> Result<Inode, NamespaceError> {
        loop {
            attempts.begin().await?;
            let inode = self.inode(id).await?;
            match attempts.check(inode.version, inode.change_token) {
                Check::Landed(inode) => return Ok(inode),
                Check::Ambiguous => return Err(attempts.give_up()),
                Check::Proceed => {}
            }
            if guard_ctime.is_some_and(|guard| guard != inode.ctime) {
                return Err(NamespaceError::NotSync);
            }
            if attrs.size.is_some() {
                match inode.kind {
                    FileKind::Regular => {}
                    FileKind::Directory => return Err(NamespaceError::IsDir),
                    FileKind::Symlink => return Err(NamespaceError::Inval("size of a symlink")),
                }
            }
            let now = Timestamp::now();
            let token = new_token();
            let mut new = inode.clone();
            apply_attrs(&mut new, attrs, now);
            if attrs.size.is_some_and(|size| size != inode.size) && attrs.mtime.is_none() {
                new.mtime = now;
            }
            new.ctime = now;
            new.change_token = token;
            let mut txn = Txn::default();
            txn.version(inode_key(id), inode.version)
                .put(inode_key(id), encode_inode(&new));
            let outcome = commit(&self.client, txn).await?;
            let version = outcome.version();
            if let Some(mut new) = attempts.record(outcome, token, inode.version, new) {
                new.version = version;
                return Ok(new);
            }
        }
    }

    /// Removes the non-directory `name` from `dir` (NFS REMOVE); the
    /// removed inode, so the caller can delete its data.
    /// [`NamespaceError::IsDir`] for a directory.
    pub async fn remove(&self, dir: u64, name: &[u8]) -> Result<Inode, NamespaceError> {
        let _changing = self.cache.change();
        self.unlink(dir, name, false).await
    }

    /// Removes the empty directory `name` from `dir` (NFS RMDIR); the
    /// removed inode. [`NamespaceError::NotDir`] for a non-directory,
    /// [`NamespaceError::NotEmpty`] for a directory with entries.
    pub async fn rmdir(&self, dir: u64, name: &[u8]) -> Result<Inode, NamespaceError> {
        let _changing = self.cache.change();
        self.unlink(dir, name, true).await
    }

    async fn unlink(
        &self,
        dir_id: u64,
        name: &[u8],
        want_dir: bool,
    ) -> Result<Inode, NamespaceError> {
        validate_name(name)?;
        let mut attempts = Attempts::new();
        let result = self
            .unlink_attempts(dir_id, name, want_dir, &mut attempts)
            .await;
        result.map_err(|err| attempts.explain(err))
    }

    async fn unlink_attempts(
        &self,
        dir_id: u64,
        name: &[u8],
        want_dir: bool,
        attempts: &mut Attempts<Inode>,
    ) -> Result<Inode, NamespaceError> {
        loop {
            attempts.begin().await?;
            let (dir, entry) = futures::join!(self.dir(dir_id), self.read_name(dir_id, name));
            let (dir, entry) = (dir?, entry?);
            match attempts.check(dir.version, dir.change_token) {
                Check::Landed(child) => return Ok(child),
                Check::Ambiguous => return Err(attempts.give_up()),
                Check::Proceed => {}
            }
            let entry = entry.ok_or(NamespaceError::NoEnt)?;
            let Some(child) = self.child(dir_id, name, &entry).await? else {
                continue; // changed meanwhile: read again
            };
            match (want_dir, child.is_dir()) {
                (true, false) => return Err(NamespaceError::NotDir),
                (true, true) if child.entries > 0 => return Err(NamespaceError::NotEmpty),
                (false, true) => return Err(NamespaceError::IsDir),
                _ => {}
            }
            let now = Timestamp::now();
            let token = new_token();
            let mut new_dir = dir.clone();
            new_dir.entry_removed(child.is_dir());
            new_dir.contents_changed(now, token);
            let mut txn = Txn::default();
            txn.version(name_key(dir_id, name), entry.version)
                .version(inode_key(dir_id), dir.version)
                .version(inode_key(child.id), child.version)
                .delete(name_key(dir_id, name))
                .delete(cookie_key(dir_id, entry.seq))
                .delete(inode_key(child.id))
                .put(inode_key(dir_id), encode_inode(&new_dir));
            let outcome = commit(&self.client, txn).await?;
            if let Some(child) = attempts.record(outcome, token, dir.version, child) {
                return Ok(child);
            }
        }
    }
}
