//! The NFS v3 and MOUNT v3 programs (`geonfs_access_server::nfs`) served by
//! the access server's own RPC layer over a real meta-kvs cluster, driven
//! by `nfs3_client`. Each case starts its own one-site cluster and export.

use std::net::SocketAddr;
use std::time::Duration;

use geonfs_access_server::namespace::Namespace;
use geonfs_access_server::nfs::{ExportPolicy, HandleCodec, MountRoot};
use geonfs_access_server::oncrpc::RpcServer;
use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::mount::{
    dirpath, mountres3, mountstat3, MOUNT_PROGRAM, PROGRAM as MOUNT_PROGRAM_NUMBER,
};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::auth_stat;
use nfs3_client::nfs3_types::rpc::opaque_auth;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::rpc::RpcClient;
use nfs3_client::{MountClient, MountError, Nfs3Client, RpcError};

use crate::support::cluster;
use crate::support::nfs::{
    connect, create, dirop, getattr, lookup, mkdir, mode, mount, mounter, nfs, policy, serve,
    status, unix, Io, CLIENT, EXPORT, OUTSIDER,
};

/// An allowed client address outside `no_root_squash`.
const OTHER_HOST: &str = "127.1.0.10";

/// MOUNT's MNT procedure number.
const MNT: u32 = MOUNT_PROGRAM::MOUNTPROC3_MNT as u32;

/// A one-site cluster exporting its namespace with [`policy`], and root's
/// client of it.
pub(crate) struct Export {
    pub(crate) cluster: TestCluster,
    pub(crate) ns: Namespace,
    pub(crate) handles: HandleCodec,
    servers: Vec<RpcServer>,
    pub(crate) addr: SocketAddr,
    pub(crate) root: nfs_fh3,
    pub(crate) c: Nfs3Client<Io>,
}

impl Export {
    pub(crate) async fn start() -> Self {
        let cluster = cluster().await;
        let meta = cluster.meta_client("a-meta-1").unwrap();
        let ns = Namespace::with_id_range(meta.clone(), 16);
        let handles = HandleCodec::load(&meta).await.expect("handle generation");
        let server = serve(&cluster, &ns, handles, policy()).await;
        let addr = server.local_addr();
        let root = mount(CLIENT, addr, EXPORT).await.expect("MNT export");
        let c = nfs(CLIENT, addr, 0, 0).await;
        Export {
            cluster,
            ns,
            handles,
            servers: vec![server],
            addr,
            root,
            c,
        }
    }

    /// The same namespace exported again with `policy`; its address.
    async fn serve_also(&mut self, policy: ExportPolicy) -> SocketAddr {
        let server = serve(&self.cluster, &self.ns, self.handles, policy).await;
        let addr = server.local_addr();
        self.servers.push(server);
        addr
    }

    /// Files `a` and `x`, directory `d` with file `f` in it, in that order.
    /// Files `a` and `x` and directory `d` holding file `f` in the root;
    /// `d`'s handle.
    pub(crate) async fn populate(&mut self) -> nfs_fh3 {
        let root = self.root.clone();
        for name in ["a", "x"] {
            let res = create(&mut self.c, &root, name, createhow3::GUARDED(mode(0o644))).await;
            assert_eq!(status(&res), nfsstat3::NFS3_OK, "CREATE {name}");
        }
        let d = mkdir(&mut self.c, &root, "d", 0o755).await;
        let inner = create(
            &mut self.c,
            &d,
            "f",
            createhow3::UNCHECKED(sattr3::default()),
        )
        .await;
        assert_eq!(status(&inner), nfsstat3::NFS3_OK);
        d
    }

    pub(crate) async fn stop(self) {
        for server in self.servers {
            server.shutdown(Duration::from_secs(5)).await.unwrap();
        }
        self.cluster.shutdown().await.unwrap();
    }
}

/// Every name of `dir` through READDIRPLUS pages of at most `maxcount`
/// bytes, with the number of pages.
async fn list_plus(c: &mut Nfs3Client<Io>, dir: &nfs_fh3, maxcount: u32) -> (Vec<String>, usize) {
    let (mut names, mut cookie, mut pages) = (Vec::new(), 0, 0);
    let mut verifier = cookieverf3::default();
    loop {
        pages += 1;
        assert!(pages < 1000, "listing does not end");
        let res = c
            .readdirplus(&READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: verifier,
                dircount: maxcount,
                maxcount,
            })
            .await
            .expect("READDIRPLUS rpc");
        let Nfs3Result::Ok(ok) = res else {
            panic!("READDIRPLUS: {}", status(&res));
        };
        verifier = ok.cookieverf;
        for entry in ok.reply.entries.0 {
            assert!(entry.name_handle.is_some() && entry.name_attributes.is_some());
            names.push(String::from_utf8(entry.name.0.to_vec()).unwrap());
            cookie = entry.cookie;
        }
        if ok.reply.eof {
            return (names, pages);
        }
    }
}

fn excl(verf: u8) -> createhow3 {
    createhow3::EXCLUSIVE(createverf3([verf; 8]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mount_serves_the_export_its_spellings_and_the_directories_below_it() {
    let mut e = Export::start().await;
    let again = HandleCodec::load(&e.cluster.meta_client("a-meta-2").unwrap())
        .await
        .unwrap();
    assert_eq!(e.handles, again, "one handle generation per cluster");
    let (addr, root) = (e.addr, e.root.clone());

    // The export, with a trailing '/', the empty path of libnfs.
    assert_eq!(mount(CLIENT, addr, "/geonfs/").await.unwrap(), root);
    assert_eq!(mount(CLIENT, addr, "").await.unwrap(), root);
    for path in ["/other", "/"] {
        let refused = mount(CLIENT, addr, path).await;
        assert!(
            matches!(refused, Err(MountError::Denied(mountstat3::MNT3ERR_NOENT))),
            "{path}: {refused:?}"
        );
    }

    let mut m = mounter(CLIENT, addr).await;
    let exports = m.export().await.expect("EXPORT").0;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].ex_dir.0.as_ref(), EXPORT.as_bytes());
    let groups: Vec<_> = exports[0]
        .ex_groups
        .0
        .iter()
        .map(|g| g.0.to_vec())
        .collect();
    assert_eq!(groups, vec![b"127.1.0.0/16".to_vec()]);
    assert!(m.dump().await.expect("DUMP").0.is_empty());
    m.umnt(dirpath(Opaque::borrowed(EXPORT.as_bytes())))
        .await
        .expect("UMNT");
    m.umntall().await.expect("UMNTALL");

    // A directory below the export (libnfs mounts /geonfs/d for
    // nfs://host/geonfs/d/f): that directory's handle; a file or a missing
    // name below the export is refused.
    // (Its handles name it as their mount root: see nfs_mount_root.)
    let d = e.populate().await;
    let id = |fh: &nfs_fh3| e.handles.decode(fh.data.as_ref()).unwrap().id;
    for path in ["/geonfs/d", "/geonfs//d/"] {
        let mounted = mount(CLIENT, addr, path).await.unwrap();
        let decoded = e.handles.decode(mounted.data.as_ref()).unwrap();
        assert_eq!((decoded.id, decoded.mount.id), (id(&d), id(&d)), "{path}");
    }
    for (path, refused) in [
        ("/geonfs/d/f", mountstat3::MNT3ERR_NOTDIR),
        ("/geonfs/nothing", mountstat3::MNT3ERR_NOENT),
        ("/geonfs/d/../d", mountstat3::MNT3ERR_NOENT),
    ] {
        let result = mount(CLIENT, addr, path).await;
        assert!(
            matches!(result, Err(MountError::Denied(s)) if s as u32 == refused as u32),
            "{path}: {result:?}"
        );
    }
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_guarded_and_exclusive_then_lookup_and_getattr() {
    let mut e = Export::start().await;
    let (c, root) = (&mut e.c, e.root.clone());
    c.null().await.expect("NULL");
    let Nfs3Result::Ok(attrs) = getattr(c, &root).await else {
        panic!("GETATTR root")
    };
    assert_eq!(attrs.obj_attributes.type_, ftype3::NF3DIR);

    // CREATE / LOOKUP / GETATTR, GUARDED over an existing name.
    let res = create(c, &root, "a", createhow3::GUARDED(mode(0o644))).await;
    let Nfs3Result::Ok(created) = res else {
        panic!("CREATE a: {}", status(&res))
    };
    let a = created.obj.unwrap();
    let Nfs3Result::Ok(found) = lookup(c, &root, b"a").await else {
        panic!("LOOKUP a")
    };
    assert_eq!(found.object, a);
    let Nfs3Result::Ok(attrs) = getattr(c, &a).await else {
        panic!("GETATTR a")
    };
    assert_eq!(attrs.obj_attributes.type_, ftype3::NF3REG);
    assert_eq!(attrs.obj_attributes.mode, 0o644);
    let again = create(c, &root, "a", createhow3::GUARDED(sattr3::default())).await;
    assert_eq!(status(&again), nfsstat3::NFS3ERR_EXIST);

    // EXCLUSIVE: the same verifier twice is one file, another is EXIST.
    let Nfs3Result::Ok(x1) = create(c, &root, "x", excl(7)).await else {
        panic!("EXCL 1")
    };
    let Nfs3Result::Ok(x2) = create(c, &root, "x", excl(7)).await else {
        panic!("EXCL 2")
    };
    assert_eq!(x1.obj.unwrap(), x2.obj.unwrap());
    assert_eq!(
        status(&create(c, &root, "x", excl(8)).await),
        nfsstat3::NFS3ERR_EXIST
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readdirplus_in_pages_and_readdir_list_every_entry() {
    let mut e = Export::start().await;
    let d = e.populate().await;
    let (c, root) = (&mut e.c, e.root.clone());
    // READDIRPLUS with "." and "..", whole and in small pages.
    let (names, _) = list_plus(c, &root, 64 << 10).await;
    assert_eq!(names, vec![".", "..", "a", "x", "d"]);
    let (paged, pages) = list_plus(c, &root, 400).await;
    assert_eq!(paged, names);
    assert!(
        pages > 1,
        "a 400-byte reply cannot hold five entries with attributes"
    );
    let small = c
        .readdirplus(&READDIRPLUS3args {
            dir: root.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 100,
            maxcount: 100,
        })
        .await
        .unwrap();
    assert_eq!(status(&small), nfsstat3::NFS3ERR_TOOSMALL);
    let Nfs3Result::Ok(plain) = c
        .readdir(&READDIR3args {
            dir: d.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            count: 4096,
        })
        .await
        .unwrap()
    else {
        panic!("READDIR d")
    };
    let plain: Vec<_> = plain
        .reply
        .entries
        .0
        .iter()
        .map(|e| e.name.0.to_vec())
        .collect();
    assert_eq!(plain, vec![b".".to_vec(), b"..".to_vec(), b"f".to_vec()]);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_over_a_file_and_remove_leave_the_old_handle_stale() {
    let mut e = Export::start().await;
    e.populate().await;
    let (c, root) = (&mut e.c, e.root.clone());
    let Nfs3Result::Ok(found) = lookup(c, &root, b"a").await else {
        panic!("LOOKUP a")
    };
    let a = found.object;
    // RENAME over an existing file.
    let renamed = c
        .rename(&RENAME3args {
            from: dirop(&root, b"a"),
            to: dirop(&root, b"x"),
        })
        .await
        .unwrap();
    assert_eq!(status(&renamed), nfsstat3::NFS3_OK);
    assert_eq!(
        status(&lookup(c, &root, b"a").await),
        nfsstat3::NFS3ERR_NOENT
    );
    let Nfs3Result::Ok(x) = lookup(c, &root, b"x").await else {
        panic!("LOOKUP x")
    };
    assert_eq!(x.object, a);

    // REMOVE, then the old handle is stale.
    let removed = c
        .remove(&REMOVE3args {
            object: dirop(&root, b"x"),
        })
        .await
        .unwrap();
    assert_eq!(status(&removed), nfsstat3::NFS3_OK);
    assert_eq!(status(&getattr(c, &a).await), nfsstat3::NFS3ERR_STALE);

    // RMDIR of a non-empty directory.
    let rmdir = c
        .rmdir(&RMDIR3args {
            object: dirop(&root, b"d"),
        })
        .await
        .unwrap();
    assert_eq!(status(&rmdir), nfsstat3::NFS3ERR_NOTEMPTY);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_names_and_handles_get_their_nfs_status() {
    let mut e = Export::start().await;
    let (c, root) = (&mut e.c, e.root.clone());
    assert_eq!(
        status(&lookup(c, &root, b"missing").await),
        nfsstat3::NFS3ERR_NOENT
    );
    assert_eq!(
        status(&lookup(c, &root, &[b'n'; 256]).await),
        nfsstat3::NFS3ERR_NAMETOOLONG
    );
    let garbage = nfs_fh3 {
        data: Opaque::owned(vec![1, 2, 3]),
    };
    assert_eq!(
        status(&getattr(c, &garbage).await),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    let foreign = nfs_fh3 {
        data: Opaque::owned(
            HandleCodec::new(e.handles.handle_generation() ^ 1).encode_bytes(
                1,
                1,
                MountRoot {
                    id: 1,
                    generation: 1,
                },
            ),
        ),
    };
    assert_eq!(status(&getattr(c, &foreign).await), nfsstat3::NFS3ERR_STALE);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsupported_procedures_answer_a_status_and_fs_information_is_served() {
    let mut e = Export::start().await;
    let d = e.populate().await;
    let (c, root) = (&mut e.c, e.root.clone());
    // LINK and MKNOD: an NFS status, not an RPC error.
    let link = c
        .link(&LINK3args {
            file: d.clone(),
            link: dirop(&root, b"l"),
        })
        .await
        .expect("LINK answered");
    assert_eq!(status(&link), nfsstat3::NFS3ERR_NOTSUPP);
    let mknod = c
        .mknod(&MKNOD3args {
            where_: dirop(&root, b"fifo"),
            what: mknoddata3::NF3FIFO(sattr3::default()),
        })
        .await
        .expect("MKNOD answered");
    assert_eq!(status(&mknod), nfsstat3::NFS3ERR_NOTSUPP);
    let read = c
        .read(&READ3args {
            file: d.clone(),
            offset: 0,
            count: 1,
        })
        .await
        .expect("READ answered");
    assert_eq!(status(&read), nfsstat3::NFS3ERR_ISDIR);

    // FSSTAT, FSINFO, PATHCONF, SETATTR with a stale guard.
    let Nfs3Result::Ok(fsstat) = c
        .fsstat(&FSSTAT3args {
            fsroot: root.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("FSSTAT")
    };
    assert_eq!((fsstat.tbytes, fsstat.fbytes), (1 << 40, 1 << 39));
    let Nfs3Result::Ok(fsinfo) = c
        .fsinfo(&FSINFO3args {
            fsroot: root.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("FSINFO")
    };
    assert_eq!(fsinfo.wtmax, 1 << 20);
    assert_eq!(fsinfo.properties & FSF3_LINK, 0);
    let Nfs3Result::Ok(pathconf) = c
        .pathconf(&PATHCONF3args { object: d.clone() })
        .await
        .unwrap()
    else {
        panic!("PATHCONF")
    };
    assert_eq!(pathconf.name_max, 255);
    let guarded = c
        .setattr(&SETATTR3args {
            object: d.clone(),
            new_attributes: mode(0o700),
            guard: Nfs3Option::Some(nfstime3 {
                seconds: 1,
                nseconds: 0,
            }),
        })
        .await
        .unwrap();
    assert_eq!(status(&guarded), nfsstat3::NFS3ERR_NOT_SYNC);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_is_held_to_the_mode_bits_and_auth_none_only_reaches_null() {
    let e = Export::start().await;
    let (addr, root) = (e.addr, e.root.clone());
    // uid 1000 cannot write into the 0755 root-owned root.
    let mut user = nfs(CLIENT, addr, 1000, 1000).await;
    let denied = create(
        &mut user,
        &root,
        "mine",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    assert_eq!(status(&denied), nfsstat3::NFS3ERR_ACCES);
    let Nfs3Result::Ok(access) = user
        .access(&ACCESS3args {
            object: root.clone(),
            access: ACCESS3_READ | ACCESS3_LOOKUP | ACCESS3_MODIFY,
        })
        .await
        .unwrap()
    else {
        panic!("ACCESS")
    };
    assert_eq!(access.access, ACCESS3_READ | ACCESS3_LOOKUP);
    // AUTH_NONE is too weak for anything but NULL.
    let mut anonymous = Nfs3Client::new(connect(CLIENT, addr).await);
    anonymous.null().await.expect("NULL with AUTH_NONE");
    let weak = anonymous
        .getattr(&GETATTR3args {
            object: root.clone(),
        })
        .await;
    assert!(
        matches!(weak, Err(RpcError::Auth(auth_stat::AUTH_TOOWEAK))),
        "{weak:?}"
    );
    // ... and MNT with AUTH_NONE hands out no handle.
    let mut anonymous = MountClient::new(connect(CLIENT, addr).await);
    let weak = anonymous
        .mnt(dirpath(Opaque::owned(EXPORT.as_bytes().to_vec())))
        .await;
    assert!(
        matches!(
            weak,
            Err(MountError::Rpc(RpcError::Auth(auth_stat::AUTH_TOOWEAK)))
        ),
        "{weak:?}"
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn root_is_squashed_except_on_the_hosts_listed_in_no_root_squash() {
    // policy(): root_squash on, no_root_squash = [CLIENT] (the hypervisor).
    let mut e = Export::start().await;
    let root = e.root.clone();
    let public = mkdir(&mut e.c, &root, "pub", 0o777).await;
    let mut hypervisor_file = create(
        &mut e.c,
        &root,
        "image",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    let Nfs3Result::Ok(made) = &mut hypervisor_file else {
        panic!(
            "root's CREATE from the hypervisor: {}",
            status(&hypervisor_file)
        )
    };
    let Nfs3Option::Some(attrs) = &made.obj_attributes else {
        panic!("attributes")
    };
    assert_eq!((attrs.uid, attrs.gid), (0, 0), "root kept at {CLIENT}");
    // Root at another allowed address is the anonymous user.
    let mut squashed = nfs(OTHER_HOST, e.addr, 0, 0).await;
    let res = create(
        &mut squashed,
        &public,
        "s",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    let Nfs3Result::Ok(made) = res else {
        panic!("squashed CREATE: {}", status(&res))
    };
    let Nfs3Option::Some(attrs) = made.obj_attributes else {
        panic!("attributes")
    };
    assert_eq!((attrs.uid, attrs.gid), (65534, 65534));
    // ... and squashed root cannot write into root-owned 0755 directories.
    let res = create(
        &mut squashed,
        &root,
        "s",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    assert_eq!(status(&res), nfsstat3::NFS3ERR_ACCES);
    // With root_squash off, nobody is squashed.
    let unsquashed = e
        .serve_also(ExportPolicy {
            root_squash: false,
            no_root_squash: Vec::new(),
            ..policy()
        })
        .await;
    let mut root_elsewhere = nfs(OTHER_HOST, unsquashed, 0, 0).await;
    let res = create(
        &mut root_elsewhere,
        &root,
        "s",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_clients_and_writes_to_a_read_only_export_are_refused() {
    let mut e = Export::start().await;
    let (addr, root) = (e.addr, e.root.clone());
    // A client outside allowed_clients: refused at MNT and on NFS calls.
    let refused = mount(OUTSIDER, addr, EXPORT).await;
    assert!(matches!(
        refused,
        Err(MountError::Denied(mountstat3::MNT3ERR_ACCES))
    ));
    // ... before its arguments are decoded: a path announced 4 GiB long
    // with no bytes is ACCES for it, GARBAGE_ARGS for an allowed client.
    let garbage = u32::MAX;
    let mut raw = RpcClient::new_with_auth(
        connect(OUTSIDER, addr).await,
        unix(0, 0),
        opaque_auth::default(),
    );
    let refused: Result<mountres3, _> = raw.call(MOUNT_PROGRAM_NUMBER, 3, MNT, &garbage).await;
    assert!(
        matches!(refused, Ok(mountres3::Err(mountstat3::MNT3ERR_ACCES))),
        "{refused:?}"
    );
    let mut raw = RpcClient::new_with_auth(
        connect(CLIENT, addr).await,
        unix(0, 0),
        opaque_auth::default(),
    );
    let garbled: Result<mountres3, _> = raw.call(MOUNT_PROGRAM_NUMBER, 3, MNT, &garbage).await;
    assert!(matches!(garbled, Err(RpcError::GarbageArgs)), "{garbled:?}");
    // EXPORT lists nothing to it.
    let mut showmount = mounter(OUTSIDER, addr).await;
    let listed = showmount.export().await.expect("EXPORT");
    assert!(listed.0.is_empty(), "{listed:?}");
    let mut outsider = nfs(OUTSIDER, addr, 0, 0).await;
    assert_eq!(
        status(&getattr(&mut outsider, &root).await),
        nfsstat3::NFS3ERR_ACCES
    );

    // A read-only export.
    let ro = e
        .serve_also(ExportPolicy {
            read_only: true,
            ..policy()
        })
        .await;
    let mut reader = nfs(CLIENT, ro, 0, 0).await;
    let res = create(
        &mut reader,
        &root,
        "ro",
        createhow3::GUARDED(sattr3::default()),
    )
    .await;
    assert_eq!(status(&res), nfsstat3::NFS3ERR_ROFS);
    assert_eq!(
        status(&getattr(&mut reader, &root).await),
        nfsstat3::NFS3_OK
    );
    e.stop().await;
}
