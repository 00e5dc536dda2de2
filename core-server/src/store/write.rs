//! The write path of the block store: a partial write read-modify-writes only
//! the chunks it touches, a replacing write starts from an empty block, both
//! checked first against the copy this core holds ([`super::copy_state`]) and
//! applied as one `WriteBatch` with the block's metadata and replication job.

use std::sync::atomic::Ordering;

use geonfs_proto::domain::{BlockWrite, Durability, WriteBase};
use rocksdb::{WriteBatch, WriteOptions};

use super::chunks::ChunkPuts;
use super::copy_state::{check_write, complete_at, Check};
use super::queue::{JobSpec, Written};
use super::{delete_chunks, Inner, WriteOutcome};
use crate::codec::{marker_key, meta_key, BlockMeta};
use crate::CoreError;

impl Inner {
    pub(super) fn write_blocking(
        &self,
        write: &BlockWrite,
        job: Option<&JobSpec>,
    ) -> Result<WriteOutcome, CoreError> {
        let db = self.db()?;
        let block = write.block;
        let old = self.meta(&db, block)?;
        let marker = self.marker(&db, block)?;
        let check = check_write(
            block,
            old.map(|m| m.version),
            marker,
            write.version,
            write.base,
        )?;
        if check == Check::Shipped {
            return Ok(WriteOutcome {
                version: write.version,
                durable: true,
            });
        }
        let replace = write.base == WriteBase::Replace;
        let mut batch = WriteBatch::default();
        if marker.is_some() {
            batch.delete(marker_key(block));
        }
        // A replacing write starts from an empty block.
        let old_meta = match old {
            Some(meta) if replace => {
                delete_chunks(&db, block, &mut batch)?;
                BlockMeta {
                    version: meta.version,
                    epoch: meta.epoch,
                    ..BlockMeta::default()
                }
            }
            other => other.unwrap_or_default(),
        };
        let offset = write.range.offset;
        let data = &write.data;
        let end = offset + data.len() as u64;
        let put = self.put_chunks(&db, block, &[(offset, &data[..])], replace, &mut batch)?;
        let added = put.added;
        let new_meta = BlockMeta {
            version: write.version,
            length: if data.is_empty() {
                old_meta.length
            } else {
                old_meta.length.max(end)
            },
            stored: old_meta.stored + added,
            // The copy holds this write's state: at least its epoch.
            epoch: old_meta.epoch.max(write.owner_epoch),
        };
        batch.put(meta_key(block), new_meta.encode());
        if let Some(job) = job {
            let written = match complete_at(old.map(|m| m.version), marker) {
                Some(base) if !replace => Written::Range {
                    offset,
                    len: data.len() as u64,
                    base,
                },
                _ => Written::Whole,
            };
            self.enqueue(&db, &mut batch, block, write.version, job, written)?;
        }
        self.check_disk(data.len() as u64)?;
        self.reserve(added)?;
        let durable = write.durability == Durability::Durable;
        let mut options = WriteOptions::default();
        options.set_sync(durable);
        if let Err(err) = db.write_opt(batch, &options) {
            self.release(added);
            return Err(err.into());
        }
        if replace {
            self.release(old.map_or(0, |meta| meta.stored));
        }
        self.count_write(write, old.is_none(), put, job.is_some());
        Ok(WriteOutcome {
            version: new_meta.version,
            durable,
        })
    }

    /// The counters and held-block set after `write` landed (`new_block`:
    /// the store had no copy of it; `queued`: with a replication job).
    fn count_write(&self, write: &BlockWrite, new_block: bool, put: ChunkPuts, queued: bool) {
        if new_block {
            self.blocks.fetch_add(1, Ordering::SeqCst);
        }
        if write.durability == Durability::Durable {
            // A synced write syncs the whole WAL up to it, earlier held
            // writes of this block included.
            self.durable_writes.fetch_add(1, Ordering::SeqCst);
            self.held().remove(&write.block);
        } else {
            self.held().insert(write.block);
        }
        self.chunk_puts.fetch_add(put.puts, Ordering::SeqCst);
        self.chunk_bytes.fetch_add(put.bytes, Ordering::SeqCst);
        if queued {
            self.enqueued.notify_one();
        }
    }
}
