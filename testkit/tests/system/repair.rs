//! Repair against a real cluster (3 sites × 3 cores, n = 3): a replica
//! damaged on disk is detected by the read, served around, repaired and
//! counted (docs/ARCHITECTURE.md#invariant-7); a remote copy lost with its core is restored by
//! the replicator's scan, and the extra copy is removed when the core is
//! back.

use std::collections::BTreeMap;
use std::time::Duration;

use geonfs_block_manager::ReplicatorOptions;
use geonfs_proto::domain::{BlockId, Durability, Version};
use geonfs_testkit::cluster::TestCluster;

use crate::support::blocks::{
    block_client, cut_from_other_sites, holders, id, pattern, per_site, prompt_trims, read_copy,
    repairs, three_sites,
};
use crate::support::blocks::{copy_is_good, corrupt_on_disk};
use crate::support::{eventually, init_logging};

const SETTLE: Duration = Duration::from_secs(60);

/// Whether `block` is at version 1 with exactly one copy per site.
async fn settled(cluster: &TestCluster, block: BlockId) -> bool {
    let held = holders(cluster, block).await;
    per_site(&held) == BTreeMap::from([('a', 1), ('b', 1), ('c', 1)])
        && held.values().all(|i| i.version == 1)
}

fn core_repairs(cluster: &TestCluster, core: &str) -> u64 {
    cluster
        .node(core)
        .unwrap()
        .core()
        .unwrap()
        .metrics()
        .repairs
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_local_copy_is_served_around_repaired_and_counted() {
    init_logging();
    let mut cluster = three_sites(prompt_trims()).await;
    // Keep both in-site copies: the other sites are cut off.
    cluster.cut_sites("a", "b").unwrap();
    cluster.cut_sites("a", "c").unwrap();
    let client = block_client(&cluster);
    let block = id(40, 0);
    let [first, second] = client.local_pair(block).unwrap().map(|n| n.name.clone());
    let data = pattern(7, 300_000);
    client
        .write(block, 0, data.clone(), Version(1), Durability::Durable)
        .await
        .unwrap();
    corrupt_on_disk(&mut cluster, &first, block).await;
    assert!(!copy_is_good(&cluster, &first, block, &data).await);

    // The read is asked of the best-ranked copy first: the damaged one.
    let read = client
        .read(block, 0, data.len() as u32)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.data, data);
    assert_eq!(read.node, second);
    assert_eq!(client.metrics().corrupt_copies.get(), 1);
    // Repaired once: by the read path, or (if it got there first) by the
    // damaged copy's own replicator, which repairs it to ship it.
    eventually(SETTLE, "the corrupt copy is repaired", || async {
        let repaired = client.metrics().repairs.get() + repairs(&cluster, "a-", "own_copy");
        repaired == 1 && copy_is_good(&cluster, &first, block, &data).await
    })
    .await;
    assert_eq!(core_repairs(&cluster, &first), 1);
    let node = cluster.node(&first).unwrap().core().unwrap();
    assert!(node.metrics().checksum_failures.get() >= 1);
    // The repair kept the version (a repair never changes the data's age).
    assert_eq!(read_copy(&cluster, &first, block, 10).await.0, 1);
    let again = client
        .read(block, 0, data.len() as u32)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.node.as_str(), again.data), (first.as_str(), data));
    cluster.shutdown().await.unwrap();
}

/// A primary whose own copy was damaged before it could ship repairs it
/// from its peer and ships it: the backlog drains with no client read
/// (which would repair it too), and every site gets the acknowledged bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_repairs_its_damaged_copy_and_ships_it() {
    init_logging();
    // No takeover by the secondary during the test: the primary ships.
    let mut cluster = three_sites(ReplicatorOptions {
        takeover_timeout: Duration::from_secs(600),
        ..prompt_trims()
    })
    .await;
    let client = block_client(&cluster);
    let block = id(61, 0);
    let [primary, _] = client.local_pair(block).unwrap().map(|n| n.name.clone());
    cut_from_other_sites(&cluster, &primary);
    let data = pattern(7, 200_000);
    client
        .write(block, 0, data.clone(), Version(1), Durability::Durable)
        .await
        .unwrap();
    corrupt_on_disk(&mut cluster, &primary, block).await;
    cluster.heal_all();
    eventually(SETTLE, "shipped after the repair", || {
        settled(&cluster, block)
    })
    .await;
    for core in holders(&cluster, block).await.keys() {
        let (_, copy) = read_copy(&cluster, core, block, data.len() as u32).await;
        assert_eq!(copy, data, "{core}");
    }
    assert_eq!(repairs(&cluster, "a-", "own_copy"), 1);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_only_copy_of_the_site_is_served_from_another_site() {
    init_logging();
    let mut cluster = three_sites(prompt_trims()).await;
    let client = block_client(&cluster);
    let block = id(41, 0);
    let data = pattern(9, 200_000);
    client
        .write(block, 0, data.clone(), Version(1), Durability::Durable)
        .await
        .unwrap();
    eventually(SETTLE, "one copy per site", || async {
        per_site(&holders(&cluster, block).await) == BTreeMap::from([('a', 1), ('b', 1), ('c', 1)])
    })
    .await;
    let held = holders(&cluster, block).await;
    let local = held.keys().find(|n| n.starts_with("a-")).unwrap().clone();
    corrupt_on_disk(&mut cluster, &local, block).await;

    let read = client
        .read(block, 0, data.len() as u32)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.data, data);
    assert!(!read.node.starts_with("a-"), "served by {}", read.node);
    assert_eq!(client.metrics().corrupt_copies.get(), 1);
    // The client counts the repair when the core's answer comes back.
    eventually(SETTLE, "the site's copy is repaired", || async {
        client.metrics().repairs.get() == 1 && copy_is_good(&cluster, &local, block, &data).await
    })
    .await;
    assert_eq!(core_repairs(&cluster, &local), 1);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_remote_copy_is_restored_and_the_extra_one_removed() {
    init_logging();
    let mut cluster = three_sites(ReplicatorOptions {
        scan_interval: Some(Duration::from_millis(300)),
        ..prompt_trims()
    })
    .await;
    let client = block_client(&cluster);
    let blocks: Vec<BlockId> = (0..6).map(|i| id(42, i)).collect();
    let mut written = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        let data = pattern(i as u8, 50_000 + i * 7);
        client
            .write(*block, 0, data.clone(), Version(1), Durability::Durable)
            .await
            .unwrap();
        written.insert(*block, data);
    }
    for block in &blocks {
        eventually(SETTLE, "one copy per site", || settled(&cluster, *block)).await;
    }
    // Kill -9 the site-b holder of the first block: site b has lost those
    // copies; the scan of the other holders puts them on another b core.
    let victim = holders(&cluster, blocks[0])
        .await
        .into_keys()
        .find(|n| n.starts_with("b-"))
        .unwrap();
    let lost: Vec<BlockId> = {
        let mut lost = Vec::new();
        for block in &blocks {
            if holders(&cluster, *block).await.contains_key(&victim) {
                lost.push(*block);
            }
        }
        lost
    };
    cluster.kill_node(&victim).await.unwrap();
    for block in &lost {
        eventually(SETTLE, "site b has a copy again", || {
            settled(&cluster, *block)
        })
        .await;
    }
    // Counted (the count follows the copy by a moment).
    eventually(SETTLE, "the restored copies are counted", || async {
        repairs(&cluster, "", "remote_copy") >= lost.len() as u64
    })
    .await;

    // The victim comes back with its copies: one of the two in site b goes.
    cluster.restart_node(&victim).await.unwrap();
    for block in &blocks {
        eventually(SETTLE, "exactly one copy in site b again", || {
            settled(&cluster, *block)
        })
        .await;
    }
    for (block, data) in &written {
        for core in holders(&cluster, *block).await.keys() {
            let (version, got) = read_copy(&cluster, core, *block, data.len() as u32).await;
            assert_eq!((version, &got), (1, data), "{core} {block:?}");
        }
    }
    cluster.shutdown().await.unwrap();
}
