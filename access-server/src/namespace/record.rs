//! The stored records of the namespace (prost messages: versionable, unknown
//! fields of newer versions are skipped) and the public types decoded from
//! them.

use geonfs_proto::domain::FileId;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;

use super::error::NamespaceError;

/// The kind of a namespace object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

impl FileKind {
    fn to_wire(self) -> i32 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
        }
    }

    fn from_wire(value: i32, what: impl FnOnce() -> String) -> Result<Self, NamespaceError> {
        match value {
            1 => Ok(FileKind::Regular),
            2 => Ok(FileKind::Directory),
            3 => Ok(FileKind::Symlink),
            other => Err(NamespaceError::corrupt(
                what(),
                format!("unknown kind {other}"),
            )),
        }
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch (NFS's
/// `nfstime3`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Timestamp {
    /// Whole seconds since the epoch.
    #[prost(uint32, tag = "1")]
    pub seconds: u32,
    /// Nanoseconds, below 1 000 000 000.
    #[prost(uint32, tag = "2")]
    pub nanos: u32,
}

impl Timestamp {
    /// The current time of this host.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
            nanos: since.subsec_nanos(),
        }
    }
}

/// A file, directory or symlink of the namespace, as stored in meta-kvs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// The file id: never reused.
    pub id: u64,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files; the target length for symlinks).
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last change of the contents (for directories: of the entries).
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Link count: 1 for files and symlinks, 2 + subdirectories for
    /// directories.
    pub nlink: u32,
    /// The target of a symlink (empty otherwise).
    pub symlink_target: Vec<u8>,
    /// Random, fixed at creation: part of the NFS file handle.
    pub generation: u64,
    /// Directories: the parent directory (the root is its own parent).
    pub parent: u64,
    /// Directories: the next readdir sequence number to hand out.
    pub next_seq: u64,
    /// Directories: the number of entries.
    pub entries: u64,
    /// Regular files made by an EXCLUSIVE create: the client's verifier.
    pub verifier: Option<[u8; 8]>,
    /// meta-kvs version of the record when it was read (0 = not stored).
    pub version: u64,
    /// Random token of the last change, to recognise our own change after
    /// an ambiguous meta-kvs failure.
    pub(crate) change_token: u64,
}

impl Inode {
    /// The inode number as the id of a file's data (its blocks).
    pub fn file_id(&self) -> FileId {
        FileId(self.id)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    /// Takes this directory's next cookie sequence number (from 1).
    pub(crate) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        seq
    }

    /// One entry more in this directory (a subdirectory also links back
    /// to it with `..`).
    pub(crate) fn entry_added(&mut self, is_dir: bool) {
        self.entries += 1;
        if is_dir {
            self.nlink += 1;
        }
    }

    /// One entry fewer in this directory.
    pub(crate) fn entry_removed(&mut self, was_dir: bool) {
        self.entries = self.entries.saturating_sub(1);
        if was_dir {
            self.nlink = self.nlink.saturating_sub(1);
        }
    }

    /// This directory's contents changed at `now`, by the change `token`.
    pub(crate) fn contents_changed(&mut self, now: Timestamp, token: u64) {
        self.mtime = now;
        self.ctime = now;
        self.change_token = token;
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct InodeRecord {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(uint32, tag = "2")]
    mode: u32,
    #[prost(uint32, tag = "3")]
    uid: u32,
    #[prost(uint32, tag = "4")]
    gid: u32,
    #[prost(uint64, tag = "5")]
    size: u64,
    #[prost(message, optional, tag = "6")]
    atime: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    mtime: Option<Timestamp>,
    #[prost(message, optional, tag = "8")]
    ctime: Option<Timestamp>,
    #[prost(uint32, tag = "9")]
    nlink: u32,
    #[prost(bytes = "vec", tag = "10")]
    symlink_target: Vec<u8>,
    #[prost(fixed64, tag = "11")]
    generation: u64,
    #[prost(uint64, tag = "12")]
    parent: u64,
    #[prost(uint64, tag = "13")]
    next_seq: u64,
    #[prost(uint64, tag = "14")]
    entries: u64,
    #[prost(fixed64, optional, tag = "15")]
    verifier: Option<u64>,
    #[prost(fixed64, tag = "16")]
    change_token: u64,
}

/// Encodes an inode for storage (its `id` and `version` are not stored).
pub fn encode_inode(inode: &Inode) -> Bytes {
    InodeRecord {
        kind: inode.kind.to_wire(),
        mode: inode.mode,
        uid: inode.uid,
        gid: inode.gid,
        size: inode.size,
        atime: Some(inode.atime),
        mtime: Some(inode.mtime),
        ctime: Some(inode.ctime),
        nlink: inode.nlink,
        symlink_target: inode.symlink_target.clone(),
        generation: inode.generation,
        parent: inode.parent,
        next_seq: inode.next_seq,
        entries: inode.entries,
        verifier: inode.verifier.map(u64::from_be_bytes),
        change_token: inode.change_token,
    }
    .encode_to_vec()
    .into()
}

/// Decodes the stored inode `id` read at `version`.
pub fn decode_inode(id: u64, version: u64, bytes: &[u8]) -> Result<Inode, NamespaceError> {
    let what = || format!("inode {id}");
    let r =
        InodeRecord::decode(bytes).map_err(|e| NamespaceError::corrupt(what(), e.to_string()))?;
    Ok(Inode {
        id,
        kind: FileKind::from_wire(r.kind, what)?,
        mode: r.mode,
        uid: r.uid,
        gid: r.gid,
        size: r.size,
        atime: r.atime.unwrap_or_default(),
        mtime: r.mtime.unwrap_or_default(),
        ctime: r.ctime.unwrap_or_default(),
        nlink: r.nlink,
        symlink_target: r.symlink_target,
        generation: r.generation,
        parent: r.parent,
        next_seq: r.next_seq,
        entries: r.entries,
        verifier: r.verifier.map(u64::to_be_bytes),
        version,
        change_token: r.change_token,
    })
}

/// The value of a name key: which object the name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameEntry {
    /// The child's id.
    pub id: u64,
    /// The child's kind.
    pub kind: FileKind,
    /// The entry's readdir cookie in its directory.
    pub seq: u64,
    /// meta-kvs version of the name key when read (0 = not stored).
    pub version: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NameRecord {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int32, tag = "2")]
    kind: i32,
    #[prost(uint64, tag = "3")]
    seq: u64,
}

/// Encodes a name entry.
pub fn encode_name(entry: &NameEntry) -> Bytes {
    NameRecord {
        id: entry.id,
        kind: entry.kind.to_wire(),
        seq: entry.seq,
    }
    .encode_to_vec()
    .into()
}

/// Decodes the name entry `name` of `dir` read at `version`.
pub fn decode_name(
    dir: u64,
    name: &[u8],
    version: u64,
    bytes: &[u8],
) -> Result<NameEntry, NamespaceError> {
    let what = || {
        format!(
            "entry {:?} of directory {dir}",
            String::from_utf8_lossy(name)
        )
    };
    let r =
        NameRecord::decode(bytes).map_err(|e| NamespaceError::corrupt(what(), e.to_string()))?;
    Ok(NameEntry {
        id: r.id,
        kind: FileKind::from_wire(r.kind, what)?,
        seq: r.seq,
        version,
    })
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: Vec<u8>,
    /// The child's id.
    pub id: u64,
    /// The child's kind.
    pub kind: FileKind,
    /// The readdir cookie of this entry: pass it to continue after it.
    pub cookie: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryRecord {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(int32, tag = "3")]
    kind: i32,
}

/// Encodes the value of a cookie key.
pub fn encode_entry(name: &[u8], id: u64, kind: FileKind) -> Bytes {
    EntryRecord {
        name: name.to_vec(),
        id,
        kind: kind.to_wire(),
    }
    .encode_to_vec()
    .into()
}

/// Decodes the value of cookie key `cookie` of `dir`.
pub fn decode_entry(dir: u64, cookie: u64, bytes: &[u8]) -> Result<DirEntry, NamespaceError> {
    let what = || format!("cookie {cookie} of directory {dir}");
    let r =
        EntryRecord::decode(bytes).map_err(|e| NamespaceError::corrupt(what(), e.to_string()))?;
    Ok(DirEntry {
        name: r.name,
        id: r.id,
        kind: FileKind::from_wire(r.kind, what)?,
        cookie,
    })
}

/// Decodes the id counter's value (8 bytes, big-endian).
pub fn decode_counter(bytes: &[u8]) -> Result<u64, NamespaceError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| NamespaceError::corrupt("id counter", format!("{} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inode {
        Inode {
            id: 42,
            kind: FileKind::Directory,
            mode: 0o755,
            uid: 1000,
            gid: 100,
            size: 0,
            atime: Timestamp {
                seconds: 1,
                nanos: 2,
            },
            mtime: Timestamp {
                seconds: 3,
                nanos: 4,
            },
            ctime: Timestamp {
                seconds: 5,
                nanos: 6,
            },
            nlink: 3,
            symlink_target: Vec::new(),
            generation: 0xdead_beef_0123_4567,
            parent: 1,
            next_seq: 9,
            entries: 4,
            verifier: Some(*b"verifier"),
            version: 77,
            change_token: 5,
        }
    }

    #[test]
    fn inodes_round_trip() {
        let inode = sample();
        let bytes = encode_inode(&inode);
        assert_eq!(decode_inode(42, 77, &bytes).unwrap(), inode);
        let mut plain = sample();
        plain.verifier = None;
        plain.kind = FileKind::Symlink;
        plain.symlink_target = b"../x".to_vec();
        assert_eq!(decode_inode(42, 77, &encode_inode(&plain)).unwrap(), plain);
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            decode_inode(1, 1, &[0xff, 0xff, 0xff]),
            Err(NamespaceError::Corrupt { .. })
        ));
        // Decodes as a message but with an unknown kind.
        let bad = InodeRecord {
            kind: 9,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            decode_inode(1, 1, &bad),
            Err(NamespaceError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_counter(b"1234"),
            Err(NamespaceError::Corrupt { .. })
        ));
    }

    #[test]
    fn entries_round_trip() {
        let name = NameEntry {
            id: 7,
            kind: FileKind::Regular,
            seq: 3,
            version: 11,
        };
        assert_eq!(decode_name(1, b"a", 11, &encode_name(&name)).unwrap(), name);
        let entry = decode_entry(1, 3, &encode_entry(b"a", 7, FileKind::Symlink)).unwrap();
        assert_eq!(
            entry,
            DirEntry {
                name: b"a".to_vec(),
                id: 7,
                kind: FileKind::Symlink,
                cookie: 3
            }
        );
        assert_eq!(decode_counter(&5u64.to_be_bytes()).unwrap(), 5);
    }
}
