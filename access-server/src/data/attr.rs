//! The attribute record: a file's size and mtime, stored as a tiny block.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geonfs_proto::domain::{BlockId, FileId};

/// The block index of a file's attribute record.
pub const ATTR_INDEX: u64 = u64::MAX;

/// The record's length on the cores: size u64 BE, mtime seconds since the
/// Unix epoch u64 BE, mtime nanoseconds u32 BE.
pub const ATTR_LEN: usize = 20;

/// The block holding `file_id`'s attribute record.
pub fn attr_block(file_id: FileId) -> BlockId {
    BlockId {
        file_id,
        index: ATTR_INDEX,
    }
}

/// Encodes a record.
pub fn encode(size: u64, mtime: SystemTime) -> [u8; ATTR_LEN] {
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut out = [0u8; ATTR_LEN];
    out[..8].copy_from_slice(&size.to_be_bytes());
    out[8..16].copy_from_slice(&since.as_secs().to_be_bytes());
    out[16..].copy_from_slice(&since.subsec_nanos().to_be_bytes());
    out
}

/// Decodes a record; `None` if it is too short or the nanoseconds are out
/// of range.
pub fn decode(bytes: &[u8]) -> Option<(u64, SystemTime)> {
    if bytes.len() < ATTR_LEN {
        return None;
    }
    let size = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let secs = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    let nanos = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mtime = UNIX_EPOCH.checked_add(Duration::new(secs, nanos))?;
    Some((size, mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(decode(&encode(42, t)), Some((42, t)));
        assert_eq!(decode(&[0; 19]), None);
    }
}
