//! The encoding of a state machine snapshot (the `data` of a Raft snapshot).
//!
//! ```text
//! header:  8 bytes magic "GEONFSKV", u8 format = 1, u64 index, u64 term
//! records: u8 tag = 1, u32 key_len, key, u64 version, u32 value_len, value
//!          (keys strictly ascending)
//! footer:  u8 tag = 0xFF, u64 record count, u32 CRC-32 (IEEE) of every byte
//!          before the CRC
//! ```
//!
//! All integers are big-endian. The header repeats the snapshot's index and
//! term so data cannot be paired with the wrong metadata; the footer's count
//! and CRC reject a truncated or garbled snapshot before anything is applied.
//!
//! The whole snapshot is built and held in memory: metadata (directories,
//! inodes, membership) is small. [`MAX_SNAPSHOT_LEN`] bounds it; a larger
//! state machine needs a streamed snapshot, which this layer does not offer.

use geonfs_proto::domain::{MAX_KEY_LEN, MAX_VALUE_LEN};

use crate::command::Reader;
use crate::error::StoreError;

/// The magic at the start of snapshot data.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"GEONFSKV";
/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT_V1: u8 = 1;
/// The largest snapshot data built or accepted (1 GiB).
pub const MAX_SNAPSHOT_LEN: u64 = 1 << 30;

const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0xFF;
const HEADER_LEN: usize = 8 + 1 + 8 + 8;

/// Builds snapshot data record by record.
pub struct SnapshotWriter {
    buf: Vec<u8>,
    count: u64,
}

impl SnapshotWriter {
    /// Starts snapshot data for the state at `index`/`term`.
    pub fn new(index: u64, term: u64) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.push(SNAPSHOT_FORMAT_V1);
        buf.extend_from_slice(&index.to_be_bytes());
        buf.extend_from_slice(&term.to_be_bytes());
        SnapshotWriter { buf, count: 0 }
    }

    /// Adds one key (callers add keys in ascending order).
    pub fn push(&mut self, key: &[u8], version: u64, value: &[u8]) -> Result<(), StoreError> {
        let key_len = u32::try_from(key.len()).map_err(|_| too_large(key.len()))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_large(value.len()))?;
        self.buf.push(TAG_RECORD);
        self.buf.extend_from_slice(&key_len.to_be_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&version.to_be_bytes());
        self.buf.extend_from_slice(&value_len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
        if self.buf.len() as u64 > MAX_SNAPSHOT_LEN {
            return Err(too_large(self.buf.len()));
        }
        Ok(())
    }

    /// Writes the footer and returns the data.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(TAG_END);
        self.buf.extend_from_slice(&self.count.to_be_bytes());
        let crc = crc32(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

fn too_large(size: usize) -> StoreError {
    StoreError::TooLarge {
        what: "snapshot data",
        size: size as u64,
        max: MAX_SNAPSHOT_LEN,
    }
}

/// One key of decoded snapshot data, borrowing from it.
#[derive(Debug, PartialEq, Eq)]
pub struct SnapshotRecord<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Its version.
    pub version: u64,
    /// Its value.
    pub value: &'a [u8],
}

/// Decoded, verified snapshot data.
#[derive(Debug)]
pub struct DecodedSnapshot<'a> {
    /// The index in the header.
    pub index: u64,
    /// The term in the header.
    pub term: u64,
    /// Every key, ascending.
    pub records: Vec<SnapshotRecord<'a>>,
}

/// Verifies and decodes snapshot data; any defect is
/// [`StoreError::BadSnapshot`].
pub fn decode_snapshot(data: &[u8]) -> Result<DecodedSnapshot<'_>, StoreError> {
    let bad = |detail: String| StoreError::BadSnapshot(detail);
    if data.len() as u64 > MAX_SNAPSHOT_LEN {
        return Err(too_large(data.len()));
    }
    if data.len() < HEADER_LEN + 1 + 8 + 4 {
        return Err(bad(format!(
            "{} bytes is shorter than an empty snapshot",
            data.len()
        )));
    }
    if &data[..8] != SNAPSHOT_MAGIC {
        return Err(bad("missing GEONFSKV magic".into()));
    }
    let (body, crc_bytes) = data.split_at(data.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc_bytes);
    let stored = u32::from_be_bytes(stored);
    let computed = crc32(body);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x}): truncated or damaged"
        )));
    }
    let mut r = Reader::new(&body[8..]);
    let err = |e: crate::command::CommandDecodeError| bad(e.0);
    let format = r.u8("format").map_err(err)?;
    if format != SNAPSHOT_FORMAT_V1 {
        return Err(bad(format!("unknown snapshot format {format}")));
    }
    let index = r.u64("index").map_err(err)?;
    let term = r.u64("term").map_err(err)?;
    let mut records: Vec<SnapshotRecord<'_>> = Vec::new();
    loop {
        match r.u8("record tag").map_err(err)? {
            TAG_RECORD => {
                let key = r.slice("key").map_err(err)?;
                let version = r.u64("version").map_err(err)?;
                let value = r.slice("value").map_err(err)?;
                if key.is_empty() || key.len() > MAX_KEY_LEN {
                    return Err(bad(format!("key of {} bytes", key.len())));
                }
                if value.len() > MAX_VALUE_LEN {
                    return Err(bad(format!("value of {} bytes", value.len())));
                }
                if let Some(prev) = records.last() {
                    if prev.key >= key {
                        return Err(bad("keys out of order".into()));
                    }
                }
                records.push(SnapshotRecord {
                    key,
                    version,
                    value,
                });
            }
            TAG_END => {
                let count = r.u64("record count").map_err(err)?;
                if count != records.len() as u64 {
                    return Err(bad(format!(
                        "footer counts {count} records, found {}",
                        records.len()
                    )));
                }
                if !r.is_empty() {
                    return Err(bad(format!("{} bytes after the footer", r.remaining())));
                }
                return Ok(DecodedSnapshot {
                    index,
                    term,
                    records,
                });
            }
            other => return Err(bad(format!("unknown record tag {other}"))),
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) lookup table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(12, 3);
        w.push(b"a", 5, b"one").unwrap();
        w.push(b"b", 12, b"").unwrap();
        w.push(b"c/d", 7, &[0, 1, 2]).unwrap();
        w.finish()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn snapshot_data_round_trips() {
        let data = sample();
        let snap = decode_snapshot(&data).unwrap();
        assert_eq!((snap.index, snap.term), (12, 3));
        assert_eq!(snap.records.len(), 3);
        assert_eq!(
            snap.records[2],
            SnapshotRecord {
                key: b"c/d",
                version: 7,
                value: &[0, 1, 2]
            }
        );
        let empty = SnapshotWriter::new(1, 1).finish();
        assert!(decode_snapshot(&empty).unwrap().records.is_empty());
    }

    #[test]
    fn truncated_or_garbled_data_is_rejected() {
        let data = sample();
        for len in 0..data.len() {
            let err = decode_snapshot(&data[..len]).unwrap_err();
            assert!(
                matches!(err, StoreError::BadSnapshot(_)),
                "len {len}: {err}"
            );
        }
        for i in 0..data.len() {
            let mut garbled = data.clone();
            garbled[i] ^= 0x40;
            assert!(decode_snapshot(&garbled).is_err(), "flip at {i}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
    }

    #[test]
    fn checksummed_but_malformed_data_is_rejected() {
        // Right CRC, wrong content: keys out of order, wrong count.
        let mut w = SnapshotWriter::new(1, 1);
        w.push(b"b", 1, b"").unwrap();
        w.push(b"a", 1, b"").unwrap();
        let err = decode_snapshot(&w.finish()).unwrap_err();
        assert!(err.to_string().contains("order"), "{err}");

        let mut w = SnapshotWriter::new(1, 1);
        w.push(b"a", 1, b"").unwrap();
        w.count = 5;
        let err = decode_snapshot(&w.finish()).unwrap_err();
        assert!(err.to_string().contains("counts 5"), "{err}");
    }
}
