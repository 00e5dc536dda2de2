//! Which copies of a block are complete: markers of trimmed and deleted blocks,
//! and the base rule of partial writes.
//!
//! # The hole this closes
//!
//! After geo replication the primary keeps the site's copy and the
//! secondary's copy is trimmed (docs/ARCHITECTURE.md#invariant-2). A later 4 KiB write goes to
//! the pair again; if the secondary simply took it, it would hold a sparse
//! copy at the newest version (one chunk, zeros elsewhere) that no reader
//! can tell from a complete one: lose the primary, and every read of the
//! block returns zeros, then replication ships those zeros to every site.
//! The same goes for a core that was down while the block was written (a
//! complete but old copy patched to the newest version) and for a core
//! that never held the block. And a block deleted by a truncate must not
//! come back from an older copy (a late write, another site's copy that
//! missed the delete) when the file grows again.
//!
//! # The rule
//!
//! A copy is **complete at version v** when it holds every write of the
//! block up to v: a stored block at v, a block deleted at v (it reads as
//! zeros), or no record of the block at all (complete at 0: the block
//! exists nowhere yet). A **partial write names its base**, the version of
//! the block it applies on ([`WriteBase::On`]), and a core applies it only
//! on a copy complete at exactly that version; otherwise it refuses with
//! [`CoreError::BaseMismatch`] and changes nothing. The writer then seeds
//! the copy with the block's newest complete copy (of its site, else of
//! another site) and sends the write again (see the block manager's
//! writer). A write of the whole block ([`WriteBase::Replace`]) and a
//! whole-block replica need no base. A retry of a write the copy already
//! holds (same version) is accepted whatever its base.
//!
//! # Markers
//!
//! A core keeps a **marker** of a block it holds no data of but knows
//! about (key `t | file_id | index`, [`Marker`]):
//!
//! - **Trimmed at v**: the geo-replication trim removed this copy at v
//!   (other sites hold v or newer). The copy is complete at no version, so
//!   a partial write never matches it; reads report it, so that a site
//!   whose kept copy was lost goes to another site instead of reading the
//!   block as absent (zeros).
//! - **Deleted at v**: a truncate or remove deleted the block up to v (a
//!   tombstone). The copy is complete, empty, at v; reads report it, so
//!   that it wins over an older copy elsewhere, and listings can report it
//!   (a handover then never copies an older copy back).
//!
//! Nothing at or below a marker's version is written (docs/ARCHITECTURE.md#invariant-8), except
//! a replica at exactly a trimmed version (the copy restored); a write at
//! exactly a trimmed version (a retry that came after the trim) is answered
//! as done and changes nothing. Any data
//! written on the block (a whole write, a seed, a replica) removes the
//! marker in the same batch.

use geonfs_proto::domain::{BlockId, Version, WriteBase};
use rocksdb::{ReadOptions, DB};

use super::delete::{range_cover, strongest};
use super::{BlockStore, Inner};
pub use crate::codec::Marker;
use crate::codec::{block_of_marker_key, marker_key, marker_lower, marker_upper, ranges_key};
use crate::CoreError;

/// The marker a value of `block`'s marker key holds.
pub(super) fn decode_marker(block: BlockId, value: &[u8]) -> Result<Marker, CoreError> {
    Marker::decode(value).ok_or_else(|| CoreError::Corrupt {
        what: format!("marker of block {block}"),
        detail: format!("{} bytes do not decode", value.len()),
    })
}

/// What a core does with a write that passed [`check_write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Apply it.
    Apply,
    /// Nothing: this copy held exactly the write's version and was trimmed
    /// after it shipped (a retry that came after the trim); the version is
    /// durable on the site's kept copy and at the other sites.
    Shipped,
}

/// Checks a write at `version` with `base` against the copy a core holds:
/// `held` the version of its stored block (`None`: no data), `marker` its
/// marker.
pub(super) fn check_write(
    block: BlockId,
    held: Option<Version>,
    marker: Option<Marker>,
    version: Version,
    base: WriteBase,
) -> Result<Check, CoreError> {
    if held == Some(version) {
        // A retry of a write this copy already holds.
        return Ok(Check::Apply);
    }
    if held.is_none() && marker == Some(Marker::Trimmed(version)) {
        return Ok(Check::Shipped);
    }
    let newest = held
        .unwrap_or(Version::ZERO)
        .max(marker.map_or(Version::ZERO, Marker::version));
    if version <= newest {
        return Err(CoreError::StaleVersion {
            block,
            stored: newest,
            offered: version,
        });
    }
    let WriteBase::On(base) = base else {
        return Ok(Check::Apply);
    };
    if complete_at(held, marker) == Some(base) {
        Ok(Check::Apply)
    } else {
        Err(CoreError::BaseMismatch {
            block,
            base,
            held,
            marker,
        })
    }
}

/// The version a copy is complete at (see the module documentation):
/// `held` the version of its stored block (`None`: no data), `marker` its
/// marker; `None` for a trimmed copy.
pub(super) fn complete_at(held: Option<Version>, marker: Option<Marker>) -> Option<Version> {
    match (held, marker) {
        (Some(held), _) => Some(held),
        (None, None) => Some(Version::ZERO),
        (None, Some(Marker::Deleted(deleted))) => Some(deleted),
        (None, Some(Marker::Trimmed(_))) => None,
    }
}

impl BlockStore {
    /// Up to `limit` blocks deleted here (a deleted marker, no data) after
    /// `start_after` (all from the start if `None`), in (file_id, index)
    /// order, with their delete versions, and whether more follow.
    pub async fn list_deleted(
        &self,
        start_after: Option<BlockId>,
        limit: usize,
    ) -> Result<(Vec<(BlockId, Version)>, bool), CoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.list_deleted_blocking(start_after, limit)).await?
    }
}

impl Inner {
    fn list_deleted_blocking(
        &self,
        start_after: Option<BlockId>,
        limit: usize,
    ) -> Result<(Vec<(BlockId, Version)>, bool), CoreError> {
        let db = self.db()?;
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(marker_upper());
        let mut iter = db.raw_iterator_opt(read_options);
        match start_after {
            Some(block) => {
                let key = marker_key(block);
                iter.seek(key);
                if iter.key() == Some(&key[..]) {
                    iter.next();
                }
            }
            None => iter.seek(marker_lower()),
        }
        let mut deleted = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let block = block_of_marker_key(key).ok_or_else(|| CoreError::Corrupt {
                what: "marker key".into(),
                detail: format!("{key:?} is not a marker key"),
            })?;
            if let Marker::Deleted(version) = decode_marker(block, value)? {
                if deleted.len() >= limit {
                    return Ok((deleted, true));
                }
                deleted.push((block, version));
            }
            iter.next();
        }
        iter.status()?;
        Ok((deleted, false))
    }

    /// The block's marker, if it has one.
    /// A block inside a deleted range of its file has the range's deleted
    /// marker unless its own is newer ([`super::delete`]).
    pub(super) fn marker(&self, db: &DB, block: BlockId) -> Result<Option<Marker>, CoreError> {
        let own = match db.get_pinned(marker_key(block))? {
            None => None,
            Some(value) => Some(decode_marker(block, &value)?),
        };
        let ranges = db.get_pinned(ranges_key(block.file_id))?;
        Ok(strongest(own, range_cover(block, ranges.as_deref())?))
    }
}

#[cfg(test)]
mod tests {
    use geonfs_proto::domain::FileId;

    use super::*;

    /// Version `n`.
    fn v(n: u64) -> Version {
        Version(n)
    }

    const B: BlockId = BlockId {
        file_id: FileId(1),
        index: 2,
    };

    fn mismatch(result: Result<Check, CoreError>) -> bool {
        matches!(result, Err(CoreError::BaseMismatch { .. }))
    }

    #[test]
    fn a_partial_write_applies_only_on_a_complete_copy_at_its_base() {
        let trimmed = Some(Marker::Trimmed(v(5)));
        let deleted = Some(Marker::Deleted(v(5)));
        assert!(check_write(B, Some(v(5)), None, v(7), WriteBase::On(v(5))).is_ok());
        assert!(check_write(B, None, None, v(7), WriteBase::On(Version::ZERO)).is_ok());
        assert!(check_write(B, None, deleted, v(7), WriteBase::On(v(5))).is_ok());
        // Behind (missed version 6), absent while the block exists, trimmed.
        assert!(mismatch(check_write(
            B,
            Some(v(5)),
            None,
            v(7),
            WriteBase::On(v(6))
        )));
        assert!(mismatch(check_write(
            B,
            None,
            None,
            v(7),
            WriteBase::On(v(6))
        )));
        assert!(mismatch(check_write(
            B,
            None,
            trimmed,
            v(7),
            WriteBase::On(v(5))
        )));
        assert!(mismatch(check_write(
            B,
            None,
            trimmed,
            v(7),
            WriteBase::On(Version::ZERO)
        )));
        assert!(mismatch(check_write(
            B,
            None,
            deleted,
            v(7),
            WriteBase::On(Version::ZERO)
        )));
        // Whole writes need no base; a held version is an idempotent retry.
        assert!(check_write(B, None, trimmed, v(7), WriteBase::Replace).is_ok());
        assert!(check_write(B, Some(v(7)), None, v(7), WriteBase::On(v(3))).is_ok());
    }

    #[test]
    fn nothing_at_or_below_a_held_version_or_a_marker_is_written() {
        let cases = [
            (Some(v(5)), None),
            (None, Some(Marker::Trimmed(v(5)))),
            (None, Some(Marker::Deleted(v(5)))),
        ];
        for (held, marker) in cases {
            for base in [
                WriteBase::Replace,
                WriteBase::On(Version::ZERO),
                WriteBase::Unchecked,
            ] {
                let result = check_write(B, held, marker, v(4), base);
                assert!(
                    matches!(
                        result,
                        Err(CoreError::StaleVersion {
                            stored: Version(5),
                            ..
                        })
                    ),
                    "{held:?} {marker:?} {base:?}: {result:?}"
                );
            }
        }
        // A write at a marker's version itself: shipped (a retry after
        // the trim: nothing to do), or deleted (stale).
        assert_eq!(
            check_write(
                B,
                None,
                Some(Marker::Trimmed(v(5))),
                v(5),
                WriteBase::On(v(4))
            )
            .unwrap(),
            Check::Shipped
        );
        assert!(matches!(
            check_write(
                B,
                None,
                Some(Marker::Deleted(v(5))),
                v(5),
                WriteBase::Replace
            ),
            Err(CoreError::StaleVersion { .. })
        ));
    }

    #[test]
    fn markers_encode_and_decode() {
        for marker in [Marker::Trimmed(v(7)), Marker::Deleted(Version::MAX)] {
            assert_eq!(Marker::decode(&marker.encode()), Some(marker));
        }
        assert_eq!(Marker::decode(&[0; 8]), None);
        assert_eq!(Marker::decode(&[0; 9]), None);
    }
}
