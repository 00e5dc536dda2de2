//! Per-file ownership fences on the core servers, through the block
//! client: older epochs refused (writes, reads, deletes), fences durable
//! across a core restart, no write of the old epoch landing once a fence
//! returned, and the handover helpers (`list_file`, `put_whole`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use geonfs_block_manager::{BlockClient, BlockError, BlockUpdate};
use geonfs_proto::core::{Durability as WireDurability, FenceRequest, ReadRequest, WriteRequest};
use geonfs_proto::domain::{BlockId, Durability, Epoch, FileId, Version};
use geonfs_testkit::cluster::TestCluster;

use crate::support::blocks::{block_client, core_client, holders, id, pattern};
use crate::support::init_logging;

/// One site of three cores, no geo-replication workers (nothing moves
/// copies under the tests).
async fn start() -> anyhow::Result<TestCluster> {
    TestCluster::builder()
        .sites(1)
        .cores_per_site(3)
        .without_replication()
        .start()
        .await
}

/// A durable write of `data` at offset 0 straight to `core`.
async fn write_on(
    cluster: &TestCluster,
    core: &str,
    block: BlockId,
    version: u64,
    data: Bytes,
    owner_epoch: u64,
) -> Result<u64, tonic::Status> {
    core_client(cluster, core)
        .write(WriteRequest {
            block: Some(block.into()),
            offset: 0,
            data,
            version,
            durability: WireDurability::Durable as i32,
            owner_epoch,
            replace: true,
            ..Default::default()
        })
        .await
        .map(|reply| reply.into_inner().version)
}

/// `core`'s version of `block` (a zero-length, unchecked read), 0 if absent.
async fn version_on(cluster: &TestCluster, core: &str, block: BlockId) -> anyhow::Result<u64> {
    let reply = core_client(cluster, core)
        .read(ReadRequest {
            block: Some(block.into()),
            offset: 0,
            length: 0,
            with_pending_job: false,
            owner_epoch: 0,
        })
        .await
        .with_context(|| format!("probe of {core}"))?
        .into_inner();
    Ok(if reply.found { reply.version } else { 0 })
}

/// The fence `core` reports for `file_id` (a Fence call with epoch 0).
async fn fence_on(cluster: &TestCluster, core: &str, file_id: u64) -> anyhow::Result<u64> {
    Ok(core_client(cluster, core)
        .fence(FenceRequest {
            file_id,
            epoch: 0,
            relay_to: Vec::new(),
            ..FenceRequest::default()
        })
        .await
        .with_context(|| format!("fence query of {core}"))?
        .into_inner()
        .epoch)
}

fn epoch(n: u64) -> Epoch {
    Epoch::new(n).unwrap()
}

/// A durable write of `data` at offset 0 of `block`, at `version`, by an
/// owner at `epoch` (0: unchecked).
fn update(block: BlockId, data: Bytes, version: u64, epoch: u64) -> BlockUpdate {
    BlockUpdate {
        block,
        offset: 0,
        data,
        version: Version(version),
        durability: Durability::Durable,
        owner_epoch: Epoch::new(epoch),
    }
}

fn expect_fenced<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, BlockError>,
) -> anyhow::Result<()> {
    match result {
        Err(err) if err.is_fenced() => {
            let text = err.to_string();
            ensure!(
                text.contains("fenced at ownership epoch 5"),
                "{what}: {text}"
            );
            Ok(())
        }
        other => anyhow::bail!("{what}: expected a fenced refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fence_refuses_older_epochs_only() -> anyhow::Result<()> {
    init_logging();
    let cluster = start().await?;
    let client = block_client(&cluster);
    let block = id(11, 0);
    let old = Bytes::from(vec![1; 4096]);
    client.write_as(update(block, old.clone(), 1, 4)).await?;

    let report = client.fence(FileId(11), epoch(5)).await;
    ensure!(report.all() && report.all_but_one(), "{report:?}");
    ensure!(report.total == 3 && report.fenced.len() == 3, "{report:?}");
    ensure!(
        report.failed.is_empty() && report.highest == Epoch::new(5),
        "{report:?}"
    );

    let new = Bytes::from(vec![2; 4096]);
    expect_fenced(
        "write at 4",
        client.write_as(update(block, new.clone(), 2, 4)).await,
    )?;
    expect_fenced(
        "read at 4",
        client.read_as(block, 0, 4096, Epoch::new(4)).await,
    )?;
    expect_fenced(
        "delete at 4",
        client.delete_as(block, Version(10), Epoch::new(4)).await,
    )?;
    // The refused write changed nothing.
    let read = client
        .read_as(block, 0, 4096, Epoch::new(5))
        .await?
        .context("absent")?;
    ensure!(read.version == Version(1) && read.data == old, "{read:?}");

    // The fence's epoch, newer ones and unchecked (0) calls pass.
    client.write_as(update(block, new.clone(), 2, 5)).await?;
    client.write_as(update(block, new.clone(), 3, 6)).await?;
    client
        .write(block, 0, new.clone(), Version(4), Durability::Durable)
        .await?;
    for epoch in [0, 5, 6] {
        let read = client
            .read_as(block, 0, 4096, Epoch::new(epoch))
            .await?
            .context("absent")?;
        ensure!(
            read.version == Version(4) && read.data == new,
            "epoch {epoch}: {read:?}"
        );
    }
    ensure!(client.read(block, 0, 10).await?.is_some());

    // Another file is not fenced.
    let other = id(12, 0);
    client.write_as(update(other, new.clone(), 1, 1)).await?;
    ensure!(client.read_as(other, 0, 10, Epoch::new(1)).await?.is_some());
    ensure!(client.delete_as(other, Version(1), Epoch::new(1)).await? == 2);

    // A lower fence leaves it at 5 everywhere.
    let report = client.fence(FileId(11), epoch(3)).await;
    ensure!(
        report.all() && report.highest == Epoch::new(5),
        "{report:?}"
    );
    for core in cluster.core_names() {
        ensure!(fence_on(&cluster, &core, 11).await? == 5, "{core}");
    }
    expect_fenced(
        "write at 4 after a lower fence",
        client.write_as(update(block, new.clone(), 5, 4)).await,
    )?;
    ensure!(client.delete_as(block, Version(4), Epoch::new(5)).await? == 2);

    let refusals: u64 = cluster
        .core_names()
        .iter()
        .map(|core| {
            cluster
                .node(core)
                .ok()
                .and_then(|n| n.core())
                .map_or(0, |c| c.metrics().fenced_requests.get())
        })
        .sum();
    ensure!(refusals >= 4, "{refusals} refusals counted");
    cluster.shutdown().await
}

/// Raises `file_id`'s fence to `epoch` on `core` alone.
async fn fence_one(
    cluster: &TestCluster,
    core: &str,
    file_id: u64,
    epoch: u64,
) -> anyhow::Result<()> {
    let reply = core_client(cluster, core)
        .fence(FenceRequest {
            file_id,
            epoch,
            relay_to: Vec::new(),
            ..FenceRequest::default()
        })
        .await?
        .into_inner();
    ensure!(reply.epoch == epoch, "{core}: {reply:?}");
    Ok(())
}

/// One fenced core is enough: a read fails even when the block's pair
/// still serves it, and a write refused by a pair member is not moved to
/// another core.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_fenced_core_fails_reads_and_writes() -> anyhow::Result<()> {
    init_logging();
    let cluster = start().await?;
    let client = block_client(&cluster);
    let data = pattern(4, 4096);

    let block = id(13, 0);
    let pair = client.local_pair(block)?.map(|n| n.name.clone());
    let third = cluster
        .core_names()
        .into_iter()
        .find(|c| !pair.contains(c))
        .context("a third core")?;
    fence_one(&cluster, &third, 13, 5).await?;
    client.write_as(update(block, data.clone(), 1, 1)).await?;
    match client.read_as(block, 0, 4096, Epoch::new(1)).await {
        Err(BlockError::Fenced { node, file_id, .. }) => {
            ensure!(node == third && file_id == FileId(13), "{node} {file_id}");
        }
        other => anyhow::bail!("a read past a fenced core: {other:?}"),
    }
    ensure!(client
        .read_as(block, 0, 4096, Epoch::new(5))
        .await?
        .is_some());

    let block = id(14, 0);
    let pair = client.local_pair(block)?.map(|n| n.name.clone());
    fence_one(&cluster, &pair[0], 14, 5).await?;
    let err = client
        .write_as(update(block, data.clone(), 1, 1))
        .await
        .expect_err("a write refused by a pair member");
    ensure!(err.is_fenced(), "{err:?}");
    let held = holders(&cluster, block).await;
    ensure!(
        held.keys().all(|core| core == &pair[1]),
        "the write moved to another core: {held:?}"
    );
    ensure!(client.metrics().retries.get() == 0);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fences_survive_a_core_restart() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = start().await?;
    let client = block_client(&cluster);
    let report = client.fence(FileId(21), epoch(5)).await;
    ensure!(report.all(), "{report:?}");
    let block = id(21, 0);
    for core in cluster.core_names() {
        // Killed, not stopped: the fence was durable when it was answered.
        cluster.kill_node(&core).await?;
        cluster.restart_node(&core).await?;
        cluster
            .wait_fences_caught_up(&core, Duration::from_secs(30))
            .await?;
        ensure!(fence_on(&cluster, &core, 21).await? == 5, "{core}");
        let refused = write_on(&cluster, &core, block, 1, pattern(1, 100), 4)
            .await
            .expect_err("an epoch-4 write after the restart");
        ensure!(
            refused.code() == tonic::Code::PermissionDenied,
            "{core}: {refused}"
        );
        ensure!(
            refused.message().contains("fenced at ownership epoch 5"),
            "{core}: {refused}"
        );
        ensure!(version_on(&cluster, &core, block).await? == 0, "{core}");
        ensure!(write_on(&cluster, &core, block, 1, pattern(1, 100), 5).await? == 1);
    }
    cluster.shutdown().await
}

/// A core that was down while a handover fenced the rest of its site
/// cannot take the old owner's write when it comes back: it admits no
/// request carrying an epoch until it has copied a peer's fences, and the
/// peers hold the one it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_down_during_a_fence_catches_up_before_it_takes_an_epoch() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = start().await?;
    let client = block_client(&cluster);
    let block = id(31, 0);
    let missed = cluster.core_names().first().cloned().context("a core")?;
    cluster.kill_node(&missed).await?;
    let report = client.fence(FileId(31), epoch(5)).await;
    ensure!(
        report.all_but_one() && !report.all() && report.failed[0].0 == missed,
        "{report:?}"
    );
    cluster.restart_node(&missed).await?;
    // From its first moment: an epoch-4 write is refused (not yet caught
    // up, or fenced), never applied.
    let refused = write_on(&cluster, &missed, block, 1, pattern(1, 100), 4)
        .await
        .expect_err("an epoch-4 write to the core that missed the fence");
    ensure!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::PermissionDenied
        ),
        "{refused}"
    );
    cluster
        .wait_fences_caught_up(&missed, Duration::from_secs(30))
        .await?;
    ensure!(fence_on(&cluster, &missed, 31).await? == 5);
    let refused = write_on(&cluster, &missed, block, 1, pattern(1, 100), 4)
        .await
        .expect_err("an epoch-4 write after the catch-up");
    ensure!(refused.code() == tonic::Code::PermissionDenied, "{refused}");
    ensure!(version_on(&cluster, &missed, block).await? == 0);
    ensure!(write_on(&cluster, &missed, block, 1, pattern(1, 100), 5).await? == 1);
    cluster.shutdown().await
}

/// A core the new owner cannot reach, but its site can, is fenced through
/// a peer of its site.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_cut_off_from_the_new_owner_is_fenced_through_its_site() -> anyhow::Result<()> {
    init_logging();
    let cluster = start().await?;
    let client = block_client(&cluster);
    let cut = cluster.core_names().last().cloned().context("a core")?;
    cluster.cut_nodes("a-access-1", &cut)?;
    let report = client.fence(FileId(32), epoch(5)).await;
    ensure!(report.all() && report.failed.is_empty(), "{report:?}");
    let store = cluster.node(&cut)?.core().context("a core")?.store();
    ensure!(
        store.fence_of(FileId(32)) == Epoch::new(5),
        "fence on {cut}: {:?}",
        store.fence_of(FileId(32))
    );
    cluster.heal_all();
    let refused = write_on(&cluster, &cut, id(32, 0), 1, pattern(1, 100), 4)
        .await
        .expect_err("an epoch-4 write to the core fenced through its site");
    ensure!(refused.code() == tonic::Code::PermissionDenied, "{refused}");
    cluster.shutdown().await
}

/// What the writers of one round of [`no_old_epoch_write_lands_after_the_fence`] saw.
#[derive(Default)]
struct Round {
    acked: Vec<(u64, [String; 2])>,
    fenced: usize,
}

/// Writers at epoch 1 hammer one block while the site is fenced at
/// epoch 2: once the fence returned, no epoch-1 write changes any core,
/// and every acknowledged write is on its cores by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_old_epoch_write_lands_after_the_fence() -> anyhow::Result<()> {
    init_logging();
    let cluster = start().await?;
    let client = block_client(&cluster);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Several rounds where the fence really overlapped the writes: the race
    // window of a broken fence is small.
    let mut overlapped = 0;
    for file_id in 31.. {
        let block = id(file_id, 0);
        let next_version = Arc::new(AtomicU64::new(1));
        let (started, mut started_rx) = tokio::sync::watch::channel(0u64);
        let started = Arc::new(started);
        let writers: Vec<_> = (0..6)
            .map(|_| {
                let (client, next_version, started) =
                    (client.clone(), next_version.clone(), started.clone());
                tokio::spawn(write_until_fenced(client, block, next_version, started))
            })
            .collect();
        // Only the writers keep the sender: if they all stop early, the
        // wait below ends with an error instead of hanging.
        drop(started);
        // Fence once some writes are through, while the others run.
        started_rx.wait_for(|acked| *acked >= 5).await?;
        let report = client.fence(FileId(file_id), epoch(2)).await;
        ensure!(report.all(), "{report:?}");
        let mut at_fence = BTreeMap::new();
        for core in cluster.core_names() {
            at_fence.insert(core.clone(), version_on(&cluster, &core, block).await?);
        }
        let mut round = Round::default();
        for writer in writers {
            let part = writer.await??;
            round.acked.extend(part.acked);
            round.fenced += part.fenced;
        }
        for core in cluster.core_names() {
            let now = version_on(&cluster, &core, block).await?;
            ensure!(
                now == at_fence[&core],
                "{core}: version {now} landed after the fence (was {})",
                at_fence[&core]
            );
        }
        for (version, nodes) in &round.acked {
            for node in nodes {
                ensure!(
                    *version <= at_fence[node],
                    "version {version} acked on {node}, which held {} at the fence",
                    at_fence[node]
                );
            }
        }
        if !round.acked.is_empty() && round.fenced > 0 {
            overlapped += 1;
            if overlapped == 10 {
                return cluster.shutdown().await;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the fence overlapped the writes in only {overlapped} rounds"
        );
    }
    unreachable!("the loop returns")
}

/// Writes increasing versions of `block` at epoch 1 until refused as
/// fenced (or 500 writes), counting acknowledgements in `started`. The
/// writes replace the block: concurrent partial writes of one block by
/// one writer are not what the base of a partial write is built for (an
/// access server sends a block's writes one batch at a time).
async fn write_until_fenced(
    client: BlockClient,
    block: BlockId,
    next_version: Arc<AtomicU64>,
    started: Arc<tokio::sync::watch::Sender<u64>>,
) -> anyhow::Result<Round> {
    let mut round = Round::default();
    for _ in 0..500 {
        let version = next_version.fetch_add(1, Ordering::SeqCst);
        let data = pattern(version as u8, 8192);
        match client.replace_as(update(block, data, version, 1)).await {
            Ok(ack) => {
                let [a, b] = ack.nodes();
                round.acked.push((version, [a.to_string(), b.to_string()]));
                started.send_modify(|n| *n += 1);
            }
            Err(err) if err.is_fenced() => {
                round.fenced += 1;
                return Ok(round);
            }
            // Concurrent writers overtake each other on a core.
            Err(BlockError::Core { status, .. })
                if status.code() == tonic::Code::FailedPrecondition => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(round)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_file_lists_exactly_the_files_blocks() -> anyhow::Result<()> {
    init_logging();
    let cluster = start().await?;
    let client = block_client(&cluster);
    let data = || pattern(3, 1000);
    let attr = u64::MAX;
    // Neighbours in id order, before and after the file.
    for (block, version) in [
        (id(39, 3), 1),
        (id(39, attr), 2),
        (id(40, 0), 1),
        (id(40, 0), 3),
        (id(40, 1), 1),
        (id(40, 5), 1),
        (id(40, attr), 1),
        (id(41, 0), 1),
        (id(0, 2), 1),
    ] {
        client
            .write(block, 0, data(), Version(version), Durability::Durable)
            .await?;
    }
    // One core holds a newer copy of index 5; index 7 lives on one core.
    let pair = client.local_pair(id(40, 5))?.map(|n| n.name.clone());
    let third = cluster
        .core_names()
        .into_iter()
        .find(|c| !pair.contains(c))
        .context("a third core")?;
    write_on(&cluster, &pair[1], id(40, 5), 4, data(), 0).await?;
    write_on(&cluster, &third, id(40, 7), 2, data(), 0).await?;

    let listing = client.list_file(FileId(40)).await;
    let expected: BTreeMap<u64, Version> = [(0, 3), (1, 1), (5, 4), (7, 2), (attr, 1)]
        .map(|(index, version)| (index, Version(version)))
        .into();
    ensure!(listing.versions == expected, "{listing:?}");
    ensure!(
        listing.total == 3 && listing.answered.len() == 3,
        "{listing:?}"
    );
    ensure!(listing.failed.is_empty(), "{listing:?}");

    let first = client.list_file(FileId(0)).await;
    ensure!(
        first.versions == BTreeMap::from([(2, Version(1))]),
        "{first:?}"
    );
    let last = client.list_file(FileId(41)).await;
    ensure!(
        last.versions == BTreeMap::from([(0, Version(1))]),
        "{last:?}"
    );
    ensure!(client.list_file(FileId(42)).await.versions.is_empty());
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_whole_replaces_older_copies_and_keeps_newer_ones() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = start().await?;
    let client = block_client(&cluster);
    let site = client.site();
    let order = |block: BlockId| -> Vec<String> {
        client
            .placement()
            .in_site(block, site, &|_| true)
            .iter()
            .map(|n| n.name.clone())
            .collect()
    };

    // The first core holds an older, longer copy; the second a newer one.
    let block = id(50, 0);
    let cores = order(block);
    write_on(
        &cluster,
        &cores[0],
        block,
        1,
        Bytes::from(vec![7; 200_000]),
        0,
    )
    .await?;
    write_on(&cluster, &cores[1], block, 9, Bytes::from(vec![9; 100]), 0).await?;
    let mut data = pattern(5, 1000).to_vec();
    data.extend_from_slice(&[0; 5000]);
    let placed = client
        .put_whole(block, Version(5), Bytes::from(data), 2, None)
        .await?;
    ensure!(placed == 2, "{placed} copies");
    let held = holders(&cluster, block).await;
    ensure!(
        held.keys().cloned().collect::<BTreeSet<_>>() == cores[..2].iter().cloned().collect(),
        "{held:?}"
    );
    let replaced = &held[&cores[0]];
    // Trailing zeros were not sent: the copy ends at its last data byte.
    ensure!(
        replaced.version == 5 && replaced.length == 1000,
        "{replaced:?}"
    );
    let copy = client.read(block, 0, 200_000).await?.context("absent")?;
    ensure!(
        copy.version == Version(9),
        "the newest copy is served: {copy:?}"
    );
    let mut reader = core_client(&cluster, &cores[0]);
    let whole = reader
        .read(ReadRequest {
            block: Some(block.into()),
            offset: 0,
            length: 200_000,
            with_pending_job: false,
            owner_epoch: 0,
        })
        .await?
        .into_inner();
    ensure!(whole.version == 5);
    ensure!(whole.data[..1000] == pattern(5, 1000)[..]);
    ensure!(
        whole.data[1000..].iter().all(|&b| b == 0),
        "the old copy's bytes past the new data are gone"
    );
    ensure!(held[&cores[1]].version == 9, "newer copy kept: {held:?}");

    // Onto nothing: two distinct cores, the first two in placement order;
    // an equal version again counts as held.
    let fresh = id(51, 0);
    ensure!(
        client
            .put_whole(fresh, Version(3), pattern(1, 5000), 2, None)
            .await?
            == 2
    );
    ensure!(
        client
            .put_whole(fresh, Version(3), pattern(1, 5000), 2, None)
            .await?
            == 2
    );
    let held = holders(&cluster, fresh).await;
    ensure!(
        held.keys().cloned().collect::<BTreeSet<_>>()
            == order(fresh)[..2].iter().cloned().collect(),
        "{held:?}"
    );
    ensure!(held.values().all(|i| i.version == 3 && i.durable));

    // A dead first core is replaced by the next one; three copies cannot
    // be placed on two live cores.
    let third = id(52, 0);
    let cores = order(third);
    cluster.kill_node(&cores[0]).await?;
    ensure!(
        client
            .put_whole(third, Version(2), pattern(2, 300), 2, None)
            .await?
            == 2
    );
    let held = holders(&cluster, third).await;
    ensure!(
        held.keys().cloned().collect::<BTreeSet<_>>() == cores[1..].iter().cloned().collect(),
        "{held:?}"
    );
    let err = client
        .put_whole(id(53, 0), Version(2), pattern(2, 300), 3, None)
        .await
        .expect_err("three copies with a core down");
    ensure!(
        matches!(
            err,
            BlockError::CopiesNotPlaced {
                placed: 2,
                wanted: 3,
                ..
            }
        ),
        "{err:?}"
    );
    cluster.shutdown().await
}
