//! RENAME (RFC 1813 §3.3.14) in one transaction.

use super::keys::{cookie_key, inode_key, name_key, validate_name};
use super::record::{encode_entry, encode_inode, encode_name, Inode, NameEntry, Timestamp};
use super::txn::{commit, new_token, Attempts, Check, Txn};
use super::{Namespace, NamespaceError, ROOT_ID};

/// The deepest directory tree a rename walks before calling it corrupt
/// (a parent cycle).
const MAX_DEPTH: usize = 4096;

impl Namespace {
    /// Moves `from_name` of `from_dir` to `to_name` of `to_dir` (NFS
    /// RENAME). An existing target is replaced when compatible and its inode
    /// returned (so the caller can delete its data):
    ///
    /// * file over file, directory over an *empty* directory: replaced;
    /// * directory over a non-empty directory: [`NamespaceError::NotEmpty`];
    /// * directory over a non-directory: [`NamespaceError::NotDir`];
    /// * non-directory over a directory: [`NamespaceError::IsDir`]
    ///   (RFC 1813 allows `NFS3ERR_EXIST` for both; these are what knfsd
    ///   answers and what POSIX `rename` callers expect);
    /// * source and target the same entry (or the same object): no-op;
    /// * a directory into itself or its own subtree:
    ///   [`NamespaceError::Inval`].
    pub async fn rename(
        &self,
        from_dir: u64,
        from_name: &[u8],
        to_dir: u64,
        to_name: &[u8],
    ) -> Result<Option<Inode>, NamespaceError> {
        let _changing = self.cache.change();
        validate_name(from_name)?;
        validate_name(to_name)?;
        let mut attempts = Attempts::new();
        let rename = Rename {
            from_dir,
            from_name,
            to_dir,
            to_name,
        };
        let result = self.rename_attempts(&rename, &mut attempts).await;
        result.map_err(|err| attempts.explain(err))
    }

    async fn rename_attempts(
        &self,
        rename: &Rename<'_>,
        attempts: &mut Attempts<Option<Inode>>,
    ) -> Result<Option<Inode>, NamespaceError> {
        let Rename {
            from_dir,
            from_name,
            to_dir,
            to_name,
        } = *rename;
        loop {
            attempts.begin().await?;
            let (fd, td, src, dst) = futures::join!(
                self.dir(from_dir),
                self.dir(to_dir),
                self.read_name(from_dir, from_name),
                self.read_name(to_dir, to_name)
            );
            let (fd, td, src, dst) = (fd?, td?, src?, dst?);
            match attempts.check(fd.version, fd.change_token) {
                Check::Landed(replaced) => return Ok(replaced),
                Check::Ambiguous => return Err(attempts.give_up()),
                Check::Proceed => {}
            }
            let src = src.ok_or(NamespaceError::NoEnt)?;
            if (rename.same_dir() && from_name == to_name)
                || dst.as_ref().is_some_and(|d| d.id == src.id)
            {
                return Ok(None);
            }
            let Some(plan) = self.plan(rename, fd, td, src, dst).await? else {
                continue; // changed meanwhile: read again
            };
            let token = new_token();
            let txn = rename.transaction(&plan, token);
            let outcome = commit(&self.client, txn).await?;
            let result = plan.replaced.map(|(_, old)| old);
            if let Some(replaced) = attempts.record(outcome, token, plan.from.version, result) {
                return Ok(replaced);
            }
        }
    }

    /// Reads what the rename changes besides the directories and the
    /// names: the moved object, the replaced one, and for a directory
    /// moving elsewhere the target's ancestors. `None` when an entry
    /// changed meanwhile (read again); an error when the target cannot be
    /// replaced or the move would make a cycle.
    async fn plan(
        &self,
        rename: &Rename<'_>,
        from: Inode,
        to: Inode,
        src: NameEntry,
        dst: Option<NameEntry>,
    ) -> Result<Option<RenamePlan>, NamespaceError> {
        let Some(moved) = self.child(rename.from_dir, rename.from_name, &src).await? else {
            return Ok(None);
        };
        // A directory moving to another directory: the target must not
        // be inside it. The versions of the walked ancestors are
        // conditions, so a concurrent rename cannot make a cycle.
        let mut ancestors = Vec::new();
        if moved.is_dir() && !rename.same_dir() {
            ancestors = self.ancestors(&to, src.id).await?;
        }
        let replaced = match dst {
            Some(dst) => {
                let Some(old) = self.child(rename.to_dir, rename.to_name, &dst).await? else {
                    return Ok(None);
                };
                match (moved.is_dir(), old.is_dir()) {
                    (true, false) => return Err(NamespaceError::NotDir),
                    (false, true) => return Err(NamespaceError::IsDir),
                    (true, true) if old.entries > 0 => return Err(NamespaceError::NotEmpty),
                    _ => {}
                }
                Some((dst, old))
            }
            None => None,
        };
        Ok(Some(RenamePlan {
            from,
            to,
            src,
            moved,
            replaced,
            ancestors,
        }))
    }

    /// The ids and versions of `dir` and its ancestors up to the root;
    /// [`NamespaceError::Inval`] when `moving` is one of them.
    async fn ancestors(&self, dir: &Inode, moving: u64) -> Result<Vec<(u64, u64)>, NamespaceError> {
        let mut chain = Vec::new();
        let mut current = dir.clone();
        loop {
            if current.id == moving {
                return Err(NamespaceError::Inval("cannot move a directory into itself"));
            }
            chain.push((current.id, current.version));
            if current.id == ROOT_ID {
                return Ok(chain);
            }
            if chain.len() > MAX_DEPTH {
                return Err(NamespaceError::corrupt(
                    format!("directory {}", dir.id),
                    "no path to the root",
                ));
            }
            current = self.dir(current.parent).await?;
        }
    }
}

/// The names a rename moves between.
#[derive(Clone, Copy)]
struct Rename<'a> {
    from_dir: u64,
    from_name: &'a [u8],
    to_dir: u64,
    to_name: &'a [u8],
}

/// What one attempt of a rename read, and changes.
struct RenamePlan {
    /// The source directory.
    from: Inode,
    /// The target directory (the same inode as `from` within one).
    to: Inode,
    /// The source name's entry.
    src: NameEntry,
    /// The object moved.
    moved: Inode,
    /// The target name's entry and the object it names, if it exists.
    replaced: Option<(NameEntry, Inode)>,
    /// The target directory's ancestors (id, version) walked for a
    /// directory moving elsewhere.
    ancestors: Vec<(u64, u64)>,
}

impl Rename<'_> {
    fn same_dir(&self) -> bool {
        self.from_dir == self.to_dir
    }

    /// The transaction of `plan`, conditional on the versions it read.
    fn transaction(&self, plan: &RenamePlan, token: u64) -> Txn {
        let (from, to_other, seq) = self.updated_dirs(plan, token);
        let moved = &plan.moved;
        let mut new_moved = moved.clone();
        new_moved.ctime = from.ctime;
        if moved.is_dir() {
            new_moved.parent = self.to_dir;
        }
        let entry = NameEntry {
            id: moved.id,
            kind: moved.kind,
            seq,
            version: 0,
        };
        let mut txn = Txn::default();
        txn.version(name_key(self.from_dir, self.from_name), plan.src.version)
            .version(
                name_key(self.to_dir, self.to_name),
                plan.replaced.as_ref().map_or(0, |(d, _)| d.version),
            )
            .version(inode_key(self.from_dir), plan.from.version)
            .version(inode_key(moved.id), moved.version);
        if !self.same_dir() {
            txn.version(inode_key(self.to_dir), plan.to.version);
        }
        for &(id, version) in &plan.ancestors {
            if id != self.from_dir && id != self.to_dir {
                txn.version(inode_key(id), version);
            }
        }
        if let Some((dst, old)) = &plan.replaced {
            txn.version(inode_key(old.id), old.version)
                .delete(cookie_key(self.to_dir, dst.seq))
                .delete(inode_key(old.id));
        }
        txn.delete(name_key(self.from_dir, self.from_name))
            .delete(cookie_key(self.from_dir, plan.src.seq))
            .put(name_key(self.to_dir, self.to_name), encode_name(&entry))
            .put(
                cookie_key(self.to_dir, seq),
                encode_entry(self.to_name, moved.id, moved.kind),
            )
            .put(inode_key(moved.id), encode_inode(&new_moved))
            .put(inode_key(self.from_dir), encode_inode(&from));
        if let Some(to) = &to_other {
            txn.put(inode_key(self.to_dir), encode_inode(to));
        }
        txn
    }

    /// The source directory after the move, the target directory when it
    /// is another one, and the cookie sequence number of the new entry.
    fn updated_dirs(&self, plan: &RenamePlan, token: u64) -> (Inode, Option<Inode>, u64) {
        let now = Timestamp::now();
        let moved_dir = plan.moved.is_dir();
        let mut from = plan.from.clone();
        let mut to_other = (!self.same_dir()).then(|| plan.to.clone());
        from.entry_removed(moved_dir);
        let seq = {
            let to = to_other.as_mut().unwrap_or(&mut from);
            let seq = to.take_seq();
            to.entry_added(moved_dir);
            if let Some((_, old)) = &plan.replaced {
                to.entry_removed(old.is_dir());
            }
            to.contents_changed(now, token);
            seq
        };
        from.contents_changed(now, token);
        (from, to_other, seq)
    }
}
