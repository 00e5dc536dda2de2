//! NFS READ, WRITE, COMMIT and size changes through the NFS program and
//! the block pipeline (1 site × 2 cores, meta-kvs), driven by `nfs3_client`:
//! data round trips, the size and mtime kept by the attribute record, the
//! write verifier changing when a core that held unstable data restarts,
//! truncation (and who may truncate), and REMOVE releasing the blocks.

use geonfs_access_server::namespace::Namespace;
use geonfs_access_server::nfs::HandleCodec;
use geonfs_access_server::oncrpc::RpcServer;
use geonfs_core_server::CoreMetrics;
use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use crate::support::blocks::{inventory, pattern};
use crate::support::nfs::{commit, size_of, try_write_reply, write};
use crate::support::nfs::{
    create, getattr, mkdir, mode, mount, nfs, policy, serve, status, Io, CLIENT, EXPORT,
};
use crate::support::{cluster, cluster_with_capacity};
use nfs3_client::Nfs3Client;

async fn read(c: &mut Nfs3Client<Io>, fh: &nfs_fh3, offset: u64, count: u32) -> (Vec<u8>, bool) {
    let res = c
        .read(&READ3args {
            file: fh.clone(),
            offset,
            count,
        })
        .await
        .expect("READ rpc");
    match res {
        Nfs3Result::Ok(ok) => (ok.data.as_ref().to_vec(), ok.eof),
        Nfs3Result::Err((s, _)) => panic!("READ: {s}"),
    }
}

/// A one-site cluster serving NFS, a client mounted as root, and a new
/// file in the export's root.
struct Served {
    cluster: TestCluster,
    server: RpcServer,
    root: nfs_fh3,
    c: Nfs3Client<Io>,
    fh: nfs_fh3,
}

async fn served_file(name: &str) -> Served {
    served_file_on(cluster().await, name).await
}

/// [`served_file`] on `cluster`.
async fn served_file_on(cluster: TestCluster, name: &str) -> Served {
    let meta = cluster.meta_client("a-meta-1").unwrap();
    let ns = Namespace::with_id_range(meta.clone(), 16);
    let handles = HandleCodec::load(&meta).await.unwrap();
    let server = serve(&cluster, &ns, handles, policy()).await;
    let addr = server.local_addr();
    let root = mount(CLIENT, addr, EXPORT).await.unwrap();
    let mut c = nfs(CLIENT, addr, 0, 0).await;
    let how = createhow3::GUARDED(sattr3::default());
    let fh = match create(&mut c, &root, name, how).await {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        res => panic!("CREATE: {}", status(&res)),
    };
    Served {
        cluster,
        server,
        root,
        c,
        fh,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nfs_read_write_commit_truncate_remove() {
    let Served {
        mut cluster,
        server,
        root,
        mut c,
        fh,
    } = served_file("disk.img").await;
    let block = cluster.config().cluster.block_size;

    // An unstable write across a block boundary, then a stable one.
    let first = pattern(1, 300_000);
    let offset = block - 100_000;
    let w1 = write(&mut c, &fh, offset, &first, stable_how::UNSTABLE).await;
    assert_eq!(w1.committed, stable_how::UNSTABLE);
    assert_eq!(w1.count, first.len() as u32);
    let second = pattern(2, 5000);
    let w2 = write(&mut c, &fh, 10, &second, stable_how::FILE_SYNC).await;
    assert_eq!(w2.committed, stable_how::FILE_SYNC);
    assert_eq!(w1.verf, w2.verf);
    let size = offset + first.len() as u64;
    assert_eq!(
        size_of(&mut c, &fh).await,
        size,
        "size from the attribute record"
    );

    let (got, eof) = read(&mut c, &fh, offset, first.len() as u32).await;
    assert!(eof);
    assert_eq!(got, first);
    let (got, _) = read(&mut c, &fh, 0, 10 + second.len() as u32 + 10).await;
    assert_eq!(&got[..10], &[0; 10], "never written: zeros");
    assert_eq!(&got[10..10 + second.len()], &second[..]);
    assert_eq!(&got[10 + second.len()..], &[0; 10]);
    let (past, eof) = read(&mut c, &fh, size + 10, 100).await;
    assert!(past.is_empty() && eof);

    // COMMIT without a restart keeps the verifier.
    assert_eq!(commit(&mut c, &fh).await, w1.verf);

    // An unstable write, then a restart of a core that holds it: COMMIT
    // answers a new verifier, so the client knows to resend.
    let third = pattern(3, 4096);
    let w3 = write(&mut c, &fh, 0, &third, stable_how::UNSTABLE).await;
    assert_eq!(w3.verf, w1.verf);
    cluster.kill_node("a-core-1").await.unwrap();
    cluster.restart_node("a-core-1").await.unwrap();
    let after_restart = commit(&mut c, &fh).await;
    assert_ne!(
        after_restart, w3.verf,
        "a core that held unstable data restarted"
    );
    // The resend and a second COMMIT keep the new verifier.
    let w4 = write(&mut c, &fh, 0, &third, stable_how::UNSTABLE).await;
    assert_eq!(w4.verf, after_restart);
    assert_eq!(commit(&mut c, &fh).await, after_restart);
    assert_eq!(read(&mut c, &fh, 0, 4096).await.0, third);

    // SETATTR size: truncate, then extend; the cut part reads as zeros.
    assert_eq!(set_size(&mut c, &fh, 1000).await, nfsstat3::NFS3_OK);
    assert_eq!(size_of(&mut c, &fh).await, 1000);
    assert_eq!(set_size(&mut c, &fh, 200_000).await, nfsstat3::NFS3_OK);
    let (got, _) = read(&mut c, &fh, 0, 200_000).await;
    assert_eq!(got.len(), 200_000);
    assert_eq!(&got[..1000], &third[..1000]);
    assert!(
        got[4096..].iter().all(|&b| b == 0),
        "cut data does not come back"
    );

    // WRITE on a directory is ISDIR; REMOVE releases every block.
    let res = c
        .write(&WRITE3args {
            file: root.clone(),
            offset: 0,
            count: 1,
            stable: stable_how::FILE_SYNC,
            data: Opaque::borrowed(b"x"),
        })
        .await
        .unwrap();
    assert_eq!(status(&res), nfsstat3::NFS3ERR_ISDIR);
    let file_id = match getattr(&mut c, &fh).await {
        Nfs3Result::Ok(ok) => ok.obj_attributes.fileid,
        res => panic!("GETATTR: {}", status(&res)),
    };
    remove(&mut c, &root, b"disk.img").await;
    assert_no_blocks_of(&cluster, file_id).await;
    drop(server);
    cluster.shutdown().await.unwrap();
}

/// The status of a SETATTR of `fh`'s size.
async fn set_size(c: &mut Nfs3Client<Io>, fh: &nfs_fh3, size: u64) -> nfsstat3 {
    let args = SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr3 {
            size: Nfs3Option::Some(size),
            ..sattr3::default()
        },
        guard: Nfs3Option::None,
    };
    status(&c.setattr(&args).await.expect("SETATTR rpc"))
}

/// REMOVE of `name` in `dir`, which must succeed.
async fn remove(c: &mut Nfs3Client<Io>, dir: &nfs_fh3, name: &[u8]) {
    let res = c
        .remove(&REMOVE3args {
            object: crate::support::nfs::dirop(dir, name),
        })
        .await
        .expect("REMOVE rpc");
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
}

/// No core holds a block of `file_id`.
async fn assert_no_blocks_of(cluster: &TestCluster, file_id: u64) {
    for (core, blocks) in inventory(cluster).await {
        let left: Vec<_> = blocks
            .iter()
            .filter(|b| b.block.is_some_and(|b| b.file_id == file_id))
            .collect();
        assert!(left.is_empty(), "{core} still holds {left:?}");
    }
}

/// A counter summed over site a's cores.
fn core_counter(cluster: &TestCluster, counter: impl Fn(&CoreMetrics) -> u64) -> u64 {
    cluster
        .core_names()
        .iter()
        .filter_map(|core| cluster.node(core).ok().and_then(|n| n.core()))
        .map(|core| counter(core.metrics()))
        .sum()
}

/// The block reads site a's cores served so far.
fn core_reads(cluster: &TestCluster) -> u64 {
    core_counter(cluster, |m| m.reads.get())
}

/// At the owning site a READ costs one block read (its cores probed once
/// with the ownership epoch), not a read of the attribute record first:
/// the size and mtime come from memory, and the data read is the fence
/// check (docs/ARCHITECTURE.md#the-data-path). The bytes, eof and size
/// stay right, and a read past the end still answers eof.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_at_the_owner_is_one_block_read() {
    let Served {
        cluster,
        server,
        mut c,
        fh,
        ..
    } = served_file("vm.img").await;
    let data = pattern(7, 256 * 1024);
    write(&mut c, &fh, 0, &data, stable_how::FILE_SYNC).await;
    let cores = cluster.core_names().len() as u64;
    let reads = 20u64;
    let before = core_reads(&cluster);
    for i in 0..reads {
        let offset = (i * 12_288) % (data.len() as u64 - 4096);
        let (got, eof) = read(&mut c, &fh, offset, 4096).await;
        assert!(!eof);
        assert_eq!(got, &data[offset as usize..offset as usize + 4096]);
    }
    let served = core_reads(&cluster) - before;
    assert!(
        served <= reads * cores,
        "{reads} READs of 4 KiB at the owner cost {served} core reads ({cores} cores: at most one each per READ)"
    );
    let (tail, eof) = read(&mut c, &fh, data.len() as u64 - 10, 100).await;
    assert!(eof);
    assert_eq!(tail, &data[data.len() - 10..]);
    let (past, eof) = read(&mut c, &fh, data.len() as u64 + 1, 100).await;
    assert!(past.is_empty() && eof);
    assert_eq!(size_of(&mut c, &fh).await, data.len() as u64);
    drop(server);
    cluster.shutdown().await.unwrap();
}

/// CREATE UNCHECKED with a size over an existing file changes the file's
/// size, so it is checked as SETATTR's size is: a user who may write the
/// directory but not the file (not its owner, mode 0444) gets
/// NFS3ERR_ACCES and the file keeps every byte; without a size the file is
/// answered unchanged; its owner may truncate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchecked_create_truncates_only_for_who_may_write_the_file() {
    let Served {
        cluster,
        server,
        root,
        mut c,
        ..
    } = served_file("unused").await;
    let addr = server.local_addr();
    let shared = mkdir(&mut c, &root, "shared", 0o777).await;
    let mut owner = nfs(CLIENT, addr, 1000, 1000).await;
    let mut other = nfs(CLIENT, addr, 2000, 2000).await;
    let fh = match create(
        &mut owner,
        &shared,
        "vm.img",
        createhow3::GUARDED(mode(0o644)),
    )
    .await
    {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        res => panic!("CREATE: {}", status(&res)),
    };
    let data = pattern(3, 8192);
    write(&mut owner, &fh, 0, &data, stable_how::FILE_SYNC).await;
    let chmod = owner
        .setattr(&SETATTR3args {
            object: fh.clone(),
            new_attributes: mode(0o444),
            guard: Nfs3Option::None,
        })
        .await
        .expect("SETATTR rpc");
    assert_eq!(status(&chmod), nfsstat3::NFS3_OK);
    let truncate = || {
        createhow3::UNCHECKED(sattr3 {
            size: Nfs3Option::Some(0),
            ..sattr3::default()
        })
    };

    let refused = create(&mut other, &shared, "vm.img", truncate()).await;
    assert_eq!(status(&refused), nfsstat3::NFS3ERR_ACCES);
    assert_eq!(size_of(&mut c, &fh).await, 8192);
    assert_eq!(read(&mut c, &fh, 0, 8192).await.0, data);

    let plain = create(
        &mut other,
        &shared,
        "vm.img",
        createhow3::UNCHECKED(sattr3::default()),
    )
    .await;
    let Nfs3Result::Ok(plain) = plain else {
        panic!("UNCHECKED CREATE without a size: {}", status(&plain));
    };
    let Nfs3Option::Some(attrs) = plain.obj_attributes else {
        panic!("attributes");
    };
    assert_eq!((attrs.size, attrs.mode, attrs.uid), (8192, 0o444, 1000));

    let truncated = create(&mut owner, &shared, "vm.img", truncate()).await;
    assert_eq!(status(&truncated), nfsstat3::NFS3_OK);
    assert_eq!(size_of(&mut c, &fh).await, 0);
    assert_eq!(read(&mut c, &fh, 0, 8192).await, (Vec::new(), true));
    drop(server);
    cluster.shutdown().await.unwrap();
}

/// The delete calls site a's cores served so far.
fn core_deletes(cluster: &TestCluster) -> u64 {
    core_counter(cluster, |m| m.deletes.get())
}

/// Any client may set a size near 2^63 (FSINFO's maxfilesize); truncating
/// or removing such a file costs a few delete calls per core, not one per
/// block index of the size (2^41 of them: the REMOVE never answered, and
/// kept a core busy). A size past maxfilesize is NFS3ERR_FBIG.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_of_the_largest_size_is_truncated_and_removed_with_a_few_calls_per_core() {
    let Served {
        cluster,
        server,
        root,
        mut c,
        fh,
    } = served_file("huge.img").await;
    let data = pattern(9, 8192);
    write(&mut c, &fh, 0, &data, stable_how::FILE_SYNC).await;
    assert_eq!(set_size(&mut c, &fh, 1 << 63).await, nfsstat3::NFS3ERR_FBIG);
    let largest = (1u64 << 63) - 4096;
    assert_eq!(set_size(&mut c, &fh, largest).await, nfsstat3::NFS3_OK);
    assert_eq!(size_of(&mut c, &fh).await, largest);
    write(&mut c, &fh, 1 << 62, &data, stable_how::FILE_SYNC).await;
    assert_eq!(
        read(&mut c, &fh, largest - 4096, 4096).await,
        (vec![0; 4096], true)
    );

    let cores = cluster.core_names().len() as u64;
    let before = core_deletes(&cluster);
    assert_eq!(set_size(&mut c, &fh, 4096).await, nfsstat3::NFS3_OK);
    assert_eq!(
        read(&mut c, &fh, 0, 8192).await,
        (data[..4096].to_vec(), true)
    );
    let grow = set_size(&mut c, &fh, (1 << 62) + 8192).await;
    assert_eq!(grow, nfsstat3::NFS3_OK);
    let (grown, _) = read(&mut c, &fh, 1 << 62, 8192).await;
    assert!(
        grown.len() == 8192 && grown.iter().all(|&b| b == 0),
        "a truncated block does not come back when the file grows again"
    );
    let file_id = match getattr(&mut c, &fh).await {
        Nfs3Result::Ok(ok) => ok.obj_attributes.fileid,
        res => panic!("GETATTR: {}", status(&res)),
    };
    remove(&mut c, &root, b"huge.img").await;
    // The truncate: one deleted range; the REMOVE: one, and the attribute
    // record.
    let calls = core_deletes(&cluster) - before;
    assert!(
        calls <= 3 * cores,
        "truncating from 2^63 and removing cost {calls} delete calls on {cores} cores"
    );
    assert_no_blocks_of(&cluster, file_id).await;
    drop(server);
    cluster.shutdown().await.unwrap();
}

/// A site that cannot place two copies for lack of space answers
/// NFS3ERR_NOSPC (QEMU's default `werror=enospc` then pauses the VM rather
/// than failing its I/O), keeps every acknowledged byte, and takes the same
/// write once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_site_answers_nospc_and_writes_again_once_space_is_freed() {
    let Served {
        cluster,
        server,
        root,
        mut c,
        fh,
    } = served_file_on(cluster_with_capacity(1 << 20).await, "vm.img").await;
    let filler = match create(
        &mut c,
        &root,
        "filler",
        createhow3::GUARDED(sattr3::default()),
    )
    .await
    {
        Nfs3Result::Ok(ok) => ok.obj.unwrap(),
        res => panic!("CREATE: {}", status(&res)),
    };
    write(
        &mut c,
        &filler,
        0,
        &pattern(1, 512 << 10),
        stable_how::FILE_SYNC,
    )
    .await;
    assert_eq!(set_size(&mut c, &fh, 2 << 20).await, nfsstat3::NFS3_OK);
    let piece = 128 << 10;
    let image = pattern(2, 2 << 20);
    let mut acknowledged = 0;
    let refused = loop {
        assert!(
            acknowledged < image.len(),
            "2 MiB fit in a site of 1 MiB cores"
        );
        let data = &image[acknowledged..acknowledged + piece];
        match try_write_reply(
            &mut c,
            &fh,
            acknowledged as u64,
            data,
            stable_how::FILE_SYNC,
        )
        .await
        {
            Ok(_) => acknowledged += piece,
            Err(refused) => break refused,
        }
    };
    assert_eq!(refused, nfsstat3::NFS3ERR_NOSPC);
    assert!(acknowledged > 0, "the first write fits");
    assert_eq!(
        read(&mut c, &fh, 0, acknowledged as u32).await.0,
        &image[..acknowledged]
    );

    remove(&mut c, &root, b"filler").await;
    let end = acknowledged + piece;
    write(
        &mut c,
        &fh,
        acknowledged as u64,
        &image[acknowledged..end],
        stable_how::FILE_SYNC,
    )
    .await;
    assert_eq!(read(&mut c, &fh, 0, end as u32).await.0, &image[..end]);
    drop(server);
    cluster.shutdown().await.unwrap();
}

/// Argument bytes sent as they are.
struct RawArgs(Vec<u8>);

impl nfs3_client::nfs3_types::xdr_codec::Pack for RawArgs {
    fn packed_size(&self) -> usize {
        self.0.len()
    }

    fn pack(
        &self,
        out: &mut impl std::io::Write,
    ) -> nfs3_client::nfs3_types::xdr_codec::Result<usize> {
        out.write_all(&self.0)
            .map_err(nfs3_client::nfs3_types::xdr_codec::Error::Io)?;
        Ok(self.0.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_announcing_4_gib_of_data_is_garbage_args_and_the_file_is_untouched() {
    use nfs3_client::nfs3_types::rpc::opaque_auth;
    use nfs3_client::nfs3_types::xdr_codec::Pack;
    use nfs3_client::rpc::RpcClient;
    use nfs3_client::RpcError;

    let Served {
        cluster,
        server,
        mut c,
        fh,
        ..
    } = served_file("announced").await;
    write(&mut c, &fh, 0, b"kept", stable_how::FILE_SYNC).await;
    // This test process (nextest runs each test in its own) may now map
    // only 1 GiB more: had anything tried to allocate the 4 GiB below, the
    // allocation would have failed and the process aborted.
    geonfs_testkit::process::bound_address_space(1 << 30).unwrap();
    // WRITE3args with the data's length word set to 4 GiB and no data:
    // refused before any decoder could allocate 4 GiB for it.
    let mut args = Vec::new();
    WRITE3args {
        file: fh.clone(),
        offset: 0,
        count: 4,
        stable: stable_how::FILE_SYNC,
        data: Opaque::owned(Vec::new()),
    }
    .pack(&mut args)
    .unwrap();
    let at = args.len() - 4;
    args[at..].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut raw = RpcClient::new_with_auth(
        crate::support::nfs::connect(CLIENT, server.local_addr()).await,
        crate::support::nfs::unix(0, 0),
        opaque_auth::default(),
    );
    let refused: Result<WRITE3res, _> = raw
        .call(
            nfs3_client::nfs3_types::nfs3::PROGRAM,
            3,
            NFS_PROGRAM::NFSPROC3_WRITE as u32,
            &RawArgs(args),
        )
        .await;
    assert!(matches!(refused, Err(RpcError::GarbageArgs)), "{refused:?}");
    assert_eq!(read(&mut c, &fh, 0, 16).await.0, b"kept");
    server
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
}
