//! Who may do what: the export policy (allowed clients, read-only, root
//! squash) and permission checks against an inode's mode bits.

use std::net::IpAddr;

use geonfs_site_config::NfsSettings;
use ipnet::IpNet;
use nfs3_types::nfs3::{
    ACCESS3_DELETE, ACCESS3_EXECUTE, ACCESS3_EXTEND, ACCESS3_LOOKUP, ACCESS3_MODIFY, ACCESS3_READ,
};

use crate::namespace::Inode;
use crate::oncrpc::CallerAuth;

/// Read permission (the `r` bit).
pub const READ: u32 = 4;
/// Write permission (the `w` bit).
pub const WRITE: u32 = 2;
/// Execute / search permission (the `x` bit).
pub const EXEC: u32 = 1;

/// The caller an NFS call is executed for, after root squashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub gids: Vec<u32>,
}

impl Identity {
    /// Whether this is the (unsquashed) superuser.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }

    /// Whether the caller owns `inode`.
    pub fn owns(&self, inode: &Inode) -> bool {
        self.uid == inode.uid
    }

    /// The permission bits (`rwx`, 0..=7) the caller has on `inode`.
    /// The superuser has read and write on everything, search on every
    /// directory and execute on files with any execute bit.
    pub fn permissions(&self, inode: &Inode) -> u32 {
        if self.is_root() {
            let exec = inode.is_dir() || inode.mode & 0o111 != 0;
            return READ | WRITE | if exec { EXEC } else { 0 };
        }
        if self.owns(inode) {
            (inode.mode >> 6) & 7
        } else if self.in_group(inode.gid) {
            (inode.mode >> 3) & 7
        } else {
            inode.mode & 7
        }
    }

    /// Whether the caller has all of `bits` on `inode`.
    pub fn may(&self, inode: &Inode, bits: u32) -> bool {
        self.permissions(inode) & bits == bits
    }

    /// The ACCESS3 bits of `requested` the caller has on `inode`
    /// (`read_only` removes every change).
    pub fn access_bits(&self, inode: &Inode, requested: u32, read_only: bool) -> u32 {
        let perms = self.permissions(inode);
        let mut granted = 0;
        if perms & READ != 0 {
            granted |= ACCESS3_READ;
        }
        if perms & WRITE != 0 && !read_only {
            granted |= ACCESS3_MODIFY | ACCESS3_EXTEND;
            if inode.is_dir() {
                granted |= ACCESS3_DELETE;
            }
        }
        if perms & EXEC != 0 {
            granted |= if inode.is_dir() {
                ACCESS3_LOOKUP
            } else {
                ACCESS3_EXECUTE
            };
        }
        granted & requested
    }
}

/// How the export treats its clients (from the site configuration's
/// `[nfs]` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPolicy {
    /// The export path clients mount, e.g. `/geonfs`.
    pub export_path: String,
    /// Client subnets allowed; empty admits nobody.
    pub allowed_clients: Vec<IpNet>,
    /// Whether changes are refused (`NFS3ERR_ROFS`).
    pub read_only: bool,
    /// Whether uid 0 is mapped to the anonymous ids.
    pub root_squash: bool,
    /// Client subnets whose uid 0 is kept (the hypervisor hosts).
    pub no_root_squash: Vec<IpNet>,
    /// Anonymous uid.
    pub anon_uid: u32,
    /// Anonymous gid.
    pub anon_gid: u32,
}

impl From<&NfsSettings> for ExportPolicy {
    fn from(settings: &NfsSettings) -> Self {
        ExportPolicy {
            export_path: settings.export_path.clone(),
            allowed_clients: settings.allowed_clients.clone(),
            read_only: settings.read_only,
            root_squash: settings.root_squash,
            no_root_squash: settings.no_root_squash.clone(),
            anon_uid: settings.anon_uid,
            anon_gid: settings.anon_gid,
        }
    }
}

impl ExportPolicy {
    /// Whether a client at `addr` may use the export (IPv4-mapped IPv6
    /// addresses are matched as IPv4); nobody when no subnet is listed.
    pub fn admits(&self, addr: IpAddr) -> bool {
        within(&self.allowed_clients, addr)
    }

    /// The identity of a call's credentials from a client at `addr`,
    /// root-squashed when the export says so and the client is not listed
    /// in `no_root_squash`; `None` for AUTH_NONE.
    pub fn identity(&self, auth: &CallerAuth, addr: IpAddr) -> Option<Identity> {
        let CallerAuth::Unix(creds) = auth else {
            return None;
        };
        let mut identity = Identity {
            uid: creds.uid,
            gid: creds.gid,
            gids: creds.aux_gids.clone(),
        };
        if self.root_squash && !within(&self.no_root_squash, addr) {
            if identity.uid == 0 {
                identity.uid = self.anon_uid;
                identity.gid = self.anon_gid;
            }
            if identity.gid == 0 {
                identity.gid = self.anon_gid;
            }
            for gid in &mut identity.gids {
                if *gid == 0 {
                    *gid = self.anon_gid;
                }
            }
        }
        Some(identity)
    }

    /// The names leading from the export's root to the directory `path`
    /// (as a MOUNT client sent it) names: empty for the export itself (its
    /// path, with or without trailing `/`, and the empty path libnfs sends
    /// for `nfs://host/file`), the components of a subdirectory below it
    /// (`/geonfs/vms` → `["vms"]`, empty components ignored); `None` for a
    /// path outside the export or one with a `.` or `..` component.
    pub fn below_export<'p>(&self, path: &'p [u8]) -> Option<Vec<&'p [u8]>> {
        if path.is_empty() {
            return Some(Vec::new());
        }
        fn parts(p: &[u8]) -> Option<Vec<&[u8]>> {
            if !p.starts_with(b"/") {
                return None;
            }
            Some(p.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect())
        }
        let export = parts(self.export_path.as_bytes())?;
        let asked = parts(path)?;
        if asked.len() < export.len() || asked[..export.len()] != export[..] {
            return None;
        }
        let below = &asked[export.len()..];
        if below.iter().any(|c| *c == b"." || *c == b"..") {
            return None;
        }
        Some(below.to_vec())
    }
}

/// Whether `addr` (IPv4-mapped IPv6 matched as IPv4) is in one of `nets`.
fn within(nets: &[IpNet], addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    nets.iter().any(|n| n.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{FileKind, Timestamp};
    use crate::oncrpc::UnixCredentials;

    fn inode(kind: FileKind, mode: u32, uid: u32, gid: u32) -> Inode {
        let t = Timestamp::default();
        Inode {
            id: 5,
            kind,
            mode,
            uid,
            gid,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            nlink: 1,
            symlink_target: Vec::new(),
            generation: 1,
            parent: 1,
            next_seq: 1,
            entries: 0,
            verifier: None,
            version: 1,
            change_token: 0,
        }
    }

    fn policy(root_squash: bool) -> ExportPolicy {
        ExportPolicy {
            export_path: "/geonfs".into(),
            allowed_clients: vec!["10.1.0.0/16".parse().unwrap()],
            read_only: false,
            root_squash,
            no_root_squash: vec!["10.1.9.0/24".parse().unwrap()],
            anon_uid: 65534,
            anon_gid: 65533,
        }
    }

    fn unix(uid: u32, gid: u32, aux_gids: Vec<u32>) -> CallerAuth {
        CallerAuth::Unix(UnixCredentials {
            stamp: 0,
            machine_name: "h".into(),
            uid,
            gid,
            aux_gids,
        })
    }

    #[test]
    fn owner_group_and_other_bits_apply_in_that_order() {
        let file = inode(FileKind::Regular, 0o640, 10, 20);
        let id = |uid, gid, gids| {
            policy(false)
                .identity(&unix(uid, gid, gids), CLIENT.parse().unwrap())
                .unwrap()
        };
        assert_eq!(id(10, 1, vec![]).permissions(&file), READ | WRITE);
        assert_eq!(id(11, 1, vec![20]).permissions(&file), READ);
        assert_eq!(id(11, 20, vec![]).permissions(&file), READ);
        assert_eq!(id(11, 21, vec![]).permissions(&file), 0);
        assert_eq!(id(0, 0, vec![]).permissions(&file), READ | WRITE);
        let dir = inode(FileKind::Directory, 0o755, 0, 0);
        let user = id(1000, 1000, vec![]);
        assert!(!user.may(&dir, WRITE | EXEC));
        let wanted = ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY | ACCESS3_DELETE;
        assert_eq!(
            user.access_bits(&dir, wanted, false),
            ACCESS3_READ | ACCESS3_LOOKUP
        );
        let root = id(0, 0, vec![]);
        assert_eq!(root.access_bits(&dir, wanted, false), wanted);
        assert_eq!(
            root.access_bits(&dir, wanted, true),
            ACCESS3_READ | ACCESS3_LOOKUP
        );
    }

    /// A client address in `allowed_clients`, outside `no_root_squash`.
    const CLIENT: &str = "10.1.2.3";

    #[test]
    fn root_squash_maps_uid_and_gid_zero_except_for_listed_hosts() {
        let client = CLIENT.parse().unwrap();
        let squashed = policy(true)
            .identity(&unix(0, 0, vec![0, 5]), client)
            .unwrap();
        assert_eq!((squashed.uid, squashed.gid), (65534, 65533));
        assert_eq!(squashed.gids, vec![65533, 5]);
        assert!(!squashed.is_root());
        let user = policy(true).identity(&unix(7, 8, vec![]), client).unwrap();
        assert_eq!((user.uid, user.gid), (7, 8));
        assert_eq!(policy(false).identity(&CallerAuth::None, client), None);
        // A hypervisor host listed in no_root_squash keeps root, also
        // through an IPv4-mapped IPv6 address.
        for host in ["10.1.9.7", "::ffff:10.1.9.7"] {
            let root = policy(true)
                .identity(&unix(0, 0, vec![]), host.parse().unwrap())
                .unwrap();
            assert!(root.is_root(), "{host}");
        }
        // Without root_squash nobody is squashed.
        assert!(policy(false)
            .identity(&unix(0, 0, vec![]), client)
            .unwrap()
            .is_root());
    }

    #[test]
    fn clients_and_export_paths() {
        let p = policy(false);
        assert!(p.admits("10.1.2.3".parse().unwrap()));
        assert!(p.admits("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.admits("10.2.0.1".parse().unwrap()));
        let nobody = ExportPolicy {
            allowed_clients: Vec::new(),
            ..p.clone()
        };
        assert!(!nobody.admits("10.1.2.3".parse().unwrap()));
        for ok in [&b"/geonfs"[..], b"/geonfs/", b"/geonfs//", b""] {
            assert_eq!(p.below_export(ok), Some(vec![]), "{ok:?}");
        }
        let sub: Vec<&[u8]> = vec![b"vms", b"a"];
        assert_eq!(p.below_export(b"/geonfs/vms//a/"), Some(sub));
        for bad in [
            &b"/"[..],
            b"/geo",
            b"geonfs",
            b"/geonfsx/y",
            b"/geonfs/../etc",
            b"/geonfs/./x",
        ] {
            assert_eq!(p.below_export(bad), None, "{bad:?}");
        }
        let slash = ExportPolicy {
            export_path: "/".into(),
            ..p
        };
        assert_eq!(slash.below_export(b"/"), Some(vec![]));
        assert_eq!(slash.below_export(b""), Some(vec![]));
        let x: Vec<&[u8]> = vec![b"x"];
        assert_eq!(slash.below_export(b"/x"), Some(x));
    }
}
