//! Ownership leases and revocations through real access servers (see
//! `access-server/src/ownership/lease.rs`): an owner cut off from the
//! meta-kvs majority stops when its lease runs out and resumes after; a
//! core that a handover cannot fence never takes the old owner's write; a
//! takeover from a site declared lost waits until the site stopped.

use std::time::{Duration, Instant};

use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::replication::{core_registries, wait_drained};
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::blocks::{id, read_copy};
use crate::support::init_logging;
use crate::support::lease::{write_retrying, written_at_a, Written, LEASE, PATIENCE};
use crate::support::nfs::write;
use crate::support::sites::{
    apply, file_id, owner_record, read, site_client, small_blocks_with, try_read, try_write,
    verify_everywhere,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_cut_off_from_meta_kvs_stops_when_its_lease_runs_out_and_resumes_after() {
    init_logging();
    // No inode cache: the owner's reads and writes need nothing but its
    // cores and its lease (see the ownership test of the same setup).
    let builder = TestCluster::builder()
        .ownership_lease(LEASE)
        .attribute_cache(Duration::ZERO);
    let (cluster, mut sites) = small_blocks_with(builder, true, &["a", "b"]).await;
    let fh = sites.create("a", "leased.img").await;
    let mut rng = Rng::new(0x6c65_6173);
    let mut model = Vec::new();
    let first = rng.bytes(300_000);
    write(sites.at("a"), &fh, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &first);

    // Site a's access server loses every meta-kvs voter: it keeps writing
    // while its lease lasts, then refuses (JUKEBOX) instead of writing
    // without knowing whether the file was taken over.
    for meta in cluster.meta_names() {
        cluster.cut_nodes("a-access-1", &meta).unwrap();
    }
    let cut = Instant::now();
    let mut acknowledged = 0;
    // A refused write may have landed in part (NFS leaves a failed WRITE's
    // outcome open); like an NFS client, the test sends it again later.
    let mut refused = Vec::new();
    loop {
        let data = rng.bytes(4096);
        let offset = 4096 * rng.below(70);
        match try_write(sites.at("a"), &fh, offset, &data, stable_how::FILE_SYNC).await {
            Ok(()) => {
                apply(&mut model, offset, &data);
                acknowledged += 1;
            }
            Err(nfsstat3::NFS3ERR_JUKEBOX) => {
                refused.push((offset, data));
                break;
            }
            Err(status) => panic!("WRITE while cut off: {status}"),
        }
        assert!(
            cut.elapsed() < PATIENCE,
            "site a still acknowledges writes {:?} after losing meta-kvs, with a lease of {LEASE:?}",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        acknowledged,
        ms = cut.elapsed().as_millis() as u64,
        "writes stopped after the cut"
    );
    // Stopped for good while cut off: writes and reads of the file.
    let late = rng.bytes(4096);
    assert_eq!(
        try_write(sites.at("a"), &fh, 0, &late, stable_how::FILE_SYNC).await,
        Err(nfsstat3::NFS3ERR_JUKEBOX),
        "a write after the lease ran out"
    );
    refused.push((0, late));
    assert_eq!(
        try_read(sites.at("a"), &fh, 0, 1000).await.err(),
        Some(nfsstat3::NFS3ERR_JUKEBOX),
        "a read at the owner after its lease ran out"
    );

    // Healed: the next renewal brings writes back by themselves.
    cluster.heal_all();
    for (offset, data) in &refused {
        write_retrying(sites.at("a"), &fh, *offset, data).await;
        apply(&mut model, *offset, data);
    }
    let again = rng.bytes(8192);
    write_retrying(sites.at("a"), &fh, 100_000, &again).await;
    apply(&mut model, 100_000, &again);
    verify_everywhere(&mut sites, &fh, &model, "after the lease came back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_the_handover_cannot_fence_never_takes_the_old_owners_write() {
    init_logging();
    let Written {
        cluster,
        mut sites,
        fh,
        mut model,
        mut rng,
    } = written_at_a("unfenced.img", 300_000, 0x756e_6665).await;
    let file = file_id(&fh);
    let block = id(file, 0);
    let registries = core_registries(&cluster).unwrap();
    let (before, _) = owner_record(&cluster, file).await.unwrap();
    assert_eq!(before.site, "a");

    // x, the primary of block 0 at site a, is reachable only from a's
    // access server: neither b (the next owner) nor x's own peers (which
    // would relay b's fence) reach it.
    let a_cores = site_client(&cluster, "a", "127.1.0.50");
    let x = a_cores.local_pair(block).unwrap()[0].name.clone();
    for core in cluster.core_names() {
        if core.starts_with("a-") && core != x {
            cluster.cut_nodes(&x, &core).unwrap();
        }
    }
    cluster.cut_nodes(&x, "b-access-1").unwrap();
    let (x_version, _) = read_copy(&cluster, &x, block, 0).await;

    // b takes the file over: x cannot be fenced, so b revokes the file at
    // a's access server and waits for it to acknowledge.
    let at_b = rng.bytes(4096);
    write_retrying(sites.at("b"), &fh, 0, &at_b).await;
    apply(&mut model, 0, &at_b);
    let (after, _) = owner_record(&cluster, file).await.unwrap();
    assert_eq!(after.site, "b");
    assert!(after.epoch > before.epoch);

    // a still believes in nothing stale: its write must not reach x at
    // a's old epoch. (a cannot take the file back either: b's cores are
    // out of its reach.)
    for core in cluster.core_names() {
        if core.starts_with("b-") {
            cluster.cut_nodes("a-access-1", &core).unwrap();
        }
    }
    let at_a = rng.bytes(4096);
    let refused = try_write(sites.at("a"), &fh, 8192, &at_a, stable_how::FILE_SYNC).await;
    assert!(
        refused.is_err(),
        "a's write while b owns the file and a cannot take it back"
    );
    let (x_now, _) = read_copy(&cluster, &x, block, 0).await;
    assert_eq!(
        x_now, x_version,
        "the old owner's write reached the core the handover could not fence"
    );

    // Healed and replicated: every site reads exactly what was
    // acknowledged (b's write, none of a's refused one).
    cluster.heal_all();
    assert!(
        wait_drained(&registries, PATIENCE).await.is_some(),
        "replication drained after healing"
    );
    verify_everywhere(&mut sites, &fh, &model, "after healing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_from_a_site_declared_lost_waits_until_the_site_stopped_writing() {
    init_logging();
    let Written {
        cluster,
        mut sites,
        fh,
        mut model,
        mut rng,
    } = written_at_a("partitioned.img", 500_000, 0x7061_7274).await;
    let file = file_id(&fh);

    // Site a is cut off, not dead: its access server and cores run on,
    // and only a minority of meta-kvs is with them.
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let done = geonfs::relocate::relocate(
        cluster.config(),
        cluster.network().clone(),
        "partitioned.img",
        "b",
        true,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(done.from, "a");
    let (owner, _) = owner_record(&cluster, file).await.unwrap();
    assert_eq!(owner.site, "b");

    // b writes; a, still cut off and still believing it owns the file,
    // must not acknowledge a write: its lease ran out before the takeover
    // completed.
    let at_b = rng.bytes(20_000);
    write_retrying(sites.at("b"), &fh, 10_000, &at_b).await;
    apply(&mut model, 10_000, &at_b);
    let at_a = rng.bytes(20_000);
    assert_eq!(
        try_write(sites.at("a"), &fh, 200_000, &at_a, stable_how::FILE_SYNC).await,
        Err(nfsstat3::NFS3ERR_JUKEBOX),
        "the partitioned old owner's write after the takeover"
    );

    // Healed: a renews, installs the revocation and takes the file back
    // through a real handover; nothing acknowledged is lost anywhere.
    cluster.heal_all();
    let later = rng.bytes(20_000);
    write_retrying(sites.at("a"), &fh, 300_000, &later).await;
    apply(&mut model, 300_000, &later);
    let (back, _) = owner_record(&cluster, file).await.unwrap();
    assert_eq!(back.site, "a");
    assert!(back.epoch > owner.epoch);
    verify_everywhere(&mut sites, &fh, &model, "after healing").await;
    let whole = read(sites.at("c"), &fh, 0, model.len() as u64).await;
    assert!(whole == model, "site c reads the model");
}
