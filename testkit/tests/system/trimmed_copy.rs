//! The trimmed-copy hole, through the access servers of a 3-site cluster
//! (n = 3) with `nfs3_client`: a block written whole at site a is shipped
//! to b and c and the secondary's copy trimmed; a 4 KiB write lands in it;
//! then, before that write ships, the block's primary is killed (or its
//! copy damaged on disk). Every byte acknowledged must read back at every
//! site: the copy the secondary made of the 4 KiB write must be complete,
//! never one chunk on top of zeros (see `core-server/src/store/copy_state.rs`).

use std::time::Duration;

use geonfs_block_manager::ReplicatorOptions;
use geonfs_proto::domain::{BlockId, FileId};
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::blocks::{
    block_client, cut_from_other_sites, holders, per_site, prompt_trims, replicator_metrics,
};
use crate::support::blocks::{copy_is_good, corrupt_on_disk};
use crate::support::nfs::write;
use crate::support::sites::{apply, connect, file_id, try_read, Sites};
use crate::support::{eventually, init_logging};

const BLOCK: u64 = 256 * 1024;
const SETTLE: Duration = Duration::from_secs(60);

/// How the block's primary is lost after the 4 KiB write.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// kill -9 of its core.
    Killed,
    /// A chunk of its copy damaged on disk (the core restarted).
    Corrupt,
}

/// A 3-site cluster (3 cores each, n = 3, 256 KiB blocks) whose
/// secondaries take over after 1 s, and a client at each site.
async fn cluster() -> (TestCluster, Sites) {
    let replication = ReplicatorOptions {
        takeover_timeout: Duration::from_secs(1),
        scan_interval: None,
        ..prompt_trims()
    };
    let cluster = TestCluster::builder()
        .sites(3)
        .replication_factor(3)
        .block_size(BLOCK)
        .replication(replication)
        .start()
        .await
        .unwrap();
    let sites = connect(&cluster, &["a", "b", "c"]).await;
    (cluster, sites)
}

/// Whether `block` has one copy per site, all at one version, and site
/// a's replication queue is empty.
async fn settled(cluster: &TestCluster, block: BlockId) -> bool {
    let held = holders(cluster, block).await;
    let one_version =
        held.values().map(|i| i.version).min() == held.values().map(|i| i.version).max();
    let queued: i64 = replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| {
            m.backlog_jobs.with_label_values(&["b"]).get()
                + m.backlog_jobs.with_label_values(&["c"]).get()
        })
        .sum();
    per_site(&held).values().all(|&n| n == 1)
        && per_site(&held).len() == 3
        && one_version
        && queued == 0
}

/// Whether the whole file reads back as `model` at `site`.
async fn reads_model(sites: &mut Sites, site: &str, fh: &nfs_fh3, model: &[u8]) -> bool {
    try_read(sites.at(site), fh, 0, model.len() as u64)
        .await
        .is_ok_and(|data| data == model)
}

/// Polls until the whole file reads back as `model` at `site`, failing
/// the test after [`SETTLE`].
async fn until_reads_model(sites: &mut Sites, site: &str, fh: &nfs_fh3, model: &[u8]) {
    let started = std::time::Instant::now();
    while !reads_model(sites, site, fh, model).await {
        assert!(
            started.elapsed() < SETTLE,
            "site {site} never read the file back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn primary_lost_after_a_write_into_a_trimmed_block(loss: Loss) {
    init_logging();
    let (mut cluster, mut sites) = cluster().await;
    let fh = sites.create("a", "vm.img").await;
    let mut rng = Rng::new(12);
    let mut model = Vec::new();

    // 1. Two whole blocks at site a, shipped, the secondaries trimmed.
    let image = rng.bytes(2 * BLOCK as usize);
    write(sites.at("a"), &fh, 0, &image, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &image);
    let block = BlockId {
        file_id: FileId(file_id(&fh)),
        index: 1,
    };
    eventually(SETTLE, "shipped to b and c, the secondary trimmed", || {
        settled(&cluster, block)
    })
    .await;
    let [primary, secondary] = block_client(&cluster)
        .local_pair(block)
        .unwrap()
        .map(|n| n.name.clone());
    let held = holders(&cluster, block).await;
    assert!(
        held.contains_key(&primary) && !held.contains_key(&secondary),
        "{held:?}"
    );

    // 2. The primary cannot ship any more; a 4 KiB write into the block.
    cut_from_other_sites(&cluster, &primary);
    let small = rng.bytes(4096);
    let offset = BLOCK + 70_000;
    write(sites.at("a"), &fh, offset, &small, stable_how::FILE_SYNC).await;
    apply(&mut model, offset, &small);

    // 3. The primary is lost before the write ships.
    match loss {
        Loss::Killed => cluster.kill_node(&primary).await.unwrap(),
        Loss::Corrupt => corrupt_on_disk(&mut cluster, &primary, block).await,
    }
    // A client retries a failed READ (the dead core is found out first).
    let started = std::time::Instant::now();
    let at_a = loop {
        match try_read(sites.at("a"), &fh, 0, model.len() as u64).await {
            Ok(data) => break data,
            Err(status) => assert!(started.elapsed() < SETTLE, "site a: READ failed: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wrong = at_a
        .iter()
        .zip(&model)
        .filter(|(got, want)| got != want)
        .count();
    let zeros = at_a
        .iter()
        .zip(&model)
        .filter(|(got, want)| **got == 0 && **want != 0)
        .count();
    assert_eq!(
        (wrong, at_a.len()),
        (0, model.len()),
        "site a read {wrong} bytes wrong ({zeros} zeros) after the primary was {loss:?}"
    );

    // Healed, every site reads every acknowledged byte, and the block ends
    // with one copy per site again.
    cluster.heal_all();
    for site in ["b", "c", "a"] {
        until_reads_model(&mut sites, site, &fh, &model).await;
    }
    match loss {
        Loss::Killed => cluster.restart_node(&primary).await.unwrap(),
        Loss::Corrupt => {
            let whole = &model[BLOCK as usize..];
            eventually(SETTLE, "the damaged copy is repaired", || {
                copy_is_good(&cluster, &primary, block, whole)
            })
            .await;
        }
    }
    eventually(SETTLE, "one copy per site", || settled(&cluster, block)).await;
    for site in ["a", "b", "c"] {
        assert!(
            reads_model(&mut sites, site, &fh, &model).await,
            "site {site}"
        );
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_into_a_trimmed_block_survives_the_primary_killed_before_it_ships() {
    primary_lost_after_a_write_into_a_trimmed_block(Loss::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_into_a_trimmed_block_survives_the_primary_copy_corrupt_before_it_ships() {
    primary_lost_after_a_write_into_a_trimmed_block(Loss::Corrupt).await;
}
