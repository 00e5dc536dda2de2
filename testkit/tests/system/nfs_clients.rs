//! The access servers of a 3-site cluster (3 cores and 1 meta voter per
//! site, n = 3) used by a client nobody on the team wrote: libnfs's
//! `nfs-cp` (Debian's libnfs-utils, installed by `.ci/run`) copies a random
//! file into site a and, once replication has brought it there, out of
//! site b; the bytes must be equal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;

use crate::support::{eventually, init_logging};

const DEADLINE: Duration = Duration::from_secs(120);

/// `nfs-cp FROM TO`; panics with its output when it fails.
fn nfs_cp(from: &str, to: &str) -> Result<(), String> {
    let out = Command::new("nfs-cp")
        .args([from, to])
        .output()
        .map_err(|err| format!("cannot run nfs-cp (apt-get install libnfs-utils): {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nfs-cp {from} {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The libnfs URL of `file` in the export of `access` (ports given, so no
/// portmapper is needed).
fn url(cluster: &TestCluster, access: &str, file: &str) -> String {
    let addr = cluster.node(access).unwrap().access().unwrap().nfs_addr();
    let port = addr.port();
    format!(
        "nfs://{}/geonfs/{file}?nfsport={port}&mountport={port}",
        addr.ip()
    )
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(0x6e66_735f_6370);
    let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nfs_cp_into_site_a_and_out_of_site_b() {
    init_logging();
    let cluster = TestCluster::builder().sites(3).start().await.unwrap();
    for name in ["a-access-1", "b-access-1", "c-access-1"] {
        cluster.ready_access(name, DEADLINE).await.unwrap();
    }
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    // Three and a half blocks: whole blocks, a partial one, several writes.
    let len = (cluster.config().cluster.block_size * 7 / 2) as usize;
    let data = random_file(&source, len);

    let into_a = url(&cluster, "a-access-1", "copied.bin");
    tokio::task::spawn_blocking(move || nfs_cp(source.to_str().unwrap(), &into_a))
        .await
        .unwrap()
        .expect("nfs-cp into site a");
    // Read back at site a at once (two in-site copies).
    let back_a = local.path().join("back-a.bin");
    let from_a = url(&cluster, "a-access-1", "copied.bin");
    let to = back_a.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || nfs_cp(&from_a, &to))
        .await
        .unwrap()
        .expect("nfs-cp out of site a");
    assert!(
        std::fs::read(&back_a).unwrap() == data,
        "site a returns other bytes"
    );

    // Site b, once geo replication has copied the blocks there.
    let back_b = local.path().join("back-b.bin");
    eventually(DEADLINE, "site b returns the file", || {
        let from_b = url(&cluster, "b-access-1", "copied.bin");
        let back_b = back_b.clone();
        let data = &data;
        async move {
            let to = back_b.to_str().unwrap().to_string();
            let copied = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_file(&to);
                nfs_cp(&from_b, &to)
            })
            .await
            .unwrap();
            copied.is_ok() && std::fs::read(&back_b).ok().as_ref() == Some(data)
        }
    })
    .await;
    cluster.shutdown().await.unwrap();
}

/// A MOUNT made before the access server has reached meta-kvs (the node
/// just restarted, meta-kvs unreachable) waits for it instead of failing
/// (MOUNT has no "try later" status), and is answered once it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_before_the_server_is_ready_waits_for_it() {
    init_logging();
    let mut cluster = TestCluster::builder().sites(1).start().await.unwrap();
    cluster.stop_node("a-access-1").await.unwrap();
    cluster.isolate_node("a-access-1").unwrap();
    cluster.restart_node("a-access-1").await.unwrap();
    let node = cluster.node("a-access-1").unwrap();
    let access = node.access().unwrap();
    assert!(!access.is_ready(), "meta-kvs is unreachable");
    let addr = access.nfs_addr();
    let mounting = tokio::spawn(crate::support::nfs::mount(
        crate::support::nfs::CLIENT,
        addr,
        crate::support::nfs::EXPORT,
    ));
    let registry = node.registry().clone();
    eventually(DEADLINE, "the MOUNT client connected", || {
        let registry = registry.clone();
        async move {
            registry
                .gather()
                .iter()
                .filter(|f| f.name() == "geonfs_onc_rpc_open_connections")
                .flat_map(|f| f.get_metric())
                .any(|m| m.get_gauge().get_value() >= 1.0)
        }
    })
    .await;
    assert!(!access.is_ready());
    cluster.heal_all();
    tokio::time::timeout(DEADLINE, access.wait_ready())
        .await
        .expect("ready once meta-kvs is reachable");
    let root = mounting.await.unwrap().expect("MNT answered once ready");
    assert!(cluster
        .node("a-access-1")
        .unwrap()
        .access()
        .unwrap()
        .is_ready());
    assert!(!root.data.is_empty());
    cluster.shutdown().await.unwrap();
}
