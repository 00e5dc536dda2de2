//! A block's chunk records: walking them, deleting them all, checking them all.

use geonfs_proto::domain::BlockId;
use rocksdb::{ReadOptions, Snapshot, WriteBatch, DB};

use super::{chunk_no, Inner};
use crate::codec::{chunk_bounds, chunk_key, chunk_of_key, seal_chunk, CRC_LEN};
use crate::CoreError;

/// Calls `each(key, value)` for every stored chunk of `block`, in order.
fn for_each_chunk(
    db: &DB,
    block: BlockId,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<(), rocksdb::Error> {
    let (lower, upper) = chunk_bounds(block);
    let mut read_options = ReadOptions::default();
    read_options.set_iterate_lower_bound(lower.clone());
    read_options.set_iterate_upper_bound(upper);
    let mut iter = db.raw_iterator_opt(read_options);
    iter.seek(&lower);
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        each(key, value);
        iter.next();
    }
    iter.status()
}

/// Adds the deletion of every stored chunk of `block` to `batch`.
pub(crate) fn delete_chunks(
    db: &DB,
    block: BlockId,
    batch: &mut WriteBatch,
) -> Result<(), rocksdb::Error> {
    for_each_chunk(db, block, |key, _| batch.delete(key))
}

/// What [`Inner::put_chunks`] put into its batch.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChunkPuts {
    /// Bytes the block's stored size grows by.
    pub added: u64,
    /// Chunks put.
    pub puts: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The chunks of `len` bytes at `offset` (none when `len` is 0), for
/// chunks of `chunk_size` bytes.
fn chunks_of(offset: u64, len: u64, chunk_size: u64) -> Result<Vec<u32>, CoreError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let end = offset + len;
    (offset / chunk_size..=(end - 1) / chunk_size)
        .map(chunk_no)
        .collect()
}

impl Inner {
    /// `len` bytes of `block` at `offset` as of `snapshot`, each chunk
    /// verified (absent chunks and bytes past a chunk's end read as zeros).
    pub(super) fn copy_bytes(
        &self,
        snapshot: &Snapshot<'_>,
        block: BlockId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, CoreError> {
        let end = offset + len;
        let mut out = vec![0u8; len as usize];
        let chunk_size = self.chunk_size;
        let chunks = chunks_of(offset, len, chunk_size)?;
        let values = snapshot.multi_get(chunks.iter().map(|&chunk| chunk_key(block, chunk)));
        for (&chunk, value) in chunks.iter().zip(values) {
            let Some(value) = value? else {
                continue;
            };
            let chunk_data = self.verify(block, chunk, &value)?;
            let start = u64::from(chunk) * chunk_size;
            let from = offset.max(start);
            let to = end.min(start + chunk_data.len() as u64);
            if from < to {
                let src = (from - start) as usize;
                let dst = (from - offset) as usize;
                let n = (to - from) as usize;
                out[dst..dst + n].copy_from_slice(&chunk_data[src..src + n]);
            }
        }
        Ok(out)
    }

    /// Puts the chunks `pieces` (offset, bytes) touch into `batch`: each
    /// old chunk (verified; none when `replace`) with the pieces' bytes
    /// laid over it, sealed with its checksum, each chunk once.
    pub(super) fn put_chunks(
        &self,
        db: &DB,
        block: BlockId,
        pieces: &[(u64, &[u8])],
        replace: bool,
        batch: &mut WriteBatch,
    ) -> Result<ChunkPuts, CoreError> {
        let chunk_size = self.chunk_size;
        let mut chunks = Vec::new();
        for (offset, data) in pieces {
            chunks.extend(chunks_of(*offset, data.len() as u64, chunk_size)?);
        }
        chunks.sort_unstable();
        chunks.dedup();
        // The old contents of the touched chunks (fully covered ones too:
        // their old length is needed for the used-bytes accounting).
        let olds = if replace {
            chunks.iter().map(|_| Ok(None)).collect()
        } else {
            db.multi_get(chunks.iter().map(|&chunk| chunk_key(block, chunk)))
        };
        let mut put = ChunkPuts::default();
        for (&chunk, old) in chunks.iter().zip(olds) {
            let old = old?;
            let old_data = match &old {
                Some(value) => self.verify(block, chunk, value)?,
                None => &[][..],
            };
            let start = u64::from(chunk) * chunk_size;
            let mut value = Vec::with_capacity(CRC_LEN + chunk_size as usize);
            value.resize(CRC_LEN, 0);
            value.extend_from_slice(old_data);
            for (offset, data) in pieces {
                let end = offset + data.len() as u64;
                if data.is_empty() || end <= start || *offset >= start + chunk_size {
                    continue;
                }
                let lo = (offset.max(&start) - start) as usize;
                let hi = (end.min(start + chunk_size) - start) as usize;
                if value.len() < CRC_LEN + hi {
                    value.resize(CRC_LEN + hi, 0);
                }
                let src = (start + lo as u64 - offset) as usize;
                value[CRC_LEN + lo..CRC_LEN + hi].copy_from_slice(&data[src..src + (hi - lo)]);
            }
            seal_chunk(&mut value);
            let new_len = value.len() - CRC_LEN;
            put.added += (new_len - old_data.len()) as u64;
            put.puts += 1;
            put.bytes += new_len as u64;
            batch.put(chunk_key(block, chunk), &value);
        }
        Ok(put)
    }

    /// Whether every stored chunk of the block passes its checksum (each
    /// failure is counted and logged by [`Inner::verify`]).
    pub(super) fn chunks_intact(&self, db: &DB, block: BlockId) -> Result<bool, CoreError> {
        let mut intact = true;
        for_each_chunk(db, block, |key, value| {
            let chunk = chunk_of_key(key).unwrap_or(u32::MAX);
            if self.verify(block, chunk, value).is_err() {
                intact = false;
            }
        })?;
        Ok(intact)
    }
}
