//! The NFS v3 and MOUNT v3 programs (`geonfs_access_server::nfs`) served by
//! the access server's own RPC layer over a real meta-kvs cluster, driven
//! by `nfs3_client`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use geonfs_access_server::data::FileData;
use geonfs_access_server::namespace::Namespace;
use geonfs_access_server::nfs::{ExportPolicy, HandleCodec, MountProgram, NfsProgram};
use geonfs_access_server::rpc::{RpcProgram, RpcServer, ServerOptions};
use geonfs_bench::cluster::TestCluster;
use geonfs_block_manager::BlockClient;
use nfs3_client::nfs3_types::mount::{dirpath, mountstat3};
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_stat, auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, MountError, Nfs3Client, RpcError};

use crate::namespace::cluster;

pub(crate) use geonfs_bench::nfs_client::Io;

pub(crate) const CLIENT: &str = "127.1.0.9";
const OUTSIDER: &str = "127.3.0.1";
pub(crate) const EXPORT: &str = "/geonfs";

pub(crate) fn policy() -> ExportPolicy {
    ExportPolicy {
        export_path: EXPORT.to_string(),
        allowed_clients: vec!["127.1.0.0/16".parse().unwrap()],
        read_only: false,
        root_squash: false,
        anon_uid: 65534,
        anon_gid: 65534,
    }
}

/// The site-a file data of `cluster`, called from a site-a address.
pub(crate) fn file_data(cluster: &TestCluster) -> FileData {
    let client = BlockClient::new(
        cluster.network().clone(),
        cluster.config(),
        "127.1.0.50".parse().unwrap(),
        cluster.site("a").unwrap(),
    )
    .unwrap();
    FileData::new(client, cluster.config().cluster.block_size)
}

pub(crate) async fn serve(
    cluster: &TestCluster,
    ns: &Namespace,
    handles: HandleCodec,
    policy: ExportPolicy,
) -> RpcServer {
    let capacity: Arc<dyn geonfs_access_server::nfs::CapacityProvider> =
        Arc::new(|| (1u64 << 40, 1u64 << 39));
    let programs: Vec<Arc<dyn RpcProgram>> = vec![
        Arc::new(MountProgram::new(ns.clone(), handles, policy.clone())),
        Arc::new(NfsProgram::new(
            ns.clone(),
            file_data(cluster),
            handles,
            policy,
            capacity,
        )),
    ];
    RpcServer::bind(
        "127.1.0.1:0".parse().unwrap(),
        programs,
        ServerOptions::default(),
    )
    .await
    .expect("bind")
}

pub(crate) async fn connect(from: &str, to: SocketAddr) -> Io {
    let from: IpAddr = from.parse().expect("a client address");
    geonfs_bench::nfs_client::connect(from, to)
        .await
        .expect("connect")
}

pub(crate) fn unix(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"nfs-test"),
        uid,
        gid,
        gids: vec![],
    })
}

pub(crate) async fn mounter(from: &str, to: SocketAddr) -> MountClient<Io> {
    MountClient::new_with_auth(connect(from, to).await, unix(0, 0), opaque_auth::default())
}

pub(crate) async fn nfs(from: &str, to: SocketAddr, uid: u32, gid: u32) -> Nfs3Client<Io> {
    Nfs3Client::new_with_auth(
        connect(from, to).await,
        unix(uid, gid),
        opaque_auth::default(),
    )
}

pub(crate) async fn mount(from: &str, to: SocketAddr, path: &str) -> Result<nfs_fh3, MountError> {
    let mut client = mounter(from, to).await;
    let ok = client
        .mnt(dirpath(Opaque::owned(path.as_bytes().to_vec())))
        .await?;
    assert_eq!(ok.auth_flavors, vec![1], "AUTH_UNIX only");
    Ok(nfs_fh3 {
        data: Opaque::owned(ok.fhandle.0.to_vec()),
    })
}

pub(crate) fn status<T, E>(result: &Nfs3Result<T, E>) -> nfsstat3 {
    match result {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((status, _)) => *status,
    }
}

pub(crate) fn dirop(dir: &nfs_fh3, name: &[u8]) -> diropargs3<'static> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3(Opaque::owned(name.to_vec())),
    }
}

pub(crate) fn mode(mode: u32) -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(mode),
        ..sattr3::default()
    }
}

pub(crate) async fn create(
    c: &mut Nfs3Client<Io>,
    dir: &nfs_fh3,
    name: &str,
    how: createhow3,
) -> CREATE3res {
    c.create(&CREATE3args {
        where_: dirop(dir, name.as_bytes()),
        how,
    })
    .await
    .expect("CREATE rpc")
}

pub(crate) async fn lookup(c: &mut Nfs3Client<Io>, dir: &nfs_fh3, name: &[u8]) -> LOOKUP3res {
    c.lookup(&LOOKUP3args {
        what: dirop(dir, name),
    })
    .await
    .expect("LOOKUP rpc")
}

pub(crate) async fn getattr(c: &mut Nfs3Client<Io>, fh: &nfs_fh3) -> GETATTR3res {
    c.getattr(&GETATTR3args { object: fh.clone() })
        .await
        .expect("GETATTR rpc")
}

pub(crate) async fn mkdir(c: &mut Nfs3Client<Io>, dir: &nfs_fh3, name: &str, m: u32) -> nfs_fh3 {
    let res = c
        .mkdir(&MKDIR3args {
            where_: dirop(dir, name.as_bytes()),
            attributes: mode(m),
        })
        .await
        .expect("MKDIR rpc");
    match res {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        Nfs3Result::Err((s, _)) => panic!("MKDIR {name}: {s}"),
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
async fn nfs_program_over_meta_kvs() {
    let cluster = cluster().await;
    let meta = cluster.meta_client("a-meta-1").unwrap();
    let ns = Namespace::with_id_range(meta.clone(), 16);
    let handles = HandleCodec::load(&meta).await.expect("handle generation");
    let again = HandleCodec::load(&cluster.meta_client("a-meta-2").unwrap())
        .await
        .unwrap();
    assert_eq!(handles, again, "one handle generation per cluster");

    let server = serve(&cluster, &ns, handles, policy()).await;
    let addr = server.local_addr();

    // MOUNT: the export, with a trailing '/', the empty path of libnfs.
    let root = mount(CLIENT, addr, EXPORT).await.expect("MNT export");
    assert_eq!(mount(CLIENT, addr, "/geonfs/").await.unwrap(), root);
    assert_eq!(mount(CLIENT, addr, "").await.unwrap(), root);
    let other = mount(CLIENT, addr, "/other").await;
    assert!(matches!(
        other,
        Err(MountError::Denied(mountstat3::MNT3ERR_NOENT))
    ));
    let root_only = mount(CLIENT, addr, "/").await;
    assert!(matches!(
        root_only,
        Err(MountError::Denied(mountstat3::MNT3ERR_NOENT))
    ));

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

    let mut c = nfs(CLIENT, addr, 0, 0).await;
    c.null().await.expect("NULL");
    let Nfs3Result::Ok(attrs) = getattr(&mut c, &root).await else {
        panic!("GETATTR root")
    };
    assert_eq!(attrs.obj_attributes.type_, ftype3::NF3DIR);

    // CREATE / LOOKUP / GETATTR, GUARDED over an existing name.
    let res = create(&mut c, &root, "a", createhow3::GUARDED(mode(0o644))).await;
    let Nfs3Result::Ok(created) = res else {
        panic!("CREATE a: {}", status(&res))
    };
    let a = created.obj.unwrap();
    let Nfs3Result::Ok(found) = lookup(&mut c, &root, b"a").await else {
        panic!("LOOKUP a")
    };
    assert_eq!(found.object, a);
    let Nfs3Result::Ok(attrs) = getattr(&mut c, &a).await else {
        panic!("GETATTR a")
    };
    assert_eq!(attrs.obj_attributes.type_, ftype3::NF3REG);
    assert_eq!(attrs.obj_attributes.mode, 0o644);
    let again = create(&mut c, &root, "a", createhow3::GUARDED(sattr3::default())).await;
    assert_eq!(status(&again), nfsstat3::NFS3ERR_EXIST);

    // EXCLUSIVE: the same verifier twice is one file, another is EXIST.
    let Nfs3Result::Ok(x1) = create(&mut c, &root, "x", excl(7)).await else {
        panic!("EXCL 1")
    };
    let Nfs3Result::Ok(x2) = create(&mut c, &root, "x", excl(7)).await else {
        panic!("EXCL 2")
    };
    assert_eq!(x1.obj.unwrap(), x2.obj.unwrap());
    assert_eq!(
        status(&create(&mut c, &root, "x", excl(8)).await),
        nfsstat3::NFS3ERR_EXIST
    );

    // MKDIR, and a file inside it.
    let d = mkdir(&mut c, &root, "d", 0o755).await;
    let inner = create(&mut c, &d, "f", createhow3::UNCHECKED(sattr3::default())).await;
    assert_eq!(status(&inner), nfsstat3::NFS3_OK);

    // MOUNT of a directory below the export (libnfs mounts /geonfs/d for
    // nfs://host/geonfs/d/f): that directory's handle; a file or a missing
    // name below the export is refused.
    assert_eq!(mount(CLIENT, addr, "/geonfs/d").await.unwrap(), d);
    assert_eq!(mount(CLIENT, addr, "/geonfs//d/").await.unwrap(), d);
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

    // READDIRPLUS with "." and "..", whole and in small pages.
    let (names, _) = list_plus(&mut c, &root, 64 << 10).await;
    assert_eq!(names, vec![".", "..", "a", "x", "d"]);
    let (paged, pages) = list_plus(&mut c, &root, 400).await;
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
        status(&lookup(&mut c, &root, b"a").await),
        nfsstat3::NFS3ERR_NOENT
    );
    let Nfs3Result::Ok(x) = lookup(&mut c, &root, b"x").await else {
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
    assert_eq!(status(&getattr(&mut c, &a).await), nfsstat3::NFS3ERR_STALE);

    // RMDIR of a non-empty directory, missing and over-long names.
    let rmdir = c
        .rmdir(&RMDIR3args {
            object: dirop(&root, b"d"),
        })
        .await
        .unwrap();
    assert_eq!(status(&rmdir), nfsstat3::NFS3ERR_NOTEMPTY);
    assert_eq!(
        status(&lookup(&mut c, &root, b"missing").await),
        nfsstat3::NFS3ERR_NOENT
    );
    assert_eq!(
        status(&lookup(&mut c, &root, &[b'n'; 256]).await),
        nfsstat3::NFS3ERR_NAMETOOLONG
    );

    // Garbage and foreign handles.
    let garbage = nfs_fh3 {
        data: Opaque::owned(vec![1, 2, 3]),
    };
    assert_eq!(
        status(&getattr(&mut c, &garbage).await),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    let foreign = nfs_fh3 {
        data: Opaque::owned(HandleCodec::new(handles.handle_generation() ^ 1).encode_bytes(1, 1)),
    };
    assert_eq!(
        status(&getattr(&mut c, &foreign).await),
        nfsstat3::NFS3ERR_STALE
    );

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

    // Permissions: uid 1000 cannot write into the 0755 root-owned root.
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

    // Root squash: root's new file belongs to the anonymous ids.
    let public = mkdir(&mut c, &root, "pub", 0o777).await;
    let squash = serve(
        &cluster,
        &ns,
        handles,
        ExportPolicy {
            root_squash: true,
            ..policy()
        },
    )
    .await;
    let mut squashed = nfs(CLIENT, squash.local_addr(), 0, 0).await;
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

    // A client outside allowed_clients: refused at MNT and on NFS calls.
    let refused = mount(OUTSIDER, addr, EXPORT).await;
    assert!(matches!(
        refused,
        Err(MountError::Denied(mountstat3::MNT3ERR_ACCES))
    ));
    let mut outsider = nfs(OUTSIDER, addr, 0, 0).await;
    assert_eq!(
        status(&getattr(&mut outsider, &root).await),
        nfsstat3::NFS3ERR_ACCES
    );

    // A read-only export.
    let ro = serve(
        &cluster,
        &ns,
        handles,
        ExportPolicy {
            read_only: true,
            ..policy()
        },
    )
    .await;
    let mut reader = nfs(CLIENT, ro.local_addr(), 0, 0).await;
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

    for server in [server, squash, ro] {
        server.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    cluster.shutdown().await.unwrap();
}
