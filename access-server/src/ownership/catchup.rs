//! Catch-up after a handover: the blocks whose newest version is on
//! another site (the dirty map) are copied onto this site's cores, then
//! the sources are cleared from the owner record and reads are local.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use geonfs_proto::domain::{BlockId, Epoch, FileId, Version};
use tokio::sync::watch;

use super::handover::{dirty_blocks, holders, pause};
use super::{lock, Ownership, OwnershipError, View};

/// How many dirty blocks are copied at once.
const CATCH_UP_CONCURRENCY: usize = 8;

/// How far a file's catch-up has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUpProgress {
    /// Dirty blocks at the start.
    pub total_blocks: u64,
    /// Blocks copied (or found superseded) so far.
    pub done_blocks: u64,
    /// Bytes copied so far.
    pub copied_bytes: u64,
    /// Whether the catch-up finished (the sources are cleared).
    pub finished: bool,
    /// Whether it stopped because this site no longer owns the file.
    pub abandoned: bool,
}

/// Where the newest copy of a block is, when it is not on this site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NewerCopy {
    /// The newest version.
    pub version: Version,
    /// A site whose cores hold it.
    pub site: String,
}

/// The blocks of a file newer on other sites than on this one, for the
/// epoch this site owns the file at.
#[derive(Debug)]
pub(super) struct DirtyMap {
    epoch: Epoch,
    blocks: std::sync::Mutex<BTreeMap<u64, NewerCopy>>,
    progress: watch::Sender<CatchUpProgress>,
}

impl DirtyMap {
    pub(super) fn new(epoch: Epoch, blocks: BTreeMap<u64, NewerCopy>) -> Self {
        let total = blocks.len() as u64;
        DirtyMap {
            epoch,
            blocks: std::sync::Mutex::new(blocks),
            progress: watch::Sender::new(CatchUpProgress {
                total_blocks: total,
                ..CatchUpProgress::default()
            }),
        }
    }

    /// Where the newest copy of block `index` is, if it is still newer
    /// elsewhere.
    pub(super) fn get(&self, index: u64) -> Option<NewerCopy> {
        lock(&self.blocks).get(&index).cloned()
    }

    fn remaining(&self) -> Vec<(u64, NewerCopy)> {
        lock(&self.blocks)
            .iter()
            .map(|(&index, newer)| (index, newer.clone()))
            .collect()
    }

    fn copied(&self, index: u64, bytes: u64) {
        if lock(&self.blocks).remove(&index).is_some() {
            self.progress.send_modify(|p| {
                p.done_blocks += 1;
                p.copied_bytes += bytes;
            });
        }
    }
}

impl Ownership {
    /// The dirty map of a file this site owns with sources (`view`): the
    /// one made by the handover, else made now by listing the sources and
    /// this site (another access server did the handover, or this one
    /// restarted), and its catch-up started.
    pub(super) async fn dirty_map(
        &self,
        file_id: FileId,
        view: &View,
    ) -> Result<Arc<DirtyMap>, OwnershipError> {
        let epoch = view.record.epoch;
        if let Some(map) = lock(&self.inner.dirty)
            .get(&file_id)
            .filter(|m| m.epoch == epoch)
        {
            return Ok(map.clone());
        }
        // This site owns the file: the holders are it and the sources.
        let sites = holders(&view.record, &self.inner.site);
        let listings = self
            .list_sites(file_id, |site| sites.contains(site), &sites)
            .await?;
        let map = Arc::new(DirtyMap::new(
            epoch,
            dirty_blocks(&self.inner.site, &listings),
        ));
        Ok(self.install_dirty(file_id, map))
    }

    /// Installs `map` (unless one for a newer epoch is there) and starts
    /// its catch-up in the background; returns the installed map.
    pub(super) fn install_dirty(&self, file_id: FileId, map: Arc<DirtyMap>) -> Arc<DirtyMap> {
        {
            let mut dirty = lock(&self.inner.dirty);
            if let Some(existing) = dirty.get(&file_id).filter(|m| m.epoch >= map.epoch) {
                return existing.clone();
            }
            dirty.insert(file_id, map.clone());
        }
        self.inner.metrics.catching_up.inc();
        let ownership = self.clone();
        let background = map.clone();
        tokio::spawn(async move {
            ownership.run_catch_up(file_id, background).await;
            ownership.inner.metrics.catching_up.dec();
        });
        map
    }

    /// Copies every dirty block of `map` onto this site (retrying failed
    /// copies with a growing pause), then clears the record's sources.
    /// Stops when this site no longer owns the file at the map's epoch.
    async fn run_catch_up(&self, file_id: FileId, map: Arc<DirtyMap>) {
        let started = Instant::now();
        let mut round = 0;
        loop {
            if !self.still_owns(file_id, map.epoch) {
                lock(&self.inner.dirty).remove(&file_id);
                map.progress.send_modify(|p| p.abandoned = true);
                return;
            }
            let remaining = map.remaining();
            if remaining.is_empty() {
                match self.clear_sources(file_id, map.epoch).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(%file_id, %err, "catch-up done but the owner record could not be updated; retrying");
                        round += 1;
                        pause(round).await;
                        continue;
                    }
                }
            }
            let failures = stream::iter(remaining)
                .map(|(index, newer)| {
                    let map = &map;
                    async move {
                        let block = BlockId { file_id, index };
                        let copy = self.copy_block(block, newer.version, &newer.site, 1, map.epoch);
                        match copy.await {
                            Ok(bytes) => {
                                map.copied(index, bytes);
                                0
                            }
                            Err(err) => {
                                tracing::warn!(%file_id, index, from = %newer.site, %err,
                                    "catch-up copy failed; will retry");
                                1
                            }
                        }
                    }
                })
                .buffer_unordered(CATCH_UP_CONCURRENCY)
                .fold(0u32, |sum, failed| async move { sum + failed })
                .await;
            if failures > 0 {
                round += 1;
                pause(round).await;
            }
        }
        lock(&self.inner.dirty).remove(&file_id);
        map.progress.send_modify(|p| p.finished = true);
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.catch_up_seconds.observe(seconds);
        tracing::info!(
            %file_id,
            seconds,
            "catch-up after handover complete; reads are local"
        );
    }

    fn still_owns(&self, file_id: FileId, epoch: Epoch) -> bool {
        self.owned_epoch(file_id) == Some(epoch)
    }

    /// Copies `block`'s newest copy (at `version` or newer) from `site`
    /// onto `copies` cores of this site, as part of the file at ownership
    /// `epoch`; returns the bytes copied.
    async fn copy_block(
        &self,
        block: BlockId,
        version: Version,
        site: &str,
        copies: usize,
        epoch: Epoch,
    ) -> Result<u64, OwnershipError> {
        let source = self.client(block.file_id, site)?;
        let len = u32::try_from(self.inner.block_size).unwrap_or(u32::MAX);
        let Some(read) = source.read_as(block, 0, len, None).await? else {
            // Gone from the source (removed or truncated there since):
            // nothing newer to bring.
            return Ok(0);
        };
        if read.version < version {
            return Ok(0);
        }
        let bytes = read.data.len() as u64;
        self.local()
            .put_whole(block, read.version, read.data, copies, Some(epoch))
            .await?;
        self.inner.metrics.caught_up_bytes.inc_by(bytes);
        Ok(bytes)
    }

    /// Before a partial write into block `index` of a file this site owns:
    /// when the block's newest version is on another site, copies it onto
    /// the block's local pair first, so the write lands on current data.
    pub async fn prepare_write(&self, file_id: FileId, index: u64) -> Result<(), OwnershipError> {
        let Some(map) = lock(&self.inner.dirty).get(&file_id).cloned() else {
            return Ok(());
        };
        let Some(newer) = map.get(index) else {
            return Ok(());
        };
        let bytes = self
            .copy_block(
                BlockId { file_id, index },
                newer.version,
                &newer.site,
                2,
                map.epoch,
            )
            .await?;
        map.copied(index, bytes);
        Ok(())
    }

    /// Drops the sources of the record once this site owns the file at
    /// `epoch` and every dirty block is here.
    async fn clear_sources(&self, file_id: FileId, epoch: Epoch) -> Result<(), OwnershipError> {
        let Some(view) = self.load(file_id).await? else {
            return Ok(());
        };
        let record = &view.record;
        if record.site != self.inner.site || record.epoch != epoch || record.claim.is_some() {
            return Ok(());
        }
        if record.sources.is_empty() {
            return Ok(());
        }
        // Everything else stays: the writer, and the takeover from a lost
        // owner that later fences must still carry.
        let mut current = record.clone();
        current.sources.clear();
        self.put_record(file_id, view.meta_version, current).await
    }

    /// Waits for this site's catch-up of `file_id` (which it must own),
    /// calling `progress` as blocks are copied.
    pub async fn wait_caught_up(
        &self,
        file_id: FileId,
        mut progress: impl FnMut(CatchUpProgress),
    ) -> Result<(), OwnershipError> {
        let Some(view) = self.load(file_id).await? else {
            return Ok(());
        };
        if view.record.sources.is_empty() {
            progress(CatchUpProgress {
                finished: true,
                ..CatchUpProgress::default()
            });
            return Ok(());
        }
        let map = self.dirty_map(file_id, &view).await?;
        let mut updates = map.progress.subscribe();
        loop {
            let now = *updates.borrow_and_update();
            progress(now);
            if now.finished {
                return Ok(());
            }
            if now.abandoned {
                return Err(OwnershipError::Blocked {
                    file_id,
                    reason: "another site took the file over during the catch-up".into(),
                });
            }
            if updates.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

impl Ownership {
    /// Ahead of a planned handover (`geonfs relocate`): copies onto this
    /// site every block of `file_id` whose newest version is on the owner
    /// or a source, while the owner keeps writing (nothing is fenced).
    /// Writes made meanwhile are left for the handover's catch-up. Calls
    /// `progress` as blocks are copied; returns the bytes copied.
    pub async fn precopy(
        &self,
        file_id: FileId,
        mut progress: impl FnMut(CatchUpProgress),
    ) -> Result<u64, OwnershipError> {
        let Some(view) = self.load(file_id).await? else {
            return Ok(0);
        };
        let record = &view.record;
        if record.site == self.inner.site && record.sources.is_empty() {
            return Ok(0);
        }
        let sites = holders(record, &self.inner.site);
        // Nothing is required: a holder out of reach leaves its blocks to
        // the handover, which does require it.
        let listings = self
            .list_sites(file_id, |site| sites.contains(site), &BTreeSet::new())
            .await?;
        let dirty = dirty_blocks(&self.inner.site, &listings);
        let epoch = record.epoch;
        let mut now = CatchUpProgress {
            total_blocks: dirty.len() as u64,
            ..CatchUpProgress::default()
        };
        progress(now);
        let mut copies = stream::iter(dirty)
            .map(|(index, newer)| async move {
                self.copy_block(
                    BlockId { file_id, index },
                    newer.version,
                    &newer.site,
                    1,
                    epoch,
                )
                .await
            })
            .buffer_unordered(CATCH_UP_CONCURRENCY);
        while let Some(copied) = copies.next().await {
            now.done_blocks += 1;
            now.copied_bytes += copied?;
            progress(now);
        }
        now.finished = true;
        progress(now);
        Ok(now.copied_bytes)
    }
}
