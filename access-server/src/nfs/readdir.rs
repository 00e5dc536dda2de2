//! READDIR and READDIRPLUS.
//!
//! Cookies: `.` is 1, `..` is 2, and a namespace entry with readdir
//! sequence number `s` has cookie `s + 2` (namespace cookies stay valid
//! across changes of the directory, so the cookie verifier is a constant
//! and is not checked). Replies stop before the encoded size would exceed
//! the client's `count` (READDIR) or `dircount`/`maxcount` (READDIRPLUS);
//! `NFS3ERR_TOOSMALL` when not even one entry fits.

use futures::future::join_all;
use nfs3_types::nfs3::{
    cookieverf3, dirlist3, dirlistplus3, entry3, entryplus3, filename3, nfsstat3, Nfs3Option,
    READDIR3args, READDIR3resok, READDIRPLUS3args, READDIRPLUS3resok,
};
use nfs3_types::xdr_codec::{List, Opaque};

use super::access::{Identity, READ};
use super::attrs::{post_op, status_of};
use super::handle::MountRoot;
use super::program::{args, ok, NfsProgram, Reply};
use crate::namespace::Inode;

/// The cookie verifier of every listing.
pub const COOKIE_VERIFIER: [u8; 8] = *b"geonfs\0\x01";

/// Encoded size of a reply without entries: status, `post_op_attr` with
/// attributes, verifier, end-of-list marker, eof.
const REPLY_OVERHEAD: usize = 4 + 88 + 8 + 4 + 4;
/// Encoded size of an `entry3` without its name bytes: value-follows,
/// fileid, name length, cookie.
const ENTRY_OVERHEAD: usize = 4 + 8 + 4 + 8;
/// What an `entryplus3` adds to an `entry3`: attributes and a handle.
const PLUS_OVERHEAD: usize = 88 + 4 + 4 + super::handle::HANDLE_LEN;
/// The most namespace entries read for one reply.
const MAX_BATCH: u32 = 1024;

/// One entry of a listing.
struct Item {
    name: Vec<u8>,
    id: u64,
    cookie: u64,
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

impl NfsProgram {
    /// The entries of `dir` after `cookie`, `.` and `..` included, as many
    /// as fit: `entry_budget` bounds the sum of the `entry3` parts,
    /// `total_budget` the whole reply (`plus`: with attributes and handles).
    /// `..` is `dir` itself at the root of the client's mount, `mount`.
    async fn list(
        &self,
        dir: &Inode,
        mount: MountRoot,
        cookie: u64,
        entry_budget: usize,
        total_budget: usize,
        plus: bool,
    ) -> Result<(Vec<Item>, bool), nfsstat3> {
        let per_entry = ENTRY_OVERHEAD + 4 + if plus { PLUS_OVERHEAD } else { 0 };
        let batch = u32::try_from(total_budget / per_entry)
            .unwrap_or(MAX_BATCH)
            .clamp(1, MAX_BATCH);
        let mut candidates = Vec::new();
        if cookie == 0 {
            candidates.push(Item {
                name: b".".to_vec(),
                id: dir.id,
                cookie: 1,
            });
        }
        if cookie <= 1 {
            let at_mount_root = dir.id == mount.id;
            candidates.push(Item {
                name: b"..".to_vec(),
                id: if at_mount_root { dir.id } else { dir.parent },
                cookie: 2,
            });
        }
        let page = self
            .ns
            .readdir(dir.id, cookie.saturating_sub(2), batch)
            .await
            .map_err(status_of)?;
        candidates.extend(page.entries.into_iter().map(|e| Item {
            name: e.name,
            id: e.id,
            cookie: e.cookie.saturating_add(2),
        }));
        let (mut entry_used, mut total_used) = (0, REPLY_OVERHEAD);
        let count = candidates.len();
        let mut items = Vec::with_capacity(count);
        for item in candidates {
            let entry = ENTRY_OVERHEAD + padded(item.name.len());
            let total = entry + if plus { PLUS_OVERHEAD } else { 0 };
            if entry_used + entry > entry_budget || total_used + total > total_budget {
                break;
            }
            entry_used += entry;
            total_used += total;
            items.push(item);
        }
        if items.is_empty() && count > 0 {
            return Err(nfsstat3::NFS3ERR_TOOSMALL);
        }
        let eof = items.len() == count && page.eof;
        Ok((items, eof))
    }

    /// READDIR: names, file ids and cookies.
    pub(crate) async fn readdir(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(READDIR3args, args);
        let dir = self.resolve_dir(&args.dir).await?;
        Self::require(who, &dir, READ)?;
        let mount = self.mount_of(&args.dir)?;
        let budget = args.count as usize;
        let (items, eof) = self
            .list(&dir, mount, args.cookie, budget, budget, false)
            .await?;
        let entries = items
            .into_iter()
            .map(|item| entry3 {
                fileid: item.id,
                name: filename3(Opaque::owned(item.name)),
                cookie: item.cookie,
            })
            .collect();
        ok(&READDIR3resok {
            dir_attributes: post_op(Some(&dir), self.fsid()),
            cookieverf: cookieverf3(COOKIE_VERIFIER),
            reply: dirlist3 {
                entries: List(entries),
                eof,
            },
        })
    }

    /// READDIRPLUS: READDIR with each entry's attributes and handle (left
    /// out for an entry removed meanwhile).
    pub(crate) async fn readdirplus(&self, who: &Identity, args: &[u8]) -> Reply {
        let args = args!(READDIRPLUS3args, args);
        let dir = self.resolve_dir(&args.dir).await?;
        Self::require(who, &dir, READ)?;
        let mount = self.mount_of(&args.dir)?;
        let (items, eof) = self
            .list(
                &dir,
                mount,
                args.cookie,
                // Some clients send no dircount: then only maxcount bounds.
                if args.dircount == 0 {
                    args.maxcount as usize
                } else {
                    args.dircount as usize
                },
                args.maxcount as usize,
                true,
            )
            .await?;
        let inodes = join_all(items.iter().map(|item| async {
            if item.id == dir.id {
                return Some(dir.clone());
            }
            let inode = if item.name == b".." {
                // No handle above the client's mount.
                self.parent_within(&dir, mount).await.ok()?
            } else {
                self.ns.getattr(item.id).await.ok()?
            };
            self.current(inode).await.ok()
        }))
        .await;
        let entries = items
            .into_iter()
            .zip(inodes)
            .map(|(item, inode)| entryplus3 {
                fileid: item.id,
                name: filename3(Opaque::owned(item.name)),
                cookie: item.cookie,
                name_attributes: post_op(inode.as_ref(), self.fsid()),
                name_handle: match &inode {
                    Some(inode) => Nfs3Option::Some(self.fh(inode, mount)),
                    None => Nfs3Option::None,
                },
            })
            .collect();
        ok(&READDIRPLUS3resok {
            dir_attributes: post_op(Some(&dir), self.fsid()),
            cookieverf: cookieverf3(COOKIE_VERIFIER),
            reply: dirlistplus3 {
                entries: List(entries),
                eof,
            },
        })
    }
}
