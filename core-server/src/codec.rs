//! The on-disk encoding of the block store: keys, block metadata and chunk
//! values (see the [`crate::store`] documentation for the layout and why).

use geonfs_proto::domain::{BlockId, DeletedRange, Epoch, FileId, Version};

/// Size of a data chunk in stores made now: the unit of read-modify-write
/// and of checksums (`store/format.rs` records each store's).
pub const CHUNK_SIZE: u64 = 4 * 1024;

/// Size of a data chunk in stores made before the format record existed.
pub const LEGACY_CHUNK_SIZE: u64 = 64 * 1024;

/// Key prefix of chunk records.
const CHUNK_TAG: u8 = b'c';
/// Key prefix of block metadata records.
const META_TAG: u8 = b'm';
/// Key prefix of markers (trimmed or deleted blocks).
const MARKER_TAG: u8 = b't';
/// Key prefix of a file's deleted ranges (truncate, remove).
const RANGES_TAG: u8 = b'r';
/// Bytes of an encoded [`DeletedRange`].
const RANGE_LEN: usize = 24;
/// Bytes of a chunk value's checksum header.
pub const CRC_LEN: usize = 4;
/// Bytes of an encoded [`BlockMeta`].
const META_LEN: usize = 32;
/// Bytes of a [`BlockMeta`] written before copies carried their epoch.
const META_LEN_NO_EPOCH: usize = 24;

/// `c | file_id BE | index BE | chunk BE`.
pub fn chunk_key(block: BlockId, chunk: u32) -> [u8; 21] {
    let mut key = [0u8; 21];
    key[0] = CHUNK_TAG;
    key[1..9].copy_from_slice(&block.file_id.0.to_be_bytes());
    key[9..17].copy_from_slice(&block.index.to_be_bytes());
    key[17..21].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The chunk number of a chunk key (its last four bytes); `None` if `key`
/// is not one.
pub fn chunk_of_key(key: &[u8]) -> Option<u32> {
    if key.len() != 21 || key[0] != CHUNK_TAG {
        return None;
    }
    Some(u32::from_be_bytes(key[17..21].try_into().ok()?))
}

/// The bounds `[lower, upper)` of every chunk key of `block`.
pub fn chunk_bounds(block: BlockId) -> (Vec<u8>, Vec<u8>) {
    let lower = chunk_key(block, 0).to_vec();
    let mut upper = chunk_key(block, u32::MAX).to_vec();
    upper.push(0);
    (lower, upper)
}

/// `m | file_id BE | index BE`.
pub fn meta_key(block: BlockId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = META_TAG;
    key[1..9].copy_from_slice(&block.file_id.0.to_be_bytes());
    key[9..17].copy_from_slice(&block.index.to_be_bytes());
    key
}

/// `t | file_id BE | index BE`: the block's marker ([`Marker`]).
pub fn marker_key(block: BlockId) -> [u8; 17] {
    let mut key = meta_key(block);
    key[0] = MARKER_TAG;
    key
}

/// The first key of the marker range.
pub fn marker_lower() -> Vec<u8> {
    vec![MARKER_TAG]
}

/// The (exclusive) end of the marker range.
pub fn marker_upper() -> Vec<u8> {
    vec![MARKER_TAG + 1]
}

/// The block id of a marker key, `None` if `key` is not one.
pub fn block_of_marker_key(key: &[u8]) -> Option<BlockId> {
    if key.first() != Some(&MARKER_TAG) {
        return None;
    }
    let mut meta = [0u8; 17];
    meta.copy_from_slice(key.get(..17).filter(|_| key.len() == 17)?);
    meta[0] = META_TAG;
    block_of_meta_key(&meta)
}

/// What a core knows of a block it holds no data of (see the store's
/// `copy_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// The copy at this version was trimmed: the block lives at other
    /// sites at this version or newer.
    Trimmed(Version),
    /// The block was deleted up to this version: it reads as zeros, and
    /// nothing older may be written over it.
    Deleted(Version),
}

impl Marker {
    /// The marker's version.
    pub fn version(self) -> Version {
        match self {
            Marker::Trimmed(v) | Marker::Deleted(v) => v,
        }
    }

    /// `version BE | kind` (1 trimmed, 2 deleted).
    pub fn encode(self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&self.version().0.to_be_bytes());
        out[8] = match self {
            Marker::Trimmed(_) => 1,
            Marker::Deleted(_) => 2,
        };
        out
    }

    /// Decodes a value written by [`Marker::encode`]; `None` if malformed.
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() != 9 {
            return None;
        }
        let version = u64::from_be_bytes(value[..8].try_into().ok()?);
        match value[8] {
            1 => Some(Marker::Trimmed(Version(version))),
            2 => Some(Marker::Deleted(Version(version))),
            _ => None,
        }
    }
}

/// `r | file_id BE`: the key of a file's deleted ranges.
pub fn ranges_key(file_id: FileId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = RANGES_TAG;
    key[1..9].copy_from_slice(&file_id.0.to_be_bytes());
    key
}

/// `from BE | until BE | version BE` for each range (the value of a
/// file's ranges key).
pub fn encode_ranges(ranges: &[DeletedRange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.len() * RANGE_LEN);
    for range in ranges {
        out.extend_from_slice(&range.from.to_be_bytes());
        out.extend_from_slice(&range.until.to_be_bytes());
        out.extend_from_slice(&range.version.0.to_be_bytes());
    }
    out
}

/// Decodes a value written by [`encode_ranges`]; `None` if malformed.
pub fn decode_ranges(value: &[u8]) -> Option<Vec<DeletedRange>> {
    if !value.len().is_multiple_of(RANGE_LEN) {
        return None;
    }
    value
        .chunks_exact(RANGE_LEN)
        .map(|entry| {
            let word = |at: usize| entry[at..at + 8].try_into().ok().map(u64::from_be_bytes);
            Some(DeletedRange {
                from: word(0)?,
                until: word(8)?,
                version: Version(word(16)?),
            })
        })
        .collect()
}

/// The first key of the metadata range.
pub fn meta_lower() -> Vec<u8> {
    vec![META_TAG]
}

/// The (exclusive) end of the metadata range.
pub fn meta_upper() -> Vec<u8> {
    vec![META_TAG + 1]
}

/// The block id of a metadata key, `None` if `key` is not one.
pub fn block_of_meta_key(key: &[u8]) -> Option<BlockId> {
    if key.len() != 17 || key[0] != META_TAG {
        return None;
    }
    let file_id = FileId(u64::from_be_bytes(key[1..9].try_into().ok()?));
    let index = u64::from_be_bytes(key[9..17].try_into().ok()?);
    Some(BlockId { file_id, index })
}

/// The metadata of one stored block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMeta {
    /// The version of the last write.
    pub version: Version,
    /// Highest byte ever written + 1.
    pub length: u64,
    /// Sum of the stored chunk lengths (what the block counts against the
    /// capacity), kept here so that opening and deleting need not read chunks.
    pub stored: u64,
    /// The ownership epoch the copy was written under: the highest epoch
    /// of the checked writes that made it, or the epoch its replica put
    /// carried (`None`: unchecked). See [`crate::store::fence`].
    pub epoch: Option<Epoch>,
}

impl BlockMeta {
    /// `version BE | length BE | stored BE | epoch BE`.
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        out[0..8].copy_from_slice(&self.version.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.length.to_be_bytes());
        out[16..24].copy_from_slice(&self.stored.to_be_bytes());
        out[24..32].copy_from_slice(&Epoch::to_wire(self.epoch).to_be_bytes());
        out
    }

    /// Decodes a value written by [`BlockMeta::encode`] (or by a store
    /// without copy epochs: no epoch); `None` if malformed.
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() != META_LEN && value.len() != META_LEN_NO_EPOCH {
            return None;
        }
        let epoch = match value.get(24..32) {
            Some(bytes) => Epoch::from_wire(u64::from_be_bytes(bytes.try_into().ok()?)),
            None => None,
        };
        Some(BlockMeta {
            version: Version(u64::from_be_bytes(value[0..8].try_into().ok()?)),
            length: u64::from_be_bytes(value[8..16].try_into().ok()?),
            stored: u64::from_be_bytes(value[16..24].try_into().ok()?),
            epoch,
        })
    }
}

/// Encodes a chunk value in place: `buf` holds [`CRC_LEN`] header bytes then
/// the data; the header is overwritten with the data's CRC-32C.
pub fn seal_chunk(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[CRC_LEN..]);
    buf[..CRC_LEN].copy_from_slice(&crc.to_be_bytes());
}

/// The data of a chunk value of a store with `chunk_size` chunks if its
/// checksum matches, `None` if the value is malformed or corrupt.
pub fn open_chunk(value: &[u8], chunk_size: u64) -> Option<&[u8]> {
    if value.len() < CRC_LEN || (value.len() - CRC_LEN) as u64 > chunk_size {
        return None;
    }
    let stored = u32::from_be_bytes(value[..CRC_LEN].try_into().ok()?);
    let data = &value[CRC_LEN..];
    (crc32c::crc32c(data) == stored).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_block_then_chunk() {
        let a = BlockId {
            file_id: FileId(1),
            index: 255,
        };
        let b = BlockId {
            file_id: FileId(2),
            index: 0,
        };
        assert!(chunk_key(a, 7) < chunk_key(b, 0));
        assert!(chunk_key(a, 7) < chunk_key(a, 256));
        assert!(meta_key(a) < meta_key(b));
        assert_eq!(block_of_meta_key(&meta_key(b)), Some(b));
        let (lo, hi) = chunk_bounds(a);
        assert!(lo.as_slice() <= chunk_key(a, 0).as_slice());
        assert!(hi.as_slice() > chunk_key(a, u32::MAX).as_slice());
        assert!(hi.as_slice() < chunk_key(b, 0).as_slice());
    }

    #[test]
    fn meta_and_chunks_round_trip() {
        let meta = BlockMeta {
            version: Version(3),
            length: 4096,
            stored: 65536,
            epoch: Epoch::new(9),
        };
        assert_eq!(BlockMeta::decode(&meta.encode()), Some(meta));
        let without_epoch = BlockMeta {
            epoch: None,
            ..meta
        };
        assert_eq!(BlockMeta::decode(&meta.encode()[..24]), Some(without_epoch));
        assert_eq!(BlockMeta::decode(&[1, 2, 3]), None);
        let mut buf = vec![0u8; CRC_LEN];
        buf.extend_from_slice(b"hello");
        seal_chunk(&mut buf);
        assert_eq!(open_chunk(&buf, CHUNK_SIZE), Some(&b"hello"[..]));
        assert_eq!(open_chunk(&buf, 4), None, "longer than a chunk");
        buf[5] ^= 1;
        assert_eq!(open_chunk(&buf, CHUNK_SIZE), None);
        assert_eq!(open_chunk(&[1, 2], CHUNK_SIZE), None);
    }
}
