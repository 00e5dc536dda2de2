//! The lengths in a call's arguments, checked before `nfs3_types` decodes
//! them: its decoders allocate whatever length a peer announces for an
//! opaque or string (`vec![0; len]`, up to 4 GiB) before looking for the
//! bytes, and a process that cannot allocate aborts. So the arguments of
//! every NFS and MOUNT procedure are walked here first, field by field,
//! and a length longer than the bytes that follow it is refused
//! (GARBAGE_ARGS) before anything is allocated. What arrived is bounded by
//! the record size, so every allocation the decoders then make is too.
//!
//! The walk follows RFC 1813's argument layouts; where a union's
//! discriminant is unknown it stops (the decoder refuses it there without
//! reading further), so it never refuses arguments the decoder accepts.

use nfs3_types::mount::MOUNT_PROGRAM;
use nfs3_types::nfs3::NFS_PROGRAM;

/// Reads the XDR words of an argument body, refusing lengths that run
/// past its end.
struct Walk<'a> {
    rest: &'a [u8],
}

/// Why a walk stopped: the arguments are malformed (refuse them), or the
/// walk reached a union arm it does not follow (leave it to the decoder).
enum Stop {
    Malformed,
    Unknown,
}

type Step = Result<(), Stop>;

impl Walk<'_> {
    fn u32(&mut self) -> Result<u32, Stop> {
        let (word, rest) = self.rest.split_first_chunk::<4>().ok_or(Stop::Malformed)?;
        self.rest = rest;
        Ok(u32::from_be_bytes(*word))
    }

    fn skip(&mut self, bytes: usize) -> Step {
        self.rest = self.rest.get(bytes..).ok_or(Stop::Malformed)?;
        Ok(())
    }

    /// A variable-length opaque or string: its length must fit in what
    /// follows (padding included).
    fn opaque(&mut self) -> Step {
        let len = usize::try_from(self.u32()?).map_err(|_| Stop::Malformed)?;
        self.skip(len.checked_next_multiple_of(4).ok_or(Stop::Malformed)?)
    }

    /// An optional value: a boolean, then `value` when it is set.
    fn optional(&mut self, value: impl FnOnce(&mut Self) -> Step) -> Step {
        match self.u32()? {
            0 => Ok(()),
            1 => value(self),
            _ => Err(Stop::Unknown),
        }
    }

    /// `sattr3`.
    fn sattr3(&mut self) -> Step {
        for _ in 0..3 {
            self.optional(|w| w.skip(4))?; // mode, uid, gid
        }
        self.optional(|w| w.skip(8))?; // size
        for _ in 0..2 {
            // atime, mtime: DONT_CHANGE, SET_TO_SERVER_TIME, or a time.
            match self.u32()? {
                0 | 1 => {}
                2 => self.skip(8)?,
                _ => return Err(Stop::Unknown),
            }
        }
        Ok(())
    }

    /// `diropargs3`: a directory handle and a name.
    fn dirop(&mut self) -> Step {
        self.opaque()?;
        self.opaque()
    }
}

/// Whether the arguments of NFS v3 procedure `procedure` are refused for a
/// length that runs past their end (see the module documentation).
pub(crate) fn nfs_args_overrun(procedure: NFS_PROGRAM, args: &[u8]) -> bool {
    use NFS_PROGRAM::*;
    let mut w = Walk { rest: args };
    let walked = match procedure {
        NFSPROC3_NULL => Ok(()),
        NFSPROC3_GETATTR | NFSPROC3_READLINK | NFSPROC3_FSSTAT | NFSPROC3_FSINFO
        | NFSPROC3_PATHCONF | NFSPROC3_ACCESS | NFSPROC3_READ | NFSPROC3_COMMIT
        | NFSPROC3_READDIR | NFSPROC3_READDIRPLUS => w.opaque(),
        NFSPROC3_SETATTR => w.opaque().and_then(|()| w.sattr3()),
        NFSPROC3_LOOKUP | NFSPROC3_REMOVE | NFSPROC3_RMDIR => w.dirop(),
        NFSPROC3_WRITE => w.opaque().and_then(|()| {
            w.skip(16)?; // offset, count, stable
            w.opaque()
        }),
        NFSPROC3_CREATE => w.dirop().and_then(|()| match w.u32()? {
            0 | 1 => w.sattr3(),
            _ => Ok(()), // EXCLUSIVE: a fixed verifier; or unknown
        }),
        NFSPROC3_MKDIR => w.dirop().and_then(|()| w.sattr3()),
        NFSPROC3_SYMLINK => w.dirop().and_then(|()| {
            w.sattr3()?;
            w.opaque()
        }),
        // Every other arm of the node type carries fixed-size data only.
        NFSPROC3_MKNOD => w.dirop(),
        NFSPROC3_RENAME => w.dirop().and_then(|()| w.dirop()),
        NFSPROC3_LINK => w.opaque().and_then(|()| w.dirop()),
    };
    matches!(walked, Err(Stop::Malformed))
}

/// Whether the arguments of MOUNT v3 procedure `procedure` are refused for
/// a length that runs past their end.
pub(crate) fn mount_args_overrun(procedure: MOUNT_PROGRAM, args: &[u8]) -> bool {
    let mut w = Walk { rest: args };
    let walked = match procedure {
        MOUNT_PROGRAM::MOUNTPROC3_MNT | MOUNT_PROGRAM::MOUNTPROC3_UMNT => w.opaque(),
        _ => Ok(()),
    };
    matches!(walked, Err(Stop::Malformed))
}

#[cfg(test)]
mod tests {
    use nfs3_types::nfs3::*;
    use nfs3_types::xdr_codec::{Opaque, Pack};

    use super::*;

    fn packed(value: &impl Pack) -> Vec<u8> {
        let mut out = Vec::new();
        value.pack(&mut out).unwrap();
        out
    }

    fn fh() -> nfs_fh3 {
        nfs_fh3 {
            data: Opaque::owned(vec![7; 40]),
        }
    }

    fn dirop() -> diropargs3<'static> {
        diropargs3 {
            dir: fh(),
            name: filename3(Opaque::owned(b"disk.img".to_vec())),
        }
    }

    fn attrs() -> sattr3 {
        sattr3 {
            mode: Nfs3Option::Some(0o644),
            size: Nfs3Option::Some(1 << 40),
            mtime: set_mtime::SET_TO_CLIENT_TIME(nfstime3 {
                seconds: 1,
                nseconds: 2,
            }),
            ..sattr3::default()
        }
    }

    /// Well-formed arguments of every procedure that carries a length.
    fn well_formed() -> Vec<(NFS_PROGRAM, Vec<u8>)> {
        use NFS_PROGRAM::*;
        vec![
            (NFSPROC3_GETATTR, packed(&GETATTR3args { object: fh() })),
            (
                NFSPROC3_SETATTR,
                packed(&SETATTR3args {
                    object: fh(),
                    new_attributes: attrs(),
                    guard: Nfs3Option::Some(nfstime3::default()),
                }),
            ),
            (NFSPROC3_LOOKUP, packed(&LOOKUP3args { what: dirop() })),
            (
                NFSPROC3_WRITE,
                packed(&WRITE3args {
                    file: fh(),
                    offset: 5,
                    count: 3,
                    stable: stable_how::FILE_SYNC,
                    data: Opaque::owned(vec![1, 2, 3]),
                }),
            ),
            (
                NFSPROC3_CREATE,
                packed(&CREATE3args {
                    where_: dirop(),
                    how: createhow3::GUARDED(attrs()),
                }),
            ),
            (
                NFSPROC3_CREATE,
                packed(&CREATE3args {
                    where_: dirop(),
                    how: createhow3::EXCLUSIVE(createverf3([9; 8])),
                }),
            ),
            (
                NFSPROC3_MKDIR,
                packed(&MKDIR3args {
                    where_: dirop(),
                    attributes: attrs(),
                }),
            ),
            (
                NFSPROC3_SYMLINK,
                packed(&SYMLINK3args {
                    where_: dirop(),
                    symlink: symlinkdata3 {
                        symlink_attributes: attrs(),
                        symlink_data: nfspath3(Opaque::owned(b"../target".to_vec())),
                    },
                }),
            ),
            (
                NFSPROC3_RENAME,
                packed(&RENAME3args {
                    from: dirop(),
                    to: dirop(),
                }),
            ),
            (
                NFSPROC3_LINK,
                packed(&LINK3args {
                    file: fh(),
                    link: dirop(),
                }),
            ),
        ]
    }

    /// Whether `nfs3_types` decodes `args` as the arguments of `procedure`.
    fn decodes(procedure: NFS_PROGRAM, args: &[u8]) -> bool {
        use crate::nfs::attrs::decode;
        use NFS_PROGRAM::*;
        match procedure {
            NFSPROC3_GETATTR => decode::<GETATTR3args>(args).is_some(),
            NFSPROC3_SETATTR => decode::<SETATTR3args>(args).is_some(),
            NFSPROC3_LOOKUP => decode::<LOOKUP3args>(args).is_some(),
            NFSPROC3_WRITE => decode::<WRITE3args>(args).is_some(),
            NFSPROC3_CREATE => decode::<CREATE3args>(args).is_some(),
            NFSPROC3_MKDIR => decode::<MKDIR3args>(args).is_some(),
            NFSPROC3_SYMLINK => decode::<SYMLINK3args>(args).is_some(),
            NFSPROC3_RENAME => decode::<RENAME3args>(args).is_some(),
            NFSPROC3_LINK => decode::<LINK3args>(args).is_some(),
            other => panic!("no decoder listed for {other:?}"),
        }
    }

    #[test]
    fn never_refuses_what_the_decoder_accepts() {
        for (procedure, args) in well_formed() {
            assert!(!nfs_args_overrun(procedure, &args), "{procedure:?}");
            assert!(decodes(procedure, &args), "{procedure:?}");
            // Every word set to 0, 1, 2 or 4 GiB, and every truncation:
            // refused here only where the decoder fails too.
            let mut variants = Vec::new();
            for at in (0..args.len()).step_by(4) {
                for word in [0u32, 1, 2, u32::MAX] {
                    let mut v = args.clone();
                    v[at..at + 4].copy_from_slice(&word.to_be_bytes());
                    variants.push(v);
                }
            }
            variants.extend((0..args.len()).map(|len| args[..len].to_vec()));
            for v in variants {
                if nfs_args_overrun(procedure, &v) {
                    assert!(!decodes(procedure, &v), "{procedure:?} refused {v:?}");
                }
            }
        }
    }

    #[test]
    fn a_length_past_the_end_is_refused_before_decoding() {
        // WRITE data announced 4 GiB long, no bytes following.
        let mut write = packed(&WRITE3args {
            file: fh(),
            offset: 0,
            count: 0,
            stable: stable_how::UNSTABLE,
            data: Opaque::owned(Vec::new()),
        });
        let at = write.len() - 4;
        write[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(nfs_args_overrun(NFS_PROGRAM::NFSPROC3_WRITE, &write));
        // A handle announced 4 GiB long.
        let mut getattr = packed(&GETATTR3args { object: fh() });
        getattr[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(nfs_args_overrun(NFS_PROGRAM::NFSPROC3_GETATTR, &getattr));
        // A MOUNT path announced 4 GiB long.
        assert!(mount_args_overrun(
            MOUNT_PROGRAM::MOUNTPROC3_MNT,
            &u32::MAX.to_be_bytes()
        ));
        assert!(!mount_args_overrun(
            MOUNT_PROGRAM::MOUNTPROC3_MNT,
            &[0, 0, 0, 1, b'/', 0, 0, 0]
        ));
    }
}
