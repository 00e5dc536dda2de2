//! The block client's write path against a real cluster: two in-site copies
//! per acknowledged write (docs/ARCHITECTURE.md#invariant-1), spreading, failover to another
//! core, refusal with one live core, and the incarnation signal after a
//! core restart.

use bytes::Bytes;
use geonfs_block_manager::BlockError;
use geonfs_proto::core::ReadRequest;
use geonfs_proto::domain::{Durability, Version};
use geonfs_testkit::cluster::TestCluster;

use crate::support::blocks::{block_client, core_client, holders, id, inventory};
use crate::support::init_logging;

/// A cluster without the geo-replication workers: these tests look at the
/// in-site write path alone (replication and trimming would move copies
/// under them; see `replication.rs`).
async fn start() -> TestCluster {
    TestCluster::builder()
        .sites(3)
        .cores_per_site(3)
        .without_replication()
        .start()
        .await
        .unwrap()
}

fn sorted(names: [&str; 2]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acked_write_is_on_exactly_the_local_pair() {
    init_logging();
    let cluster = start().await;
    let client = block_client(&cluster);
    let block = id(1, 0);
    let pair: Vec<String> = client
        .local_pair(block)
        .unwrap()
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let ack = client
        .write(
            block,
            4096,
            Bytes::from(vec![5; 8192]),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();
    assert!(ack.durable);
    assert_ne!(ack.copies[0].node, ack.copies[1].node);
    let mut expected = pair.clone();
    expected.sort();
    assert_eq!(sorted(ack.nodes()), expected);

    let held = holders(&cluster, block).await;
    assert_eq!(
        held.keys().cloned().collect::<Vec<_>>(),
        expected,
        "exactly the two local-pair cores hold the block: {held:?}"
    );
    for (core, info) in &held {
        assert!(core.starts_with("a-"), "{core}");
        assert!(info.durable, "{core} reports the block not durable");
        assert_eq!(info.version, 1);
    }

    let read = client.read(block, 4000, 200).await.unwrap().unwrap();
    assert_eq!(read.version, Version(1));
    assert!(pair.contains(&read.node));
    assert_eq!(&read.data[..96], &[0; 96][..]);
    assert_eq!(&read.data[96..], &[5; 104][..]);
    assert!(client.read(id(1, 1), 0, 10).await.unwrap().is_none());
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_spread_over_the_sites_cores() {
    init_logging();
    let cluster = start().await;
    let client = block_client(&cluster);
    let writes = (0..200u64).map(|i| {
        let client = client.clone();
        async move {
            client
                .write(
                    id(7, i),
                    0,
                    Bytes::from(vec![i as u8; 1000]),
                    Version(1),
                    Durability::Durable,
                )
                .await
        }
    });
    for ack in futures::future::join_all(writes).await {
        ack.unwrap();
    }
    let inventory = inventory(&cluster).await;
    let mut copies = 0;
    for (core, blocks) in &inventory {
        if core.starts_with("a-") {
            assert!(
                blocks.len() >= 50,
                "{core} holds only {} blocks",
                blocks.len()
            );
            copies += blocks.len();
        } else {
            assert!(blocks.is_empty(), "{core} holds blocks: no WAN on writes");
        }
    }
    assert_eq!(copies, 400, "two copies of each of 200 blocks");
    assert_eq!(client.metrics().writes.get(), 200);
    assert_eq!(client.metrics().write_bytes.get(), 200_000);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_pair_member_is_replaced() {
    init_logging();
    let mut cluster = start().await;
    let client = block_client(&cluster);
    let block = id(3, 0);
    let [dead, survivor] = client.local_pair(block).unwrap().map(|n| n.name.clone());
    // A block the dead core holds, written before the failure and
    // partially overwritten after it.
    let old = (1..)
        .map(|i| id(3, i))
        .find(|b| {
            let pair = client.local_pair(*b).unwrap();
            pair.iter().any(|n| n.name == dead)
        })
        .unwrap();
    client
        .write(
            old,
            0,
            Bytes::from(vec![1; 200_000]),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();

    cluster.kill_node(&dead).await.unwrap();
    let ack = client
        .write(
            block,
            0,
            Bytes::from(vec![9; 5000]),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();
    let nodes = ack.nodes();
    assert_ne!(nodes[0], nodes[1]);
    assert!(!nodes.contains(&dead.as_str()), "{nodes:?}");
    assert!(nodes.contains(&survivor.as_str()), "{nodes:?}");
    assert!(nodes.iter().all(|n| n.starts_with("a-")), "{nodes:?}");
    let held = holders(&cluster, block).await;
    assert_eq!(
        held.keys().cloned().collect::<Vec<_>>(),
        sorted(nodes),
        "{held:?}"
    );
    assert!(held.values().all(|i| i.durable));
    // The dead core is found out by the probe of the block's base (or by
    // its failed copy) and left out.
    assert!(client.metrics().suspect_marks.get() >= 1);

    // A partial write to a block the dead core held: the replacement core
    // is seeded first, so every copy in the site is complete.
    let ack = client
        .write(
            old,
            4096,
            Bytes::from(vec![2; 4096]),
            Version(2),
            Durability::Durable,
        )
        .await
        .unwrap();
    assert!(!ack.nodes().contains(&dead.as_str()));
    for node in ack.nodes() {
        let copy = core_client(&cluster, node)
            .read(ReadRequest {
                block: Some(old.into()),
                offset: 0,
                length: 200_000,
                with_pending_job: false,
                owner_epoch: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(copy.version, 2, "{node}");
        assert!(copy.data[..4096].iter().all(|&b| b == 1), "{node}");
        assert!(copy.data[4096..8192].iter().all(|&b| b == 2), "{node}");
        assert!(copy.data[8192..].iter().all(|&b| b == 1), "{node}");
    }
    let read = client.read(old, 0, 200_000).await.unwrap().unwrap();
    assert_eq!(read.version, Version(2));
    assert!(read.data[8192..].iter().all(|&b| b == 1));
    assert!(
        client.metrics().seeds.get() >= 1,
        "the replacement was seeded"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_live_core_refuses_writes() {
    init_logging();
    let mut cluster = start().await;
    let client = block_client(&cluster);
    cluster.kill_node("a-core-1").await.unwrap();
    cluster.kill_node("a-core-3").await.unwrap();
    for i in 0..5 {
        let err = client
            .write(
                id(4, i),
                0,
                Bytes::from(vec![1; 100]),
                Version(1),
                Durability::Durable,
            )
            .await
            .expect_err("a write with one live core must not be acknowledged");
        let text = err.to_string();
        assert!(
            matches!(err, BlockError::NotEnoughCores { acked, .. } if acked <= 1),
            "{err:?}"
        );
        assert!(text.contains("site a"), "{text}");
        assert!(text.contains("of the 2 copies a write needs"), "{text}");
    }
    assert_eq!(client.metrics().writes.get(), 0);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_core_restart_changes_the_flushed_incarnation() {
    init_logging();
    let mut cluster = start().await;
    let client = block_client(&cluster);
    let block = id(5, 0);
    let ack = client
        .write(
            block,
            0,
            Bytes::from(vec![3; 4096]),
            Version(1),
            Durability::Held,
        )
        .await
        .unwrap();
    assert!(!ack.durable);
    let held = holders(&cluster, block).await;
    assert_eq!(held.len(), 2);
    assert!(held.values().all(|i| !i.durable), "{held:?}");

    // Without a restart, a flush reports the same incarnations.
    let same = client.flush(&ack.nodes()).await.unwrap();
    assert!(same.restarted(&ack).is_empty(), "{same:?} vs {ack:?}");
    assert!(holders(&cluster, block).await.values().all(|i| i.durable));

    let restarted = ack.copies[1].node.clone();
    cluster.kill_node(&restarted).await.unwrap();
    cluster.restart_node(&restarted).await.unwrap();
    let flushed = client.flush(&ack.nodes()).await.unwrap();
    assert_eq!(flushed.restarted(&ack), vec![restarted.as_str()]);
    assert_ne!(
        flushed.incarnation(&restarted),
        Some(ack.copies[1].incarnation)
    );
    assert_eq!(
        flushed.incarnation(&ack.copies[0].node),
        Some(ack.copies[0].incarnation)
    );
    cluster.shutdown().await.unwrap();
}

/// The read path asks the best-ranked core for the bytes while probing the
/// others: when that core came back from an outage with an older copy, the
/// newer copy written meanwhile is served, never the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_serves_the_newest_copy_when_the_first_ranked_core_is_behind() {
    init_logging();
    let mut cluster = start().await;
    let block = id(6, 0);
    let first = {
        let client = block_client(&cluster);
        client
            .write(
                block,
                0,
                Bytes::from(vec![1; 4096]),
                Version(1),
                Durability::Durable,
            )
            .await
            .unwrap();
        client.local_pair(block).unwrap()[0].name.clone()
    };
    cluster.kill_node(&first).await.unwrap();
    let ack = block_client(&cluster)
        .write(
            block,
            0,
            Bytes::from(vec![2; 4096]),
            Version(2),
            Durability::Durable,
        )
        .await
        .unwrap();
    assert!(!ack.nodes().contains(&first.as_str()), "{ack:?}");
    cluster.restart_node(&first).await.unwrap();
    assert_eq!(holders(&cluster, block).await[&first].version, 1);

    // A new client believes every core live, the old holder first.
    let client = block_client(&cluster);
    assert_eq!(client.local_pair(block).unwrap()[0].name, first);
    let read = client.read(block, 0, 4096).await.unwrap().unwrap();
    assert_eq!(read.version, Version(2), "served by {}", read.node);
    assert_ne!(read.node, first);
    assert!(read.data.iter().all(|&b| b == 2));
    cluster.shutdown().await.unwrap();
}
