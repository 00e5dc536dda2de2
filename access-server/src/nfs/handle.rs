//! NFS file handles: a fixed 40-byte layout, the same at every access
//! server and across restarts (docs/ARCHITECTURE.md#invariant-6).
//!
//! ```text
//! bytes  0..8   handle generation (random, once per cluster, in meta-kvs)
//! bytes  8..16  file id (never reused)
//! bytes 16..24  inode generation (random, fixed when the inode is created)
//! bytes 24..32  file id of the directory the client mounted
//! bytes 32..40  that directory's inode generation
//! ```
//!
//! All are big-endian. A handle of another length (such as the 24-byte
//! handles before the mount root was added) is `NFS3ERR_BADHANDLE`; a
//! handle of another handle generation (another cluster, or a wiped one)
//! is `NFS3ERR_STALE`; so is a file id that no longer exists or whose inode
//! generation differs.
//!
//! The mount root is what keeps a client that mounted a subdirectory
//! (`/geonfs/vms`, as QEMU's libnfs does for an image below it) below it:
//! `..` there is the directory itself, and every handle made from one of
//! its handles carries it on. Inode generations are random 64-bit numbers
//! a client learns only from handles it was given, so it cannot name a
//! mount root above its own.

use bytes::Bytes;
use geonfs_meta_kvs::MetaClient;
use geonfs_proto::meta::{condition, operation, Condition, KeyValue, Operation, TxnRequest};
use nfs3_types::nfs3::{nfs_fh3, nfsstat3};
use nfs3_types::xdr_codec::Opaque;
use rand::Rng;

use crate::namespace::{Inode, NamespaceError};

/// The meta-kvs key holding the cluster's handle generation (8 bytes,
/// big-endian).
pub const HANDLE_GENERATION_KEY: &[u8] = b"fs/handle_generation";

/// The length of every handle this server hands out.
pub const HANDLE_LEN: usize = 40;

/// How often [`HandleCodec::load`] retries reading back the generation.
const LOAD_ATTEMPTS: u32 = 8;

/// The decoded contents of a handle of this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHandle {
    /// The file id.
    pub id: u64,
    /// The inode generation the handle was made for.
    pub generation: u64,
    /// The directory the client mounted, which it may not climb above.
    pub mount: MountRoot,
}

/// The directory a client mounted (the export's root or a directory below
/// it), as its handles carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountRoot {
    /// Its file id.
    pub id: u64,
    /// Its inode generation.
    pub generation: u64,
}

impl MountRoot {
    /// A mount of directory `dir`.
    pub fn of(dir: &Inode) -> Self {
        MountRoot {
            id: dir.id,
            generation: dir.generation,
        }
    }
}

/// Encodes and decodes the handles of one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleCodec {
    handle_generation: u64,
}

impl HandleCodec {
    /// A codec for `handle_generation` (tests; servers use
    /// [`HandleCodec::load`]).
    pub fn new(handle_generation: u64) -> Self {
        HandleCodec { handle_generation }
    }

    /// The codec of the cluster behind `client`: reads the handle
    /// generation, creating it first (with an absent-condition transaction,
    /// so concurrent servers agree on one) when the cluster has none.
    pub async fn load(client: &MetaClient) -> Result<Self, NamespaceError> {
        for _ in 0..LOAD_ATTEMPTS {
            if let Some(kv) = client
                .get(Bytes::from_static(HANDLE_GENERATION_KEY))
                .await?
            {
                let bytes: [u8; 8] = kv.value.as_ref().try_into().map_err(|_| {
                    NamespaceError::corrupt("handle generation", "not 8 bytes long")
                })?;
                return Ok(Self::new(u64::from_be_bytes(bytes)));
            }
            let fresh: u64 = rand::rng().random();
            let key = Bytes::from_static(HANDLE_GENERATION_KEY);
            let req = TxnRequest {
                conditions: vec![Condition {
                    key: key.clone(),
                    test: Some(condition::Test::Absent(true)),
                }],
                operations: vec![Operation {
                    op: Some(operation::Op::Put(KeyValue {
                        key,
                        value: Bytes::copy_from_slice(&fresh.to_be_bytes()),
                        version: 0,
                    })),
                }],
            };
            // Whoever won (us or a concurrent server), the next read sees it;
            // an ambiguous outcome is resolved the same way.
            match client.txn(req).await {
                Ok(_) | Err(geonfs_meta_kvs::MetaError::OutcomeUnknown(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Err(NamespaceError::Busy)
    }

    /// The cluster's handle generation.
    pub fn handle_generation(&self) -> u64 {
        self.handle_generation
    }

    /// The handle of `inode` for a client that mounted `mount`.
    pub fn encode(&self, inode: &Inode, mount: MountRoot) -> nfs_fh3 {
        nfs_fh3 {
            data: Opaque::owned(self.encode_bytes(inode.id, inode.generation, mount)),
        }
    }

    /// The handle bytes of file `id` with inode generation `generation`,
    /// for a client that mounted `mount`.
    pub fn encode_bytes(&self, id: u64, generation: u64, mount: MountRoot) -> Vec<u8> {
        let mut out = Vec::with_capacity(HANDLE_LEN);
        for word in [
            self.handle_generation,
            id,
            generation,
            mount.id,
            mount.generation,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Decodes a handle: `NFS3ERR_BADHANDLE` when it is not one of ours in
    /// shape, `NFS3ERR_STALE` when it is of another handle generation.
    pub fn decode(&self, handle: &[u8]) -> Result<FileHandle, nfsstat3> {
        let word = |at: usize| -> Result<u64, nfsstat3> {
            handle
                .get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or(nfsstat3::NFS3ERR_BADHANDLE)
        };
        if handle.len() != HANDLE_LEN {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        if word(0)? != self.handle_generation {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        Ok(FileHandle {
            id: word(8)?,
            generation: word(16)?,
            mount: MountRoot {
                id: word(24)?,
                generation: word(32)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_reject_foreign_ones() {
        let codec = HandleCodec::new(0xfeed);
        let mount = MountRoot {
            id: 3,
            generation: 9,
        };
        let bytes = codec.encode_bytes(42, 7, mount);
        assert_eq!(bytes.len(), HANDLE_LEN);
        assert_eq!(
            codec.decode(&bytes),
            Ok(FileHandle {
                id: 42,
                generation: 7,
                mount,
            })
        );
        // A truncated handle (the 24-byte layout without a mount root
        // among them) is not one of ours.
        for len in [0, 24, HANDLE_LEN - 1] {
            assert_eq!(
                codec.decode(&bytes[..len]),
                Err(nfsstat3::NFS3ERR_BADHANDLE)
            );
        }
        let other = HandleCodec::new(0xbeef).encode_bytes(42, 7, mount);
        assert_eq!(codec.decode(&other), Err(nfsstat3::NFS3ERR_STALE));
    }
}
