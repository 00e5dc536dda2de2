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
        let result = self
            .rename_attempts(from_dir, from_name, to_dir, to_name, &mut attempts)
            .await;
        result.map_err(|err| attempts.explain(err))
    }

    async fn rename_attempts(
        &self,
        from_dir: u64,
        from_name: &[u8],
        to_dir: u64,
        to_name: &[u8],
        attempts: &mut Attempts<Option<Inode>>,
    ) -> Result<Option<Inode>, NamespaceError> {
        let same_dir = from_dir == to_dir;
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
            if (same_dir && from_name == to_name) || dst.is_some_and(|d| d.id == src.id) {
                return Ok(None);
            }
            let Some(moved) = self.child(from_dir, from_name, &src).await? else {
                continue; // changed meanwhile: read again
            };
            // A directory moving to another directory: the target must not
            // be inside it. The versions of the walked ancestors are
            // conditions, so a concurrent rename cannot make a cycle.
            let mut ancestors = Vec::new();
            if moved.is_dir() && !same_dir {
                ancestors = self.ancestors(&td, src.id).await?;
            }
            let replaced = match dst {
                Some(dst) => {
                    let Some(old) = self.child(to_dir, to_name, &dst).await? else {
                        continue;
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

            let now = Timestamp::now();
            let token = new_token();
            let mut from = fd.clone();
            let mut to_other = (!same_dir).then(|| td.clone());
            from.entries = from.entries.saturating_sub(1);
            if moved.is_dir() {
                from.nlink = from.nlink.saturating_sub(1);
            }
            let seq = {
                let to = to_other.as_mut().unwrap_or(&mut from);
                let seq = to.next_seq.max(1);
                to.next_seq = seq + 1;
                to.entries += 1;
                if moved.is_dir() {
                    to.nlink += 1;
                }
                if let Some((_, old)) = &replaced {
                    to.entries = to.entries.saturating_sub(1);
                    if old.is_dir() {
                        to.nlink = to.nlink.saturating_sub(1);
                    }
                }
                to.mtime = now;
                to.ctime = now;
                to.change_token = token;
                seq
            };
            from.mtime = now;
            from.ctime = now;
            from.change_token = token;
            let mut new_moved = moved.clone();
            new_moved.ctime = now;
            if moved.is_dir() {
                new_moved.parent = to_dir;
            }
            let entry = NameEntry {
                id: moved.id,
                kind: moved.kind,
                seq,
                version: 0,
            };

            let mut txn = Txn::default();
            txn.version(name_key(from_dir, from_name), src.version)
                .version(
                    name_key(to_dir, to_name),
                    replaced.as_ref().map_or(0, |(d, _)| d.version),
                )
                .version(inode_key(from_dir), fd.version)
                .version(inode_key(moved.id), moved.version);
            if !same_dir {
                txn.version(inode_key(to_dir), td.version);
            }
            for (id, version) in ancestors {
                if id != from_dir && id != to_dir {
                    txn.version(inode_key(id), version);
                }
            }
            if let Some((dst, old)) = &replaced {
                txn.version(inode_key(old.id), old.version)
                    .delete(cookie_key(to_dir, dst.seq))
                    .delete(inode_key(old.id));
            }
            txn.delete(name_key(from_dir, from_name))
                .delete(cookie_key(from_dir, src.seq))
                .put(name_key(to_dir, to_name), encode_name(&entry))
                .put(
                    cookie_key(to_dir, seq),
                    encode_entry(to_name, moved.id, moved.kind),
                )
                .put(inode_key(moved.id), encode_inode(&new_moved))
                .put(inode_key(from_dir), encode_inode(&from));
            if let Some(to) = &to_other {
                txn.put(inode_key(to_dir), encode_inode(to));
            }
            let outcome = commit(&self.client, txn).await?;
            let result = replaced.map(|(_, old)| old);
            if let Some(replaced) = attempts.record(outcome, token, fd.version, result) {
                return Ok(replaced);
            }
        }
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
