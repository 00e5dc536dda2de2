//! NFS and MOUNT clients (`nfs3_client`) and an NFS server over a test
//! cluster's namespace and data path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use geonfs_access_server::data::FileData;
use geonfs_access_server::namespace::Namespace;
use geonfs_access_server::nfs::{ExportPolicy, HandleCodec, MountProgram, NfsProgram};
use geonfs_access_server::oncrpc::{RpcProgram, RpcServer, ServerOptions};
use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::mount::dirpath;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, MountError, Nfs3Client};

pub(crate) use geonfs_testkit::nfs_client::Io;

pub(crate) const CLIENT: &str = "127.1.0.9";

pub(crate) const OUTSIDER: &str = "127.3.0.1";

pub(crate) const EXPORT: &str = "/geonfs";

pub(crate) fn policy() -> ExportPolicy {
    ExportPolicy {
        export_path: EXPORT.to_string(),
        allowed_clients: vec!["127.1.0.0/16".parse().unwrap()],
        read_only: false,
        root_squash: true,
        no_root_squash: vec![format!("{CLIENT}/32").parse().unwrap()],
        anon_uid: 65534,
        anon_gid: 65534,
    }
}

/// The site-a file data of `cluster`, called from a site-a address.
pub(crate) fn file_data(cluster: &TestCluster) -> FileData {
    crate::support::blocks::file_data_from(cluster, "127.1.0.50".parse().unwrap())
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
    geonfs_testkit::nfs_client::connect(from, to)
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

/// WRITE of `data` at `offset`, in one call; its reply, or the status it
/// failed with.
pub(crate) async fn try_write_reply(
    c: &mut Nfs3Client<Io>,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<WRITE3resok, nfsstat3> {
    let res = c
        .write(&WRITE3args {
            file: fh.clone(),
            offset,
            count: data.len() as u32,
            stable,
            data: Opaque::borrowed(data),
        })
        .await
        .expect("WRITE rpc");
    match res {
        Nfs3Result::Ok(ok) => Ok(ok),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

/// [`try_write_reply`] that must succeed.
pub(crate) async fn write(
    c: &mut Nfs3Client<Io>,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> WRITE3resok {
    match try_write_reply(c, fh, offset, data, stable).await {
        Ok(ok) => ok,
        Err(s) => panic!("WRITE: {s}"),
    }
}

pub(crate) async fn commit(c: &mut Nfs3Client<Io>, fh: &nfs_fh3) -> writeverf3 {
    let res = c
        .commit(&COMMIT3args {
            file: fh.clone(),
            offset: 0,
            count: 0,
        })
        .await
        .expect("COMMIT rpc");
    match res {
        Nfs3Result::Ok(ok) => ok.verf,
        Nfs3Result::Err((s, _)) => panic!("COMMIT: {s}"),
    }
}

pub(crate) async fn size_of(c: &mut Nfs3Client<Io>, fh: &nfs_fh3) -> u64 {
    match getattr(c, fh).await {
        Nfs3Result::Ok(ok) => ok.obj_attributes.size,
        res => panic!("GETATTR: {}", status(&res)),
    }
}
