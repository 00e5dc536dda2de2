//! A block's chunk records: walking them, deleting them all, checking them all.

use geonfs_proto::domain::BlockId;
use rocksdb::{ReadOptions, WriteBatch, DB};

use super::Inner;
use crate::codec::{chunk_bounds, chunk_of_key};
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

impl Inner {
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
