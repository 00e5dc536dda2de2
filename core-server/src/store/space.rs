//! Capacity accounting of the block store: the used bytes counted at open from
//! every block's metadata, reserved before a write grows a block and released
//! when one shrinks or goes; and the data directory's real free space,
//! which every write must leave at least [`DISK_HEADROOM`] of.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocksdb::{ReadOptions, DB};

use super::{decode_meta, Inner};
use crate::codec::{block_of_meta_key, meta_lower, meta_upper};
use crate::CoreError;

/// Space the data directory's file system keeps free besides the blocks:
/// RocksDB's compactions, blob garbage collection, WAL and manifest (and
/// the deletes that free space) need room to run, so writes stop this far
/// before the disk is full rather than at it.
pub const DISK_HEADROOM: u64 = 256 << 20;

/// How long a reading of the file system's free space is trusted (writes
/// landing within it are covered by the headroom).
const DISK_SAMPLE_TTL: Duration = Duration::from_millis(100);

/// The free space of the file system holding a store, read with
/// `statvfs` at most every [`DISK_SAMPLE_TTL`].
pub(super) struct DiskSpace {
    path: PathBuf,
    sample: Mutex<Option<(Instant, Option<u64>)>>,
    warned: AtomicBool,
    /// Whether the last check refused a write (logged when it changes).
    refusing: AtomicBool,
}

impl DiskSpace {
    /// The free space of the file system holding `path`.
    pub(super) fn new(path: PathBuf) -> Self {
        DiskSpace {
            path,
            sample: Mutex::new(None),
            warned: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
        }
    }

    /// Bytes available to unprivileged writers, or `None` when the file
    /// system cannot tell (logged once; the configured capacity alone
    /// limits writes then).
    pub(super) fn available(&self) -> Option<u64> {
        let mut sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *sample {
            if at.elapsed() < DISK_SAMPLE_TTL {
                return bytes;
            }
        }
        let bytes = match rustix::fs::statvfs(&self.path) {
            Ok(stat) => Some(stat.f_bavail.saturating_mul(stat.f_frsize)),
            Err(err) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), %err, "cannot read the data directory's free space; only the configured capacity limits writes");
                }
                None
            }
        };
        *sample = Some((Instant::now(), bytes));
        bytes
    }
}

impl Inner {
    /// `OutOfSpace` unless the file system keeps [`DISK_HEADROOM`] free
    /// after `bytes` more (what a write puts down, whether or not it grows
    /// the block: chunks are written out of place).
    pub(super) fn check_disk(&self, bytes: u64) -> Result<(), CoreError> {
        let Some(available) = self.disk.available() else {
            return Ok(());
        };
        self.metrics.disk_available_bytes.set(clamp_i64(available));
        let free = available.saturating_sub(DISK_HEADROOM);
        let refuse = bytes > free;
        if refuse != self.disk.refusing.swap(refuse, Ordering::Relaxed) {
            if refuse {
                tracing::warn!(path = %self.path.display(), available, headroom = DISK_HEADROOM, "the disk is nearly full: writes are refused (NOSPC) until space returns");
            } else {
                tracing::info!(path = %self.path.display(), available, "disk space returned: writes are accepted again");
            }
        }
        if refuse {
            return Err(CoreError::OutOfSpace {
                needed: bytes,
                free,
            });
        }
        Ok(())
    }

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
