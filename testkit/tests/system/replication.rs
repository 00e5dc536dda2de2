//! Geo replication against a real cluster (3 sites × 3 cores, n = 3): the
//! durable queue ships every acknowledged write to one core per other site
//! and trims the extra local copy (docs/ARCHITECTURE.md#invariant-2), never on the ack path
//! (docs/ARCHITECTURE.md#invariant-3), never newer by older (docs/ARCHITECTURE.md#invariant-8).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use geonfs_block_manager::ReplicatorOptions;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::core::ListRequest;
use geonfs_proto::domain::{BlockId, Durability, Version};
use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
use geonfs_proto::replication::ReplicaPut;
use geonfs_testkit::cluster::TestCluster;

use crate::support::blocks::{
    block_client, core_client, holders, id, pattern, per_site, prompt_trims, read_copy, repairs,
    replicator_metrics, three_sites,
};
use crate::support::{eventually, init_logging};

const SETTLE: Duration = Duration::from_secs(60);

/// Whether `block` has exactly one copy per site, all at `version`, the
/// home site's one on `primary`.
async fn one_copy_per_site(
    cluster: &TestCluster,
    block: BlockId,
    version: u64,
    primary: &str,
) -> bool {
    let held = holders(cluster, block).await;
    let mut sites: Vec<char> = held.keys().filter_map(|n| n.chars().next()).collect();
    sites.sort();
    sites == vec!['a', 'b', 'c']
        && held.contains_key(primary)
        && held.values().all(|i| i.version == version)
}

/// Jobs queued for `site` on site a's running cores.
fn backlog_jobs(cluster: &TestCluster, site: &str) -> i64 {
    replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| m.backlog_jobs.with_label_values(&[site]).get())
        .sum()
}

/// Bytes queued for `site` on site a's running cores.
fn backlog_bytes(cluster: &TestCluster, site: &str) -> i64 {
    replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| m.backlog_bytes.with_label_values(&[site]).get())
        .sum()
}

/// The oldest pending write for `site` on site a's running cores, seconds.
fn oldest_age(cluster: &TestCluster, site: &str) -> f64 {
    replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| m.oldest_age_seconds.with_label_values(&[site]).get())
        .fold(0.0, f64::max)
}

/// Trims by every running core.
fn trims(cluster: &TestCluster) -> u64 {
    replicator_metrics(cluster, "")
        .iter()
        .map(|m| m.trims.get())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_block_ends_with_one_copy_per_site() {
    init_logging();
    let cluster = three_sites(prompt_trims()).await;
    let client = block_client(&cluster);
    let blocks: Vec<BlockId> = (0..12).map(|i| id(21, i)).collect();
    let mut primaries = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        let primary = client.local_pair(*block).unwrap()[0].name.clone();
        primaries.insert(*block, primary);
        let data = Bytes::from(vec![i as u8 + 1; 70_000 + i * 1000]);
        client
            .write(*block, 4096, data, Version(1), Durability::Durable)
            .await
            .unwrap();
    }
    for block in &blocks {
        let primary = primaries[block].clone();
        eventually(SETTLE, "one copy per site", || {
            one_copy_per_site(&cluster, *block, 1, &primary)
        })
        .await;
    }
    // The remote copies are whole and equal to the acknowledged data.
    for (i, block) in blocks.iter().enumerate() {
        let len = (4096 + 70_000 + i * 1000) as u32;
        let held = holders(&cluster, *block).await;
        for core in held.keys() {
            let (version, data) = read_copy(&cluster, core, *block, len).await;
            assert_eq!(version, 1, "{core}");
            assert!(data[..4096].iter().all(|&b| b == 0), "{core}");
            assert!(data[4096..].iter().all(|&b| b == i as u8 + 1), "{core}");
        }
    }
    eventually(SETTLE, "the backlog drains", || async {
        backlog_jobs(&cluster, "b") == 0 && backlog_jobs(&cluster, "c") == 0
    })
    .await;
    assert_eq!(trims(&cluster), blocks.len() as u64);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_ack_without_the_wan_and_drain_after_heal() {
    init_logging();
    let cluster = three_sites(prompt_trims()).await;
    let client = block_client(&cluster);
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let blocks: Vec<BlockId> = (0..6).map(|i| id(22, i)).collect();
    for block in &blocks {
        client
            .write(
                *block,
                0,
                Bytes::from(vec![7; 50_000]),
                Version(1),
                Durability::Durable,
            )
            .await
            .expect("a write acknowledges with the other sites cut off");
    }
    eventually(SETTLE, "a backlog for both sites", || async {
        backlog_jobs(&cluster, "b") > 0
            && backlog_jobs(&cluster, "c") > 0
            && backlog_bytes(&cluster, "b") > 0
    })
    .await;
    let age = oldest_age(&cluster, "b");
    eventually(
        SETTLE,
        "the oldest pending age grows while cut off",
        || async { oldest_age(&cluster, "b") > age },
    )
    .await;
    assert_eq!(trims(&cluster), 0, "nothing is trimmed before the copies");
    for block in &blocks {
        let held = holders(&cluster, *block).await;
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.keys().all(|n| n.starts_with("a-")), "{held:?}");
    }

    cluster.heal_all();
    eventually(SETTLE, "the backlog drains after the heal", || async {
        backlog_jobs(&cluster, "b") == 0 && backlog_jobs(&cluster, "c") == 0
    })
    .await;
    for block in &blocks {
        let primary = client.local_pair(*block).unwrap()[0].name.clone();
        eventually(SETTLE, "one copy per site after the heal", || {
            one_copy_per_site(&cluster, *block, 1, &primary)
        })
        .await;
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_version_wins_over_an_older_one() {
    init_logging();
    let cluster = three_sites(prompt_trims()).await;
    let client = block_client(&cluster);
    let block = id(23, 0);
    let primary = client.local_pair(block).unwrap()[0].name.clone();
    client
        .write(
            block,
            0,
            Bytes::from(vec![1; 100_000]),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();
    eventually(SETTLE, "v1 on every site", || {
        one_copy_per_site(&cluster, block, 1, &primary)
    })
    .await;

    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    client
        .write(
            block,
            0,
            Bytes::from(vec![2; 4096]),
            Version(2),
            Durability::Durable,
        )
        .await
        .unwrap();
    let held = holders(&cluster, block).await;
    let remote: Vec<&String> = held.keys().filter(|n| !n.starts_with("a-")).collect();
    assert_eq!(remote.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .filter(|(n, _)| !n.starts_with("a-"))
            .all(|(_, i)| i.version == 1),
        "{held:?}"
    );

    cluster.heal_all();
    eventually(SETTLE, "v2 on every site", || {
        one_copy_per_site(&cluster, block, 2, &primary)
    })
    .await;
    let held = holders(&cluster, block).await;
    for core in held.keys() {
        let (version, data) = read_copy(&cluster, core, block, 100_000).await;
        assert_eq!(version, 2, "{core}");
        assert!(data[..4096].iter().all(|&b| b == 2), "{core}");
        assert!(data[4096..].iter().all(|&b| b == 1), "{core}");
    }

    // A late copy of v1 is refused by a core holding v2.
    let remote = held.keys().find(|n| n.starts_with("b-")).unwrap().clone();
    let mut replication =
        BlockReplicationClient::new(cluster.channel("a-core-1", &remote).unwrap());
    let reply = replication
        .put(ReplicaPut {
            block: Some(block.into()),
            version: 1,
            data: Bytes::from(vec![1; 100_000]),
            origin_site: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.skipped_stale, "{reply:?}");
    assert!(!reply.applied, "{reply:?}");
    assert_eq!(reply.stored_version, 2);
    let (version, data) = read_copy(&cluster, &remote, block, 4096).await;
    assert_eq!(version, 2);
    assert!(data.iter().all(|&b| b == 2));
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secondary_ships_when_the_primary_is_gone() {
    init_logging();
    let mut cluster = three_sites(ReplicatorOptions {
        takeover_timeout: Duration::from_secs(1),
        ..prompt_trims()
    })
    .await;
    let client = block_client(&cluster);
    let block = id(24, 0);
    let [primary, secondary] = client.local_pair(block).unwrap().map(|n| n.name.clone());
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    client
        .write(
            block,
            0,
            Bytes::from(vec![5; 30_000]),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();
    cluster.kill_node(&primary).await.unwrap();
    cluster.heal_all();
    // The secondary takes over: a copy per remote site, and it keeps its
    // own copy (it may be the last local one).
    eventually(SETTLE, "the secondary ships", || {
        one_copy_per_site(&cluster, block, 1, &secondary)
    })
    .await;
    eventually(SETTLE, "the secondary's job is done", || async {
        let core = cluster.node(&secondary).unwrap().core().unwrap();
        core.store().job(block).await.unwrap().is_none()
    })
    .await;
    assert_eq!(trims(&cluster), 0);

    // The primary comes back: its own job completes (the copies are
    // there already) and it trims the secondary.
    cluster.restart_node(&primary).await.unwrap();
    eventually(SETTLE, "the primary trims the secondary", || {
        one_copy_per_site(&cluster, block, 1, &primary)
    })
    .await;
    cluster.shutdown().await.unwrap();
}

// ---- Faults: kills and restarts around the queue ----

/// Jobs still queued on the running cores of site a (primaries and
/// secondaries).
async fn queued(cluster: &TestCluster) -> usize {
    let mut total = 0;
    for name in cluster.core_names() {
        if name.starts_with("a-") && cluster.is_running(&name) {
            let core = cluster.node(&name).unwrap().core().unwrap();
            total += core.store().pending_jobs(100_000).await.unwrap().len();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_local_copy_after_ack_before_geo() {
    init_logging();
    let mut cluster = three_sites(ReplicatorOptions {
        takeover_timeout: Duration::from_secs(1),
        ..prompt_trims()
    })
    .await;
    let client = block_client(&cluster);
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let blocks: Vec<BlockId> = (0..10).map(|i| id(25, i)).collect();
    let mut pairs = BTreeMap::new();
    let mut written = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        pairs.insert(
            *block,
            client.local_pair(*block).unwrap().map(|n| n.name.clone()),
        );
        let data = pattern(i as u8 + 1, 40_000 + i * 1000);
        client
            .write(*block, 0, data.clone(), Version(1), Durability::Durable)
            .await
            .expect("acknowledged with the other sites cut off");
        written.insert(*block, data);
    }
    // Kill -9 the primary of the first block: for the blocks it is the
    // primary of, only the secondary holds the acknowledged data; for the
    // blocks it is the secondary of, only the primary.
    let victim = pairs[&blocks[0]][0].clone();
    let orphaned = blocks.iter().filter(|b| pairs[*b][0] == victim).count();
    assert!(orphaned >= 1);
    let touched: Vec<BlockId> = blocks
        .iter()
        .filter(|b| pairs[*b].contains(&victim))
        .copied()
        .collect();
    cluster.kill_node(&victim).await.unwrap();

    // With the WAN still cut, the survivor restores a second copy on
    // another core of site a (docs/ARCHITECTURE.md#invariant-1 again), at the same version.
    for block in &touched {
        eventually(SETTLE, "a second in-site copy restored", || async {
            let held = holders(&cluster, *block).await;
            per_site(&held).get(&'a') == Some(&2) && held.values().all(|i| i.version == 1)
        })
        .await;
    }
    // Counted once each (the count follows the copy by a moment).
    eventually(SETTLE, "every restored copy counted", || async {
        repairs(&cluster, "a-", "local_copy") == touched.len() as u64
    })
    .await;

    // Healed: replication completes from the surviving copies, and each
    // site ends with exactly one copy.
    cluster.heal_all();
    for block in &blocks {
        eventually(SETTLE, "one copy per site", || async {
            let held = holders(&cluster, *block).await;
            per_site(&held) == BTreeMap::from([('a', 1), ('b', 1), ('c', 1)])
                && held.values().all(|i| i.version == 1)
        })
        .await;
    }
    // Nothing acknowledged is lost: every copy is whole and exact.
    check_copies(&cluster, &written).await;

    // The victim comes back with its stale copies and jobs: they settle
    // without a second copy in site a and without losing the block.
    cluster.restart_node(&victim).await.unwrap();
    for block in &blocks {
        eventually(
            SETTLE,
            "still one copy per site after the victim is back",
            || async {
                let held = holders(&cluster, *block).await;
                per_site(&held) == BTreeMap::from([('a', 1), ('b', 1), ('c', 1)])
                    && held.values().all(|i| i.version == 1)
            },
        )
        .await;
    }
    eventually(SETTLE, "no job left in site a", || async {
        queued(&cluster).await == 0
    })
    .await;
    check_copies(&cluster, &written).await;
    cluster.shutdown().await.unwrap();
}

/// Asserts every copy of every written block is whole, exact, version 1.
async fn check_copies(cluster: &TestCluster, written: &BTreeMap<BlockId, Bytes>) {
    for (block, data) in written {
        for core in holders(cluster, *block).await.keys() {
            let (version, got) = read_copy(cluster, core, *block, data.len() as u32).await;
            assert_eq!(version, 1, "{core} {block:?}");
            assert_eq!(&got, data, "{core} {block:?}");
        }
    }
}

/// Samples the versions of `file_id`'s blocks on the given cores until
/// `stop`; returns (rounds, violations: a copy whose version went down).
async fn sample_versions(
    clients: Vec<(String, CoreDataClient<geonfs_rpc::RpcChannel>)>,
    file_id: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Vec<String>) {
    let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut rounds = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for (name, client) in &clients {
            let mut client = client.clone();
            let mut start_after = None;
            loop {
                let Ok(page) = client
                    .list(ListRequest {
                        start_after,
                        limit: 1000,
                        deleted: false,
                    })
                    .await
                else {
                    break;
                };
                let page = page.into_inner();
                start_after = page.blocks.last().and_then(|b| b.block);
                for info in &page.blocks {
                    let Some(b) = info.block else { continue };
                    if b.file_id != file_id {
                        continue;
                    }
                    let prev = last.insert((name.clone(), b.index), info.version);
                    if prev.is_some_and(|p| p > info.version) {
                        violations.push(format!(
                            "{name} block {}: v{} after v{}",
                            b.index,
                            info.version,
                            prev.unwrap_or_default()
                        ));
                    }
                }
                if !page.more {
                    break;
                }
            }
        }
        rounds += 1;
        // Sampling cadence, not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (rounds, violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_a_core_mid_replication() {
    init_logging();
    let mut cluster = three_sites(prompt_trims()).await;
    let wan = geonfs_rpc::WanParams {
        rtt: Duration::from_millis(100),
        bandwidth_bytes_per_sec: None,
    };
    for (x, y) in [("a", "b"), ("a", "c"), ("b", "c")] {
        cluster.set_wan(x, y, wan).unwrap();
    }
    let client = block_client(&cluster);
    const FILE: u64 = 26;
    const MIB: usize = 1024 * 1024;
    let blocks: Vec<BlockId> = (0..40).map(|i| id(FILE, i)).collect();
    let pairs: BTreeMap<BlockId, [String; 2]> = blocks
        .iter()
        .map(|b| (*b, client.local_pair(*b).unwrap().map(|n| n.name.clone())))
        .collect();

    let remote: Vec<_> = cluster
        .core_names()
        .into_iter()
        .filter(|n| !n.starts_with("a-"))
        .map(|n| {
            let c = core_client(&cluster, &n);
            (n, c)
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_versions(remote, FILE, stop.clone()));

    // v1 of every block, then a partial v2 over its first 64 KiB: remote
    // copies may see v1 then v2, never v2 then v1.
    for (i, block) in blocks.iter().enumerate() {
        client
            .write(
                *block,
                0,
                pattern(i as u8, MIB),
                Version(1),
                Durability::Durable,
            )
            .await
            .unwrap();
    }
    for (i, block) in blocks.iter().enumerate() {
        client
            .write(
                *block,
                0,
                pattern(i as u8 + 100, 64 * 1024),
                Version(2),
                Durability::Durable,
            )
            .await
            .unwrap();
    }

    // The primary with the most jobs still queued right now.
    let mut victim = None;
    for name in cluster
        .core_names()
        .into_iter()
        .filter(|n| n.starts_with("a-"))
    {
        let core = cluster.node(&name).unwrap().core().unwrap();
        let jobs = core.store().pending_jobs(100_000).await.unwrap();
        let mine = jobs.iter().filter(|j| j.primary).count();
        if victim.as_ref().is_none_or(|(_, n)| mine > *n) {
            victim = Some((name, mine));
        }
    }
    let (victim, backlog) = victim.unwrap();
    assert!(backlog > 0, "the queue drained before the restart");
    eprintln!("restarting {victim} with {backlog} primary jobs queued");
    cluster.kill_node(&victim).await.unwrap();
    cluster.restart_node(&victim).await.unwrap();

    eventually(SETTLE, "the queue drains after the restart", || async {
        queued(&cluster).await == 0
    })
    .await;
    eventually(SETTLE, "the backlog gauges drain", || async {
        backlog_jobs(&cluster, "b") == 0 && backlog_jobs(&cluster, "c") == 0
    })
    .await;
    for block in &blocks {
        let primary = pairs[block][0].clone();
        eventually(SETTLE, "one copy per site at v2", || {
            one_copy_per_site(&cluster, *block, 2, &primary)
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (rounds, violations) = sampler.await.unwrap();
    assert!(rounds > 0);
    eprintln!("{rounds} sampling rounds of the remote versions");
    assert!(
        violations.is_empty(),
        "versions went backwards: {violations:?}"
    );

    for (i, block) in blocks.iter().enumerate() {
        let mut expected = pattern(i as u8, MIB).to_vec();
        expected[..64 * 1024].copy_from_slice(&pattern(i as u8 + 100, 64 * 1024));
        for core in holders(&cluster, *block).await.keys() {
            let (version, got) = read_copy(&cluster, core, *block, MIB as u32).await;
            assert_eq!(version, 2, "{core} {block:?}");
            assert!(got[..] == expected[..], "{core} {block:?}: wrong bytes");
        }
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_site_never_brings_back_old_data() {
    init_logging();
    let mut cluster = three_sites(ReplicatorOptions {
        scan_interval: Some(Duration::from_millis(300)),
        ..prompt_trims()
    })
    .await;
    let client = block_client(&cluster);
    let block = id(27, 0);
    let primary = client.local_pair(block).unwrap()[0].name.clone();
    let v1 = pattern(1, 200_000);
    client
        .write(block, 0, v1.clone(), Version(1), Durability::Durable)
        .await
        .unwrap();
    eventually(SETTLE, "v1 on every site", || {
        one_copy_per_site(&cluster, block, 1, &primary)
    })
    .await;
    let held = holders(&cluster, block).await;
    let on_b = held.keys().find(|n| n.starts_with("b-")).unwrap().clone();
    let on_c = held.keys().find(|n| n.starts_with("c-")).unwrap().clone();

    cluster.stop_node(&on_b).await.unwrap();
    let patch = pattern(2, 8192);
    client
        .write(block, 0, patch.clone(), Version(2), Durability::Durable)
        .await
        .unwrap();
    let mut v2 = v1.to_vec();
    v2[..patch.len()].copy_from_slice(&patch);

    // v2 was acknowledged: site a serves nothing older.
    for (core, info) in holders(&cluster, block).await {
        if core.starts_with("a-") {
            assert_eq!(info.version, 2, "{core}");
        }
    }
    eventually(SETTLE, "v2 reaches c", || async {
        holders(&cluster, block)
            .await
            .get(&on_c)
            .is_some_and(|i| i.version == 2)
    })
    .await;

    // While on_b was down, v2 went to another core of site b (or waits
    // in the queue for on_b). Back, on_b's v1 is either brought to v2 or
    // removed as stale; a and c never go back.
    cluster.restart_node(&on_b).await.unwrap();
    eventually(SETTLE, "one copy per site at v2", || async {
        let held = holders(&cluster, block).await;
        for (core, info) in &held {
            if *core != on_b {
                assert_eq!(info.version, 2, "{core} went back: {held:?}");
            }
        }
        one_copy_per_site(&cluster, block, 2, &primary).await
    })
    .await;
    eventually(SETTLE, "the queue drains", || async {
        queued(&cluster).await == 0
    })
    .await;
    for core in holders(&cluster, block).await.keys() {
        let (version, got) = read_copy(&cluster, core, block, v2.len() as u32).await;
        assert!(version >= 2, "{core} serves v{version}");
        assert!(got[..] == v2[..], "{core}: wrong bytes");
    }
    cluster.shutdown().await.unwrap();
}
