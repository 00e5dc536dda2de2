//! Per-file ownership fences.
//!
//! A file is owned by one site at a time, under an ownership epoch that
//! grows at every handover. The site taking a file over at epoch E calls
//! [`BlockStore::fence`] with E on the old owner's cores (and its own):
//! from then on those cores refuse every read, write and delete of the
//! file's blocks that carries an older epoch, with
//! [`CoreError::Fenced`]. An old owner with a stale belief can then
//! neither acknowledge writes nor serve reads. A request without an epoch
//! is not checked (replication, repair, scans and tools send none).
//!
//! One record per fenced file in the store's database: key
//! `f | file_id BE`, value the epochs (u64 BE each, 0 for none), written
//! synced. The map is
//! loaded into memory at open and lives behind a `std::sync::RwLock`:
//! checked writes and deletes hold a read guard from their check until
//! their `WriteBatch` is applied (inside their blocking task, so a
//! cancelled caller cannot release it early), and a fence takes the write
//! guard while it persists and publishes the new epoch. So when a fence
//! returns, every write or delete admitted under the lower fence has
//! landed, and none can land later. Reads check without holding the guard:
//! a read that passes its check after taking its snapshot read data from
//! before the fence.
//!
//! # Every core that may hold the file is fenced
//!
//! A handover fences every core of the old owner's site and of its own and
//! goes on when all but one of each answered (so one dead core does not
//! block it); the cores it could not reach are then fenced through a peer
//! of their site (`FenceRequest.relay_to`). A core the handover missed that
//! way was down, or cut off from both the new owner and every fenced peer
//! of its site. Down, it cannot take the old owner's writes afterwards: a
//! core started by a node ([`BlockStore::require_fence_sync`]) refuses every
//! request carrying an epoch (`UNAVAILABLE`: the writer uses other cores)
//! until it has copied the fences of a peer of its site
//! (`crate::site_fences`), and every peer holds the missed fence (all but
//! one core were fenced, and this core was the one); a core that came back
//! during the fence step itself, after its catch-up read a peer, is reached
//! by the relay. What remains is a core that the old owner's access server
//! reaches while neither the new owner nor any fenced core of its own site
//! does (a partition inside the site): it could take an old-epoch write
//! alone, never acknowledged but at a version newer than the block's,
//! which its replication would ship. So a handover that missed a core
//! fences the sender instead: it revokes the file at the old owner's
//! access servers and waits until each installed the revocation (its
//! block clients then refuse to send the old epoch anywhere) or its
//! ownership lease ran out (`access-server/src/ownership/lease.rs`).
//!
//! # Takeovers from a lost owner: copies the takeover never saw
//!
//! A takeover from an owner declared lost (`geonfs failover`, `relocate
//! --owner-lost`) at epoch E cannot see what the lost site had not copied
//! out: those writes were acknowledged under an older epoch, and the new
//! owner goes on without them (the RPO). They must never come back
//! silently: shipped at heal, they would overwrite the new owner's data
//! (or revert a block it never wrote to a state it never had). So every
//! copy records the epoch it was written under ([`crate::codec::BlockMeta`]),
//! and a fence carries two more epochs ([`FileFence`]):
//!
//! - `lost_below`: the epoch of the latest takeover from a lost owner.
//!   A replica put whose copy is from an older epoch is refused
//!   ([`crate::store::queue::PutOutcome::Superseded`]) unless this core
//!   already holds that very version.
//! - `adopted_below`: copies held here from before `lost_below` are part of
//!   the file. The takeover fences every reachable core of the surviving
//!   sites (and then lists them) with `adopt`, so their copies, all seen by
//!   it, are adopted. Any other core that learns of the takeover later
//!   (the lost site's cores at heal, from a refused put or a put carrying
//!   the fence; a core that was down, from its peers at start) first **sets
//!   aside** its copies older than `lost_below` that still have a pending
//!   replication job (the writes it never copied out, so the takeover
//!   never saw them) into the quarantine ([`crate::store::quarantine`]),
//!   then adopts the rest (they were copied out, so the surviving sites
//!   hold them).
//!
//! A copy is shipped with its epoch raised to `adopted_below`; the set-aside
//! is idempotent and resumed at open when a crash cut it short.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLockReadGuard};

use geonfs_proto::domain::{Epoch, FileId};
use rocksdb::{ReadOptions, WriteOptions, DB};

use super::{BlockStore, Inner};
use crate::CoreError;

/// Key prefix of fence records.
const FENCE_TAG: u8 = b'f';

/// The fences of the files (in file order, for paging).
pub(super) type FenceMap = BTreeMap<FileId, FileFence>;

/// One file's fence on this core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileFence {
    /// Requests carrying an older owner epoch are refused (`None`: not
    /// fenced).
    pub epoch: Option<Epoch>,
    /// The epoch of the latest takeover from an owner declared lost:
    /// replica copies from an older epoch are refused (`None`: none).
    pub lost_below: Option<Epoch>,
    /// Copies held here from an epoch below this one are part of the file
    /// (seen by the takeover, or what was left after the set-aside).
    pub adopted_below: Option<Epoch>,
}

impl FileFence {
    /// Whether copies older than `lost_below` still wait to be set aside.
    pub fn set_aside_pending(&self) -> bool {
        self.lost_below > self.adopted_below
    }

    /// The epoch a copy written under `copy_epoch` is shipped with.
    pub fn shipped_epoch(&self, copy_epoch: Option<Epoch>) -> Option<Epoch> {
        copy_epoch.max(self.adopted_below)
    }

    /// `epoch | lost_below | adopted_below` (u64 BE each).
    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&Epoch::to_wire(self.epoch).to_be_bytes());
        out[8..16].copy_from_slice(&Epoch::to_wire(self.lost_below).to_be_bytes());
        out[16..24].copy_from_slice(&Epoch::to_wire(self.adopted_below).to_be_bytes());
        out
    }

    /// Decodes [`FileFence::encode`], or the epoch alone of a store
    /// written before takeovers from lost owners were recorded.
    fn decode(value: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<Option<Epoch>> {
            let bytes = value.get(i * 8..i * 8 + 8)?.try_into().ok()?;
            Some(Epoch::from_wire(u64::from_be_bytes(bytes)))
        };
        match value.len() {
            8 => Some(FileFence {
                epoch: word(0)?,
                ..FileFence::default()
            }),
            24 => Some(FileFence {
                epoch: word(0)?,
                lost_below: word(1)?,
                adopted_below: word(2)?,
            }),
            _ => None,
        }
    }
}

/// A raise of a file's fence ([`BlockStore::raise_fence`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceRaise {
    /// The new owner's epoch.
    pub epoch: Option<Epoch>,
    /// The epoch of the latest takeover from a lost owner (`None`: none
    /// known).
    pub lost_below: Option<Epoch>,
    /// The caller is a takeover that lists this core next: the copies held
    /// here are seen by it, so they are adopted instead of set aside.
    pub adopt: bool,
}

impl FenceRaise {
    /// A takeover from a lost owner at `lost_below` learned after the fact
    /// (from a put, a refusal or a peer): not adopted.
    pub fn learned(lost_below: Epoch) -> Self {
        FenceRaise {
            epoch: Some(lost_below),
            lost_below: Some(lost_below),
            adopt: false,
        }
    }
}

/// `f | file_id BE`.
fn fence_key(file_id: FileId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = FENCE_TAG;
    key[1..9].copy_from_slice(&file_id.0.to_be_bytes());
    key
}

/// Every fence record of the database.
pub(super) fn load_fences(db: &DB) -> Result<FenceMap, CoreError> {
    let mut read_options = ReadOptions::default();
    read_options.set_iterate_upper_bound(vec![FENCE_TAG + 1]);
    let mut iter = db.raw_iterator_opt(read_options);
    iter.seek([FENCE_TAG]);
    let mut fences = FenceMap::new();
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let file_id = key
            .strip_prefix(&[FENCE_TAG])
            .and_then(|id| <[u8; 8]>::try_from(id).ok())
            .map(|id| FileId(u64::from_be_bytes(id)));
        match (file_id, FileFence::decode(value)) {
            (Some(file_id), Some(fence)) => {
                fences.insert(file_id, fence);
            }
            _ => {
                return Err(CoreError::Corrupt {
                    what: "fence record".into(),
                    detail: format!("key {key:?} with a value of {} bytes", value.len()),
                })
            }
        }
        iter.next();
    }
    iter.status()?;
    Ok(fences)
}

impl Inner {
    fn fences_read(&self) -> RwLockReadGuard<'_, FenceMap> {
        self.fences.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses `offered` (counting the refusal) if it is older than the
    /// file's fence in `fences`, and every epoch while the fences are not
    /// known to be current.
    fn check_fence(
        &self,
        fences: &FenceMap,
        file_id: FileId,
        offered: Epoch,
    ) -> Result<(), CoreError> {
        if !self.fences_synced.load(Ordering::Acquire) {
            return Err(CoreError::FencesUnsynced);
        }
        let Some(fence) = fences.get(&file_id).and_then(|f| f.epoch) else {
            return Ok(());
        };
        if offered < fence {
            self.metrics.fenced_requests.inc();
            tracing::debug!(
                %file_id,
                %offered,
                %fence,
                "request refused by the file's fence"
            );
            return Err(CoreError::Fenced {
                file_id,
                offered,
                fence,
            });
        }
        Ok(())
    }

    /// Admits a write or delete of `file_id` by a caller at epoch
    /// `offered`: `None` when unchecked (no epoch), else a read guard of
    /// the fences that the caller holds until its batch is applied (a
    /// fence waits for it).
    pub(super) fn admit(
        &self,
        file_id: FileId,
        offered: Option<Epoch>,
    ) -> Result<Option<RwLockReadGuard<'_, FenceMap>>, CoreError> {
        let Some(offered) = offered else {
            return Ok(None);
        };
        let fences = self.fences_read();
        self.check_fence(&fences, file_id, offered)?;
        Ok(Some(fences))
    }

    /// Refuses a read of `file_id` by a caller at epoch `offered` older
    /// than the file's fence (no guard is kept).
    pub(super) fn check_read(
        &self,
        file_id: FileId,
        offered: Option<Epoch>,
    ) -> Result<(), CoreError> {
        let Some(offered) = offered else {
            return Ok(());
        };
        let fences = self.fences_read();
        self.check_fence(&fences, file_id, offered)
    }

    /// The file's fence (all `None` if none).
    pub(super) fn file_fence(&self, file_id: FileId) -> FileFence {
        self.fences_read()
            .get(&file_id)
            .copied()
            .unwrap_or_default()
    }

    /// Raises the file's fence (durably) under the write guard, i.e. once
    /// no checked write or delete is between its check and its batch;
    /// returns the fence after.
    fn raise_fence_blocking(
        &self,
        file_id: FileId,
        raise: FenceRaise,
    ) -> Result<FileFence, CoreError> {
        let mut fences = self.fences.write().unwrap_or_else(PoisonError::into_inner);
        let current = fences.get(&file_id).copied().unwrap_or_default();
        let lost_below = current.lost_below.max(raise.lost_below);
        let next = FileFence {
            epoch: current.epoch.max(raise.epoch).max(lost_below),
            lost_below,
            adopted_below: if raise.adopt {
                current.adopted_below.max(lost_below)
            } else {
                current.adopted_below
            },
        };
        if next == current {
            return Ok(current);
        }
        self.store_fence(file_id, next)?;
        fences.insert(file_id, next);
        tracing::info!(
            %file_id,
            from = ?current.epoch,
            to = ?next.epoch,
            ?lost_below,
            adopted_below = ?next.adopted_below,
            "file fence raised"
        );
        Ok(next)
    }

    /// Writes the file's fence record, synced.
    pub(super) fn store_fence(&self, file_id: FileId, fence: FileFence) -> Result<(), CoreError> {
        let db = self.db()?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.put_opt(fence_key(file_id), fence.encode(), &options)?;
        Ok(())
    }

    /// Records that the file's copies older than `lost_below` were set
    /// aside: the rest is adopted.
    pub(super) fn settle_fence(&self, file_id: FileId, lost_below: Epoch) -> Result<(), CoreError> {
        let mut fences = self.fences.write().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = fences.get(&file_id).copied() else {
            return Ok(());
        };
        if current.adopted_below >= Some(lost_below) {
            return Ok(());
        }
        let next = FileFence {
            adopted_below: Some(lost_below),
            ..current
        };
        self.store_fence(file_id, next)?;
        fences.insert(file_id, next);
        Ok(())
    }

    /// The files whose set-aside a crash cut short.
    pub(super) fn unsettled_files(&self) -> Vec<(FileId, Epoch)> {
        self.fences_read()
            .iter()
            .filter(|(_, f)| f.set_aside_pending())
            .filter_map(|(&file, f)| Some((file, f.lost_below?)))
            .collect()
    }
}

impl BlockStore {
    /// Raises the ownership fence of `file_id` to `max(current, epoch)`
    /// and returns the fence after. Durable when it returns, and by then
    /// no write or delete of the file admitted under a lower fence is in
    /// flight or can land later; later requests with an older epoch
    /// are refused with [`CoreError::Fenced`]. An epoch not above the
    /// current fence changes nothing.
    pub async fn fence(&self, file_id: FileId, epoch: Epoch) -> Result<Option<Epoch>, CoreError> {
        let raise = FenceRaise {
            epoch: Some(epoch),
            ..FenceRaise::default()
        };
        Ok(self.raise_fence(file_id, raise).await?.epoch)
    }

    /// [`BlockStore::fence`] that also records a takeover from a lost
    /// owner (`raise.lost_below`): unless `raise.adopt`, the copies older
    /// than it with a pending replication job are set aside into the
    /// quarantine before this returns (see the module documentation).
    pub async fn raise_fence(
        &self,
        file_id: FileId,
        raise: FenceRaise,
    ) -> Result<FileFence, CoreError> {
        // A published fence already waited for everything admitted under
        // a lower one.
        let current = self.inner.file_fence(file_id);
        let fence = if raise.epoch <= current.epoch
            && raise.lost_below <= current.lost_below
            && !(raise.adopt && current.set_aside_pending())
        {
            current
        } else {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.raise_fence_blocking(file_id, raise))
                .await??
        };
        if let (true, Some(lost_below)) = (fence.set_aside_pending(), fence.lost_below) {
            self.set_aside_old_copies(file_id, lost_below).await?;
        }
        Ok(self.inner.file_fence(file_id))
    }

    /// The ownership fence of `file_id` on this store, if it has one.
    pub fn fence_of(&self, file_id: FileId) -> Option<Epoch> {
        self.inner.file_fence(file_id).epoch
    }

    /// The whole fence of `file_id` on this store (all `None` if none).
    pub fn file_fence(&self, file_id: FileId) -> FileFence {
        self.inner.file_fence(file_id)
    }

    /// Up to `limit` fences of the files after `after` (from the first
    /// file when `None`), in file order, and whether more follow.
    pub fn list_fences(
        &self,
        after: Option<FileId>,
        limit: usize,
    ) -> (Vec<(FileId, FileFence)>, bool) {
        let fences = self.inner.fences_read();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = fences.range((start, Bound::Unbounded));
        let fences: Vec<(FileId, FileFence)> =
            page.by_ref().take(limit).map(|(&f, &e)| (f, e)).collect();
        let more = page.next().is_some();
        (fences, more)
    }

    /// From now on the store refuses every request carrying an ownership
    /// epoch until [`BlockStore::mark_fences_synced`]: its fences may be
    /// behind its site peers' (it was down during a handover). Set by a
    /// node's core server at start when the site has other cores.
    pub fn require_fence_sync(&self) {
        self.inner.fences_synced.store(false, Ordering::Release);
    }

    /// The store's fences are current again (copied from a site peer).
    pub fn mark_fences_synced(&self) {
        self.inner.fences_synced.store(true, Ordering::Release);
    }

    /// Whether the store admits requests carrying an ownership epoch.
    pub fn fences_synced(&self) -> bool {
        self.inner.fences_synced.load(Ordering::Acquire)
    }
}
