//! Per-block write batching: the writes of one block (and the attribute
//! record of one file) are sent one batch at a time.
//!
//! A core keeps one version per block and refuses a write older than the
//! version it holds (docs/ARCHITECTURE.md#invariant-8). Concurrent writes into one block — a
//! client streaming 4 KiB writes at queue depth 16 puts all of them into
//! the same 4 MiB block — would race to the two cores over separate
//! streams, be refused as stale and be retried, each retry racing again.
//! Instead, while a block has a write in flight, later writes of that block
//! wait; when it is answered, every waiting write is sent at once: writes
//! whose ranges touch or overlap are merged into one range (applied in
//! the order they were issued, which is the order of their versions), and
//! the merged ranges go out one after another, in version order. Writes of
//! different blocks still go in parallel.
//!
//! A write's version is taken when it is queued, under the queue's lock,
//! so versions follow the order writes were issued; a merged range carries
//! the newest version of its writes and the strongest durability asked.
//!
//! The attribute record is batched the same way, except that what is sent
//! is the file's state at the moment of sending (which covers every write
//! issued before): one record write answers every waiting writer.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use geonfs_block_manager::{BlockUpdate, WriteAck};
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId, Version};
use tokio::sync::oneshot;

use super::{DataError, FileData};

/// What a queued write learns: the outcome of the write that carried it
/// (for data, its acknowledgement), or the failure shared by every write
/// of that batch.
pub(crate) type Answer<T> = Result<T, Arc<DataError>>;

/// Writes waiting for their block (or record) to be free, by key. A key is
/// present while a driver sends its batches.
#[derive(Debug)]
pub(crate) struct Queues<K, T> {
    pending: Mutex<HashMap<K, Vec<T>>>,
}

impl<K: Eq + Hash + Copy, T> Queues<K, T> {
    pub(crate) fn new() -> Self {
        Queues {
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<T>>> {
        match self.pending.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues the item `make` builds (under the lock); true when no driver
    /// runs for `key` and the caller must start one.
    pub(crate) fn push(&self, key: K, make: impl FnOnce() -> T) -> bool {
        match self.lock().entry(key) {
            Entry::Occupied(mut queued) => {
                queued.get_mut().push(make());
                false
            }
            Entry::Vacant(free) => {
                free.insert(vec![make()]);
                true
            }
        }
    }

    /// The next batch for `key`'s driver, or `None` (the driver ends and
    /// the key is free) when nothing is waiting.
    pub(crate) fn next(&self, key: K) -> Option<Vec<T>> {
        let mut pending = self.lock();
        match pending.get_mut(&key) {
            Some(items) if !items.is_empty() => Some(std::mem::take(items)),
            _ => {
                pending.remove(&key);
                None
            }
        }
    }
}

/// One data write waiting for its block.
#[derive(Debug)]
pub(crate) struct QueuedWrite {
    pub(crate) offset: u64,
    pub(crate) data: Bytes,
    pub(crate) version: Version,
    pub(crate) durability: Durability,
    /// The ownership epoch the write was issued under.
    pub(crate) epoch: Epoch,
    pub(crate) reply: oneshot::Sender<Answer<WriteAck>>,
}

/// One writer waiting for a record at least as new as its state.
#[derive(Debug)]
pub(crate) struct QueuedRecord {
    pub(crate) durability: Durability,
    pub(crate) reply: oneshot::Sender<Answer<()>>,
}

/// A merged range of a batch: one write to send, and who waits for it.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) offset: u64,
    pub(crate) data: Bytes,
    pub(crate) version: Version,
    pub(crate) durability: Durability,
    /// The newest ownership epoch of its writes.
    pub(crate) epoch: Option<Epoch>,
    pub(crate) replies: Vec<oneshot::Sender<Answer<WriteAck>>>,
}

/// The strongest of two durabilities.
pub(crate) fn stronger(a: Durability, b: Durability) -> Durability {
    if a == Durability::Durable || b == Durability::Durable {
        Durability::Durable
    } else {
        Durability::Held
    }
}

/// Merges `batch` into ranges (writes whose ranges touch or overlap form
/// one range, later versions over earlier ones), in version order.
pub(crate) fn merge(mut batch: Vec<QueuedWrite>) -> Vec<Merged> {
    batch.sort_by_key(|w| w.offset);
    let mut groups: Vec<Vec<QueuedWrite>> = Vec::new();
    let mut group_end = 0;
    for write in batch {
        let end = write.offset + write.data.len() as u64;
        match groups.last_mut() {
            Some(group) if write.offset <= group_end => {
                group.push(write);
                group_end = group_end.max(end);
            }
            _ => {
                groups.push(vec![write]);
                group_end = end;
            }
        }
    }
    let mut merged: Vec<Merged> = groups.into_iter().map(merge_group).collect();
    merged.sort_by_key(|m| m.version);
    merged
}

/// One range from writes that cover it without a gap.
fn merge_group(mut group: Vec<QueuedWrite>) -> Merged {
    if group.len() == 1 {
        if let Some(w) = group.pop() {
            return Merged {
                offset: w.offset,
                data: w.data,
                version: w.version,
                durability: w.durability,
                epoch: Some(w.epoch),
                replies: vec![w.reply],
            };
        }
    }
    group.sort_by_key(|w| w.version);
    let start = group.iter().map(|w| w.offset).min().unwrap_or(0);
    let end = group
        .iter()
        .map(|w| w.offset + w.data.len() as u64)
        .max()
        .unwrap_or(start);
    let mut buffer = BytesMut::zeroed((end - start) as usize);
    let mut version = Version::ZERO;
    let mut epoch = None;
    let mut durability = Durability::Held;
    let mut replies = Vec::with_capacity(group.len());
    for w in group {
        let at = (w.offset - start) as usize;
        buffer[at..at + w.data.len()].copy_from_slice(&w.data);
        version = version.max(w.version);
        epoch = epoch.max(Some(w.epoch));
        durability = stronger(durability, w.durability);
        replies.push(w.reply);
    }
    Merged {
        offset: start,
        data: buffer.freeze(),
        version,
        durability,
        epoch,
        replies,
    }
}

/// Answers every waiter of a write.
fn answer<T: Clone>(replies: Vec<oneshot::Sender<Answer<T>>>, result: Result<T, DataError>) {
    let result = result.map_err(Arc::new);
    for reply in replies {
        // A waiter that gave up (its NFS call was dropped) needs nothing.
        let _ = reply.send(result.clone());
    }
}

/// A waiter's answer as the caller's result.
pub(crate) fn unshare<T>(
    answer: Result<Answer<T>, oneshot::error::RecvError>,
) -> Result<T, DataError> {
    match answer {
        Ok(Ok(ack)) => Ok(ack),
        Ok(Err(shared)) => Err(Arc::try_unwrap(shared).unwrap_or_else(DataError::Shared)),
        Err(_) => Err(DataError::Abandoned),
    }
}

impl FileData {
    /// Queues a write of `data` at `offset` of `block` and waits for the
    /// write that carries it (see the module documentation).
    pub(crate) async fn queue_write(
        &self,
        block: BlockId,
        offset: u64,
        data: Bytes,
        durability: Durability,
        epoch: Epoch,
    ) -> Result<WriteAck, DataError> {
        let (reply, outcome) = oneshot::channel();
        let start = self.inner.writes.push(block, || QueuedWrite {
            offset,
            data,
            version: self.inner.clock.next_version(),
            durability,
            epoch,
            reply,
        });
        if start {
            let data = self.clone();
            tokio::spawn(async move {
                while let Some(batch) = data.inner.writes.next(block) {
                    for merged in merge(batch) {
                        let update = BlockUpdate {
                            block,
                            offset: merged.offset,
                            data: merged.data,
                            version: merged.version,
                            durability: merged.durability,
                            owner_epoch: merged.epoch,
                        };
                        let result = data.write_block(update).await;
                        answer(merged.replies, result);
                    }
                }
            });
        }
        unshare(outcome.await)
    }

    /// Waits until a record at least as new as the file's state now (and
    /// at least as durable as `durability`) is on two cores.
    pub(crate) async fn queue_record(
        &self,
        file_id: FileId,
        durability: Durability,
    ) -> Result<(), DataError> {
        let (reply, outcome) = oneshot::channel();
        let start = self
            .inner
            .records
            .push(file_id, || QueuedRecord { durability, reply });
        if start {
            let data = self.clone();
            tokio::spawn(async move {
                while let Some(batch) = data.inner.records.next(file_id) {
                    let durability = batch
                        .iter()
                        .fold(Durability::Held, |d, w| stronger(d, w.durability));
                    let result = data.write_record(file_id, durability).await;
                    answer(batch.into_iter().map(|w| w.reply).collect(), result);
                }
            });
        }
        unshare(outcome.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(offset: u64, fill: u8, len: usize, version: u64) -> QueuedWrite {
        QueuedWrite {
            offset,
            data: Bytes::from(vec![fill; len]),
            version: Version(version),
            durability: Durability::Held,
            epoch: Epoch::FIRST,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn touching_and_overlapping_writes_merge_later_versions_win() {
        let mut batch = vec![
            queued(4096, 2, 4096, 11),
            queued(0, 1, 4096, 10),
            queued(6000, 3, 100, 12),
            queued(20_000, 4, 10, 9),
        ];
        batch[1].durability = Durability::Durable;
        let merged = merge(batch);
        assert_eq!(merged.len(), 2);
        // Version order: the lone far write (9) first, then the group (12).
        assert_eq!((merged[0].offset, merged[0].version), (20_000, Version(9)));
        assert_eq!(&merged[0].data[..], &[4; 10]);
        let group = &merged[1];
        assert_eq!((group.offset, group.version), (0, Version(12)));
        assert_eq!(group.durability, Durability::Durable);
        assert_eq!(group.replies.len(), 3);
        assert_eq!(group.data.len(), 8192);
        assert!(group.data[..4096].iter().all(|&b| b == 1));
        assert!(group.data[4096..6000].iter().all(|&b| b == 2));
        assert!(group.data[6000..6100].iter().all(|&b| b == 3));
        assert!(group.data[6100..].iter().all(|&b| b == 2));
    }

    #[test]
    fn an_older_write_never_covers_a_newer_one() {
        // Issued newer first at the same range: the newer bytes stay.
        let merged = merge(vec![queued(0, 7, 10, 21), queued(0, 6, 10, 20)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(&merged[0].data[..], &[7; 10]);
        assert_eq!(merged[0].version, Version(21));
    }

    #[test]
    fn a_key_is_free_once_its_queue_is_drained() {
        let queues: Queues<u64, u32> = Queues::new();
        assert!(queues.push(1, || 10), "first write starts a driver");
        assert!(!queues.push(1, || 11), "second waits for it");
        assert!(queues.push(2, || 20), "another key is independent");
        assert_eq!(queues.next(1), Some(vec![10, 11]));
        assert!(!queues.push(1, || 12), "the driver still runs");
        assert_eq!(queues.next(1), Some(vec![12]));
        assert_eq!(queues.next(1), None);
        assert!(queues.push(1, || 13), "free again: a new driver");
    }
}
