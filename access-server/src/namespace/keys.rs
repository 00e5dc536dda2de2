//! The meta-kvs keys of the namespace and the validation of entry names.
//!
//! All keys start with [`PREFIX`] (`fs/`) so the namespace shares meta-kvs
//! with other users without collisions. Ids and sequence numbers are 8-byte
//! big-endian, so a scan visits them in numeric order:
//!
//! ```text
//! fs/id                           → u64 BE: the first id not yet reserved
//! fs/i/<id u64>                   → InodeRecord (prost)
//! fs/n/<dir id u64><name bytes>   → NameRecord (prost): child id, kind, seq
//! fs/c/<dir id u64><seq u64>      → EntryRecord (prost): name, child id, kind
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::error::NamespaceError;

/// The prefix of every namespace key.
pub const PREFIX: &[u8] = b"fs/";
/// The longest entry name, in bytes (NFS's and Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

const ID_COUNTER: &[u8] = b"fs/id";
const INODE: &[u8] = b"fs/i/";
const NAME: &[u8] = b"fs/n/";
const COOKIE: &[u8] = b"fs/c/";

fn key(tag: &[u8], id: u64, rest: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(tag.len() + 8 + rest.len());
    buf.put_slice(tag);
    buf.put_u64(id);
    buf.put_slice(rest);
    buf.freeze()
}

/// The key of the id allocator's counter.
pub fn id_counter_key() -> Bytes {
    Bytes::from_static(ID_COUNTER)
}

/// The key of inode `id`.
pub fn inode_key(id: u64) -> Bytes {
    key(INODE, id, &[])
}

/// The key of the entry `name` in directory `dir`.
pub fn name_key(dir: u64, name: &[u8]) -> Bytes {
    key(NAME, dir, name)
}

/// The key of the entry with readdir cookie `seq` in directory `dir`.
pub fn cookie_key(dir: u64, seq: u64) -> Bytes {
    key(COOKIE, dir, &seq.to_be_bytes())
}

/// The exclusive end of the cookie keys of `dir`: sequence numbers never
/// reach `u64::MAX`.
pub fn cookie_end(dir: u64) -> Bytes {
    cookie_key(dir, u64::MAX)
}

/// The sequence number in a cookie key of `dir`, or `None` when `key` is not
/// one.
pub fn parse_cookie_key(dir: u64, key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(COOKIE)?;
    if rest.len() != 16 || rest[..8] != dir.to_be_bytes() {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&rest[8..]);
    Some(u64::from_be_bytes(seq))
}

/// Checks that `name` can be the name of a new or existing directory entry:
/// not empty, not `.` or `..`, no `/` or NUL, at most [`MAX_NAME_LEN`]
/// bytes.
pub fn validate_name(name: &[u8]) -> Result<(), NamespaceError> {
    if name.is_empty() {
        return Err(NamespaceError::InvalidName("empty name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NamespaceError::NameTooLong);
    }
    if name == b"." || name == b".." {
        return Err(NamespaceError::InvalidName("`.` and `..` are not entries"));
    }
    if name.contains(&b'/') {
        return Err(NamespaceError::InvalidName("name contains `/`"));
    }
    if name.contains(&0) {
        return Err(NamespaceError::InvalidName("name contains NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_big_endian_and_ordered() {
        assert_eq!(&inode_key(1)[..], b"fs/i/\0\0\0\0\0\0\0\x01");
        assert_eq!(&name_key(2, b"ab")[..], b"fs/n/\0\0\0\0\0\0\0\x02ab");
        assert_eq!(
            &cookie_key(3, 258)[..],
            b"fs/c/\0\0\0\0\0\0\0\x03\0\0\0\0\0\0\x01\x02"
        );
        assert!(inode_key(255) < inode_key(256));
        assert!(cookie_key(7, 255) < cookie_key(7, 256));
        assert!(cookie_key(7, u64::MAX - 1) < cookie_end(7));
        assert!(cookie_end(7) < cookie_key(8, 0));
        assert!(name_key(1, b"zzz") < name_key(2, b""));
    }

    #[test]
    fn cookie_keys_parse_back() {
        assert_eq!(parse_cookie_key(9, &cookie_key(9, 12345)), Some(12345));
        assert_eq!(parse_cookie_key(8, &cookie_key(9, 1)), None);
        assert_eq!(parse_cookie_key(9, &inode_key(9)), None);
        assert_eq!(parse_cookie_key(9, b"fs/c/short"), None);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name(b"a").is_ok());
        assert!(validate_name(b"...").is_ok());
        assert!(validate_name(b".hidden").is_ok());
        assert!(validate_name("é ü".as_bytes()).is_ok());
        assert!(validate_name(&[b'x'; 255]).is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(
                matches!(validate_name(bad), Err(NamespaceError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            validate_name(&[b'x'; 256]),
            Err(NamespaceError::NameTooLong)
        ));
    }
}
