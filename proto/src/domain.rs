//! Domain types built from wire messages, validated on the receiving side.

use std::num::NonZeroU64;

use bytes::Bytes;

use crate::WireError;
use crate::{core as wire_core, meta as wire_meta};

/// The largest block size the protocol allows (site-config limits the
/// configured size to this too).
pub const MAX_BLOCK_SIZE: u64 = 64 * 1024 * 1024;
/// The largest key meta-kvs accepts.
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// The largest value meta-kvs accepts.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// The most entries one scan returns.
pub const MAX_SCAN_LIMIT: u32 = 10_000;

/// Wall-clock milliseconds since the Unix epoch: the unit of every
/// timestamp geonfs stores or sends (replication jobs, claims, the
/// quarantine). Only ages and logs are read from it, never an order or a
/// lease (those use monotonic clocks, `docs/ARCHITECTURE.md`); a clock set
/// before 1970 reads as 0.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `Debug` and `Display` as the bare number (logs, errors and tools show
/// ids, versions and epochs that way).
macro_rules! shown_as_number {
    ($($ty:ty),*) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}

shown_as_number!(FileId, Version, Epoch);

/// A file's id: its inode number in meta-kvs (the `fileid` NFS shows) and
/// the first half of each of its blocks' ids. Directories have inode
/// numbers too, but no blocks: only regular files get a `FileId`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u64);

/// A block's version: where a write of it stands in the order of the
/// block's writes (the writer's hybrid clock: a later write gets a higher
/// version). Written versions start at 1; [`Version::ZERO`] is the version
/// of a block that exists nowhere yet (a partial write's base, a trim or
/// delete of nothing). On the wire and on disk: the number.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub u64);

impl Version {
    /// No version: the block exists nowhere yet.
    pub const ZERO: Version = Version(0);
    /// The highest version (a delete of every version).
    pub const MAX: Version = Version(u64::MAX);

    /// The version after this one (the highest stays the highest).
    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }

    /// The version before this one (zero stays zero).
    pub fn prev(self) -> Version {
        Version(self.0.saturating_sub(1))
    }
}

/// A block of a file: the file id from meta-kvs and the block's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    /// The file's id in meta-kvs.
    pub file_id: FileId,
    /// The block's index within the file.
    pub index: u64,
}

/// The blocks `from..until` of a file deleted up to `version` by one
/// truncate or remove: no index inside holds a copy at or below `version`,
/// stored or not (the core server's deleted ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletedRange {
    /// First block index deleted.
    pub from: u64,
    /// First block index after the range (exclusive).
    pub until: u64,
    /// The delete's version.
    pub version: Version,
}

impl DeletedRange {
    /// Whether the range covers block `index`.
    pub fn covers(&self, index: u64) -> bool {
        (self.from..self.until).contains(&index)
    }

    /// Whether `other` says nothing this range does not (it lies within
    /// this range and is not newer).
    pub fn includes(&self, other: &DeletedRange) -> bool {
        self.from <= other.from && other.until <= self.until && other.version <= self.version
    }
}

impl From<DeletedRange> for wire_core::DeletedRange {
    fn from(range: DeletedRange) -> Self {
        wire_core::DeletedRange {
            from_index: range.from,
            until_index: range.until,
            version: range.version.0,
        }
    }
}

impl From<wire_core::DeletedRange> for DeletedRange {
    fn from(range: wire_core::DeletedRange) -> Self {
        DeletedRange {
            from: range.from_index,
            until: range.until_index,
            version: Version(range.version),
        }
    }
}

/// `file/index`, the way logs, errors and tools name a block.
impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.file_id, self.index)
    }
}

impl From<BlockId> for wire_core::BlockId {
    fn from(id: BlockId) -> Self {
        wire_core::BlockId {
            file_id: id.file_id.0,
            index: id.index,
        }
    }
}

impl From<wire_core::BlockId> for BlockId {
    fn from(id: wire_core::BlockId) -> Self {
        BlockId {
            file_id: FileId(id.file_id),
            index: id.index,
        }
    }
}

/// An ownership epoch of a file: the owning site's block requests carry it,
/// every handover or takeover raises it, and a core fenced at a higher one
/// refuses them (`docs/ARCHITECTURE.md#ownership`). Never 0: where no
/// epoch applies (a request not checked against fences, a file never
/// fenced, no takeover from a lost owner) the type is `Option<Epoch>`,
/// which orders `None` below every epoch, and the wire carries 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(NonZeroU64);

impl Epoch {
    /// The epoch a file is created at.
    pub const FIRST: Epoch = Epoch(NonZeroU64::MIN);
    /// The highest epoch: a removed file's owner is fenced at it.
    pub const LAST: Epoch = Epoch(NonZeroU64::MAX);

    /// The epoch numbered `n`; `None` for 0.
    pub const fn new(n: u64) -> Option<Epoch> {
        match NonZeroU64::new(n) {
            Some(n) => Some(Epoch(n)),
            None => None,
        }
    }

    /// Its number (at least 1).
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The epoch after this one (the last one stays the last).
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }

    /// A wire or disk number as an epoch: 0 is none.
    pub const fn from_wire(n: u64) -> Option<Epoch> {
        Epoch::new(n)
    }

    /// An optional epoch as a wire or disk number: none is 0.
    pub fn to_wire(epoch: Option<Epoch>) -> u64 {
        epoch.map_or(0, Epoch::get)
    }
}

/// A range inside one block; `offset + len` never exceeds [`MAX_BLOCK_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRange {
    /// First byte, from the block's start.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl BlockRange {
    /// Checks that `offset..offset+len` lies inside a block of the largest size.
    pub fn new(offset: u64, len: u64) -> Result<Self, WireError> {
        if offset > MAX_BLOCK_SIZE {
            return Err(WireError::OutOfRange {
                field: "offset",
                value: offset,
                max: MAX_BLOCK_SIZE,
            });
        }
        let end = offset.saturating_add(len);
        if end > MAX_BLOCK_SIZE {
            return Err(WireError::OutOfRange {
                field: "offset + length",
                value: end,
                max: MAX_BLOCK_SIZE,
            });
        }
        Ok(BlockRange { offset, len })
    }
}

/// When a write must be on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Durable before the reply.
    Durable,
    /// Held at reply, durable after a flush.
    Held,
}

/// What a block write applies on (see `base_version` in `core.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBase {
    /// The data is the block's whole new content from offset 0; bytes
    /// past it read as zeros.
    Replace,
    /// A partial write, applied only on a complete copy at exactly this
    /// version ([`Version::ZERO`]: the block exists nowhere yet).
    On(Version),
    /// A partial write applied on whatever the store holds. Only for
    /// in-process callers that are the block's sole writer (benchmarks of
    /// the store, tests of other rules); never built from a request.
    Unchecked,
}

/// A validated block write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockWrite {
    /// The block written.
    pub block: BlockId,
    /// Where in the block.
    pub range: BlockRange,
    /// The bytes, `range.len` of them.
    pub data: Bytes,
    /// The version this write creates.
    pub version: Version,
    /// When it must be durable.
    pub durability: Durability,
    /// The caller's ownership epoch of the block's file; `None`: not
    /// checked. Refused when lower than the file's fence on the core.
    pub owner_epoch: Option<Epoch>,
    /// What the write applies on.
    pub base: WriteBase,
}

impl TryFrom<wire_core::WriteRequest> for BlockWrite {
    type Error = WireError;

    fn try_from(req: wire_core::WriteRequest) -> Result<Self, WireError> {
        let block = req.block.ok_or(WireError::MissingField("block"))?.into();
        let range = BlockRange::new(req.offset, req.data.len() as u64)?;
        if req.version == 0 {
            return Err(WireError::Invalid {
                field: "version",
                reason: "versions start at 1".into(),
            });
        }
        let durability = match wire_core::Durability::try_from(req.durability) {
            Ok(wire_core::Durability::Durable) => Durability::Durable,
            Ok(wire_core::Durability::Held) => Durability::Held,
            Ok(wire_core::Durability::Unspecified) | Err(_) => {
                return Err(WireError::Invalid {
                    field: "durability",
                    reason: format!("{} is not DURABLE or HELD", req.durability),
                })
            }
        };
        let base = match (req.replace, req.base_version) {
            (true, None) if req.offset == 0 => WriteBase::Replace,
            (true, None) => {
                return Err(WireError::Invalid {
                    field: "replace",
                    reason: format!("a replacing write starts at offset 0, not {}", req.offset),
                })
            }
            (true, Some(_)) => {
                return Err(WireError::Invalid {
                    field: "base_version",
                    reason: "a replacing write names no base version".into(),
                })
            }
            (false, Some(base)) if base < req.version => WriteBase::On(Version(base)),
            (false, Some(base)) => {
                return Err(WireError::Invalid {
                    field: "base_version",
                    reason: format!(
                        "base {base} is not older than the write's version {}",
                        req.version
                    ),
                })
            }
            (false, None) => return Err(WireError::MissingField("base_version")),
        };
        Ok(BlockWrite {
            block,
            range,
            data: req.data,
            version: Version(req.version),
            durability,
            owner_epoch: Epoch::from_wire(req.owner_epoch),
            base,
        })
    }
}

/// A validated block read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRead {
    /// The block read.
    pub block: BlockId,
    /// Which bytes.
    pub range: BlockRange,
    /// The caller's ownership epoch of the block's file; `None`: not
    /// checked. Refused when lower than the file's fence on the core.
    pub owner_epoch: Option<Epoch>,
}

impl TryFrom<wire_core::ReadRequest> for BlockRead {
    type Error = WireError;

    fn try_from(req: wire_core::ReadRequest) -> Result<Self, WireError> {
        let block = req.block.ok_or(WireError::MissingField("block"))?.into();
        let range = BlockRange::new(req.offset, u64::from(req.length))?;
        Ok(BlockRead {
            block,
            range,
            owner_epoch: Epoch::from_wire(req.owner_epoch),
        })
    }
}

/// Checks a meta-kvs key: non-empty and at most [`MAX_KEY_LEN`] bytes.
pub fn check_key(field: &'static str, key: &[u8]) -> Result<(), WireError> {
    if key.is_empty() {
        return Err(WireError::Invalid {
            field,
            reason: "keys must not be empty".into(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(WireError::OutOfRange {
            field,
            value: key.len() as u64,
            max: MAX_KEY_LEN as u64,
        });
    }
    Ok(())
}

/// Checks a meta-kvs value: at most [`MAX_VALUE_LEN`] bytes.
pub fn check_value(field: &'static str, value: &[u8]) -> Result<(), WireError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(WireError::OutOfRange {
            field,
            value: value.len() as u64,
            max: MAX_VALUE_LEN as u64,
        });
    }
    Ok(())
}

/// A validated range scan of meta-kvs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyScan {
    /// First key (inclusive).
    pub start: Bytes,
    /// End key (exclusive); `None` = to the end of the key space.
    pub end: Option<Bytes>,
    /// At most this many entries, 1..=[`MAX_SCAN_LIMIT`].
    pub limit: u32,
}

impl TryFrom<wire_meta::ScanRequest> for KeyScan {
    type Error = WireError;

    fn try_from(req: wire_meta::ScanRequest) -> Result<Self, WireError> {
        if req.start.len() > MAX_KEY_LEN {
            return Err(WireError::OutOfRange {
                field: "start",
                value: req.start.len() as u64,
                max: MAX_KEY_LEN as u64,
            });
        }
        let end = if req.end.is_empty() {
            None
        } else {
            check_key("end", &req.end)?;
            Some(req.end)
        };
        if req.limit == 0 || req.limit > MAX_SCAN_LIMIT {
            return Err(WireError::OutOfRange {
                field: "limit",
                value: u64::from(req.limit),
                max: u64::from(MAX_SCAN_LIMIT),
            });
        }
        Ok(KeyScan {
            start: req.start,
            end,
            limit: req.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_req(offset: u64, len: usize) -> wire_core::WriteRequest {
        wire_core::WriteRequest {
            block: Some(wire_core::BlockId {
                file_id: 7,
                index: 2,
            }),
            offset,
            data: Bytes::from(vec![1u8; len]),
            version: 1,
            durability: wire_core::Durability::Held as i32,
            base_version: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn a_block_is_named_file_slash_index() {
        let block = BlockId {
            file_id: FileId(7),
            index: 2,
        };
        assert_eq!(block.to_string(), "7/2");
        assert_eq!(format!("block {block}"), "block 7/2");
    }

    #[test]
    fn a_write_names_its_base_or_replaces_the_block() {
        assert_eq!(
            BlockWrite::try_from(write_req(4096, 10)).unwrap().base,
            WriteBase::On(Version::ZERO)
        );
        let mut req = write_req(0, 10);
        req.base_version = None;
        assert!(matches!(
            BlockWrite::try_from(req.clone()).unwrap_err(),
            WireError::MissingField("base_version")
        ));
        req.replace = true;
        assert_eq!(
            BlockWrite::try_from(req.clone()).unwrap().base,
            WriteBase::Replace
        );
        req.offset = 5;
        assert!(
            BlockWrite::try_from(req.clone()).is_err(),
            "replace starts at 0"
        );
        req.offset = 0;
        req.base_version = Some(0);
        assert!(
            BlockWrite::try_from(req.clone()).is_err(),
            "replace names no base"
        );
        req.replace = false;
        req.base_version = Some(1);
        assert!(
            BlockWrite::try_from(req).is_err(),
            "the base is older than the write"
        );
    }

    #[test]
    fn valid_write_converts() {
        let write = BlockWrite::try_from(write_req(4096, 4096)).unwrap();
        assert_eq!(
            write.block,
            BlockId {
                file_id: FileId(7),
                index: 2
            }
        );
        assert_eq!(
            write.range,
            BlockRange {
                offset: 4096,
                len: 4096
            }
        );
        assert_eq!(write.durability, Durability::Held);
        assert_eq!(write.owner_epoch, None);
        let mut req = write_req(0, 1);
        req.owner_epoch = 9;
        assert_eq!(
            BlockWrite::try_from(req).unwrap().owner_epoch,
            Epoch::new(9)
        );
        let read = BlockRead::try_from(wire_core::ReadRequest {
            block: Some(wire_core::BlockId {
                file_id: 7,
                index: 2,
            }),
            offset: 0,
            length: 10,
            owner_epoch: 4,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read.owner_epoch, Epoch::new(4));
    }

    #[test]
    fn write_past_the_largest_block_is_refused() {
        let err = BlockWrite::try_from(write_req(MAX_BLOCK_SIZE - 10, 11)).unwrap_err();
        assert!(matches!(
            err,
            WireError::OutOfRange {
                field: "offset + length",
                ..
            }
        ));
        let err = BlockWrite::try_from(write_req(u64::MAX, 1)).unwrap_err();
        assert!(matches!(
            err,
            WireError::OutOfRange {
                field: "offset",
                ..
            }
        ));
    }

    #[test]
    fn write_without_block_or_durability_is_refused() {
        let mut req = write_req(0, 1);
        req.block = None;
        assert_eq!(
            BlockWrite::try_from(req).unwrap_err(),
            WireError::MissingField("block")
        );
        let mut req = write_req(0, 1);
        req.durability = 99;
        let err = BlockWrite::try_from(req).unwrap_err();
        assert!(err.to_string().contains("durability"), "{err}");
        let mut req = write_req(0, 1);
        req.version = 0;
        assert!(BlockWrite::try_from(req).is_err());
    }

    #[test]
    fn epoch_zero_is_none_on_the_wire_and_none_orders_first() {
        assert_eq!(Epoch::from_wire(0), None);
        assert_eq!(Epoch::to_wire(None), 0);
        assert_eq!(Epoch::from_wire(7).map(Epoch::get), Some(7));
        assert_eq!(Epoch::to_wire(Epoch::new(7)), 7);
        assert_eq!(Some(Epoch::FIRST), Epoch::new(1));
        assert!(None < Some(Epoch::FIRST));
        assert_eq!(Epoch::FIRST.next(), Epoch::new(2).unwrap());
        let last = Epoch::new(u64::MAX).unwrap();
        assert_eq!(last.next(), last);
        assert_eq!(format!("{:?} {}", Epoch::FIRST, Epoch::FIRST), "1 1");
    }

    #[test]
    fn scan_limits_are_checked() {
        let scan = |limit, end: &[u8]| wire_meta::ScanRequest {
            start: Bytes::from_static(b"a"),
            end: Bytes::copy_from_slice(end),
            limit,
        };
        assert!(KeyScan::try_from(scan(0, b"")).is_err());
        assert!(KeyScan::try_from(scan(MAX_SCAN_LIMIT + 1, b"")).is_err());
        let ok = KeyScan::try_from(scan(10, b"")).unwrap();
        assert_eq!(ok.end, None);
        assert!(KeyScan::try_from(scan(10, &vec![0u8; MAX_KEY_LEN + 1])).is_err());
    }

    #[test]
    fn wire_errors_become_invalid_argument() {
        let status: tonic::Status = WireError::MissingField("block").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("block"));
    }
}
