//! Geo replication ships what changed, not whole blocks
//! (`geonfs_block_manager::replicator::changes`): small random writes cost
//! about their own size on the WAN, and a remote copy that is not at the
//! changes' base gets the whole block instead, never a patched stale copy.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use geonfs_block_manager::ReplicatorOptions;
use geonfs_proto::core::DeleteRequest;
use geonfs_proto::domain::{BlockId, Durability, Version};
use geonfs_testkit::cluster::TestCluster;
use geonfs_testkit::rng::Rng;

use crate::support::blocks::{
    block_client, core_client, holders, id, pattern, prompt_trims, read_copy, replicator_metrics,
    three_sites,
};
use crate::support::{eventually, init_logging};

const SETTLE: Duration = Duration::from_secs(60);
const BLOCK: usize = 4 * 1024 * 1024;

/// Encoded bytes of the puts site a's cores sent to `site`.
fn wire_bytes(cluster: &TestCluster, site: &str) -> u64 {
    replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| m.wire_bytes.with_label_values(&[site]).get())
        .sum()
}

/// Puts of `kind` site a's cores sent to `site`.
fn puts(cluster: &TestCluster, site: &str, kind: &str) -> u64 {
    replicator_metrics(cluster, "a-")
        .iter()
        .map(|m| m.puts.with_label_values(&[site, kind]).get())
        .sum()
}

/// Waits until every block has one copy per site at its model's version,
/// then checks every copy's bytes against the model.
async fn settled(cluster: &TestCluster, model: &BTreeMap<BlockId, (u64, Vec<u8>)>) {
    for (block, (version, data)) in model {
        eventually(
            SETTLE,
            "one copy per site at the newest version",
            || async {
                let held = holders(cluster, *block).await;
                let mut sites: Vec<char> = held.keys().filter_map(|n| n.chars().next()).collect();
                sites.sort();
                sites == vec!['a', 'b', 'c'] && held.values().all(|info| info.version == *version)
            },
        )
        .await;
        for core in holders(cluster, *block).await.keys() {
            let (held, bytes) = read_copy(cluster, core, *block, BLOCK as u32).await;
            assert_eq!(held, *version, "{core} {block}");
            assert!(bytes[..] == data[..], "{core} holds other bytes of {block}");
        }
    }
}

/// Four whole blocks written and replicated; the model of their content.
async fn four_replicated_blocks(
    cluster: &TestCluster,
    file_id: u64,
) -> BTreeMap<BlockId, (u64, Vec<u8>)> {
    let client = block_client(cluster);
    let mut model = BTreeMap::new();
    for index in 0..4 {
        let block = id(file_id, index);
        let data = pattern(index as u8, BLOCK);
        client
            .write(block, 0, data.clone(), Version(1), Durability::Durable)
            .await
            .unwrap();
        model.insert(block, (1, data.to_vec()));
    }
    settled(cluster, &model).await;
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_random_writes_ship_about_what_was_written() {
    init_logging();
    let cluster = three_sites(prompt_trims()).await;
    let mut model = four_replicated_blocks(&cluster, 51).await;
    let before: Vec<(u64, u64)> = ["b", "c"]
        .iter()
        .map(|site| (wire_bytes(&cluster, site), puts(&cluster, site, "whole")))
        .collect();

    let client = block_client(&cluster);
    let mut rng = Rng::new(51);
    let mut written = 0u64;
    for version in 2..258u64 {
        let block = id(51, rng.below(4));
        let offset = rng.below((BLOCK / 4096) as u64) * 4096;
        let data = Bytes::from(rng.bytes(4096));
        client
            .write(
                block,
                offset,
                data.clone(),
                Version(version),
                Durability::Durable,
            )
            .await
            .unwrap();
        let entry = model.get_mut(&block).unwrap();
        entry.0 = version;
        entry.1[offset as usize..offset as usize + 4096].copy_from_slice(&data);
        written += 4096;
    }
    settled(&cluster, &model).await;

    for (site, (wire_before, whole_before)) in ["b", "c"].iter().zip(before) {
        let shipped = wire_bytes(&cluster, site) - wire_before;
        let ratio = shipped as f64 / written as f64;
        let whole = puts(&cluster, site, "whole") - whole_before;
        eprintln!("site {site}: {shipped} bytes on the wire for {written} written ({ratio:.3}×)");
        assert!(
            ratio <= 1.2,
            "site {site}: {shipped} bytes on the wire for {written} written ({ratio:.2}×, {whole} whole blocks)"
        );
        assert_eq!(whole, 0, "site {site}");
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_copy_off_the_base_gets_the_whole_block() {
    init_logging();
    let cluster = three_sites(prompt_trims()).await;
    let mut model = four_replicated_blocks(&cluster, 52).await;
    let block = id(52, 1);
    // Site b's copy goes (as a lost copy would): it is complete at no version.
    let remote = holders(&cluster, block)
        .await
        .into_keys()
        .find(|core| core.starts_with('b'))
        .unwrap();
    let reply = core_client(&cluster, &remote)
        .delete(DeleteRequest {
            block: Some(block.into()),
            up_to_version: 1,
            owner_epoch: 0,
            trim: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.deleted);
    let whole_before = (puts(&cluster, "b", "whole"), puts(&cluster, "c", "whole"));

    let data = pattern(99, 4096);
    block_client(&cluster)
        .write(block, 8192, data.clone(), Version(2), Durability::Durable)
        .await
        .unwrap();
    let entry = model.get_mut(&block).unwrap();
    entry.0 = 2;
    entry.1[8192..8192 + 4096].copy_from_slice(&data);
    settled(&cluster, &model).await;
    // b got the whole block; c, still at the base, only the change.
    assert!(puts(&cluster, "b", "whole") > whole_before.0);
    assert_eq!(puts(&cluster, "c", "whole"), whole_before.1);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_being_written_keeps_both_local_copies_and_needs_no_seed() {
    init_logging();
    let trim_delay = Duration::from_secs(5);
    let cluster = three_sites(ReplicatorOptions {
        trim_delay,
        ..ReplicatorOptions::default()
    })
    .await;
    let client = block_client(&cluster);
    let block = id(53, 0);
    let mut data = pattern(7, BLOCK).to_vec();
    client
        .write(
            block,
            0,
            Bytes::from(data.clone()),
            Version(1),
            Durability::Durable,
        )
        .await
        .unwrap();
    eventually(SETTLE, "copies at b and c", || async {
        let held = holders(&cluster, block).await;
        ['b', 'c'].iter().all(|site| {
            held.iter()
                .any(|(core, info)| core.starts_with(*site) && info.version == 1)
        })
    })
    .await;
    // Shipped, and both copies of site a kept for the trim delay; each
    // core's job is marked shipped (the secondary's by the primary's note),
    // so neither copy counts as never copied out.
    let local = |held: &BTreeMap<String, geonfs_proto::core::BlockInfo>| {
        held.keys()
            .filter(|core| core.starts_with('a'))
            .cloned()
            .collect::<Vec<_>>()
    };
    let pair = local(&holders(&cluster, block).await);
    assert_eq!(pair.len(), 2);
    for core in &pair {
        let store = cluster.node(core).unwrap().core().unwrap().store();
        eventually(SETTLE, "the job shipped", || async {
            store
                .job(block)
                .await
                .unwrap()
                .is_some_and(|job| job.shipped)
        })
        .await;
    }

    // Partial writes right away apply on both complete copies: no seed.
    let seeds = client.metrics().seeds.get();
    for version in 2..12u64 {
        let offset = (version as usize * 12_345) % (BLOCK - 4096);
        let bytes = pattern(version as u8, 4096);
        client
            .write(
                block,
                offset as u64,
                bytes.clone(),
                Version(version),
                Durability::Durable,
            )
            .await
            .unwrap();
        data[offset..offset + 4096].copy_from_slice(&bytes);
    }
    assert_eq!(
        client.metrics().seeds.get(),
        seeds,
        "a partial write seeded a copy"
    );

    // Quiet for the delay: trimmed to one copy per site, every copy right.
    let model = BTreeMap::from([(block, (11, data))]);
    settled(&cluster, &model).await;
    assert_eq!(local(&holders(&cluster, block).await).len(), 1);
    cluster.shutdown().await.unwrap();
}
