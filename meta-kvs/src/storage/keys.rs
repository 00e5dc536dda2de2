//! Column families, keys and the encoding of the small records of the meta
//! store.
//!
//! | CF | key | value |
//! |---|---|---|
//! | `raft_log` | index, u64 big-endian | protobuf `eraftpb::Entry` |
//! | `raft_state` | `hard_state` | protobuf `HardState` |
//! | `raft_state` | `conf_state` | protobuf `ConfState` |
//! | `raft_state` | `truncated` | [`LogPoint`]: index and term of the last entry removed from the log (the snapshot point) |
//! | `kv` | user key | [`ValueRecord`]: `1u8`, version u64 BE, value bytes |
//! | `meta` | `applied` | [`LogPoint`]: index and term of the last applied entry |
//!
//! A [`LogPoint`] is `1u8`, index u64 BE, term u64 BE. The leading byte is a
//! format version; anything else fails to decode as corruption.

use bytes::Bytes;
use protobuf::Message as PbMessage;

use crate::error::StoreError;

/// The Raft log: entry index → encoded entry.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Hard state, conf state and the truncation point.
pub const CF_RAFT_STATE: &str = "raft_state";
/// The state machine: user key → [`ValueRecord`].
pub const CF_KV: &str = "kv";
/// The applied index.
pub const CF_META: &str = "meta";
/// Every column family of the store.
pub const ALL_CFS: [&str; 4] = [CF_RAFT_LOG, CF_RAFT_STATE, CF_KV, CF_META];

/// `raft_state` key of the hard state.
pub const HARD_STATE_KEY: &[u8] = b"hard_state";
/// `raft_state` key of the conf state.
pub const CONF_STATE_KEY: &[u8] = b"conf_state";
/// `raft_state` key of the truncation point.
pub const TRUNCATED_KEY: &[u8] = b"truncated";
/// `meta` key of the applied point.
pub const APPLIED_KEY: &[u8] = b"applied";

const RECORD_FORMAT: u8 = 1;

/// The `raft_log` key of entry `index`.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index of a `raft_log` key.
pub fn decode_log_key(key: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = key.try_into().map_err(|_| {
        StoreError::corrupt(
            "raft_log key",
            format!("key of {} bytes, expected 8", key.len()),
        )
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// An (index, term) position in the Raft log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPoint {
    /// Entry index.
    pub index: u64,
    /// Entry term.
    pub term: u64,
}

impl LogPoint {
    /// A point at `index` with `term`.
    pub fn new(index: u64, term: u64) -> Self {
        LogPoint { index, term }
    }

    /// Encodes the point.
    pub fn encode(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = RECORD_FORMAT;
        out[1..9].copy_from_slice(&self.index.to_be_bytes());
        out[9..17].copy_from_slice(&self.term.to_be_bytes());
        out
    }

    /// Decodes a point; `what` names the record in the error.
    pub fn decode(what: &str, data: &[u8]) -> Result<Self, StoreError> {
        if data.len() != 17 || data[0] != RECORD_FORMAT {
            return Err(StoreError::corrupt(
                what,
                format!(
                    "expected 17 bytes starting with format {RECORD_FORMAT}, got {} bytes{}",
                    data.len(),
                    data.first()
                        .map(|b| format!(" starting with {b}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let mut index = [0u8; 8];
        let mut term = [0u8; 8];
        index.copy_from_slice(&data[1..9]);
        term.copy_from_slice(&data[9..17]);
        Ok(LogPoint {
            index: u64::from_be_bytes(index),
            term: u64::from_be_bytes(term),
        })
    }
}

/// A value in the state machine with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueRecord {
    /// The Raft index of the write that set it.
    pub version: u64,
    /// The value.
    pub value: Bytes,
}

impl ValueRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.value.len());
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes a record stored under `key`.
    pub fn decode(key: &[u8], data: &[u8]) -> Result<Self, StoreError> {
        if data.len() < 9 || data[0] != RECORD_FORMAT {
            return Err(StoreError::corrupt(
                format!("kv record {}", show_key(key)),
                format!(
                    "expected at least 9 bytes starting with format {RECORD_FORMAT}, got {} bytes",
                    data.len()
                ),
            ));
        }
        let mut version = [0u8; 8];
        version.copy_from_slice(&data[1..9]);
        Ok(ValueRecord {
            version: u64::from_be_bytes(version),
            value: Bytes::copy_from_slice(&data[9..]),
        })
    }
}

/// Encodes a protobuf record (raft-rs's rust-protobuf types).
pub fn encode_pb<M: PbMessage>(what: &'static str, msg: &M) -> Result<Vec<u8>, StoreError> {
    msg.write_to_bytes().map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

/// Decodes a protobuf record read from disk; failure is corruption of `what`.
pub fn decode_pb<M: PbMessage>(what: &str, data: &[u8]) -> Result<M, StoreError> {
    M::parse_from_bytes(data).map_err(|e| StoreError::corrupt(what, e.to_string()))
}

/// A key for error messages: printable ASCII as is, otherwise hex, shortened.
pub fn show_key(key: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = &key[..key.len().min(MAX)];
    let mut out = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    };
    if key.len() > MAX {
        out.push_str(&format!("…({} bytes)", key.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let p = LogPoint::new(42, 7);
        assert_eq!(LogPoint::decode("x", &p.encode()).unwrap(), p);
        assert!(LogPoint::decode("x", &p.encode()[..16]).is_err());
        let mut bad = p.encode();
        bad[0] = 2;
        assert!(LogPoint::decode("x", &bad).unwrap_err().is_corruption());

        let v = ValueRecord {
            version: 9,
            value: Bytes::from_static(b"hello"),
        };
        assert_eq!(ValueRecord::decode(b"k", &v.encode()).unwrap(), v);
        assert!(ValueRecord::decode(b"k", b"\x01abc").is_err());
        assert_eq!(decode_log_key(&log_key(5)).unwrap(), 5);
        assert!(decode_log_key(b"abc").is_err());
        assert!(log_key(1) < log_key(256));
        assert_eq!(show_key(b"dir/a"), "\"dir/a\"");
        assert_eq!(show_key(&[0, 255]), "0x00ff");
    }
}
