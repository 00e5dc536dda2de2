//! A file written at site a of a cluster with a short ownership lease, and
//! writes that retry while the lease is out.

use std::time::{Duration, Instant};

use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::replication::{core_registries, wait_drained};
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::Nfs3Client;

use super::nfs::{write, Io};
use super::sites::{apply, small_blocks_with, try_write, Sites};

/// The lease these tests run with (renewed every 100 ms).
pub(crate) const LEASE: Duration = Duration::from_secs(1);

/// How long a test waits for something the lease makes happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Writes until the write is acknowledged, retrying while it is refused
/// with JUKEBOX (a handover or a lease in progress), for at most
/// [`PATIENCE`].
pub(crate) async fn write_retrying(c: &mut Nfs3Client<Io>, fh: &nfs_fh3, offset: u64, data: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match try_write(c, fh, offset, data, stable_how::FILE_SYNC).await {
            Ok(()) => return,
            Err(nfsstat3::NFS3ERR_JUKEBOX) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("WRITE at {offset}: {status}"),
        }
    }
}

/// A 3-site cluster with [`LEASE`], and a file `name` that site a wrote
/// `len` random bytes into, replicated everywhere: the cluster, the
/// clients, the file's handle, the model of its content and the rng.
pub(crate) struct Written {
    pub cluster: TestCluster,
    pub sites: Sites,
    pub fh: nfs_fh3,
    pub model: Vec<u8>,
    pub rng: Rng,
}

pub(crate) async fn written_at_a(name: &str, len: usize, seed: u64) -> Written {
    let builder = TestCluster::builder().ownership_lease(LEASE);
    let (cluster, mut sites) = small_blocks_with(builder, true, &["a", "b", "c"]).await;
    let fh = sites.create("a", name).await;
    let mut rng = Rng::new(seed);
    let mut model = Vec::new();
    let first = rng.bytes(len);
    write(sites.at("a"), &fh, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &first);
    let registries = core_registries(&cluster).unwrap();
    assert!(
        wait_drained(&registries, PATIENCE).await.is_some(),
        "replication drained"
    );
    Written {
        cluster,
        sites,
        fh,
        model,
        rng,
    }
}
