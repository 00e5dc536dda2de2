//! The store's format record: the chunk size its chunks were cut at.
//!
//! A chunk is the unit of read-modify-write and of checksums. Stores made
//! now cut blocks into [`CHUNK_SIZE`] (4 KiB) chunks, so that a 4 KiB write
//! (what a VM's random I/O is made of) puts one 4 KiB chunk instead of
//! reading, checksumming and rewriting a 64 KiB one (16× fewer bytes
//! through RocksDB's WAL and blob files per such write). Measured with
//! fio through NFS on the release demo: random 4 KiB writes at QD16
//! 1 303 → 2 148 IOPS, a 70/30 16 KiB mix 1 276 → 1 565; the price is
//! more keys per block: sequential 1 MiB writes 84 → 61 MB/s (16 KiB
//! chunks measured in between: 1 897 IOPS, 77 MB/s). Stores made before
//! the format record existed used
//! [`LEGACY_CHUNK_SIZE`] (64 KiB) and keep it: the geometry of stored
//! chunks never changes under them.
//!
//! Key `v`, value `format version u32 BE (1) | chunk size u32 BE`, written
//! synced when the store is first opened by this version. The chunk size
//! is local to a core: copies travel between cores as byte ranges, never
//! as chunks.

use rocksdb::{IteratorMode, WriteOptions, DB};

use crate::codec::{CHUNK_SIZE, LEGACY_CHUNK_SIZE};
use crate::CoreError;

/// The key of the format record.
const FORMAT_KEY: &[u8] = b"v";
/// The format version this code writes and reads.
const FORMAT_VERSION: u32 = 1;
/// Bytes of the format record's value.
const FORMAT_LEN: usize = 8;

/// The chunk size of the store in `db`: the format record's, else (a
/// store made before the record existed, holding records) 64 KiB, else (a
/// new store) [`CHUNK_SIZE`]; the record is written when it was missing.
pub(super) fn chunk_size(db: &DB) -> Result<u64, CoreError> {
    if let Some(value) = db.get_pinned(FORMAT_KEY)? {
        return decode(&value);
    }
    let made_before = db
        .iterator(IteratorMode::Start)
        .next()
        .transpose()?
        .is_some();
    let size = if made_before {
        LEGACY_CHUNK_SIZE
    } else {
        CHUNK_SIZE
    };
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.put_opt(FORMAT_KEY, encode(size), &sync)?;
    tracing::info!(
        chunk_size = size,
        made_before,
        "block store format recorded"
    );
    Ok(size)
}

fn encode(chunk_size: u64) -> [u8; FORMAT_LEN] {
    let mut value = [0u8; FORMAT_LEN];
    value[..4].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    value[4..].copy_from_slice(&(chunk_size as u32).to_be_bytes());
    value
}

fn decode(value: &[u8]) -> Result<u64, CoreError> {
    let corrupt = |detail: String| CoreError::Corrupt {
        what: "block store format record".into(),
        detail,
    };
    let (version, size) = match value {
        [v0, v1, v2, v3, s0, s1, s2, s3] => (
            u32::from_be_bytes([*v0, *v1, *v2, *v3]),
            u64::from(u32::from_be_bytes([*s0, *s1, *s2, *s3])),
        ),
        _ => {
            return Err(corrupt(format!(
                "{} bytes, {FORMAT_LEN} expected",
                value.len()
            )))
        }
    };
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version}: this build reads version {FORMAT_VERSION} (a newer geonfs made the store?)"
        )));
    }
    if !size.is_power_of_two() || !(512..=LEGACY_CHUNK_SIZE).contains(&size) {
        return Err(corrupt(format!(
            "chunk size {size}: a power of two from 512 to {LEGACY_CHUNK_SIZE} expected"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_bad_ones_are_refused() {
        assert_eq!(decode(&encode(4096)).unwrap(), 4096);
        assert_eq!(decode(&encode(65536)).unwrap(), 65536);
        assert!(decode(&encode(3000)).is_err(), "not a power of two");
        assert!(decode(&encode(1 << 20)).is_err(), "too large");
        assert!(decode(&encode(4096)[..7]).is_err(), "truncated");
        let mut newer = encode(4096);
        newer[3] = 2;
        let err = decode(&newer).unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");
    }
}
