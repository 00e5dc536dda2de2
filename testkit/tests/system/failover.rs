//! `geonfs failover`: every file of a lost site taken over in one run
//! (`access-server/src/ownership/failover.rs`), refused for a site that is
//! alive, and safe to run again; and the same by the surviving sites
//! themselves with `cluster.auto_failover_after`
//! (`access-server/src/ownership/auto_failover.rs`), never without it.

use std::time::{Duration, Instant};

use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::replication::{core_registries, wait_drained};
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::init_logging;
use crate::support::nfs::write;
use crate::support::sites::{file_id, owner_record, read, small_blocks_with, Sites};

/// How many files the lost site owns.
const FILES: usize = 200;

/// The `auto_failover_after` of the automatic failover test.
const AUTO_AFTER: Duration = Duration::from_secs(3);

/// Every node of site a (of `small_blocks_with`).
const SITE_A: [&str; 5] = ["a-access-1", "a-core-1", "a-core-2", "a-core-3", "a-meta-1"];

/// `count` files created and written at site a (3000 + 7 × i random
/// bytes each), replicated everywhere: (handle, content).
async fn written_at_a(
    cluster: &TestCluster,
    sites: &mut Sites,
    rng: &mut Rng,
    count: usize,
) -> Vec<(nfs_fh3, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..count {
        let fh = sites.create("a", &format!("vm-{i}.img")).await;
        let data = rng.bytes(3000 + 7 * i);
        write(sites.at("a"), &fh, 0, &data, stable_how::FILE_SYNC).await;
        files.push((fh, data));
    }
    let registries = core_registries(cluster).unwrap();
    assert!(
        wait_drained(&registries, Duration::from_secs(120))
            .await
            .is_some(),
        "replication drained"
    );
    files
}

/// Watches the owner of `file` for `period` (an observation, not a wait
/// for something): the site(s) it had.
async fn owners_during(cluster: &TestCluster, file: u64, period: Duration) -> Vec<String> {
    let end = Instant::now() + period;
    let mut seen: Vec<String> = Vec::new();
    while Instant::now() < end {
        if let Some((owner, _)) = owner_record(cluster, file).await {
            if seen.last() != Some(&owner.site) {
                seen.push(owner.site);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_site_fails_over_in_one_command_and_its_files_are_writable_elsewhere() {
    init_logging();
    let builder = TestCluster::builder().ownership_lease(Duration::from_secs(1));
    let (mut cluster, mut sites) = small_blocks_with(builder, true, &["a", "b", "c"]).await;
    let mut rng = Rng::new(0x6661_696c);
    let mut files = written_at_a(&cluster, &mut sites, &mut rng, FILES).await;

    // A site that is alive is not failed over.
    let alive = geonfs::failover::failover(
        cluster.config(),
        cluster.network().clone(),
        "b",
        Some("c"),
        false,
        |_| {},
    )
    .await;
    let refusal = alive.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        refusal.contains("site b is not lost"),
        "failover of a live site: {refusal:?}"
    );

    // b and c read a few files while a owns them (their access servers
    // cache a as the owner; the failover runs in another process).
    for (fh, data) in files.iter().step_by(50) {
        for site in ["b", "c"] {
            let got = read(sites.at(site), fh, 0, data.len() as u64).await;
            assert!(got == *data, "read at {site} while a owns the file");
        }
    }

    // Site a is lost: every node of it stops. Without
    // `auto_failover_after` nobody takes its files over by itself (watched
    // for twice what the automatic test allows: its delay and the lease).
    for name in SITE_A {
        cluster
            .kill_node(name)
            .await
            .unwrap_or_else(|e| panic!("kill {name}: {e}"));
    }
    let watched = (AUTO_AFTER + Duration::from_secs(1)) * 2;
    let owners = owners_during(&cluster, file_id(&files[0].0), watched).await;
    assert_eq!(owners, ["a"], "owners without automatic failover");
    let mut updates = Vec::new();
    let (to, report) = geonfs::failover::failover(
        cluster.config(),
        cluster.network().clone(),
        "a",
        Some("b"),
        false,
        |p| updates.push(p),
    )
    .await
    .unwrap();
    assert_eq!(to, "b");
    assert_eq!(report.files, FILES as u64, "{report:?}");
    assert_eq!(report.taken_over, FILES as u64, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(updates.last().is_some_and(|p| p.done == FILES as u64));
    assert!(updates.windows(2).all(|w| w[0].done <= w[1].done));

    // Every file is b's, readable at b and c, and writable at both.
    for (i, (fh, data)) in files.iter_mut().enumerate() {
        let (owner, _) = owner_record(&cluster, file_id(fh)).await.unwrap();
        assert_eq!(owner.site, "b", "file {i}");
        assert!(owner.claim.is_none(), "file {i}");
        for site in ["b", "c"] {
            let got = read(sites.at(site), fh, 0, data.len() as u64).await;
            assert!(got == *data, "file {i} at site {site}");
        }
        if i % 20 == 0 {
            for site in ["b", "c"] {
                let more = rng.bytes(1000);
                write(sites.at(site), fh, 500, &more, stable_how::FILE_SYNC).await;
                data[500..1500].copy_from_slice(&more);
                let got = read(sites.at(site), fh, 0, data.len() as u64).await;
                assert!(got == *data, "file {i} written at site {site}");
            }
        }
    }

    // Again: nothing is left to take over.
    let (_, again) = geonfs::failover::failover(
        cluster.config(),
        cluster.network().clone(),
        "a",
        None,
        false,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.files, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_auto_failover_a_killed_sites_files_are_taken_over_by_the_first_surviving_site() {
    init_logging();
    let builder = TestCluster::builder()
        .ownership_lease(Duration::from_secs(1))
        .auto_failover_after(AUTO_AFTER);
    let (mut cluster, mut sites) = small_blocks_with(builder, true, &["a", "b", "c"]).await;
    let mut rng = Rng::new(0x6175_746f);
    let mut files = written_at_a(&cluster, &mut sites, &mut rng, 5).await;
    // A live site is never failed over: a keeps its files while it renews.
    let owners = owners_during(&cluster, file_id(&files[0].0), AUTO_AFTER * 2).await;
    assert_eq!(owners, ["a"], "owners while a is alive");

    for name in SITE_A {
        cluster
            .kill_node(name)
            .await
            .unwrap_or_else(|e| panic!("kill {name}: {e}"));
    }
    // b, the first surviving site, takes every file over by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (fh, data)) in files.iter_mut().enumerate() {
        loop {
            let (owner, _) = owner_record(&cluster, file_id(fh)).await.unwrap();
            if owner.site == "b" && owner.claim.is_none() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "file {i} still owned by {owner:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for site in ["b", "c"] {
            let more = rng.bytes(1000);
            write(sites.at(site), fh, 100, &more, stable_how::FILE_SYNC).await;
            data[100..1100].copy_from_slice(&more);
            let got = read(sites.at(site), fh, 0, data.len() as u64).await;
            assert!(got == *data, "file {i} written at site {site}");
        }
    }
}
