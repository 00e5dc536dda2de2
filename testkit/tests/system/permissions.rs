//! Permissions across sites: a chmod made at one site binds the writes
//! the owning site takes, within the attribute cache.

use std::time::{Duration, Instant};

use geonfs_testkit::cluster::TestCluster;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::nfs::{mode, nfs, status};
use crate::support::sites::{small_blocks_with, try_write, READY};

/// Site a owns a file of uid 1000 (mode 0666) that uid 2000 writes there;
/// root at site b makes it 0644. The owner answers uid 2000's next writes
/// from what it remembers of the inode (no meta-kvs read on the write
/// path), so without a re-read it would take them forever; it re-reads in
/// the background once the attribute cache (300 ms here) has run out, and
/// refuses them with NFS3ERR_ACCES from then on. Made writable again at b,
/// the file takes uid 2000's writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chmod_at_another_site_binds_writes_at_the_owner() {
    let builder = TestCluster::builder().attribute_cache(Duration::from_millis(300));
    let (cluster, mut sites) = small_blocks_with(builder, false, &["a", "b"]).await;
    let fh = sites.create("a", "vm.img").await;
    let chown = SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr3 {
            uid: Nfs3Option::Some(1000),
            gid: Nfs3Option::Some(1000),
            ..mode(0o666)
        },
        guard: Nfs3Option::None,
    };
    let res = sites.at("a").setattr(&chown).await.expect("SETATTR rpc");
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    let at_a = cluster.ready_access("a-access-1", READY).await.unwrap();
    let mut user = nfs("127.1.0.9", at_a, 2000, 2000).await;
    let data = vec![7u8; 4096];
    try_write(&mut user, &fh, 0, &data, stable_how::FILE_SYNC)
        .await
        .expect("uid 2000 may write a 0666 file");

    let chmod = |m: u32| SETATTR3args {
        object: fh.clone(),
        new_attributes: mode(m),
        guard: Nfs3Option::None,
    };
    let res = sites
        .at("b")
        .setattr(&chmod(0o644))
        .await
        .expect("SETATTR rpc");
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_write(&mut user, &fh, 4096, &data, stable_how::FILE_SYNC).await {
            Err(nfsstat3::NFS3ERR_ACCES) => break,
            Ok(()) => {}
            Err(other) => panic!("WRITE after the chmod at b: {other}"),
        }
        assert!(
            Instant::now() < deadline,
            "site a still takes uid 2000's writes 20 s after the chmod at site b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let res = sites
        .at("b")
        .setattr(&chmod(0o666))
        .await
        .expect("SETATTR rpc");
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_write(&mut user, &fh, 8192, &data, stable_how::FILE_SYNC)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "writes never allowed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await.unwrap();
}
