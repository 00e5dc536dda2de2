//! The write path of the block store: a partial write read-modify-writes only
//! the chunks it touches, a replacing write starts from an empty block, both
//! checked first against the copy this core holds ([`super::copy_state`]) and
//! applied as one `WriteBatch` with the block's metadata and replication job.

use std::sync::atomic::Ordering;

use geonfs_proto::domain::{BlockWrite, Durability, WriteBase};
use rocksdb::{WriteBatch, WriteOptions};

use super::copy_state::{check_write, Check};
use super::queue::JobSpec;
use super::{chunk_no, delete_chunks, Inner, WriteOutcome};
use crate::codec::{chunk_key, marker_key, meta_key, seal_chunk, BlockMeta, CHUNK_SIZE, CRC_LEN};
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
        let put = self.put_chunks(&db, write, replace, &mut batch)?;
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
            self.enqueue(&db, &mut batch, block, write.version, job)?;
        }
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

    /// Puts the chunks `write` touches into `batch`: each old chunk
    /// (verified; none for a replacing write) with the new bytes laid over
    /// it, sealed with its checksum.
    fn put_chunks(
        &self,
        db: &rocksdb::DB,
        write: &BlockWrite,
        replace: bool,
        batch: &mut WriteBatch,
    ) -> Result<ChunkPuts, CoreError> {
        let (block, offset, data) = (write.block, write.range.offset, &write.data);
        let mut put = ChunkPuts::default();
        if data.is_empty() {
            return Ok(put);
        }
        let end = offset + data.len() as u64;
        let first = offset / CHUNK_SIZE;
        let last = (end - 1) / CHUNK_SIZE;
        let chunks: Vec<u32> = (first..=last).map(chunk_no).collect::<Result<_, _>>()?;
        // The old contents of the touched chunks (fully covered ones too:
        // their old length is needed for the used-bytes accounting).
        let olds = if replace {
            chunks.iter().map(|_| Ok(None)).collect()
        } else {
            db.multi_get(chunks.iter().map(|&chunk| chunk_key(block, chunk)))
        };
        for (&chunk, old) in chunks.iter().zip(olds) {
            let old = old?;
            let old_data = match &old {
                Some(value) => self.verify(block, chunk, value)?,
                None => &[][..],
            };
            let start = u64::from(chunk) * CHUNK_SIZE;
            let lo = (offset.max(start) - start) as usize;
            let hi = (end.min(start + CHUNK_SIZE) - start) as usize;
            let new_len = old_data.len().max(hi);
            let mut value = Vec::with_capacity(CRC_LEN + new_len);
            value.resize(CRC_LEN, 0);
            value.extend_from_slice(old_data);
            value.resize(CRC_LEN + new_len, 0);
            let src = (start + lo as u64 - offset) as usize;
            value[CRC_LEN + lo..CRC_LEN + hi].copy_from_slice(&data[src..src + (hi - lo)]);
            seal_chunk(&mut value);
            put.added += (new_len - old_data.len()) as u64;
            put.puts += 1;
            put.bytes += new_len as u64;
            batch.put(chunk_key(block, chunk), &value);
        }
        Ok(put)
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

/// What a write put into its batch.
#[derive(Clone, Copy, Debug, Default)]
struct ChunkPuts {
    /// Bytes the block's stored size grows by.
    added: u64,
    /// Chunks put.
    puts: u64,
    /// Their bytes.
    bytes: u64,
}
