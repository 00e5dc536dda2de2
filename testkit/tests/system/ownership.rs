//! File ownership across sites (docs/ARCHITECTURE.md "Ownership"), through the access servers of a
//! 3-site cluster with `nfs3_client`: read-after-write at a non-owner with
//! geo replication stalled and 50 ms RTT, writers taking turns at three
//! sites with verifying readers everywhere, and the old owner cut off in
//! the middle of a handover.

use std::time::Duration;

use geonfs_access_server::ownership::record::{self, Claim};
use geonfs_access_server::ownership::CatchUpProgress;
use geonfs_block_manager::BlockUpdate;
use geonfs_proto::domain::{BlockId, Durability, FileId, Version};
use geonfs_rpc::WanParams;
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;
use nfs3_client::nfs3_types::nfs3::*;

use crate::support::init_logging;
use crate::support::nfs::status;
use crate::support::nfs::{commit, size_of, write};
use crate::support::sites::{
    apply, connect, file_id, owner_record, read, read_status, site_client, small_blocks_with,
    try_write, verify_everywhere, Sites,
};

/// A 3-site cluster with 256 KiB blocks (geo replication on or stopped)
/// and a client at each site of `names`.
async fn small_blocks(replicated: bool, names: &[&'static str]) -> (TestCluster, Sites) {
    small_blocks_with(TestCluster::builder(), replicated, names).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_a_is_read_at_b_at_once_with_replication_stalled_and_50ms_rtt() {
    init_logging();
    let wan = WanParams {
        rtt: Duration::from_millis(50),
        bandwidth_bytes_per_sec: None,
    };
    let cluster = TestCluster::builder()
        .sites(3)
        .wan(wan)
        .without_replication()
        .start()
        .await
        .unwrap();
    let mut sites = connect(&cluster, &["a", "b"]).await;
    let fh = sites.create("a", "raw.img").await;
    let block = cluster.config().cluster.block_size;
    let mut rng = Rng::new(0x5241_5721);
    let mut model = Vec::new();
    let sizes = [1usize, 511, 4096, 65_536, 200_000, 1 << 20];
    for step in 0..36 {
        let len = sizes[step % sizes.len()];
        // Offsets: inside the first blocks, across a block boundary, and
        // past the end (the file grows).
        let offset = match step % 4 {
            0 => rng.below(2 * block),
            1 => block - (len as u64 / 2).max(1),
            2 => model.len() as u64 + rng.below(10_000),
            _ => rng.below(model.len().max(1) as u64),
        };
        let data = rng.bytes(len);
        let stable = if step % 2 == 0 {
            stable_how::FILE_SYNC
        } else {
            stable_how::UNSTABLE
        };
        write(sites.at("a"), &fh, offset, &data, stable).await;
        apply(&mut model, offset, &data);
        let got = read(sites.at("b"), &fh, offset, len as u64).await;
        assert!(
            got == data,
            "step {step}: {len} bytes written at {offset} at site a, site b read different bytes"
        );
        assert_eq!(
            size_of(sites.at("b"), &fh).await,
            model.len() as u64,
            "step {step}: size at b"
        );
    }
    let whole = read(sites.at("b"), &fh, 0, model.len() as u64).await;
    assert!(whole == model, "the whole file at site b");

    // Replication really was stalled: site b's cores hold none of it, so
    // every byte site b returned came from site a over the WAN.
    let id = file_id(&fh);
    let b_cores = site_client(&cluster, "b", "127.2.0.50");
    for index in 0..model.len().div_ceil(block as usize) as u64 {
        let found = b_cores
            .read(
                BlockId {
                    file_id: FileId(id),
                    index,
                },
                0,
                0,
            )
            .await
            .unwrap();
        assert!(
            found.is_none(),
            "block {index} reached site b: replication was not stalled"
        );
    }
    let (owner, _) = owner_record(&cluster, id).await.expect("owner record");
    assert_eq!(owner.site, "a", "reads do not move ownership");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_at_a_b_and_c_in_turn_with_verifying_readers_at_every_site() {
    init_logging();
    let (cluster, mut sites) = small_blocks(true, &["a", "b", "c"]).await;
    let fh = sites.create("a", "pingpong.img").await;
    let id = file_id(&fh);
    let block = cluster.config().cluster.block_size;
    let mut rng = Rng::new(0x7069_6e67);
    let mut model = Vec::new();
    let mut last_epoch = None;
    for (turn, writer) in ["a", "b", "c", "a", "c", "b", "a"].into_iter().enumerate() {
        for _ in 0..6 {
            // Partial blocks, block boundaries, growth.
            let len = 1 + rng.below(block + block / 2) as usize;
            let offset = rng.below(model.len() as u64 + block);
            let data = rng.bytes(len);
            write(sites.at(writer), &fh, offset, &data, stable_how::UNSTABLE).await;
            apply(&mut model, offset, &data);
        }
        commit(sites.at(writer), &fh).await;
        let step = format!("turn {turn} (writer {writer})");
        verify_everywhere(&mut sites, &fh, &model, &step).await;
        let (owner, _) = owner_record(&cluster, id).await.expect("owner record");
        assert_eq!(owner.site, writer, "{step}: the writer owns the file");
        assert!(owner.claim.is_none(), "{step}: no handover left open");
        assert!(Some(owner.epoch) > last_epoch, "{step}: epochs grow");
        last_epoch = Some(owner.epoch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_owner_cut_off_mid_handover_loses_nothing_and_never_shares_the_file() {
    init_logging();
    // A short lease: the dead claim below times out after the longest
    // revocation wait plus 5 s.
    let builder = TestCluster::builder().ownership_lease(Duration::from_secs(1));
    let (cluster, mut sites) = small_blocks_with(builder, false, &["a", "b", "c"]).await;
    let fh = sites.create("a", "cut.img").await;
    let id = file_id(&fh);
    let mut rng = Rng::new(0x0063_7574);
    let mut model = Vec::new();
    let first = rng.bytes(600_000);
    write(sites.at("a"), &fh, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &first);
    let (before, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(before.site, "a");

    // Site a is cut off from the other sites (its meta voter too). b's
    // handover cannot fence a, so b's write is refused (JUKEBOX: retry
    // later) and a keeps the file: a is the only site that could
    // acknowledge a write.
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let attempt = rng.bytes(10_000);
    for _ in 0..3 {
        let refused = try_write(sites.at("b"), &fh, 5_000, &attempt, stable_how::FILE_SYNC).await;
        assert_eq!(
            refused,
            Err(nfsstat3::NFS3ERR_JUKEBOX),
            "b's write while a is cut off"
        );
    }
    // a's write is acknowledged when a can still resolve the handle (its
    // inode cache; meta-kvs has no majority at a), else refused: either
    // way nothing is lost, and an acknowledged write must survive.
    let during = rng.bytes(300_000);
    if try_write(sites.at("a"), &fh, 400_000, &during, stable_how::FILE_SYNC)
        .await
        .is_ok()
    {
        apply(&mut model, 400_000, &during);
    }
    let (pending, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(pending.site, "a", "a still owns the file: {pending:?}");
    if let Some(claim) = &pending.claim {
        assert_eq!(claim.by, "b", "only b tried to take the file");
    }
    // c cannot reach the owner: its READ fails rather than return old data.
    let at_c = read_status(sites.at("c"), &fh, 400_000).await;
    assert_ne!(
        at_c,
        nfsstat3::NFS3_OK,
        "a read at c while the owner is cut off"
    );

    // Healed: b's next write completes the handover; everything a
    // acknowledged is there before it.
    cluster.heal_all();
    let at_b = rng.bytes(50_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match try_write(sites.at("b"), &fh, 650_000, &at_b, stable_how::FILE_SYNC).await {
            Ok(()) => break,
            // meta-kvs may still be settling after the partition.
            Err(nfsstat3::NFS3ERR_JUKEBOX) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("b's write after healing: {s}"),
        }
    }
    apply(&mut model, 650_000, &at_b);
    let (after, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(after.site, "b");
    assert!(after.claim.is_none() && after.epoch > before.epoch);
    verify_everywhere(&mut sites, &fh, &model, "after b's handover").await;
    // a's cores refuse a's old epoch now: a cannot write behind b's back.
    let a_cores = site_client(&cluster, "a", "127.1.0.50");
    let stale = a_cores
        .write_as(BlockUpdate {
            block: BlockId {
                file_id: FileId(id),
                index: 0,
            },
            offset: 0,
            data: bytes::Bytes::from_static(b"stale owner"),
            version: Version(u64::MAX / 2),
            durability: Durability::Durable,
            owner_epoch: Some(before.epoch),
        })
        .await;
    assert!(
        stale.as_ref().is_err_and(|e| e.is_fenced()),
        "a write at the old owner's epoch must be fenced: {stale:?}"
    );

    // A claimant that dies after fencing the owner: site c claims the
    // file and fences b's cores, then never completes. b's next write is
    // fenced, waits out the claim timeout, resolves the claim back to
    // itself and goes through; nothing b acknowledged is lost.
    let (now, version) = owner_record(&cluster, id).await.unwrap();
    let dead_claim = Claim {
        by: "c".into(),
        writer: "127.3.0.1".into(),
        epoch: now.epoch.next(),
        since_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        token: 7,
    };
    let mut claimed = now.clone();
    claimed.claim = Some(dead_claim.clone());
    let meta = cluster.meta_client("c-meta-1").unwrap();
    let txn = geonfs_proto::meta::TxnRequest {
        conditions: vec![geonfs_proto::meta::Condition {
            key: record::owner_key(FileId(id)),
            test: Some(geonfs_proto::meta::condition::Test::VersionEquals(version)),
        }],
        operations: vec![geonfs_proto::meta::Operation {
            op: Some(geonfs_proto::meta::operation::Op::Put(
                geonfs_proto::meta::KeyValue {
                    key: record::owner_key(FileId(id)),
                    value: record::encode(&claimed),
                    version: 0,
                },
            )),
        }],
    };
    assert!(meta.txn(txn).await.unwrap().succeeded);
    let b_cores = site_client(&cluster, "b", "127.2.0.50");
    assert!(b_cores.fence(FileId(id), dead_claim.epoch).await.all());
    let late = rng.bytes(70_000);
    write(sites.at("b"), &fh, 100_000, &late, stable_how::FILE_SYNC).await;
    apply(&mut model, 100_000, &late);
    let (resolved, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(resolved.site, "b", "the dead claim went back to b");
    assert!(resolved.claim.is_none());
    assert!(resolved.epoch >= dead_claim.epoch);
    verify_everywhere(&mut sites, &fh, &model, "after the dead claim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relocate_moves_ownership_and_brings_the_data_to_the_new_site() {
    init_logging();
    let (cluster, mut sites) = small_blocks(false, &["a", "b"]).await;
    let fh = sites.create("a", "relocated.img").await;
    let id = file_id(&fh);
    let mut rng = Rng::new(0x7265_6c6f);
    let mut model = Vec::new();
    let block = cluster.config().cluster.block_size;
    let mut written = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let data = rng.bytes(300_000);
        let offset = rng.below(1_500_000);
        write(sites.at("a"), &fh, offset, &data, stable_how::UNSTABLE).await;
        apply(&mut model, offset, &data);
        written.extend(offset / block..(offset + data.len() as u64).div_ceil(block));
    }
    commit(sites.at("a"), &fh).await;

    let mut phases: Vec<(String, CatchUpProgress)> = Vec::new();
    let done = geonfs::relocate::relocate(
        cluster.config(),
        cluster.network().clone(),
        "/geonfs/relocated.img",
        "b",
        false,
        |phase, p| phases.push((phase.to_string(), p)),
    )
    .await
    .unwrap();
    assert_eq!((done.file_id, done.from.as_str()), (FileId(id), "a"));
    let precopy_end = phases
        .iter()
        .rev()
        .find(|(phase, _)| phase == "pre-copy")
        .map(|(_, p)| *p)
        .expect("pre-copy progress");
    // Every data block written and the attribute record were copied to b
    // (a hole has no block to copy).
    assert_eq!(precopy_end.total_blocks, written.len() as u64 + 1);
    assert_eq!(precopy_end.done_blocks, precopy_end.total_blocks);
    assert!(precopy_end.finished);
    let (owner, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(owner.site, "b");
    assert!(
        owner.sources.is_empty() && owner.claim.is_none(),
        "{owner:?}"
    );
    // b's own cores now hold the newest data: reads at b are local.
    let b_cores = site_client(&cluster, "b", "127.2.0.50");
    for &index in &written {
        let start = index * block;
        let end = (start + block).min(model.len() as u64);
        let read = b_cores
            .read(
                BlockId {
                    file_id: FileId(id),
                    index,
                },
                0,
                (end - start) as u32,
            )
            .await
            .unwrap()
            .expect("block at b");
        assert!(
            read.data[..] == model[start as usize..end as usize],
            "block {index} at b"
        );
    }
    verify_everywhere(&mut sites, &fh, &model, "after relocation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_reads_and_writes_without_meta_kvs_and_a_removal_elsewhere_is_stale() {
    init_logging();
    // No inode cache: any handle resolved through meta-kvs would show.
    let builder = TestCluster::builder().attribute_cache(Duration::ZERO);
    let (cluster, mut sites) = small_blocks_with(builder, true, &["a", "b"]).await;
    let fh = sites.create("a", "local.img").await;
    let mut rng = Rng::new(0x6c6f_6361);
    let mut model = Vec::new();
    let first = rng.bytes(400_000);
    write(sites.at("a"), &fh, 0, &first, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &first);

    // Site a's access server loses every meta-kvs voter. With no inode
    // cache, a's reads and writes of the file it owns still go through:
    // they need nothing beyond site a's cores.
    for meta in cluster.meta_names() {
        cluster.cut_nodes("a-access-1", &meta).unwrap();
    }
    let more = rng.bytes(100_000);
    write(sites.at("a"), &fh, 350_000, &more, stable_how::UNSTABLE).await;
    commit(sites.at("a"), &fh).await;
    apply(&mut model, 350_000, &more);
    assert_eq!(size_of(sites.at("a"), &fh).await, model.len() as u64);
    assert!(read(sites.at("a"), &fh, 0, model.len() as u64).await == model);
    cluster.heal_all();

    // Removed through site b: site a's next write is refused as STALE
    // (the remover fenced the owner), never acknowledged into a removed
    // file.
    let root = sites.root.clone();
    let res = sites
        .at("b")
        .remove(&REMOVE3args {
            object: crate::support::nfs::dirop(&root, b"local.img"),
        })
        .await
        .expect("REMOVE rpc");
    assert_eq!(status(&res), nfsstat3::NFS3_OK);
    let late = rng.bytes(1000);
    let refused = try_write(sites.at("a"), &fh, 0, &late, stable_how::FILE_SYNC).await;
    assert_eq!(
        refused,
        Err(nfsstat3::NFS3ERR_STALE),
        "a write into a file removed elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_owner_site_is_replaced_with_relocate_owner_lost() {
    init_logging();
    // The takeover waits for the lost site's lease to run out: a short one.
    let builder = TestCluster::builder().ownership_lease(Duration::from_secs(1));
    let (mut cluster, mut sites) = small_blocks_with(builder, true, &["a", "b", "c"]).await;
    let fh = sites.create("a", "lost.img").await;
    let id = file_id(&fh);
    let mut rng = Rng::new(0x6c6f_7374);
    let mut model = Vec::new();
    let data = rng.bytes(700_000);
    write(sites.at("a"), &fh, 0, &data, stable_how::FILE_SYNC).await;
    apply(&mut model, 0, &data);
    // Wait until geo replication has copied the file to site b.
    let block = cluster.config().cluster.block_size;
    let b_cores = site_client(&cluster, "b", "127.2.0.50");
    let blocks = model.len().div_ceil(block as usize) as u64;
    crate::support::eventually(Duration::from_secs(60), "replicated to b", || {
        let b_cores = b_cores.clone();
        async move {
            for index in 0..blocks {
                if b_cores
                    .read(
                        BlockId {
                            file_id: FileId(id),
                            index,
                        },
                        0,
                        0,
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    return false;
                }
            }
            true
        }
    })
    .await;

    // Site a is lost: every node of it stops.
    for name in ["a-access-1", "a-core-1", "a-core-2", "a-core-3", "a-meta-1"] {
        cluster
            .kill_node(name)
            .await
            .unwrap_or_else(|e| panic!("kill {name}: {e}"));
    }
    let at_b = read_status(sites.at("b"), &fh, 0).await;
    assert_ne!(
        at_b,
        nfsstat3::NFS3_OK,
        "the owner is gone: no read until it is replaced"
    );

    let done = geonfs::relocate::relocate(
        cluster.config(),
        cluster.network().clone(),
        "lost.img",
        "b",
        true,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(done.from, "a");
    let (owner, _) = owner_record(&cluster, id).await.unwrap();
    assert_eq!(owner.site, "b");
    assert!(owner.claim.is_none());
    let more = rng.bytes(10_000);
    write(sites.at("b"), &fh, 50_000, &more, stable_how::FILE_SYNC).await;
    apply(&mut model, 50_000, &more);
    for i in 1..3 {
        let site = sites.names[i];
        let c = &mut sites.clients[i];
        assert_eq!(size_of(c, &fh).await, model.len() as u64, "size at {site}");
        assert!(
            read(c, &fh, 0, model.len() as u64).await == model,
            "data at {site}"
        );
    }
}
