//! Capacity accounting of the block store: the used bytes counted at open from
//! every block's metadata, reserved before a write grows a block and released
//! when one shrinks or goes.

use std::sync::atomic::Ordering;

use rocksdb::{ReadOptions, DB};

use super::{decode_meta, Inner};
use crate::codec::{block_of_meta_key, meta_lower, meta_upper};
use crate::CoreError;

impl Inner {
    /// Reserves `bytes` of capacity, or fails with `OutOfSpace`.
    pub(super) fn reserve(&self, bytes: u64) -> Result<(), CoreError> {
        if bytes == 0 {
            return Ok(());
        }
        let capacity = self.capacity;
        match self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= capacity)
            }) {
            Ok(before) => {
                self.metrics.used_bytes.set(clamp_i64(before + bytes));
                Ok(())
            }
            Err(used) => Err(CoreError::OutOfSpace {
                needed: bytes,
                free: capacity.saturating_sub(used),
            }),
        }
    }

    pub(super) fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            })
            .unwrap_or_else(|used| used);
        self.metrics
            .used_bytes
            .set(clamp_i64(before.saturating_sub(bytes)));
    }
}

/// Used bytes and block count, from every block's metadata.
pub(super) fn scan_usage(db: &DB) -> Result<(u64, u64), CoreError> {
    let mut read_options = ReadOptions::default();
    read_options.set_iterate_upper_bound(meta_upper());
    let mut iter = db.raw_iterator_opt(read_options);
    iter.seek(meta_lower());
    let (mut used, mut blocks) = (0u64, 0u64);
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let block = block_of_meta_key(key).ok_or_else(|| CoreError::Corrupt {
            what: "block metadata key".into(),
            detail: format!("{key:?} is not a metadata key"),
        })?;
        used += decode_meta(block, value)?.stored;
        blocks += 1;
        iter.next();
    }
    iter.status()?;
    Ok((used, blocks))
}

/// `value` as an i64 gauge value (saturating).
pub(super) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
