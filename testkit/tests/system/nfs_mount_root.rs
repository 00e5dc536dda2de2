//! A client that mounted a subdirectory stays below it: `..` at its mount
//! root is the directory itself (LOOKUP and READDIRPLUS), handles made from
//! its handles carry the mount root on, a handle whose mount root was
//! widened or cut off is refused, and a directory moved out from under the
//! mount is no way up.

use geonfs_access_server::nfs::MountRoot;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::Nfs3Client;

use crate::nfs::Export;
use crate::support::nfs::{lookup, mkdir, mount, nfs, status, Io, CLIENT};

/// The handle and file id LOOKUP answers for `name` in `dir`.
async fn looked_up(c: &mut Nfs3Client<Io>, dir: &nfs_fh3, name: &[u8]) -> (nfs_fh3, u64) {
    let res = lookup(c, dir, name).await;
    let Nfs3Result::Ok(ok) = res else {
        panic!("LOOKUP {}: {}", String::from_utf8_lossy(name), status(&res))
    };
    let Nfs3Option::Some(attrs) = ok.obj_attributes else {
        panic!("LOOKUP without attributes")
    };
    (ok.object, attrs.fileid)
}

/// The `..` entry READDIRPLUS lists in `dir`: its file id and handle.
async fn dotdot_entry(c: &mut Nfs3Client<Io>, dir: &nfs_fh3) -> (u64, Option<nfs_fh3>) {
    let res = c
        .readdirplus(&READDIRPLUS3args {
            dir: dir.clone(),
            cookie: 0,
            cookieverf: cookieverf3::default(),
            dircount: 4096,
            maxcount: 16384,
        })
        .await
        .expect("READDIRPLUS rpc");
    let Nfs3Result::Ok(ok) = res else {
        panic!("READDIRPLUS: {}", status(&res))
    };
    let entry = ok
        .reply
        .entries
        .0
        .into_iter()
        .find(|e| e.name.as_ref() == b"..")
        .expect("a `..` entry");
    let handle = match entry.name_handle {
        Nfs3Option::Some(fh) => Some(fh),
        Nfs3Option::None => None,
    };
    (entry.fileid, handle)
}

/// `fh` with its mount root replaced by `mount`.
fn with_mount(e: &Export, fh: &nfs_fh3, mount: MountRoot) -> nfs_fh3 {
    let decoded = e.handles.decode(fh.data.as_ref()).unwrap();
    nfs_fh3 {
        data: Opaque::owned(
            e.handles
                .encode_bytes(decoded.id, decoded.generation, mount),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dotdot_never_leaves_a_subdirectory_mount() {
    let mut e = Export::start().await;
    let root = e.root.clone();
    let vms = mkdir(&mut e.c, &root, "vms", 0o755).await;
    mkdir(&mut e.c, &vms, "sub", 0o755).await;
    let vms_id = e.handles.decode(vms.data.as_ref()).unwrap().id;
    let root_id = e.handles.decode(root.data.as_ref()).unwrap().id;

    // The whole export: `..` of vms is the root, `..` of the root the root.
    let (up, up_id) = looked_up(&mut e.c, &vms, b"..").await;
    assert_eq!((up.clone(), up_id), (root.clone(), root_id));
    assert_eq!(looked_up(&mut e.c, &root, b"..").await.1, root_id);

    // A client that mounted /geonfs/vms.
    let mounted = mount(CLIENT, e.addr, "/geonfs/vms").await.unwrap();
    let mut c = nfs(CLIENT, e.addr, 0, 0).await;
    let (up, up_id) = looked_up(&mut c, &mounted, b"..").await;
    assert_eq!(
        (up_id, &up),
        (vms_id, &mounted),
        "`..` at the mount root is the mount root"
    );
    assert_eq!(
        dotdot_entry(&mut c, &mounted).await,
        (vms_id, Some(mounted.clone()))
    );
    let (sub, _) = looked_up(&mut c, &mounted, b"sub").await;
    let (up, up_id) = looked_up(&mut c, &sub, b"..").await;
    assert_eq!(
        (up_id, &up),
        (vms_id, &mounted),
        "`..` of sub leads back to the mount root"
    );
    assert_eq!(
        dotdot_entry(&mut c, &sub).await,
        (vms_id, Some(mounted.clone()))
    );

    // A mount root widened to the export's root without knowing its inode
    // generation: stale. Cut down to the 24-byte layout: not a handle.
    let widened = with_mount(
        &e,
        &sub,
        MountRoot {
            id: root_id,
            generation: 0x5eed,
        },
    );
    assert_eq!(
        status(&lookup(&mut c, &widened, b"..").await),
        nfsstat3::NFS3ERR_STALE
    );
    let cut = nfs_fh3 {
        data: Opaque::owned(mounted.data.as_ref()[..24].to_vec()),
    };
    assert_eq!(
        status(&lookup(&mut c, &cut, b"..").await),
        nfsstat3::NFS3ERR_BADHANDLE
    );

    // sub moved out from under the mount by a client of the whole export:
    // its `..` is no way up for the vms client.
    let moved =
        e.c.rename(&RENAME3args {
            from: crate::support::nfs::dirop(&vms, b"sub"),
            to: crate::support::nfs::dirop(&root, b"out"),
        })
        .await
        .expect("RENAME rpc");
    assert_eq!(status(&moved), nfsstat3::NFS3_OK);
    assert_eq!(
        status(&lookup(&mut c, &sub, b"..").await),
        nfsstat3::NFS3ERR_ACCES
    );
    assert_eq!(
        dotdot_entry(&mut c, &sub).await.1,
        None,
        "no handle above the mount"
    );
    // ... while the whole export's client climbs as before.
    let (out, _) = looked_up(&mut e.c, &root, b"out").await;
    assert_eq!(looked_up(&mut e.c, &out, b"..").await.1, root_id);
    e.stop().await;
}
